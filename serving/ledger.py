"""The decision ledger: every decision the engine made, and every outcome, in one SQL store.

SQLite by default, PostgreSQL when `ledger_url` says so (SQLAlchemy Core, one schema for
both). Recording is idempotent: (campaign, customer) is unique in both tables, so running
the same campaign twice records and contacts nobody twice, and ingesting the same outcomes
twice counts nobody twice. Held-out customers are decisions too (`holdout` true, with the
action they would have received), so effects can be measured from this store alone.

A decision is one transaction (`Ledger.deciding`): it takes the campaign's lock and its
customers' locks, reads what the rules need for those customers only (their decisions in
this campaign, their recent actions in others, the campaign's spend so far), inserts, and
commits, or rolls back and records nothing. So a campaign's budget and capacities hold
across calls, and a cooldown holds across campaigns and replicas:
- PostgreSQL: an advisory lock per campaign (`pg_advisory_xact_lock`), then a row lock per
  customer (`customer_locks`, `SELECT ... ORDER BY customer_id FOR UPDATE`: always in id
  order, so two decisions never wait on each other in a circle);
- SQLite: `BEGIN IMMEDIATE`, one writer at a time.
Every statement has a timeout (`timeouts.ledger_seconds`, PostgreSQL `statement_timeout` and
`lock_timeout`, SQLite's busy timeout); a bounded decision (the service's) must also commit
within it as a whole, or is rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, TypeVar

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InternalError, OperationalError

from churn.errors import DataError, OutcomeNotYetKnownError, StoreUnavailableError, UnknownDecisionError
from churn.ids import MAX_ID_LENGTH, id_text, ids_text

if TYPE_CHECKING:
    from churn.settings import Settings

T = TypeVar("T")

metadata = sa.MetaData()


def _customer_id_type() -> sa.types.TypeEngine:
    """Customer ids are text (`churn/ids.py`), ordered by code point in both stores.

    PostgreSQL's "C" collation orders by code point as Python and SQLite do, so the lock
    order of `Decision._lock` is the order `Ledger.deciding` sorts ids in, and paging
    (`Ledger.page`) is the same on both stores.
    """
    return sa.String(MAX_ID_LENGTH).with_variant(sa.String(MAX_ID_LENGTH, collation="C"), "postgresql")


decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("campaign", sa.String(128), primary_key=True),
    sa.Column("customer_id", _customer_id_type(), primary_key=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(64), nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("expected_value", sa.Float, nullable=False),
    sa.Column("churn_probability", sa.Float, nullable=False),
    sa.Column("clv", sa.Float, nullable=False),
    sa.Column("segment", sa.String(16), nullable=False),
    sa.Column("risk_band", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("model_version", sa.String(256), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("holdout", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
)
# cooldowns read a customer's recent decisions across campaigns: without it, every action of the period
decisions_by_customer = sa.Index("decisions_customer_decided_at", decisions.c.customer_id, decisions.c.decided_at)

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("campaign", sa.String(128), primary_key=True),
    sa.Column("customer_id", _customer_id_type(), primary_key=True),
    sa.Column("churned", sa.Boolean, nullable=False),
    sa.Column("revenue", sa.Float, nullable=False),
    sa.Column("horizon_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["campaign", "customer_id"], ["decisions.campaign", "decisions.customer_id"]),
)

# One row per customer ever decided: the row a decision locks, so that two decisions for one
# customer (any campaign, any replica) take turns and the second sees the first's cooldown.
customer_locks = sa.Table("customer_locks", metadata, sa.Column("customer_id", _customer_id_type(), primary_key=True))

# What a campaign has committed so far, per action (contacted and held-out customers: the budget
# and capacities of one run cover both, as `decide` allocates before holdouts are drawn). Kept
# in step with `decisions` by every insert, so a call reads a few rows, not the campaign.
campaign_spend = sa.Table(
    "campaign_spend",
    metadata,
    sa.Column("campaign", sa.String(128), primary_key=True),
    sa.Column("action", sa.String(64), primary_key=True),
    sa.Column("contacts", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
)

LEDGER_COLUMNS = [c.name for c in decisions.columns]
OUTCOME_COLUMNS = [c.name for c in outcomes.columns]
_TIMES = ("decided_at", "as_of", "horizon_end", "recorded_at")
_RECENT_COLUMNS = ["customer_id", "action", "decided_at"]
# ids per IN (...) list and rows per INSERT: far below SQLite's 32,766 variables
_CHUNK = 5_000
# how far past its deadline a decision's statement may run before its timeouts are set again (seconds)
_TIMEOUT_SLACK = 0.05
# first key of the campaigns' advisory locks, so they cannot meet another application's single-key locks
_CAMPAIGN_LOCK_SPACE = 16_016
# the advisory lock of a schema change (`Ledger._migrate_integer_ids`): replicas starting at once change it once
_SCHEMA_LOCK_SPACE = 16_017
# tables whose customer_id an older engine made an integer
_ID_TABLES = ("decisions", "outcomes", "customer_locks")


class TablesRecreatedError(StoreUnavailableError):
    """The ledger's tables were missing and have been created again: the decision can be retried at once."""


