"""One clock: the business "now" comes from `churn/clock.py` and the setting `now` alone."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from churn import clock
from churn.errors import ConfigError
from churn.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
# reading the wall clock for a date; durations use time.perf_counter / time.monotonic, which are no date
WALL_CLOCK = re.compile(r"datetime\.now\(|datetime\.utcnow\(|date\.today\(|datetime\.today\(|Timestamp\.(now|today|utcnow)\(|Timestamp\(['\"](now|today)['\"]\)|time\.time\(\)")


def test_no_library_module_reads_the_wall_clock_but_the_clock():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("churn", "features", "training", "serving")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "churn" / "clock.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if WALL_CLOCK.search(line)
    ]
    assert offenders == []


def test_the_pattern_finds_a_wall_clock_read():
    """The check above is not vacuous: it sees the clock module's own read."""
    assert WALL_CLOCK.search((ROOT / "churn" / "clock.py").read_text())


def test_now_is_pinned_by_the_setting_and_is_utc(monkeypatch, tmp_path):
    monkeypatch.setenv("CHURN_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("CHURN_NOW", "2031-02-03")
    assert clock.now(load_settings()) == datetime(2031, 2, 3, tzinfo=timezone.utc)
    monkeypatch.setenv("CHURN_NOW", "2031-02-03T05:00:00+02:00")
    assert clock.now(load_settings()) == datetime(2031, 2, 3, 3, tzinfo=timezone.utc)
    monkeypatch.setenv("CHURN_NOW", "next tuesday")
    with pytest.raises(ConfigError, match=r"now: .*\(got 'next tuesday'\)"):
        load_settings()


def test_unpinned_the_clock_is_the_wall_clock(monkeypatch, tmp_path):
    monkeypatch.setenv("CHURN_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("CHURN_NOW", raising=False)
    before = datetime.now(timezone.utc)
    read = clock.now(load_settings())
    assert before <= read <= datetime.now(timezone.utc)
    assert read.tzinfo is not None


def test_pinned_keeps_a_clock_the_settings_already_pin(monkeypatch, tmp_path):
    monkeypatch.delenv("CHURN_NOW", raising=False)
    settings = load_settings(data_dir=tmp_path, now=datetime(2030, 1, 1))
    assert clock.pinned(settings, datetime(2020, 1, 1)).now == datetime(2030, 1, 1, tzinfo=timezone.utc)
    unpinned = load_settings(data_dir=tmp_path)
    assert clock.pinned(unpinned, datetime(2020, 1, 1) + timedelta(hours=1)).now == datetime(
        2020, 1, 1, 1, tzinfo=timezone.utc
    )


def test_training_ends_at_the_clock_on_the_weekly_snapshot_grid(tmp_path):
    """Training as of a past date uses nothing after it, and its cutoffs stay on the snapshot dates."""
    from datetime import datetime, timedelta, timezone

    from tests.conftest import make_settings
    from training.backtest import training_end

    data_end = datetime(2027, 4, 20, tzinfo=timezone.utc)
    views = {"data_end": data_end.isoformat()}
    settings = make_settings(tmp_path)
    assert training_end(settings.model_copy(update={"now": data_end + timedelta(days=40)}), views) == data_end
    assert training_end(settings.model_copy(update={"now": data_end - timedelta(days=210)}), views) == data_end - timedelta(weeks=30)
    # between two snapshots: the one before the clock
    assert training_end(settings.model_copy(update={"now": data_end - timedelta(days=90)}), views) == data_end - timedelta(weeks=13)
