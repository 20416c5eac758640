"""The `churn` command line: one command per step of the data flow, and `demo` for all.

Heavy modules (Feast, MLflow, LightGBM, BentoML) are imported inside the commands, so
`churn --help` answers at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Annotated, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.table import Table

from churn import clock
from churn.clock import utc
from churn.errors import ChurnError, ConfigError
from churn.settings import Settings, load_settings

app = typer.Typer(help="Churn prediction and intervention engine.", no_args_is_help=True, add_completion=False)
features_app = typer.Typer(help="Feature tables and the Feast feature store.", no_args_is_help=True)
app.add_typer(features_app, name="features")
models_app = typer.Typer(help="Registered models and their promotion history.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()
F = TypeVar("F", bound=Callable)

@app.callback()
def _quiet_libraries() -> None:
    """Keep third-party chatter (deprecation notices, MLflow INFO lines) out of the command's output."""
    import logging
    import warnings

    import feast  # noqa: F401  (feast puts its own warning filters first on import; ours must come after)

    for module in ("feast", "duckdb", "ibis", "mlflow", "sqlalchemy", "dask", "lightgbm"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    for logger in ("mlflow", "alembic", "feast"):
        logging.getLogger(logger).setLevel(logging.WARNING)


AsOf = Annotated[
    datetime | None,
    typer.Option(
        help="Scoring date (UTC midnight, on a weekly snapshot); default: the latest snapshot at the engine's "
        "clock (setting `now`, CHURN_NOW; the wall clock when unset), refused when older than the features' TTL."
    ),
]


DEBUG_ENV = "CHURN_DEBUG"  # set to 1: an unexpected error keeps its traceback


def _fails_cleanly(command: F) -> F:
    """Every failure ends in one red `error:` line and exit code 1, never a raw traceback.

    The engine's own errors (`ChurnError`) carry a message meant for the user; any other
    exception is a bug or a library's complaint, shown as its type and message with the
    way to see its trace (`CHURN_DEBUG=1` re-raises it). typer's and click's own exits
    (`--help`, usage errors, Ctrl-C) pass through as they are.
    """

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except ChurnError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from exc
        except Exception as exc:
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
            console.print(
                f"[bold red]error:[/] unexpected {type(exc).__module__}.{type(exc).__qualname__}: {escape(first)} "
                f"[dim](a bug or an unhandled case; run with {DEBUG_ENV}=1 for the traceback)[/]"
            )
            raise typer.Exit(1) from exc

    return run


@contextmanager
def _step(title: str):
    """One step of a command: a spinner with elapsed time while it runs, and a tick with its time when done.

    Yields `parts(done, total)`: a step of counted parts (rows, batches, sources) calls it as
    they complete, and the line shows a bar and an estimate of the time left (`_Steps`).
    """
    with _Steps(indent="") as step:
        step(title)
        yield lambda done, total: step(title, done, total)


class _PartsLeft(ProgressColumn):
    """'3/6, about 0:01:10 left' for a step of counted parts; nothing for a step without."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text("")
        left = task.time_remaining
        estimate = "estimating" if left is None else f"about {timedelta(seconds=round(left))} left"
        return Text(f"{task.completed:,.0f}/{task.total:,.0f}, {estimate}", style="dim")


class _Steps:
    """The steps of a command, one line each: a tick and the time each took, and while a step runs,
    its elapsed time and, for a step of counted parts (`step(what, done, total)`), a bar and an estimate of the rest.

    `command` prefixes the running line (`train: ...`); `indent` the ticks (steps of a command
    that prints its own summary are indented under it).
    """

    def __init__(self, command: str | None = None, indent: str = "  "):
        self.indent = indent
        label = "{task.description}" if command is None else f"{command}: {{task.description}}"
        self.bar = Progress(
            SpinnerColumn(), TextColumn(label), BarColumn(), TimeElapsedColumn(), _PartsLeft(),
            console=console, transient=True, speed_estimate_period=3600,  # parts may take minutes each
            disable=not console.is_terminal,  # piped output (a log, CI) gets the tick lines only, no blank line per step
        )
        self.task, self.what, self.started = None, None, 0.0

    def __enter__(self) -> _Steps:
        self.bar.__enter__()
        return self

    def __call__(self, what: str, done: int | None = None, total: int | None = None) -> None:
        if what != self.what:
            self._done()
            self.what, self.started = what, time.perf_counter()
            self.task = self.bar.add_task(what, total=total)
        self.bar.update(self.task, completed=done or 0, total=total)

    def _done(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            console.print(f"{self.indent}[green]✓[/] {self.what} [dim]({time.perf_counter() - self.started:.1f}s)[/]")

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._done()
        self.bar.__exit__(*exc)


def _settings() -> Settings:
    settings = load_settings()
    settings.ensure_dirs()
    return settings


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


# ---------------------------------------------------------------- simulate
def _simulate(settings: Settings, customers: int | None, seed: int | None, days: int | None) -> None:
    from features.simulate import simulate

    sim = settings.simulation
    n, seed, days = customers or sim.n_customers, sim.seed if seed is None else seed, days or sim.days
    done = 0

    def days_done(k: int) -> None:  # the simulator reports the days just simulated
        nonlocal done
        done += k
        parts(done, days)

    with _step(f"simulate {n:,} customers over {days:,} days") as parts:
        result = simulate(
            settings.raw_dir, settings.truth_dir, n_customers=n, start=sim.start, days=days, seed=seed, progress=days_done,
        )
    console.print(
        f"  {result.n_customers:,} customers: {result.n_events:,} events, {result.n_transactions:,} transactions, "
        f"{result.n_cancellations:,} cancellations -> {result.raw_dir}"
    )


@app.command()
@_fails_cleanly
def simulate(
    customers: Annotated[int | None, typer.Option(help="Customers to simulate (default from settings).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default from settings).")] = None,
    days: Annotated[int | None, typer.Option(help="Days to simulate (default from settings).")] = None,
) -> None:
    """Simulate a subscription business and write the raw tables."""
    _simulate(_settings(), customers, seed, days)


# ---------------------------------------------------------------- ingest
@app.command()
@_fails_cleanly
def ingest(
    config: Annotated[Path, typer.Option(help="Data contract config (YAML or TOML) mapping your tables; see examples/.")],
    data_root: Annotated[Path | None, typer.Option(help="Folder the config's source paths are relative to (overrides data_root).")] = None,
) -> None:
    """Read your tables as the config describes, validate them, and store them for the engine.

    Every problem is listed at once; a failed ingest writes nothing and keeps the earlier data.
    """
    _ingest(_settings(), config, data_root)


def _ingest(settings: Settings, config: Path, data_root: Path | None):
    from features.contract import load_contract
    from features.ingest import ingest as run_ingest

    contract, root = load_contract(config, data_root)
    if contract.actions:  # the data set's own catalog: a bad one fails the ingest, not the first decision
        from serving.policy import load_catalog

        load_catalog(Path(contract.actions))
    with _step(f"ingest {contract.name} ({len(contract.sources)} sources)") as parts:
        result = run_ingest(contract, root, settings.ingested_dir, progress=parts)
    rows = ", ".join(f"{name} {n:,} rows" for name, n in result.rows.items())
    console.print(f"  {rows}; {result.customers:,} customers; data ends {result.data_end:%Y-%m-%d} -> {result.out_dir}")
    return result


# ---------------------------------------------------------------- features
@contextmanager
def _dask_or_none(settings: Settings):
    """The Dask client in Dask mode (`dask.scheduler` set), else None: one machine."""
    if not settings.dask.scheduler:
        yield None
        return
    from churn.cluster import dask_client

    with dask_client(settings) as client:
        console.print(f"  Dask mode: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
        yield client


def _build(settings: Settings) -> None:
    from features.build import build_features

    start = time.perf_counter()
    with _dask_or_none(settings) as client, _Steps("features build") as step:
        built = build_features(
            settings.ingested_dir, settings.feature_tables_dir, settings.build.memory_limit, settings.build.partition_customers,
            client=client, partitions=None if client is None else settings.dask.partitions, step=step,
        )
    console.print(f"[green]✓[/] built the feature tables of the data set (DuckDB) [dim]({time.perf_counter() - start:.1f}s)[/]")
    for view, n in built.rows.items():
        console.print(f"  {view}: {n:,} rows, {len(built.schema[view])} features -> {built.tables[view]}")


def _apply(settings: Settings) -> None:
    from features.store import apply_definitions

    with _step("feast apply"):
        names = apply_definitions(settings)
    console.print(f"  registered {', '.join(names)} in {settings.feature_repo_dir}")


def _materialize(settings: Settings, as_of: datetime | None) -> None:
    from features.build import read_views
    from features.definitions import FEATURE_TTL
    from features.online_bulk import materialize_bulk

    end = _utc(as_of) or datetime.fromisoformat(read_views(settings.feature_tables_dir)["data_end"])
    with _step(f"materialize into the {settings.online_store} online store (bulk, Feast's format)") as parts:
        result = materialize_bulk(settings, end - FEATURE_TTL, end, progress=parts)
    console.print(
        f"  latest features as of {end:%Y-%m-%d} of {result.customers:,} customers are online "
        f"({result.customers_per_second:,.0f} customers/s)"
    )


@features_app.command("build")
@_fails_cleanly
def features_build() -> None:
    """Compute the weekly feature tables from the raw tables."""
    _build(_settings())


@features_app.command("apply")
@_fails_cleanly
def features_apply() -> None:
    """Register entity, feature views and feature services (feast apply)."""
    _apply(_settings())


@features_app.command("materialize")
@_fails_cleanly
def features_materialize(as_of: AsOf = None) -> None:
    """Load the latest feature rows into the online store."""
    _materialize(_settings(), as_of)


# ---------------------------------------------------------------- train / promote
def _train(settings: Settings, shuffle_labels: bool = False) -> None:
    from training.train import train

    start = time.perf_counter()
    with _dask_or_none(settings) as client, _Steps("train") as step:
        result = train(settings, step=step, shuffle_labels=shuffle_labels, client=client)
    console.print(f"[green]✓[/] evaluated, trained and registered [dim]({time.perf_counter() - start:.1f}s)[/]")
    # (metric key, header, format): ranking, then calibration raw -> calibrated (cross-fitted), then profit
    shown = (
        ("roc_auc", "ROC AUC", ".3f"), ("pr_auc", "PR AUC", ".3f"), ("top_decile_lift", "lift@10%", ".2f"),
        ("brier_raw", "Brier raw", ".4f"), ("brier", "Brier cal.", ".4f"), ("ece_raw", "ECE raw", ".4f"),
        ("ece", "ECE cal.", ".4f"), ("empc", "EMPC", ".2f"), ("empc_clv", "EMPC value", ".2f"), ("churn_rate", "churn rate", ".1%"),
    )
    # one row per metric: the splits side by side stay readable in a terminal
    table = Table("metric", *result.split_names, "mean ± sd", title="held out (calibration cross-fitted over the splits)")
    for k, header, fmt in shown:
        mean, sd = result.summary[k]
        table.add_row(header, *(f"{m[k]:{fmt}}" for m in result.per_split), f"{mean:{fmt}} ± {sd:{fmt}}")
    console.print(table)
    _print_baselines(result)
    for column, why in (result.left_out or {}).items():
        console.print(f"  left out [bold]{column}[/]: {why}")
    value = result.value
    segments = (
        f"one segment (every customer is worth {value['amount']:,.2f})" if value["constant"]
        else f"segment edges {result.segment_edges[0]:,.2f} / {result.segment_edges[1]:,.2f}"
    )
    console.print(f"  value: {value['method']}; {segments}")
    if result.calibration and result.calibration.get("kept_raw"):
        console.print(f"  calibration not kept: {result.calibration['why']}; the model's own probabilities are used")
    if result.clv_version is not None:
        m = result.clv_metrics
        console.print(
            f"  value model version {result.clv_version}: MAE {m['mae']:,.2f}, RMSE {m['rmse']:,.2f}, "
            f"Spearman {m['spearman']:.3f} on the held-out cutoff"
        )
    console.print(f"  report: [bold]{result.report_path.resolve()}[/]")
    console.print(
        f"  model {result.model_name} version {result.version}, trained on {result.n_train_rows:,} rows; "
        f"MLflow run {result.run_id}; {result.promotion}"
    )


def _print_baselines(result) -> None:
    """The engine beside its baselines on the same splits (`training.baselines`): ROC AUC, lift and the engine's margin."""
    from training.baselines import BASELINES, comparison, comparison_summary

    compared = comparison(result.split_names, result.per_split, result.baselines)
    n = len(result.split_names)
    table = Table(
        "model", "ROC AUC", "lift@10%", "engine ahead by",
        title=f"beside the baselines: same splits and rows, mean ± sd over {n} split{'s' * (n > 1)}; "
        "engine ahead by: its ROC AUC minus the model's, mean (smallest)",
    )
    for row in comparison_summary(compared).itertuples():
        if row.splits == 0:
            table.add_row(row.model, "could not fit", "", "")
            continue
        margin = "" if row.model == "engine" else f"{row.margin_mean:+.3f} ({row.margin_min:+.3f})"
        measured = "" if row.splits == n else f" ({row.splits} of {n})"
        table.add_row(
            row.model, f"{row.roc_auc_mean:.3f} ± {row.roc_auc_sd:.3f}{measured}", f"{row.lift_mean:.2f} ± {row.lift_sd:.2f}", margin
        )
    console.print(table)
    single = compared[compared["model"] == BASELINES["best_single_feature"]]
    console.print("  best single feature: " + escape("; ".join(f"{r.split} {r.note}" for r in single.itertuples() if r.note)))
    for r in compared[compared["roc_auc"].isna() & (compared["model"] != "engine")].itertuples():
        console.print(escape(f"  {r.model}, split {r.split}: {r.note}"))


@app.command()
@_fails_cleanly
def train(
    shuffle_labels: Annotated[
        bool, typer.Option(help="Train on shuffled churn labels: a deliberately useless model, to see `churn promote` refuse it.")
    ] = False,
) -> None:
    """Evaluate, train, calibrate, report, log and register the churn and value models of the data set (as challengers)."""
    _train(_settings(), shuffle_labels)


def _promote(settings: Settings) -> None:
    from training.promote import promote

    with _step("compare challenger with champion"):
        decision = promote(settings)
    colour = "green" if decision.promoted else "yellow"
    console.print(f"  [{colour}]{decision.reason}[/]")
    if decision.champion_metrics:
        table = Table("metric", f"challenger {decision.challenger}", f"champion {decision.champion}",
                      title=f"held out: {decision.evaluated_on}")
        for key in ("roc_auc", "pr_auc", "brier", "ece", "top_decile_lift", "empc"):
            if key not in decision.challenger_metrics:
                continue
            table.add_row(key, f"{decision.challenger_metrics[key]:.4f}", f"{decision.champion_metrics[key]:.4f}")
        console.print(table)


@app.command()
@_fails_cleanly
def promote() -> None:
    """Make the challenger the champion if it is not worse on the same held-out cutoff (rule in settings.promotion)."""
    _promote(_settings())


@models_app.command("history")
@_fails_cleanly
def models_history() -> None:
    """Every promotion attempt: who, when, which versions, the metrics and the decision."""
    from training.promote import history

    frame = history(_settings())
    table = Table("#", "when (UTC)", "who", "challenger", "champion", "decision", "metric: new / old")
    for i, row in enumerate(frame.to_dict("records"), start=1):
        table.add_row(
            str(i), row["decided_at"][:16].replace("T", " "), row["who"], row["challenger"], row["champion"] or "-",
            row["decision"], f"{row['metric']}: {row['challenger_value']:.4f} / {row['champion_value']:.4f}",
        )
    console.print(table)
    for i, row in enumerate(frame.to_dict("records"), start=1):
        console.print(f"  #{i} {row['reason']}" + (f" (on cutoff {row['evaluated_on']})" if row["evaluated_on"] else ""))


# ---------------------------------------------------------------- score / interventions
def _score(settings: Settings, as_of: datetime | None) -> None:
    from features.store import latest_snapshot
    from serving.batch import score_active, write_scores
    from serving.bulk_scoring import score_all_dask
    from serving.scoring import Scorer

    with _dask_or_none(settings) as client, _step("score the active customers") as parts:
        scorer = Scorer.load(settings)
        when = as_of or latest_snapshot(settings, clock.now(settings))
        if client is None:
            scores = score_active(settings, scorer, when, progress=parts)
            n, path = len(scores), write_scores(settings, scores, when)
        else:
            result = score_all_dask(client, settings, scorer, when, progress=parts)
            n, path = result.rows, result.path
    console.print(f"  {n:,} customers scored as of {when:%Y-%m-%d} with {scorer.model_version} -> {path}")


@app.command()
@_fails_cleanly
def score(as_of: AsOf = None) -> None:
    """Score every active customer with the champion models."""
    _score(_settings(), _utc(as_of))


def _interventions(settings: Settings, as_of: datetime | None, campaign: str | None):
    from serving.batch import run_interventions

    with _Steps(indent="") as step:
        run = run_interventions(settings, _utc(as_of), campaign, step=step)
    table = Table("action", "customers")
    for action, count in sorted(run.actions.items(), key=lambda kv: -kv[1]):
        table.add_row(action, f"{count:,}")
    console.print(table)
    for action, missing in run.unusable.items():
        console.print(f"  [yellow]{action} left out: this data set has no {', '.join(missing)}[/yellow]")
    console.print(
        f"  campaign {run.campaign}: {run.n_actions:,} of {run.n_scored:,} active customers get an action; "
        f"cost {run.total_cost:,.2f}, expected incremental value {run.total_expected_value:,.2f}"
    )
    console.print(f"  action effects: {run.effects}")
    console.print(f"  intervention list: [bold]{run.list_csv}[/] (and {run.list_parquet.name})")
    return run


@app.command()
@_fails_cleanly
def interventions(
    as_of: AsOf = None,
    campaign: Annotated[str | None, typer.Option(help="Campaign id (default 'run-<as-of date>').")] = None,
) -> None:
    """Score, choose an action per customer, record decisions and write the intervention list."""
    _interventions(_settings(), as_of, campaign)


@app.command()
@_fails_cleanly
def outcomes(
    campaign: Annotated[
        str | None, typer.Option(help="Campaign whose outcomes the simulator should give (with --simulated).")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(help="CSV or Parquet with campaign, customer_id, churned, revenue, horizon_end."),
    ] = None,
    simulated: Annotated[bool, typer.Option(help="Take the outcomes from the simulator's hidden truth.")] = False,
) -> None:
    """Record campaign outcomes (churned by the horizon end, revenue) in the ledger."""
    from serving.ledger import Ledger
    from serving.outcomes import ingest_file, ingest_simulated

    settings = _settings()
    if (from_file is None) == (not simulated):
        raise ChurnError("give either --from-file PATH or --simulated --campaign ID")
    if simulated and campaign is None:
        raise ChurnError("--simulated needs --campaign ID")
    ledger = Ledger.for_settings(settings, batch=True)
    try:
        with _step("record outcomes"):
            if simulated:
                recorded = ingest_simulated(settings, ledger, campaign)
                console.print(f"  campaign {campaign}: {len(recorded):,} outcomes from the simulator")
            else:
                new = ingest_file(settings, ledger, from_file)
                console.print(f"  {new:,} new outcomes from {from_file}")
    finally:
        ledger.close()


@app.command()
@_fails_cleanly
def measure(
    campaign: Annotated[list[str] | None, typer.Option(help="Campaign(s) to measure (default: all).")] = None,
) -> None:
    """Measurement report: per segment x action, treated vs holdout churn with a 95% interval, and the learned effect."""
    import pandas as pd

    from serving.learning import learner_for, outcome_cells
    from serving.ledger import Ledger
    from serving.measure import measurement_report, with_learned
    from serving.policy import load_catalog

    settings = _settings()
    catalog = load_catalog(settings.actions_path)
    ledger = Ledger.for_settings(settings, batch=True)
    try:
        rows = ledger.decisions_with_outcomes(campaign or None)
    finally:
        ledger.close()
    if rows.empty:
        raise ChurnError("no decisions with outcomes in the ledger yet; run `churn outcomes` first")
    learner = learner_for(catalog, settings.learning).fit(outcome_cells(rows))
    report = with_learned(measurement_report(rows), learner.summary(catalog.holdout_share))
    path = settings.outputs_dir / "measurement.csv"
    report.to_csv(path, index=False)
    table = Table(
        "segment", "action", "treated", "holdout", "churn treated", "churn holdout", "effect [95% CI]",
        "learned cut [95% CI]", "more holdouts", "incr. revenue",
    )
    for r in report.itertuples():
        table.add_row(
            r.segment, r.action, f"{r.n_treated:,}", f"{r.n_holdout:,}", f"{r.churn_treated:.2%}",
            f"{r.churn_holdout:.2%}", f"{r.effect:+.2%} [{r.ci_low:+.2%}, {r.ci_high:+.2%}]",
            f"{r.learned_effect:+.0%} [{r.learned_ci_low:+.0%}, {r.learned_ci_high:+.0%}]" if pd.notna(r.learned_effect) else "",
            "" if pd.isna(r.holdout_needed) else f"{r.holdout_needed:,.0f}",
            f"{r.incremental_revenue:,.0f}",
        )
    console.print(table)
    if learner.ignored_actions_:
        console.print(f"  not learned (no longer in the catalog): {', '.join(learner.ignored_actions_)}")
    console.print(
        "  effect: churn rate contacted - held out; learned cut: relative reduction of churn (the learner's "
        "posterior); more holdouts: held-out outcomes still needed to tell the cut from zero (80 % power)"
    )
    console.print(f"  report: {path}")


# ---------------------------------------------------------------- serve
@app.command()
@_fails_cleanly
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Start the BentoML scoring service on the champion models (needs an API key in the settings)."""
    settings = _settings()
    if not settings.serving.api_keys:
        raise ConfigError(
            "serving.api_keys is empty: set CHURN_SERVING__API_KEYS='[\"<a key of 16+ characters>\"]'; "
            "clients then send 'Authorization: Bearer <key>'"
        )
    from serving.launch import serve_command, serve_env, serve_until_stopped

    command, env = serve_command(host, port), serve_env(settings)
    console.print(f"serving on http://{host}:{port} (OpenAPI docs at /docs); Ctrl-C or SIGTERM stops")
    # the signal goes on to the server, and this command exits once the server (workers included) has
    raise typer.Exit(serve_until_stopped(command, env))


# ---------------------------------------------------------------- demo
def _promote_if_waiting(settings: Settings) -> None:
    """A rerun of the demo trains a challenger; let the gate decide whether it replaces the champion."""
    from training.registry import CHALLENGER, connect, has_alias, scoring_model_names

    if has_alias(connect(settings), scoring_model_names(settings)[0], CHALLENGER):
        _promote(settings)


@app.command()
@_fails_cleanly
def demo(
    customers: Annotated[int | None, typer.Option(help="Customers to simulate (default from settings).")] = None,
) -> None:
    """Run the whole path on simulated data: simulate -> ingest -> features -> train -> interventions.

    The simulator is one more data source: it writes its tables and their config
    (`<raw_dir>/simulated.yaml`), and the demo ingests them as `churn ingest` takes any data set.
    """
    from features.simulate import CONFIG_FILE

    settings = _settings()
    start = time.perf_counter()
    _simulate(settings, customers, None, None)
    ingested = _ingest(settings, settings.raw_dir / CONFIG_FILE, None)
    # the demo's clock reads the end of its simulated data (unless `now` is set): it decides the same on any date
    settings = clock.pinned(settings, ingested.data_end)
    console.print(f"  the engine's clock reads {settings.now:%Y-%m-%d %H:%M} UTC (setting `now`)")
    _build(settings)
    _apply(settings)
    _materialize(settings, None)
    _train(settings)
    _promote_if_waiting(settings)
    run = _interventions(settings, None, None)
    console.rule("done")
    console.print(f"demo finished in {time.perf_counter() - start:.0f}s. Outputs:")
    console.print(f"  raw tables        {settings.raw_dir.resolve()}")
    console.print(f"  feature store     {settings.feature_repo_dir.resolve()}")
    console.print(f"  models (MLflow)   {settings.resolved_tracking_uri}")
    console.print(f"  training reports  {settings.reports_dir.resolve()}")
    console.print(f"  scores            {run.scores_path.resolve()}")
    console.print(f"  intervention list [bold]{run.list_csv.resolve()}[/]")
    console.print(f"  decision ledger   {settings.resolved_ledger_url}")
    console.print(
        f"Start the service at the demo's clock with [bold]CHURN_NOW={settings.now:%Y-%m-%dT%H:%M:%SZ} "
        "CHURN_SERVING__API_KEYS='[\"'$KEY'\"]' .venv/bin/churn serve[/] (KEY: any secret of 16+ characters) and try:"
    )
    import json

    import pandas as pd

    sample = pd.read_parquet(run.scores_path, columns=["customer_id"])["customer_id"].astype(str).head(3).tolist()
    body = json.dumps({"customer_ids": sample})
    console.print(
        "  curl -s -X POST localhost:3000/score -H \"Authorization: Bearer $KEY\" "
        f"-H 'content-type: application/json' -d '{body}'"
    )