class Ledger:
    """Append-only record of decisions and outcomes.

    `timeout_seconds` bounds every wait on the store (statement and lock timeout, SQLite busy
    timeout) and a bounded decision as a whole; `statement_seconds` (default the same) the
    statements of batch runs and reports, which may read or write a whole campaign;
    `schema_seconds` the creation of missing tables and indexes (`ensure_schema`).
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 2.0,
        connect_timeout_seconds: int = 2,
        statement_seconds: float | None = None,
        schema_seconds: float = 600.0,
    ):
        self.url = url
        self.schema_seconds = schema_seconds
        self.timeout_seconds = timeout_seconds
        self.statement_seconds = statement_seconds or timeout_seconds
        self._engine = _create_engine(url, timeout_seconds, connect_timeout_seconds, self.statement_seconds)
        self._dialect = self._engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise StoreUnavailableError(f"ledger dialect {self._dialect!r} is not supported; use sqlite or postgresql")
        self._run(self.ensure_schema)

    @classmethod
    def for_settings(cls, settings: Settings, batch: bool = False) -> Ledger:
        """The ledger of `settings` with its timeouts; `batch` for runs and reports that handle whole campaigns."""
        timeouts = settings.timeouts
        return cls(
            settings.resolved_ledger_url,
            timeout_seconds=timeouts.ledger_seconds,
            connect_timeout_seconds=timeouts.ledger_connect_seconds,
            statement_seconds=timeouts.ledger_batch_seconds if batch else None,
            schema_seconds=timeouts.ledger_batch_seconds,
        )

    @property
    def _safe_url(self) -> str:
        return shown_url(self.url)

    # ------------------------------------------------------------------ schema
    def ensure_schema(self) -> None:
        """Create the tables and indexes that are missing; refuse a ledger made by an older version.

        What exists is read from the catalog first, so a ledger that is complete (every start
        of a replica) takes no lock on its tables. What is missing is created with `IF NOT
        EXISTS` (replicas starting at once) under the schema timeout (`schema_seconds`): an
        index added to the decisions of an older ledger takes longer than a request may.
        """
        with self._engine.begin() as conn:
            existing = sa.inspect(conn)
            tables = set(existing.get_table_names())
            indexes = {i["name"] for name in tables & {decisions.name} for i in existing.get_indexes(name)}
            missing_tables = [t for t in metadata.sorted_tables if t.name not in tables]
            missing_indexes = [i for t in metadata.sorted_tables for i in t.indexes if i.name not in indexes]
            if not missing_tables and not missing_indexes:
                self._check_columns(existing)
                if self._integer_id_tables(existing):
                    self._migrate_integer_ids(conn)
                return
            if self._dialect == "postgresql":
                conn.execute(
                    sa.text("SELECT set_config('statement_timeout', :ms, true)"),
                    {"ms": str(int(self.schema_seconds * 1000))},
                )
            for table in missing_tables:
                conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
            self._check_columns(sa.inspect(conn))
            if self._integer_id_tables(sa.inspect(conn)):
                self._migrate_integer_ids(conn)
            for index in missing_indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            if campaign_spend in missing_tables and decisions not in missing_tables:
                # a ledger from before campaign_spend: count what its campaigns committed
                totals = sa.select(
                    decisions.c.campaign, decisions.c.action, sa.func.count(), sa.func.sum(decisions.c.cost)
                ).where(decisions.c.action != "none").group_by(decisions.c.campaign, decisions.c.action)
                insert = self._insert_construct(campaign_spend).from_select(
                    ["campaign", "action", "contacts", "cost"], totals
                )
                conn.execute(insert.on_conflict_do_nothing())

    def _check_columns(self, existing: sa.Inspector) -> None:
        for table in (decisions, outcomes):
            have = {c["name"] for c in existing.get_columns(table.name)}
            missing = [c.name for c in table.columns if c.name not in have]
            if missing:
                raise StoreUnavailableError(
                    f"ledger at {self._safe_url}: table {table.name!r} lacks columns {missing}; it was made by "
                    f"an older version of the engine (move it aside or add the columns)"
                )

    @staticmethod
    def _integer_id_tables(existing: sa.Inspector) -> list[str]:
        """The tables whose customer_id is an integer column (a ledger made before ids were text)."""
        names = set(existing.get_table_names())
        return [
            name
            for name in _ID_TABLES
            if name in names
            and any(c["name"] == "customer_id" and isinstance(c["type"], sa.Integer) for c in existing.get_columns(name))
        ]

    def _migrate_integer_ids(self, conn: sa.Connection) -> None:
        """Make the integer customer_id columns of an older ledger text, in place, keeping every row.

        PostgreSQL: `ALTER COLUMN ... TYPE ... USING customer_id::text` under an advisory lock
        (the first replica changes it, the others find it done), the outcomes' foreign key
        dropped and made again around it. SQLite cannot change a column's type: each table
        is copied into a new one of the current schema (ids cast to text) within the
        transaction. Either way the change commits whole or not at all.
        """
        if self._dialect == "postgresql":
            conn.execute(
                sa.text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(self.schema_seconds * 1000))}
            )
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_SPACE, 0)))
            existing = sa.inspect(conn)  # again, under the lock: another replica may have done it meanwhile
            tables = self._integer_id_tables(existing)
            if not tables:
                return
            keys = [k for k in existing.get_foreign_keys(outcomes.name) if "customer_id" in k["constrained_columns"]]
            for key in keys:
                conn.execute(sa.text(f'ALTER TABLE {outcomes.name} DROP CONSTRAINT "{key["name"]}"'))
            for name in tables:
                conn.execute(
                    sa.text(
                        f'ALTER TABLE {name} ALTER COLUMN customer_id TYPE VARCHAR({MAX_ID_LENGTH}) COLLATE "C" '
                        "USING customer_id::text"
                    )
                )
            for key in keys:
                conn.execute(
                    sa.text(
                        f'ALTER TABLE {outcomes.name} ADD CONSTRAINT "{key["name"]}" FOREIGN KEY '
                        f'({", ".join(key["constrained_columns"])}) REFERENCES {key["referred_table"]} '
                        f'({", ".join(key["referred_columns"])})'
                    )
                )
            return
        existing = sa.inspect(conn)
        for name in self._integer_id_tables(existing):
            table = metadata.tables[name]
            have = {c["name"] for c in existing.get_columns(name)}
            for index in existing.get_indexes(name):
                conn.execute(sa.text(f'DROP INDEX "{index["name"]}"'))
            old = f"{name}_integer_ids"
            # legacy: renaming decisions must not rewrite the outcomes' foreign key to the old table
            conn.execute(sa.text("PRAGMA legacy_alter_table = ON"))
            conn.execute(sa.text(f"ALTER TABLE {name} RENAME TO {old}"))
            conn.execute(sa.text("PRAGMA legacy_alter_table = OFF"))
            conn.execute(sa.schema.CreateTable(table))
            columns = [c.name for c in table.columns if c.name in have]
            selected = ", ".join("CAST(customer_id AS TEXT)" if c == "customer_id" else c for c in columns)
            conn.execute(sa.text(f"INSERT INTO {name} ({', '.join(columns)}) SELECT {selected} FROM {old}"))
            conn.execute(sa.text(f"DROP TABLE {old}"))
            for index in table.indexes:
                conn.execute(sa.schema.CreateIndex(index))

    def check_writable(self) -> None:
        """Raise `StoreUnavailableError` unless the ledger has its schema and takes writes.

        Reads every column of the tables (a missing table is re-created, a missing column
        named) and writes a row that is rolled back (a read-only ledger, such as a standby
        after a failover, is named). Readiness runs it.
        """

        def probe() -> None:
            with self._engine.connect() as conn, conn.begin() as txn:
                for table in (decisions, outcomes, customer_locks, campaign_spend):
                    conn.execute(sa.select(*table.columns).where(sa.false()))
                # '' is no customer id (the service takes non-empty ones): nothing stays, and nothing is locked for long
                conn.execute(self._insert_construct(customer_locks).values(customer_id="").on_conflict_do_nothing())
                txn.rollback()

        self._run(probe)

    def ping(self) -> None:
        """Raise `StoreUnavailableError` unless the ledger answers a trivial query."""

        def select_one() -> None:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        self._run(select_one)

    # ------------------------------------------------------------------ decisions
    @contextmanager
    def deciding(
        self, campaign: str, customer_ids: Sequence[str | int], deadline: float | None = None
    ) -> Iterator[Decision]:
        """One decision transaction for `customer_ids` in `campaign`: locks taken, reads and inserts, commit.

        Ids are text (`churn/ids.py`; integers are taken as their decimal text), locked in
        code-point order.

        Commits when the block ends, rolls back (nothing recorded) when it raises. `deadline`
        (`time.monotonic()` seconds): every statement's timeout is what is left until then, and
        the commit happens before it or not at all (`StoreUnavailableError`): the service's
        caller told 503 finds no row.
        """
        ids = sorted(set(ids_text(customer_ids)))
        try:
            if self._dialect == "postgresql" and ids:
                # lock rows exist before the transaction locks them; inserted apart, in id order,
                # so that this insert never waits long (only on another one of these)
                with self._engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    for chunk in _chunks(ids):
                        conn.execute(
                            self._insert_construct(customer_locks).on_conflict_do_nothing(),
                            [{"customer_id": c} for c in chunk],
                        )
            with self._engine.connect() as conn:
                if self._dialect == "sqlite":
                    conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
                with conn.begin():
                    decision = Decision(self, conn, campaign, ids, deadline)
                    decision._lock()
                    yield decision
                    decision._check_deadline("before commit")
        except DBAPIError as exc:
            if _missing_table(exc):
                self._run(self.ensure_schema)
                raise TablesRecreatedError(
                    f"ledger at {self._safe_url} lacked its tables (dropped, or re-created empty); they are made again: "
                    "retry"
                ) from exc
            self._raise_store_error(exc)

    def record(
        self, rows: pd.DataFrame, campaign: str, decided_at: datetime | None = None, as_of: datetime | None = None
    ) -> pd.DataFrame:
        """Record decisions for `campaign`, in one transaction; return the ledger's rows for them.

        `rows` may carry `holdout` (default: nobody held out). `decided_at` is the engine's
        clock at the decision (`churn/clock.py`), `as_of` the date the scores describe and
        cooldowns count from; give at least one, the other defaults to it. Customers already
        decided in this campaign keep their first decision (nothing is overwritten), and the
        returned frame shows that recorded decision.
        """
        if decided_at is None and as_of is None:
            raise ValueError("Ledger.record needs decided_at or as_of (the ledger reads no clock of its own)")

        def insert() -> pd.DataFrame:
            with self.deciding(campaign, rows["customer_id"].tolist()) as decision:
                decision.insert(rows, decided_at=decided_at or as_of, as_of=as_of or decided_at)
                return decision.recorded()

        try:
            return insert()
        except TablesRecreatedError:  # a ledger re-created empty: its tables are back, record again
            return insert()

    # ------------------------------------------------------------------ outcomes
    def record_outcomes(
        self, rows: pd.DataFrame, source: str, recorded_at: datetime, deadline: float | None = None
    ) -> int:
        """Record outcomes (one per campaign x customer) at the engine's clock `recorded_at`; return how many were new.

        `rows` columns: campaign, customer_id (text or integer), churned, revenue, horizon_end. Every row must
        match a recorded decision; an outcome already recorded keeps its first value.
        `deadline` (`time.monotonic()` seconds): commit before it or record nothing (the service).
        """
        missing = sorted({"campaign", "customer_id", "churned", "revenue", "horizon_end"} - set(rows.columns))
        if missing:
            raise DataError(f"outcomes from {source} lack columns {missing}")
        rows = rows.assign(customer_id=ids_text(rows["customer_id"]))
        asked = rows[["campaign", "customer_id"]].astype({"campaign": str})
        known = pd.concat(
            [
                self._frame(
                    sa.select(decisions.c.campaign, decisions.c.customer_id).where(
                        decisions.c.campaign == campaign, decisions.c.customer_id.in_(chunk)
                    ),
                    ["campaign", "customer_id"],
                )
                for campaign, ids in asked.groupby("campaign")["customer_id"]
                for chunk in _chunks(sorted(set(ids.tolist())))
            ]
            or [pd.DataFrame(columns=["campaign", "customer_id"])]
        )
        keys = pd.MultiIndex.from_frame(known.astype({"campaign": str}))
        unknown = pd.MultiIndex.from_frame(asked)[~pd.MultiIndex.from_frame(asked).isin(keys)]
        if len(unknown):
            shown = ", ".join(f"{c}/{i}" for c, i in list(unknown)[:5])
            raise UnknownDecisionError(
                f"outcomes from {source}: {len(unknown)} rows name a campaign/customer with no recorded decision "
                f"(first: {shown}); nothing was recorded"
            )
        horizon_end = pd.to_datetime(rows["horizon_end"], utc=True)
        early = horizon_end > pd.Timestamp(recorded_at)
        if early.any():
            first = rows[early.to_numpy()].iloc[0]
            raise OutcomeNotYetKnownError(
                f"outcomes from {source}: {int(early.sum())} rows have a horizon_end after now ({recorded_at:%Y-%m-%d %H:%M} "
                f"UTC, the engine's clock): an outcome is known only once its horizon has ended (first: "
                f"{first['campaign']}/{first['customer_id']}, horizon_end {horizon_end[early].iloc[0]:%Y-%m-%d}); "
                "nothing was recorded"
            )
        records = (
            rows.assign(source=source, recorded_at=recorded_at)[OUTCOME_COLUMNS]
            .astype({"campaign": str, "churned": bool, "revenue": float})
            .to_dict("records")
        )

        def insert() -> int:
            with self._engine.begin() as conn:
                new = sum(len(self._insert_new(conn, outcomes, chunk, [outcomes.c.customer_id])) for chunk in _chunks(records))
                if deadline is not None and time.monotonic() > deadline:
                    raise StoreUnavailableError(
                        f"ledger at {self._safe_url}: recording the outcomes from {source} ran out of its time "
                        f"({self.timeout_seconds:g} s); rolled back, nothing recorded"
                    )
                return new

        return self._run(insert)

    # ------------------------------------------------------------------ reads
    def campaign_decisions(self, campaign: str) -> pd.DataFrame:
        """The recorded decisions of a campaign, by customer id."""
        return self.decisions_frame([campaign])

    def decisions_frame(self, campaigns: list[str] | None = None) -> pd.DataFrame:
        """Recorded decisions of `campaigns` (default all), by campaign and customer id."""
        query = sa.select(decisions)
        if campaigns is not None:
            query = query.where(decisions.c.campaign.in_(campaigns))
        return self._frame(query.order_by(decisions.c.campaign, decisions.c.customer_id), LEDGER_COLUMNS)

    def recent_actions(self, since: datetime, until: datetime, exclude_campaign: str | None = None) -> pd.DataFrame:
        """Actions (contacted or held out) of everyone, decided in [since, until] by the engine's clock.

        Returns customer_id, action, decided_at. Held-out customers count too: contacting them
        within the cooldown would spoil the measurement they are there for. A decision reads
        only its own customers' (`Decision.recent_actions`).
        """
        return self._frame(_recent_query(since, until, exclude_campaign), _RECENT_COLUMNS)

    def decisions_with_outcomes(self, campaigns: list[str] | None = None) -> pd.DataFrame:
        """Decisions with an action (contacted or held out) joined to their recorded outcomes."""
        query = sa.select(
            decisions, outcomes.c.churned, outcomes.c.revenue, outcomes.c.horizon_end
        ).join(
            outcomes,
            sa.and_(decisions.c.campaign == outcomes.c.campaign, decisions.c.customer_id == outcomes.c.customer_id),
        ).where(decisions.c.action != "none")
        if campaigns is not None:
            query = query.where(decisions.c.campaign.in_(campaigns))
        columns = LEDGER_COLUMNS + ["churned", "revenue", "horizon_end"]
        return self._frame(query.order_by(decisions.c.campaign, decisions.c.customer_id), columns)

    def outcome_cells(self) -> pd.DataFrame:
        """Decisions with an action and an outcome, summed per segment x action x holdout, in one query.

        Returns segment, action, holdout, n (outcomes), churned (churners), expected (summed
        churn probability at decision time): what `serving.learning.CellEffects.fit` reads,
        as `serving.learning.outcome_cells` computes it from rows. A few dozen rows, however
        many outcomes: the service learns from it without reading the outcomes themselves.
        """
        query = (
            sa.select(
                decisions.c.segment,
                decisions.c.action,
                decisions.c.holdout,
                sa.func.count().label("n"),
                sa.func.sum(sa.case((outcomes.c.churned, 1), else_=0)).label("churned"),
                sa.func.sum(decisions.c.churn_probability).label("expected"),
            )
            .join(
                outcomes,
                sa.and_(decisions.c.campaign == outcomes.c.campaign, decisions.c.customer_id == outcomes.c.customer_id),
            )
            .where(decisions.c.action != "none")
            .group_by(decisions.c.segment, decisions.c.action, decisions.c.holdout)
        )
        cells = self._frame(query, ["segment", "action", "holdout", "n", "churned", "expected"])
        cells = cells.astype({"holdout": bool, "n": int, "churned": int, "expected": float})
        # ordered here, not by the store: PostgreSQL's collation may order text other than Python does
        return cells.sort_values(["segment", "action", "holdout"], ignore_index=True)

    def outcome_count(self) -> int:
        """How many outcomes the ledger holds: a cheap check of whether there is anything new to learn from."""
        return int(self._frame(sa.select(sa.func.count().label("n")).select_from(outcomes), ["n"])["n"].iloc[0])

    def page(self, campaign: str, after_customer_id: str | int | None, limit: int) -> list[dict]:
        """Up to `limit` recorded decisions of a campaign with customer_id > `after_customer_id`, by customer id.

        Ids are ordered as text, by code point ("10" before "9"; an integer `after_customer_id`
        is its decimal text). Keyset paging: a campaign tool passes the last id it got to
        fetch the next page, which stays correct while decisions are being added.
        """
        query = sa.select(decisions).where(decisions.c.campaign == campaign)
        if after_customer_id is not None:
            query = query.where(decisions.c.customer_id > id_text(after_customer_id))

        def read() -> list[dict]:
            with self._engine.connect() as conn:
                return [dict(r) for r in conn.execute(query.order_by(decisions.c.customer_id).limit(limit)).mappings()]

        rows = self._run(read)
        # SQLite hands back naive datetimes; everything the engine writes is UTC
        return [{**row, "decided_at": row["decided_at"].replace(tzinfo=row["decided_at"].tzinfo or timezone.utc)} for row in rows]

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------ helpers
    def _frame(self, query: sa.Select, columns: list[str]) -> pd.DataFrame:
        def read() -> list:
            with self._engine.connect() as conn:
                return conn.execute(query).mappings().all()

        return _as_frame(self._run(read), columns)

    def _insert_construct(self, table: sa.Table):
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _insert_new(self, conn: sa.Connection, table: sa.Table, records: list[dict], returning: list) -> list:
        """Insert `records`; rows whose key exists are left as they are. Returns `returning` of the new rows."""
        if not records:
            return []
        statement = self._insert_construct(table).on_conflict_do_nothing().returning(*returning)
        return conn.execute(statement, records).all()

    def _run(self, work: Callable[[], T]) -> T:
        """`work()` with the store's errors as `StoreUnavailableError`; a missing table is re-created once."""
        try:
            return work()
        except DBAPIError as exc:
            if not _missing_table(exc):
                self._raise_store_error(exc)
        try:  # the schema went missing (a ledger re-created empty): make it again, then try once more
            self.ensure_schema()
            return work()
        except DBAPIError as exc:
            self._raise_store_error(exc)

    def _raise_store_error(self, exc: DBAPIError) -> None:
        """Raise what a store error means for the caller, naming the ledger; errors that are bugs are raised as they are."""
        error = self._store_error(exc)
        if error is None:
            raise exc
        raise error from exc

    def _store_error(self, exc: DBAPIError) -> StoreUnavailableError | None:
        code = getattr(exc.orig, "sqlstate", None)
        text = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        where = f"ledger at {self._safe_url}"
        if code == "57014":  # query_canceled: statement_timeout
            return StoreUnavailableError(
                f"{where} did not answer within {self.statement_seconds:g} s (statement timeout: a lock held elsewhere, or "
                f"an overloaded server): {text}"
            )
        if code == "55P03":  # lock_not_available: lock_timeout
            return StoreUnavailableError(
                f"{where}: a lock was not granted within {self.timeout_seconds:g} s (another decision, a batch run or a "
                f"table lock holds it): {text}"
            )
        if code == "25006":  # read_only_sql_transaction
            return StoreUnavailableError(f"{where} is read-only (a standby after a failover?): {text}")
        if "readonly database" in text:
            return StoreUnavailableError(f"{where} cannot be written (the file or its folder is read-only or gone): {text}")
        if "database is locked" in text:
            return StoreUnavailableError(f"{where} is locked by another writer for more than {self.timeout_seconds:g} s")
        if _missing_table(exc):
            return StoreUnavailableError(f"{where} lacks its tables (re-created now: retry): {text}")
        if isinstance(exc, (OperationalError, InternalError)):
            return StoreUnavailableError(f"{where} is unreachable: {text}")
        return None


