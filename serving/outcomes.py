"""Outcomes of campaigns into the ledger: from a file, or from the simulator's truth.

An outcome says, for one decided customer of one campaign, whether they churned by the end
of the horizon and what revenue they brought in it. Contacted and held-out customers both
get one; comparing the two is how effects are measured (`serving/measure.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churn import clock
from churn.errors import DataError
from churn.ids import id_problem, id_text, ids_text
from churn.settings import Settings
from features.truth import simulated_outcomes
from serving.ledger import Ledger

OUTCOME_FILE_COLUMNS = ("campaign", "customer_id", "churned", "revenue", "horizon_end")


def read_outcome_file(path: Path) -> pd.DataFrame:
    """Outcomes from a CSV or Parquet file, checked column by column.

    Required columns:
    - campaign, customer_id (text as it is, 1 to 128 characters without control characters; an integer
      column's values as their decimal text)
    - churned (true/false or 1/0), revenue (finite number, >= 0), horizon_end (timestamp)
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"outcome file {path} does not exist")
    # ids are text: a CSV's '007' stays '007'
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"customer_id": str})
    missing = [c for c in OUTCOME_FILE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"outcome file {path} lacks columns {missing}; it has {list(frame.columns)}")
    out = frame[list(OUTCOME_FILE_COLUMNS)].copy()
    out["campaign"] = out["campaign"].astype(str)
    out["customer_id"] = _customer_ids(path, frame["customer_id"])
    truthy = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    out["churned"] = _column(path, frame, "churned", lambda s: s.astype(str).str.strip().str.lower().map(truthy))
    out["revenue"] = _column(path, frame, "revenue", lambda s: pd.to_numeric(s, errors="coerce"))
    # finite: '1e999' and 'inf' parse as infinity, which no measurement could use
    invalid = ~((out["revenue"] >= 0) & np.isfinite(out["revenue"]))
    if invalid.any():
        row = int(invalid.to_numpy().argmax())
        raise DataError(
            f"column 'revenue' in {path} must be a finite number >= 0; got {float(out['revenue'].iloc[row])} in row {row + 1}"
        )
    out["horizon_end"] = _column(path, frame, "horizon_end", lambda s: pd.to_datetime(s, utc=True, errors="coerce"))
    out["churned"] = out["churned"].astype(bool)
    return out


def _customer_ids(path: Path, column: pd.Series) -> pd.Series:
    """The ids of an outcome file as text; an empty, overlong or unprintable one is named with its row."""
    texts = []
    for row, value in enumerate(column.tolist(), start=1):
        try:
            text = None if pd.isna(value) else id_text(value)
        except ValueError:
            text = None
        problem = "is missing or not an id" if text is None else id_problem(text)
        if problem:
            raise DataError(f"column 'customer_id' in {path}: the value {value!r} in row {row} {problem}")
        texts.append(text)
    return pd.Series(texts, index=column.index, dtype=object)


def _column(path: Path, frame: pd.DataFrame, name: str, parse) -> pd.Series:
    parsed = parse(frame[name])
    bad = parsed.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"column {name!r} in {path} has an invalid value {frame[name].iloc[row]!r} in row {row + 1}")
    return parsed


def ingest_file(settings: Settings, ledger: Ledger, path: Path) -> int:
    """Record the outcomes of a file; returns how many were new."""
    return ledger.record_outcomes(read_outcome_file(path), source=str(path), recorded_at=clock.now(settings))


def ingest_simulated(settings: Settings, ledger: Ledger, campaign: str) -> pd.DataFrame:
    """Record what the simulated customers of `campaign` did; returns the outcomes with true_change (ids as text).

    The horizon is the churn model's (`training.horizon_days`), from the campaign's scoring date; the
    customers respond as the scenario of `simulation.scenario` says (features/truth.py).
    """
    decisions = ledger.campaign_decisions(campaign)
    if decisions.empty:
        raise DataError(f"campaign {campaign!r} has no decisions in the ledger")
    as_of = decisions["as_of"].iloc[0]
    horizon = settings.training.horizon_days
    outcomes = simulated_outcomes(
        settings.raw_dir, settings.truth_dir, decisions, campaign, as_of, horizon, settings.simulation.scenario
    )
    # the ledger's ids are text; the simulator's truth is keyed by the integers they spell
    outcomes = outcomes.assign(
        campaign=campaign, customer_id=ids_text(outcomes["customer_id"]), horizon_end=as_of + pd.Timedelta(days=horizon)
    )
    ledger.record_outcomes(outcomes, source=f"simulator truth ({settings.truth_dir})", recorded_at=clock.now(settings))
    return outcomes
