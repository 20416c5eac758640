"""Running a data set through the engine as a user does, and checking what comes out (the e2e tests of ingested data)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pandas as pd
from typer.testing import CliRunner

from churn.cli import app
from churn.settings import Settings, load_settings

from tests.e2e.servers import AUTH, bentoml_service, service_env

LIST_COLUMNS = [
    "customer_id", "segment", "churn_probability", "clv", "action", "channel", "cost", "reason", "model_version",
    "decided_at",
]


def cli(args: list[str], env: dict) -> str:
    result = CliRunner().invoke(app, args, env=env, terminal_width=400)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def run_data_set(config, root, now: datetime | None = None, data_root=None) -> tuple[Settings, pd.DataFrame, str]:
    """ingest -> features build/apply/materialize -> train -> interventions through the CLI, in `root`.

    `now`: the engine's clock (default: the end of the data, as `churn demo` pins it).
    Returns the settings, the intervention list of campaign 'first' and the command's output.
    """
    env = {"CHURN_DATA_DIR": str(root / "data"), "CHURN_MLRUNS_DIR": str(root / "mlruns")}
    cli(["ingest", "--config", str(config), *(["--data-root", str(data_root)] if data_root else [])], env)
    cli(["features", "build"], env)
    cli(["features", "apply"], env)
    if now is None:
        views = pd.read_json(root / "data" / "feast" / "tables" / "views.json", typ="series")
        now = datetime.fromisoformat(views["data_end"])
    env["CHURN_NOW"] = now.isoformat()
    cli(["features", "materialize"], env)
    cli(["train"], env)
    out = cli(["interventions", "--campaign", "first"], env)
    listing = pd.read_csv(next((root / "data").rglob("interventions_first.csv")), dtype={"customer_id": str})
    return load_settings(data_dir=root / "data", mlruns_dir=root / "mlruns", now=now), listing, out


def check_list(listing: pd.DataFrame, out: str) -> None:
    """The documented columns, several segments and actions, text ids, probabilities and values in range."""
    assert set(LIST_COLUMNS) <= set(listing.columns), listing.columns
    assert len(listing) > 0, out
    assert listing["segment"].nunique() > 1, listing["segment"].value_counts()
    assert listing["action"].nunique() > 1, listing["action"].value_counts()
    assert listing["churn_probability"].between(0, 1).all() and (listing["clv"] >= 0).all()


def check_service(settings: Settings, listing: pd.DataFrame, home, reasons: bool = True) -> None:
    """A real `bentoml serve` scores (with reasons, unless `reasons` is False) and decides for ids taken from the list."""
    env = service_env(settings, home / "bentoml_home")
    # the riskiest customers of the list: a reason says why a risk is above the data set's base rate,
    # and a listed customer may be below it (CDNOW: 70-81 % churn; a 0.34 has no reason)
    ids = listing.nlargest(5, "churn_probability")["customer_id"].tolist()
    with bentoml_service(env, home / "service.log") as base:
        scored = httpx.post(f"{base}/score", json={"customer_ids": ids}, headers=AUTH, timeout=30)
        assert scored.status_code == 200, scored.text
        body = scored.json()
        assert [s["customer_id"] for s in body["scores"]] == ids, body
        assert all(isinstance(s["reasons"], list) for s in body["scores"]), body
        if reasons:
            assert all(s["reasons"] for s in body["scores"]), body
        decided = httpx.post(f"{base}/interventions", json={"customer_ids": ids, "campaign": "online"}, headers=AUTH, timeout=30)
        assert decided.status_code == 200, decided.text
        assert sorted(d["customer_id"] for d in decided.json()["decisions"]) == sorted(ids)
