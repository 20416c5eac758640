"""How the `churn` commands show their steps (`churn.cli._Steps`): one tick line per step with its time,
and for a step of counted parts a bar with done/total and an estimate of the time left (issue 17)."""

from __future__ import annotations

import re

from rich.console import Console
from rich.progress import Progress

import churn.cli as cli

from tests.code.test_cli_errors import ingest_shop


def _recording(monkeypatch) -> Console:
    console = Console(record=True, width=120, force_terminal=False)
    monkeypatch.setattr(cli, "console", console)
    return console


def test_each_step_is_ticked_once_with_its_time_when_the_next_starts_or_the_command_ends(monkeypatch):
    console = _recording(monkeypatch)
    with cli._Steps("train") as step:
        step("read the data")
        step("fit the models", 0, 3)
        step("fit the models", 1, 3)
        step("fit the models", 3, 3)
    lines = console.export_text().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"  ✓ read the data \(\d+\.\ds\)", lines[0]), lines
    assert re.fullmatch(r"  ✓ fit the models \(\d+\.\ds\)", lines[1]), lines


def test_a_failed_step_gets_no_tick(monkeypatch):
    console = _recording(monkeypatch)
    try:
        with cli._Steps() as step:
            step("one")
            step("two", 1, 2)
            raise RuntimeError("stop")
    except RuntimeError:
        pass
    assert [line.split(" (")[0] for line in console.export_text().splitlines()] == ["  ✓ one"]


def test_a_single_step_yields_its_parts_and_ends_in_one_unindented_tick(monkeypatch):
    console = _recording(monkeypatch)
    with cli._step("materialize") as parts:
        for done in (1, 2, 3):
            parts(done, 3)
    assert re.fullmatch(r"✓ materialize \(\d+\.\ds\)\n", console.export_text())


def test_counted_parts_show_done_of_total_and_an_estimate_once_there_is_a_pace():
    clock = [0.0]
    progress = Progress(get_time=lambda: clock[0])
    counted, spinner = progress.add_task("rows", total=2_000_000), progress.add_task("one query", total=None)
    clock[0] = 5.0
    progress.update(counted, completed=500_000)
    assert cli._PartsLeft().render(progress.tasks[counted]).plain == "500,000/2,000,000, estimating"
    clock[0] = 10.0
    progress.update(counted, completed=1_000_000)  # 100,000 rows a second: 10 s for the 1,000,000 left
    assert cli._PartsLeft().render(progress.tasks[counted]).plain == "1,000,000/2,000,000, about 0:00:10 left"
    assert cli._PartsLeft().render(progress.tasks[spinner]).plain == ""


def test_churn_ingest_prints_its_step_with_a_tick_and_its_time(tmp_path):
    _, result = ingest_shop(tmp_path)
    assert re.match(r"✓ ingest shop \(1 sources\) \(\d+\.\ds\)\n  customers 3 rows; 3 customers", result.output), result.output
