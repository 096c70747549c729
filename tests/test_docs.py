"""Docs that run: every shell block of the README and of the other Markdown files is run as
written, in a copy of the repository, against real PostgreSQL, and must exit 0.

A comment on the line above a block says how, when the default does not fit:

- (none): each service's ``<SERVICE>_DATABASE_URL`` names a fresh database of its own,
  owned by the migrating role (not a superuser), as on a managed server;
- ``<!-- run: embedded -->``: no connection setting at all, as on a newcomer's laptop (the
  embedded server, in the copy's ``.pgdata/``);
- ``<!-- run: given clinics.txt -->``: also a targets file of that name, listing three
  fresh databases of the service;
- ``<!-- not run: REASON -->``: not runnable here, and why (a test runs it another way, or
  it needs a Kubernetes cluster or a Docker engine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import CONNECTION_VARS, ROOT, create_database, drop_database, project_files

from alembic_common.core import services

pytestmark = pytest.mark.slow

_BLOCK = re.compile(
    r"^(?P<indent> *)```(?:bash|sh|shell)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
_MARK = re.compile(r"<!-- (run|not run): (.*?) -->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    body: str
    how: str  # "default", "embedded", "given clinics.txt", or "not run"
    why: str = ""

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _documents() -> list[Path]:
    return [ROOT / name for name in project_files() if name.endswith(".md")]


def blocks() -> list[Block]:
    found = []
    for path in _documents():
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marked = _MARK.search(above)
            body = "\n".join(
                row[len(match.group("indent")) :] for row in match.group("body").splitlines()
            )
            if marked is None:
                found.append(Block(path, line, body, "default"))
            elif marked.group(1) == "not run":
                found.append(Block(path, line, body, "not run", marked.group(2)))
            else:
                found.append(Block(path, line, body, marked.group(2)))
    return found


BLOCKS = blocks()


def test_the_docs_have_shell_blocks_and_say_why_any_is_not_run() -> None:
    assert any(b.path.name == "README.md" for b in BLOCKS)
    for block in BLOCKS:
        assert block.how in ("default", "embedded", "given clinics.txt", "not run"), block
        if block.how == "not run":
            assert len(block.why) > 20, f"{block}: say why it is not run here"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.how != "not run"], ids=str)
def test_each_shell_block_runs_as_written(block: Block, repository_copy: Path, server: str) -> None:
    copy = repository_copy
    env = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("VIRTUAL_ENV", None)
    made: list[str] = []
    if block.how != "embedded":
        for name in services.discover(copy):
            made.append(create_database(server))
            env[f"{name.upper()}_DATABASE_URL"] = made[-1]
    if block.how == "given clinics.txt":
        clinics = [create_database(server) for _ in range(3)]
        made += clinics
        (copy / "clinics.txt").write_text("".join(f"{url}\n" for url in clinics))
    try:
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.body],
            cwd=copy, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{block}:\n{block.body}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, done.stderr
        for url in made:  # the migrating role's password is in every URL: never printed
            password = unquote(urlsplit(url).password or "")
            assert password and password not in done.stdout + done.stderr
    finally:
        for url in made:
            drop_database(server, url)
