"""Scoring an ingested data set (`churn ingest` -> features -> train), and what it cannot do yet.

`churn score` works on ingested data: every customer in the population at `as_of` (the whole
snapshot; for logs, the customers in the latest weekly feature rows at or before `as_of`,
less those cancelled before it) gets the calibrated churn probability of the data set's
champion, `<data set>-churn@champion` (one LightGBM booster and its calibration map), its
value (`training.value.customer_value`; with `<data set>-clv@champion` when the value is a
model) and value segment, with point-in-time features from Feast, written to
`outputs/scores_<data set>_<date>.parquet`.

Interventions and the service (`churn interventions`, `churn serve`) need more than a churn
probability: a calibrated single-booster churn model for the fast path and its reason codes,
a CLV model for value segments and expected value, and the features the action catalog's
conditions and lifecycle stages read. `missing_for_decisions` names what the ingested data
set lacks, so those commands refuse with that list instead of failing on a model name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from churn.errors import DataError
from churn.settings import Settings
from features.contract import Contract, Shape
from features.contract_features import read_views
from features.definitions import contract_service_name
from features.ingest import read_manifest
from features.store import historical_features
from serving.policy import load_catalog, segment_of
from training.calibration import apply_map
from training.contract_promote import contract_clv_name, contract_model_name
from training.dataset import to_matrix
from training.registry import load_champion
from training.value import customer_value, value_column


@dataclass(frozen=True)
class ContractScores:
    """What `churn score` wrote for an ingested data set."""

    path: Path
    rows: int
    model: str
    as_of: datetime


def _contract(settings: Settings) -> Contract:
    return Contract.model_validate(read_manifest(settings.ingested_dir)["contract"])


def population(settings: Settings, contract: Contract, views: dict, as_of: datetime) -> pd.DataFrame:
    """customer_id, event_timestamp (= as_of) of every customer to score."""
    stamp = pd.Timestamp(as_of)
    if contract.churn.definition == "label":
        name, _ = contract.snapshot
        ids = pd.read_parquet(settings.ingested_dir / f"{name}.parquet", columns=["customer_id"])["customer_id"]
        return pd.DataFrame({"customer_id": ids.to_numpy(), "event_timestamp": stamp})
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    tables = [settings.feature_tables_dir / f"{v}.parquet" for v in views["log_views"]]
    rows = " UNION ALL ".join(f"SELECT customer_id, event_timestamp FROM read_parquet('{p}')" for p in tables)
    sql = f"""
        WITH r AS ({rows}), latest AS (SELECT max(event_timestamp) AS t FROM r WHERE event_timestamp <= $as_of)
        SELECT DISTINCT customer_id FROM r, latest WHERE r.event_timestamp = latest.t"""
    cancels = contract.of_shape(Shape.CANCELLATIONS)
    if cancels:
        gone = " UNION ALL ".join(
            f"SELECT customer_id FROM read_parquet('{settings.ingested_dir / n}.parquet') WHERE event_time < $as_of"
            for n in cancels
        )
        sql += f" AND customer_id NOT IN ({gone})"
    ids = con.execute(sql + " ORDER BY 1", {"as_of": stamp.to_pydatetime()}).df()["customer_id"]
    con.close()
    return pd.DataFrame({"customer_id": ids.to_numpy(), "event_timestamp": stamp})


def score_contract(settings: Settings, as_of: datetime | None = None) -> ContractScores:
    """Churn probability of every customer in the population at `as_of` (default: the end of the data)."""
    contract = _contract(settings)
    views = read_views(settings.feature_tables_dir)
    as_of = as_of or datetime.fromisoformat(views["data_end"])
    name = contract_model_name(contract.name)
    model = load_champion(settings, name)
    entities = population(settings, contract, views, as_of)
    if entities.empty:
        raise DataError(f"{contract.name}: no customer to score at {as_of:%Y-%m-%d} (no feature rows at or before it)")
    features = historical_features(settings, entities, contract_service_name(contract.name))
    out = features[["customer_id", "event_timestamp"]].copy()
    extra = model.extra
    raw = model.booster.predict(to_matrix(features, model.feature_names, model.categories))
    out["churn_probability"] = apply_map(extra["calibration"], raw)
    spec = extra["value"]
    clv_prediction = None
    if spec["method"] == "model":
        clv = load_champion(settings, contract_clv_name(contract.name))
        clv_prediction = clv.booster.predict(to_matrix(features, clv.feature_names, clv.categories))
    column = value_column(spec)
    columns = {column: features[column].to_numpy()} if column else {}
    out["clv"] = customer_value(spec, columns, out["churn_probability"].to_numpy(), clv_prediction)
    out["segment"] = segment_of(out["clv"].to_numpy(), extra["segment_edges"])
    out["model_version"] = model.label
    path = settings.outputs_dir / f"scores_{contract.name}_{as_of:%Y%m%d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    out.to_parquet(tmp, index=False)
    tmp.replace(path)  # a failed run leaves the previous scores in place
    return ContractScores(path, len(out), out["model_version"].iloc[0], as_of)


def missing_for_decisions(settings: Settings) -> str:
    """Why interventions and the service cannot run on the ingested data set: everything it lacks."""
    contract = _contract(settings)
    name = contract_model_name(contract.name)
    views = read_views(settings.feature_tables_dir)
    features = {f for fields in views["views"].values() for f, _, _ in fields}
    catalog = load_catalog(settings.actions_path)
    needed = sorted(catalog.conditions_features())
    absent = [f for f in needed if f not in features]
    has_transactions = bool(contract.of_shape(Shape.TRANSACTIONS))
    gaps = [
        f"the service's scorer for its models ({name!r} is a calibrated booster, but the fast path and its "
        "reason codes read the simulator's models only)",
        "a CLV model for value segments and expected value ("
        + ("not trained for ingested data yet" if has_transactions else "and no transactions to train one on: it is a snapshot")
        + ")",
    ]
    if absent:
        gaps.append(f"features the action catalog {settings.actions_path} reads: {', '.join(absent)}")
    return (
        f"interventions and the service run on the simulator's models; the ingested data set {contract.name!r} "
        f"lacks: " + "; ".join(f"({i}) {g}" for i, g in enumerate(gaps, start=1))
        + f". `churn score` works on it (churn probabilities from {name}@champion)."
    )
