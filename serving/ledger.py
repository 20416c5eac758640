"""The decision ledger: every decision the engine made, and every outcome, in one SQL store.

SQLite by default, PostgreSQL when `ledger_url` says so (SQLAlchemy Core, one schema for
both). Recording is idempotent: (campaign, customer) is unique in both tables, so running
the same campaign twice records and contacts nobody twice, and ingesting the same outcomes
twice counts nobody twice. Held-out customers are decisions too (`holdout` true, with the
action they would have received), so effects can be measured from this store alone.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from churn.errors import DataError, OutcomeNotYetKnownError, StoreUnavailableError, UnknownDecisionError

metadata = sa.MetaData()

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("campaign", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.BigInteger, primary_key=True),
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

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("campaign", sa.String(128), primary_key=True),
    sa.Column("customer_id", sa.BigInteger, primary_key=True),
    sa.Column("churned", sa.Boolean, nullable=False),
    sa.Column("revenue", sa.Float, nullable=False),
    sa.Column("horizon_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["campaign", "customer_id"], ["decisions.campaign", "decisions.customer_id"]),
)

LEDGER_COLUMNS = [c.name for c in decisions.columns]
OUTCOME_COLUMNS = [c.name for c in outcomes.columns]
_TIMES = ("decided_at", "as_of", "horizon_end", "recorded_at")


class Ledger:
    """Append-only record of decisions."""

    def __init__(self, url: str):
        self.url = url
        self._engine = sa.create_engine(url, pool_pre_ping=True)
        try:
            metadata.create_all(self._engine)
            existing = sa.inspect(self._engine)
            for table in (decisions, outcomes):
                have = {c["name"] for c in existing.get_columns(table.name)}
                missing = [c.name for c in table.columns if c.name not in have]
                if missing:
                    raise StoreUnavailableError(
                        f"ledger at {self._safe_url}: table {table.name!r} lacks columns {missing}; it was made by "
                        f"an older version of the engine (move it aside or add the columns)"
                    )
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc

    @property
    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

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
        decided_at = decided_at or as_of
        rows = rows.assign(campaign=campaign, decided_at=decided_at, as_of=as_of or decided_at)
        if "holdout" not in rows.columns:
            rows = rows.assign(holdout=False)
        records = rows[LEDGER_COLUMNS].astype({"customer_id": "int64", "holdout": bool}).to_dict("records")
        self._insert(decisions, records)
        recorded = self.campaign_decisions(campaign)
        return recorded[recorded["customer_id"].isin(rows["customer_id"])].reset_index(drop=True)

    def record_outcomes(self, rows: pd.DataFrame, source: str, recorded_at: datetime) -> int:
        """Record outcomes (one per campaign x customer) at the engine's clock `recorded_at`; return how many were new.

        `rows` columns: campaign, customer_id, churned, revenue, horizon_end. Every row must
        match a recorded decision; an outcome already recorded keeps its first value.
        """
        missing = sorted({"campaign", "customer_id", "churned", "revenue", "horizon_end"} - set(rows.columns))
        if missing:
            raise DataError(f"outcomes from {source} lack columns {missing}")
        known = self.decisions_frame(sorted(rows["campaign"].astype(str).unique()))
        keys = pd.MultiIndex.from_frame(known[["campaign", "customer_id"]].astype({"customer_id": "int64"}))
        asked = pd.MultiIndex.from_frame(rows[["campaign", "customer_id"]].astype({"campaign": str, "customer_id": "int64"}))
        unknown = asked[~asked.isin(keys)]
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
        before = self._count(outcomes)
        records = (
            rows.assign(source=source, recorded_at=recorded_at)[OUTCOME_COLUMNS]
            .astype({"campaign": str, "customer_id": "int64", "churned": bool, "revenue": float})
            .to_dict("records")
        )
        self._insert(outcomes, records)
        return self._count(outcomes) - before

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
        """Actions (contacted or held out) decided in [since, until] by the engine's clock.

        Returns customer_id, action, decided_at. Held-out customers count too: contacting them
        within the cooldown would spoil the measurement they are there for.
        """
        query = sa.select(decisions.c.customer_id, decisions.c.action, decisions.c.decided_at).where(
            decisions.c.action != "none", decisions.c.decided_at >= since, decisions.c.decided_at <= until
        )
        if exclude_campaign is not None:
            query = query.where(decisions.c.campaign != exclude_campaign)
        return self._frame(query, ["customer_id", "action", "decided_at"])

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

    def _frame(self, query: sa.Select, columns: list[str]) -> pd.DataFrame:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc
        frame = pd.DataFrame(rows, columns=columns)
        for column in set(_TIMES) & set(columns):
            # SQLite hands back naive datetimes; everything the engine writes is UTC
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def _count(self, table: sa.Table) -> int:
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc

    def _insert(self, table: sa.Table, records: list[dict]) -> None:
        """Insert in one transaction; rows whose key exists are left as they are."""
        dialect = self._engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise StoreUnavailableError(f"ledger dialect {dialect!r} is not supported; use sqlite or postgresql")
        try:
            with self._engine.begin() as conn:
                for start in range(0, len(records), 5_000):
                    conn.execute(insert(table).on_conflict_do_nothing(), records[start : start + 5_000])
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc

    def page(self, campaign: str, after_customer_id: int | None, limit: int) -> list[dict]:
        """Up to `limit` recorded decisions of a campaign with customer_id > `after_customer_id`, by customer id.

        Keyset paging: a campaign tool passes the last id it got to fetch the next page, which
        stays correct while decisions are being added.
        """
        query = sa.select(decisions).where(decisions.c.campaign == campaign)
        if after_customer_id is not None:
            query = query.where(decisions.c.customer_id > after_customer_id)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query.order_by(decisions.c.customer_id).limit(limit)).mappings().all()
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc
        # SQLite hands back naive datetimes; everything the engine writes is UTC
        return [
            {**row, "decided_at": row["decided_at"].replace(tzinfo=row["decided_at"].tzinfo or timezone.utc)}
            for row in rows
        ]

    def ping(self) -> None:
        """Raise `StoreUnavailableError` unless the ledger answers a trivial query."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc

    def close(self) -> None:
        self._engine.dispose()
