"""The reference pages stay in step with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from churn.cli import app
from churn.settings import Settings
from features.raw import RAW_TABLES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text()


@pytest.mark.parametrize("table", sorted(RAW_TABLES))
def test_raw_contract_page_lists_every_column_with_its_kind(table):
    page = _read("raw-data-contract.md")
    spec = RAW_TABLES[table]
    assert f"## {spec.file}" in page
    section = page.split(f"## {spec.file}")[1].split("\n## ")[0]
    for column, kind in spec.columns.items():
        assert re.search(rf"\| {column} \| {kind} \|", section), f"{spec.file}: column {column} ({kind}) not documented"


def _commands(group, prefix=""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}"


def test_cli_page_lists_every_command():
    page = _read("cli.md")
    commands = list(_commands(get_command(app)))
    assert len(commands) >= 9
    for command in commands:
        assert f"`churn {command}`" in page, f"churn {command} is not in docs/cli.md"


def test_cli_page_lists_every_setting():
    page = _read("cli.md")
    names = []
    for name, field in Settings.model_fields.items():
        nested = getattr(field.annotation, "model_fields", None)
        names += [f"{name}.{sub}" for sub in nested] if nested else [name]
    for name in names:
        assert f"| `{name}` |" in page, f"setting {name} is not in docs/cli.md"


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)[^)#]+)", readme)
    assert links
    for link in links:
        assert (ROOT / link).exists(), f"README links to missing {link}"
