"""The HTML training report: it opens, has every section, its plots are real PNGs that render."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from training.baselines import BASELINES
from training.report import SECTIONS

from tests.prerequisites import require

# matplotlib's first two default line colours (blue, orange), as 0-1 RGB
PLOT_COLOURS = (np.array([31, 119, 180]) / 255, np.array([255, 127, 14]) / 255)


class _Parts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.ids.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs.get("src", ""))


@pytest.fixture(scope="module")
def report(engine):
    return engine.training.report_path


def test_report_has_every_section_with_its_figures(report):
    parts = _Parts()
    parts.feed(report.read_text(encoding="utf-8"))
    assert parts.ids == list(SECTIONS)
    assert len(parts.images) == 5  # backtest, reliability, gains beside lift, churn and CLV importance
    for src in parts.images:
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"))
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(io.BytesIO(data)).shape[0] > 100
    text = report.read_text()
    for phrase in ("Brier score", "expected calibration error", "Top-decile lift", "EMPC", "contacting", "mean_abs_shap"):
        assert phrase in text
    assert "validation_roc_auc" in text  # the search's table
    baselines = text.split('<section id="baselines">')[1].split("</section>")[0]
    for model in ("engine", "best single feature", "logistic regression", "LightGBM defaults", "margin_min"):
        assert model in baselines


def test_report_is_logged_with_its_run(engine, report):
    client = MlflowClient(tracking_uri=engine.settings.resolved_tracking_uri)
    logged = [a.path for a in client.list_artifacts(engine.training.run_id, "report")]
    assert logged == [f"report/{report.name}"]
    evaluation = {a.path for a in client.list_artifacts(engine.training.run_id, "evaluation")}
    tables = ("backtest", "baselines", "reliability", "importance", "importance_clv", "segments")
    assert {f"evaluation/{name}.json" for name in tables} <= evaluation


def test_the_evaluation_holds_the_baselines_of_every_split(engine, tmp_path):
    """evaluation.json has each split's baselines, as `train` returned them, on the engine's test rows."""
    client = MlflowClient(tracking_uri=engine.settings.resolved_tracking_uri)
    logged = json.loads(Path(client.download_artifacts(engine.training.run_id, "evaluation.json", str(tmp_path))).read_text())
    result = engine.training
    assert logged["baselines"] == result.baselines and len(result.baselines) == len(result.split_names) >= 2
    for engine_metrics, baselines in zip(result.per_split, result.baselines):
        assert list(baselines) == list(BASELINES)
        for key, m in baselines.items():
            assert m["customers"] == engine_metrics["customers"], key
            assert 0.5 <= m["roc_auc"] <= 1.0 and m["top_decile_lift"] > 0, (key, m)


def test_plots_show_in_headless_chromium(report, tmp_path):
    """Render the file as a browser would and look for the plots' line colours in the screenshot."""
    require(shutil.which("chromium") is not None, "headless Chromium is not installed (Debian package chromium)")
    shot = tmp_path / "report.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,4000",
         f"--screenshot={shot}", report.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = imread(shot)[..., :3]
    for colour in PLOT_COLOURS:
        close = np.abs(pixels - colour).max(axis=-1) < 0.05
        assert close.sum() > 500, f"no plot drawn in colour {colour} in the rendered report"
    # and a page without the images has none of it (the check is not fooled by the page itself)
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img [^>]*>", "", report.read_text()))
    blank = tmp_path / "bare.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,4000",
         f"--screenshot={blank}", bare.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert (np.abs(imread(blank)[..., :3] - PLOT_COLOURS[0]).max(axis=-1) < 0.05).sum() == 0
