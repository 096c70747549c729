"""``plan --format markdown``: the plan as a pull-request comment, read back by a Markdown
parser (markdown-it, GitHub's table rules) as the reader's browser would: one table per
version, a row per statement with its lock, every statement as it would run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import SERVICES, run_cli
from markdown_it import MarkdownIt

from alembic_common.authoring import offline
from alembic_common.core import services

SHOWN = 400  # the cut the comment applies to a long statement


def _tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """(the heading above it, its body rows as cell texts) for each table in ``text``."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    found: list[tuple[str, list[list[str]]]] = []
    heading, rows, row, in_body = "", [], [], False
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            heading = tokens[i + 1].content
        elif tok.type == "tbody_open":
            in_body, rows = True, []
        elif tok.type == "tbody_close":
            in_body = False
            found.append((heading, rows))
        elif in_body and tok.type == "tr_open":
            row = []
        elif in_body and tok.type == "tr_close":
            rows.append(row)
        elif in_body and tok.type == "inline":
            row.append("".join(c.content for c in tok.children or []))
    return found


def _shown(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


@pytest.mark.parametrize("service", SERVICES)
def test_every_version_is_a_table_of_its_statements_with_their_locks(service: str) -> None:
    done = run_cli(service, "plan", "--format", "markdown", "--contract")
    assert done.exit_code == 0, done.output
    expected: Any = offline.review(services.get(service), None, contract=True)
    tables = _tables(done.stdout)
    assert [h for h, _ in tables] == [
        f"Version {v.version}: {' '.join(v.description.split())}" for v in expected.versions
    ]
    for (_, rows), version in zip(tables, expected.versions, strict=True):
        statements = [s for s in version.statements if not s.bookkeeping]
        assert [r[2] for r in rows] == [_shown(s.sql) for s in statements]
        assert [r[0] for r in rows] == [
            "-" if s.lock == "-" else f"{s.lock} on {s.table}: {s.effect}" for s in statements
        ]


def test_verbose_adds_the_bookkeeping_rows() -> None:
    service = SERVICES[0]
    plain = run_cli(service, "plan", "--format", "markdown")
    verbose = run_cli(service, "plan", "--format", "markdown", "--verbose")
    count = sum(len(rows) for _, rows in _tables(plain.stdout))
    assert sum(len(rows) for _, rows in _tables(verbose.stdout)) > count
    assert "bookkeeping not shown" in plain.stdout and "not shown" not in verbose.stdout


@pytest.mark.parametrize(
    "args",
    [("--format", "html"), ("--format", "json", "--sql"), ("--sql", "--json")],
)
def test_a_bad_or_double_format_is_a_usage_error(args: tuple[str, ...]) -> None:
    done = run_cli(SERVICES[0], "plan", *args)
    assert done.exit_code == 2
    assert done.stderr.strip().splitlines()[-1].startswith("migrate: error: ")
    if "--json" in args:  # a JSON failure object, as every --json command prints
        assert json.loads(done.stdout)["ok"] is False
    else:
        assert done.stdout == ""


@pytest.mark.parametrize("fmt", ["table", "markdown"])
@pytest.mark.parametrize("name", SERVICES)
def test_a_plan_that_stops_at_a_held_contract_step_says_so(name: str, fmt: str) -> None:
    held = [m.version for m in services.get(name).migrations if m.phase == "contract"]
    if not held:
        pytest.skip(f"{name} has no contract step")
    done = run_cli(name, "plan", "--format", fmt)
    assert done.exit_code == 0, done.output
    assert f"wait for contract step {held[0]}" in done.stdout and "--contract" in done.stdout
    whole = run_cli(name, "plan", "--format", fmt, "--contract")
    assert "wait for contract step" not in whole.stdout, whole.stdout
