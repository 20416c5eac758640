"""The engine's one clock: the business "now" of decisions, cooldowns, campaign ids and staleness.

Production reads the wall clock; the demo, the tests and the benchmarks pin it with the
setting `now` (`CHURN_NOW=2026-11-01T00:00:00Z`, or `now = ...` in `churn.toml`), so that a
run decides the same way on any date. No other module of the engine reads the wall clock for
a business date (durations are timed with `time.perf_counter`, which is no date).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from churn.settings import Settings


def now(settings: Settings) -> datetime:
    """The business "now" in UTC: `settings.now` when pinned, else the wall clock."""
    if settings.now is not None:
        return settings.now
    return datetime.now(timezone.utc)


def pinned(settings: Settings, when: datetime) -> Settings:
    """A copy of `settings` whose clock reads `when` unless the settings pin a clock already."""
    if settings.now is not None:
        return settings
    return settings.model_copy(update={"now": utc(when)})


def utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken as UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