class Decision:
    """One open decision transaction of `Ledger.deciding`: what the rules read, and the insert.

    Every read is limited to the transaction's customers and campaign.
    """

    def __init__(self, ledger: Ledger, conn: sa.Connection, campaign: str, customer_ids: list[str], deadline: float | None):
        self._ledger = ledger
        self._conn = conn
        self.campaign = campaign
        self.customer_ids = customer_ids
        self._deadline = deadline
        self._timeouts_set_at = float("-inf")  # never: the session's own timeouts hold until the first statement

    def _execute(self, statement, parameters=None):
        """Execute in the transaction; with a deadline, no statement may wait past it.

        PostgreSQL arms `statement_timeout` when a statement starts, so the transaction's
        timeouts are set to the time left, and set again once they would overrun the
        deadline by more than `_TIMEOUT_SLACK` (one extra round trip, not one per statement).
        """
        self._bound("waiting for the ledger")
        return self._conn.execute(statement, parameters) if parameters is not None else self._conn.execute(statement)

    def _bound(self, doing: str) -> None:
        """Before a statement: refuse past the deadline, and keep the timeouts within it."""
        if self._deadline is not None:
            left = self._check_deadline(doing)
            if self._ledger._dialect == "postgresql" and time.monotonic() - self._timeouts_set_at > _TIMEOUT_SLACK:
                self._set_timeouts(left)

    def _set_timeouts(self, left: float) -> None:
        self._timeouts_set_at = time.monotonic()
        ms = str(max(int(left * 1000), 1))
        self._conn.execute(
            sa.text("SELECT set_config('statement_timeout', :ms, true), set_config('lock_timeout', :ms, true)"),
            {"ms": ms},
        )

    def _check_deadline(self, doing: str) -> float:
        if self._deadline is None:
            return float("inf")
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise StoreUnavailableError(
                f"ledger at {self._ledger._safe_url}: the decision for campaign {self.campaign!r} ran out of its time "
                f"({self._ledger.timeout_seconds:g} s, {doing}); rolled back, nothing recorded"
            )
        return left

    def _lock(self) -> None:
        if self._ledger._dialect != "postgresql":
            return  # SQLite: BEGIN IMMEDIATE already made this the only writer
        self._execute(
            sa.select(sa.func.pg_advisory_xact_lock(_CAMPAIGN_LOCK_SPACE, sa.func.hashtext(self.campaign)))
        )
        for chunk in _chunks(self.customer_ids):
            self._execute(
                sa.select(customer_locks.c.customer_id)
                .where(customer_locks.c.customer_id.in_(chunk))
                .order_by(customer_locks.c.customer_id)
                .with_for_update()
            ).all()

    def recent_actions(self, since: datetime, until: datetime) -> pd.DataFrame:
        """The customers' actions in other campaigns decided in [since, until] (customer_id, action, decided_at)."""
        rows = [
            row
            for chunk in _chunks(self.customer_ids)
            for row in self._execute(_recent_query(since, until, self.campaign, chunk)).mappings().all()
        ]
        return _as_frame(rows, _RECENT_COLUMNS)

    def spent(self) -> pd.DataFrame:
        """What the campaign has committed so far per action: action, contacts, cost (held-out customers included)."""
        query = sa.select(campaign_spend.c.action, campaign_spend.c.contacts, campaign_spend.c.cost).where(
            campaign_spend.c.campaign == self.campaign
        )
        return _as_frame(self._execute(query).mappings().all(), ["action", "contacts", "cost"])

    def insert(self, rows: pd.DataFrame, decided_at: datetime, as_of: datetime) -> None:
        """Insert decisions (`LEDGER_COLUMNS` but campaign, decided_at, as_of; `holdout` optional) and count their spend.

        A customer already decided in the campaign keeps the first decision.
        """
        rows = rows.assign(customer_id=ids_text(rows["customer_id"]))
        unknown = sorted(set(rows["customer_id"]) - set(self.customer_ids))
        if unknown:
            raise ValueError(f"Decision.insert: customers {unknown[:10]} are not among the transaction's customers")
        rows = rows.assign(campaign=self.campaign, decided_at=decided_at, as_of=as_of)
        if "holdout" not in rows.columns:
            rows = rows.assign(holdout=False)
        records = rows[LEDGER_COLUMNS].astype({"holdout": bool}).to_dict("records")
        inserted: list = []
        for chunk in _chunks(records):
            self._bound("inserting")
            inserted += self._ledger._insert_new(self._conn, decisions, chunk, [decisions.c.action, decisions.c.cost])
        spend: dict[str, list] = {}
        for action, cost in inserted:
            if action != "none":
                contacts_cost = spend.setdefault(action, [0, 0.0])
                contacts_cost[0] += 1
                contacts_cost[1] += float(cost)
        if not spend:
            return
        upsert = self._ledger._insert_construct(campaign_spend)
        upsert = upsert.on_conflict_do_update(
            index_elements=[campaign_spend.c.campaign, campaign_spend.c.action],
            set_={
                "contacts": campaign_spend.c.contacts + upsert.excluded.contacts,
                "cost": campaign_spend.c.cost + upsert.excluded.cost,
            },
        )
        self._execute(
            upsert,
            [
                {"campaign": self.campaign, "action": action, "contacts": contacts, "cost": cost}
                for action, (contacts, cost) in spend.items()
            ],
        )

    def recorded(self) -> pd.DataFrame:
        """The campaign's recorded decisions of the transaction's customers, by customer id."""
        rows = [
            row
            for chunk in _chunks(self.customer_ids)
            for row in self._execute(
                sa.select(decisions)
                .where(decisions.c.campaign == self.campaign, decisions.c.customer_id.in_(chunk))
                .order_by(decisions.c.customer_id)
            ).mappings().all()
        ]
        return _as_frame(rows, LEDGER_COLUMNS)


