"""What some tests need from the machine (Chromium, the public data sets, PostgreSQL), and what to do without it.

Outside CI a test whose requirement is missing skips with the reason; under CI=true it fails
with the same reason, so that a CI run cannot turn green by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the public data sets (../shared/datasets from the project root); CHURN_DATASETS points elsewhere
DATASETS = Path(os.environ.get("CHURN_DATASETS", ROOT.parent / "shared" / "datasets"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip a test whose requirement is missing, or fail it under CI=true: CI must not pass by skipping.

    `what` names the requirement and how to provide it.
    """
    if available:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a test's requirement is missing: {what}", pytrace=False)
    pytest.skip(what)
