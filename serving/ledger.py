"""The decision ledger: every decision the engine made, in one SQL store.

SQLite by default, PostgreSQL when `ledger_url` says so (SQLAlchemy Core, one schema for
both). Recording is idempotent: (campaign, customer) is unique, so running the same
campaign twice records and contacts nobody twice.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from churn.errors import StoreUnavailableError

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
)

LEDGER_COLUMNS = [c.name for c in decisions.columns]


class Ledger:
    """Append-only record of decisions."""

    def __init__(self, url: str):
        self.url = url
        self._engine = sa.create_engine(url, pool_pre_ping=True)
        try:
            metadata.create_all(self._engine)
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc

    @property
    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def record(self, rows: pd.DataFrame, campaign: str, decided_at: datetime | None = None) -> pd.DataFrame:
        """Record decisions for `campaign`, in one transaction; return the ledger's rows for them.

        Customers already decided in this campaign keep their first decision (nothing is
        overwritten), and the returned frame shows that recorded decision.
        """
        decided_at = decided_at or datetime.now(timezone.utc)
        records = (
            rows.assign(campaign=campaign, decided_at=decided_at)[LEDGER_COLUMNS]
            .astype({"customer_id": "int64"})
            .to_dict("records")
        )
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
                    conn.execute(insert(decisions).on_conflict_do_nothing(), records[start : start + 5_000])
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc
        recorded = self.campaign_decisions(campaign)
        return recorded[recorded["customer_id"].isin(rows["customer_id"])].reset_index(drop=True)

    def campaign_decisions(self, campaign: str) -> pd.DataFrame:
        """The recorded decisions of a campaign, by customer id."""
        query = sa.select(decisions).where(decisions.c.campaign == campaign)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query.order_by(decisions.c.customer_id)).mappings().all()
        except OperationalError as exc:
            raise StoreUnavailableError(f"ledger at {self._safe_url} is unreachable: {exc.orig}") from exc
        frame = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
        # SQLite hands back naive datetimes; everything the engine writes is UTC
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
        return frame

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