def shown_url(url: str) -> str:
    """A ledger URL as messages show it: without its password."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _create_engine(url: str, timeout: float, connect_timeout: int, statement: float) -> sa.Engine:
    """An engine whose every wait is bounded (see `Ledger`)."""
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "postgresql":
        ms = lambda seconds: max(int(seconds * 1000), 1)  # noqa: E731
        connect_args = {
            "connect_timeout": max(int(connect_timeout), 2),
            "options": f"-c statement_timeout={ms(statement)} -c lock_timeout={ms(timeout)} "
            # the server lets go of a vanished client's locks within about 20 s
            "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=2",
            # a link that goes silent (black-holed) fails a waiting call in about timeout + 1 s, not never
            "keepalives": 1,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": max(int(timeout), 1),
            "tcp_user_timeout": ms(max(timeout, 1.0)),
        }
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if backend == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": timeout})

        @sa.event.listens_for(engine, "connect")
        def _engine_begins(dbapi_connection, _record) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, so a decision can ask for IMMEDIATE

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

        return engine
    return sa.create_engine(url)


def _recent_query(since: datetime, until: datetime, exclude_campaign: str | None, customer_ids: list[str] | None = None):
    query = sa.select(decisions.c.customer_id, decisions.c.action, decisions.c.decided_at).where(
        decisions.c.action != "none", decisions.c.decided_at >= since, decisions.c.decided_at <= until
    )
    if exclude_campaign is not None:
        query = query.where(decisions.c.campaign != exclude_campaign)
    if customer_ids is not None:
        query = query.where(decisions.c.customer_id.in_(customer_ids))
    return query


def _as_frame(rows: list, columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    if "customer_id" in columns:
        frame["customer_id"] = ids_text(frame["customer_id"])
    for column in set(_TIMES) & set(columns):
        # SQLite hands back naive datetimes; everything the engine writes is UTC
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _missing_table(exc: DBAPIError) -> bool:
    """Whether the store says a table does not exist (PostgreSQL 42P01, SQLite 'no such table')."""
    return getattr(exc.orig, "sqlstate", None) == "42P01" or "no such table" in str(exc.orig)
