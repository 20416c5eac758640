"""The HTML report of a training run: one self-contained file a marketing team can open.

Sections: backtest (metrics per rolling cutoff and overall), baselines (the engine beside the
best single feature, a logistic regression and LightGBM's defaults on the same splits),
calibration (reliability table and plot, Brier and ECE before and after), gains and lift curves, campaign profit (EMPC and
the best share to contact), feature importance (mean |SHAP|), metrics by CLV segment, and
the CLV model's quality. Plots are PNGs embedded as base64, so the file opens from disk, from
the MLflow UI, or as an e-mail attachment, with no network and no side files.
matplotlib is used through `Figure` directly (no pyplot): no global state, no display needed.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from churn.settings import ProfitSettings
from training.baselines import comparison_summary
from training.evaluate import expected_calibration_error

SEGMENTS = ("low", "medium", "high")
# Section ids, in the order they appear; tests check each is present.
SECTIONS = ("backtest", "baselines", "calibration", "gains", "profit", "importance", "columns", "search", "segments", "clv")


@dataclass(frozen=True)
class TrainingReport:
    """Everything the report shows; tables are the ones logged to MLflow beside it."""

    title: str
    backtest: pd.DataFrame
    reliability_raw: pd.DataFrame
    reliability: pd.DataFrame
    calibration_method: str
    calibration_cv_log_loss: dict[str, float]
    gains: pd.DataFrame
    importance: pd.DataFrame
    importance_clv: pd.DataFrame | None  # None: the value is not a model
    segments: pd.DataFrame
    clv_metrics: dict[str, float] | None
    profit: ProfitSettings
    # what differs by data set: how the splits and the calibration were made, what the value is
    backtest_note: str
    calibration_note: str
    clv_note: str
    latest: str  # the split the calibration, gains and segment sections show
    importance_rows: str
    left_out: dict[str, str] = field(default_factory=dict)  # columns no model uses, and why
    search: pd.DataFrame | None = None  # the registered churn model's search: candidates, rounds, validation ROC AUC
    # the engine and its baselines on every split (`training.baselines.comparison`)
    baselines: pd.DataFrame | None = None


def segment_metrics(y_true: np.ndarray, probability: np.ndarray, clv: np.ndarray, edges: list[float]) -> pd.DataFrame:
    """Churn metrics within each CLV segment (below the first edge, between, above the last).

    Returns columns: segment, customers, churners, churn_rate, mean_probability, roc_auc, ece.
    ROC AUC is NaN in a segment without both churners and stayers (it is undefined there).
    """
    segment = np.array(SEGMENTS)[np.searchsorted(edges, clv, side="right")]
    rows = []
    for name in SEGMENTS:
        mask = segment == name
        y, p = np.asarray(y_true)[mask], np.asarray(probability)[mask]
        both = 0 < y.sum() < len(y)
        rows.append(
            {
                "segment": name,
                "customers": int(mask.sum()),
                "churners": int(y.sum()),
                "churn_rate": float(y.mean()) if len(y) else float("nan"),
                "mean_probability": float(p.mean()) if len(p) else float("nan"),
                "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
                "ece": expected_calibration_error(y, p, 5) if len(y) >= 5 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>'


def _reliability_plot(report: TrainingReport) -> str:
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    top = max(report.reliability_raw["mean_predicted"].max(), report.reliability["observed_rate"].max(), 0.01) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect calibration")
    ax.plot(report.reliability_raw["mean_predicted"], report.reliability_raw["observed_rate"], "o-", label="raw model")
    ax.plot(report.reliability["mean_predicted"], report.reliability["observed_rate"], "s-", label=f"calibrated ({report.calibration_method})")
    ax.set(xlabel="mean predicted churn probability (bin)", ylabel="observed churn rate (bin)", title=f"Reliability, {report.latest}")
    ax.legend()
    return _png(fig)


def _gains_plot(gains: pd.DataFrame) -> str:
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    shares = np.r_[0.0, gains["contacted_share"]]
    left.plot(shares, np.r_[0.0, gains["churners_captured"]], label="model")
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", label="random")
    left.set(xlabel="share of customers contacted (highest risk first)", ylabel="share of churners reached", title="Cumulative gains")
    left.legend()
    right.plot(gains["contacted_share"], gains["lift"], label="model")
    right.axhline(1.0, color="grey", linestyle="--", label="random")
    right.set(xlabel="share of customers contacted", ylabel="lift", title="Lift")
    right.legend()
    return _png(fig)


def _importance_plot(importance: pd.DataFrame, title: str, top: int = 15) -> str:
    head = importance.head(top).iloc[::-1]
    fig = Figure(figsize=(6, 0.3 * len(head) + 1))
    ax = fig.subplots()
    ax.barh(head["feature"], head["mean_abs_shap"])
    ax.set(xlabel="mean |SHAP| (model's raw scale)", title=title)
    return _png(fig)


def _backtest_plot(backtest: pd.DataFrame) -> str:
    folds = backtest[backtest["test_cutoff"] != "all"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for metric in ("roc_auc", "pr_auc"):
        ax.plot(folds["test_cutoff"], folds[metric], "o-", label=metric)
    ax.set(xlabel="test cutoff", ylabel="metric", title="Backtest over rolling cutoffs", ylim=(0, 1))
    ax.legend()
    return _png(fig)


def _table(frame: pd.DataFrame, na_rep: str = "NaN") -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0, classes="table", na_rep=na_rep)


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>'


def _baselines_body(table: pd.DataFrame | None) -> str:
    if table is None:
        return "<p>No baselines were measured in this run.</p>"
    return (
        "<p>On the same splits and test rows as the engine: the best single feature (each feature alone as a "
        "risk score, in its better direction, a category by its churn rate on the split's training rows; the best "
        "chosen on the test rows themselves, so no one feature does better there), a logistic regression (one-hot "
        "categories, standardized numbers) and LightGBM with default parameters, both fitted on the split's training "
        "rows. <code>margin_mean</code>, <code>margin_min</code>: the engine's ROC AUC minus the model's, mean and smallest "
        "over the splits (<code>engine_margin</code> per split). "
        "For the best single feature each metric is the best any one feature reaches: the features are named "
        "per split below.</p>"
        # blank cells: the engine's margin over itself, the figures of a model that could not fit
        + _table(comparison_summary(table), na_rep="")
        + "<h3>Per split</h3>" + _table(table, na_rep="")
    )


def render(report: TrainingReport) -> str:
    """The report as one HTML document."""
    latest = report.backtest.iloc[-2]
    p = report.profit
    cv = ", ".join(f"{k} {v:.4f}" for k, v in report.calibration_cv_log_loss.items())
    sections = [
        _section(
            "backtest", "Backtest over rolling cutoffs",
            f"<p>{html.escape(report.backtest_note)}</p>" + _table(report.backtest) + _backtest_plot(report.backtest),
        ),
        _section("baselines", "The engine beside the baselines", _baselines_body(report.baselines)),
        _section(
            "calibration", f"Calibration ({report.latest})",
            f"<p>{html.escape(report.calibration_note)}: "
            f"<b>{html.escape(report.calibration_method)}</b> ({html.escape(cv)}).</p>"
            f"<p>Brier score {latest['brier_raw']:.4f} before, {latest['brier']:.4f} after; "
            f"expected calibration error (ECE) {latest['ece_raw']:.4f} before, <b>{latest['ece']:.4f}</b> after.</p>"
            + _reliability_plot(report)
            + "<h3>Reliability table, calibrated</h3>" + _table(report.reliability)
            + "<h3>Reliability table, raw model</h3>" + _table(report.reliability_raw),
        ),
        _section(
            "gains", f"Gains and lift ({report.latest})",
            f"<p>Top-decile lift {latest['top_decile_lift']:.2f} at a churn rate of {latest['churn_rate']:.2%}.</p>"
            + _gains_plot(report.gains),
        ),
        _section(
            "profit", "Campaign profit: EMPC (Verbraken, Verbeke & Baesens 2013)",
            f"<p>Parameters: CLV {p.clv:g}, offer cost d = {p.offer_cost:g}, contact cost f = {p.contact_cost:g}, "
            f"acceptance rate gamma ~ Beta({p.accept_alpha:g}, {p.accept_beta:g}).</p>"
            f"<p>{html.escape(report.latest.capitalize())}: EMPC <b>{latest['empc']:.3f}</b> per customer, contacting "
            f"<b>{latest['empc_contact_share']:.2%}</b> of customers; with each customer's predicted CLV instead "
            f"of the constant: EMPC {latest['empc_clv']:.3f} per customer, contacting {latest['empc_clv_contact_share']:.2%}.</p>",
        ),
        _section(
            "importance", "Feature importance (mean |SHAP|)",
            "<p>Mean absolute SHAP contribution per feature (LightGBM <code>pred_contrib</code>) on "
            f"{html.escape(report.importance_rows)}: log-odds for churn, log of expected revenue (Tweedie) for CLV.</p>"
            + _importance_plot(report.importance, "Churn model")
            + "<h3>Churn model</h3>" + _table(report.importance)
            + (
                _importance_plot(report.importance_clv, "CLV model") + "<h3>CLV model</h3>" + _table(report.importance_clv)
                if report.importance_clv is not None else ""
            ),
        ),
        _section(
            "columns", "Columns left out",
            _table(pd.DataFrame({"column": list(report.left_out), "why": list(report.left_out.values())}))
            if report.left_out else "<p>None: every column of the data set's views is a feature.</p>",
        ),
        *(
            [_section(
                "search", "The registered churn model's search",
                "<p>Each candidate setting, trained with early stopping on the search's validation rows "
                "(docs/architecture.md, section on the churn model's search and what it costs); the best ones are averaged.</p>" + _table(report.search),
            )]
            if report.search is not None else []
        ),
        _section("segments", f"Metrics by CLV segment ({report.latest})", _table(report.segments)),
        _section(
            "clv", report.clv_note,
            _table(pd.DataFrame([report.clv_metrics])) if report.clv_metrics is not None else "<p>No CLV model.</p>",
        ),
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        ".table{border-collapse:collapse;font-size:0.85em}.table td,.table th{padding:3px 8px;border-bottom:1px solid #ddd}"
        "img{display:block;margin:1em 0;max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(report.title)}</h1>{''.join(sections)}</body></html>"
    )


def write_report(report: TrainingReport, path: Path) -> Path:
    """Render the report to `path` (creating its folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report), encoding="utf-8")
    return path
