"""Shared kernel of the churn engine: settings, errors and the `churn` command line.

The data flows raw signals -> `features/` -> `training/` -> `serving/`; this package is
what all of them share (settings, the root exception) plus the CLI that drives them.
"""

from churn.errors import (
    ChurnError,
    ConfigError,
    DataError,
    ModelNotFoundError,
    StoreUnavailableError,
    UnknownCustomerError,
)
from churn.settings import Settings, load_settings

__all__ = [
    "ChurnError",
    "ConfigError",
    "DataError",
    "ModelNotFoundError",
    "Settings",
    "StoreUnavailableError",
    "UnknownCustomerError",
    "load_settings",
]
