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

Their links hold too: every relative link names a file of the project, every ``#anchor`` a
heading of the page it points to (GitHub's anchors), and the README links every page of
``docs/``.
"""

from __future__ import annotations

import os
import re
import shutil
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
_FENCE = re.compile(r"^ *```.*?^ *```[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(([^()\s]+)\)")
_HEADING = re.compile(r"^(#{1,6}) +(.+?) *#* *$", re.M)


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


def _prose(text: str) -> str:
    """The text outside code: no fenced block, no code span (a ``#`` in a shell comment is no
    heading, a ``[x](y)`` in code no link)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but ``-`` and
    ``_`` left out, spaces made hyphens; a repeated one gets ``-1``, ``-2``, ..."""
    found: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", text)):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def links(path: Path) -> list[str]:
    """The targets of a page's Markdown links, as written."""
    return _LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_anchors_are_githubs() -> None:
    text = "# A no-op `up`\n## Production: least privilege, poolers\n## Tenant's rows\n## Tenant's rows\n"
    text += "```bash\n# 1. not a heading\n```\n"
    assert anchors(text) == {
        "a-no-op-up", "production-least-privilege-poolers", "tenants-rows", "tenants-rows-1"
    }  # fmt: skip


def test_every_relative_link_names_a_project_file_and_an_existing_heading() -> None:
    files = set(project_files())
    folders = {str(Path(name).parent) for name in files}
    broken = []
    for page in _documents():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not ours
                continue
            name, _, anchor = target.partition("#")
            linked = (page.parent / name).resolve() if name else page
            try:
                relative = linked.relative_to(ROOT).as_posix()
            except ValueError:
                broken.append(f"{page.relative_to(ROOT)}: {target} (outside the project)")
                continue
            if relative not in files and relative.rstrip("/") not in folders:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and (
                not relative.endswith(".md")
                or anchor not in anchors(linked.read_text(encoding="utf-8"))
            ):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_of_docs() -> None:
    readme = ROOT / "README.md"
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in links(readme)}
    pages = [p for p in _documents() if p.parent == ROOT / "docs"]
    assert pages
    assert not [p.name for p in pages if p.resolve() not in linked]


def test_the_docs_have_shell_blocks_and_say_why_any_is_not_run() -> None:
    assert any(b.path.name == "README.md" for b in BLOCKS)
    for block in BLOCKS:
        assert block.how in ("default", "embedded", "given clinics.txt", "not run"), block
        if block.how == "not run":
            assert len(block.why) > 20, f"{block}: say why it is not run here"


# What a block's command needs beyond Python and PostgreSQL: without it, the block skips.
NEEDS = {"all report": ("dot", "Graphviz's dot (apt-get install graphviz)")}


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.how != "not run"], ids=str)
def test_each_shell_block_runs_as_written(block: Block, repository_copy: Path, server: str) -> None:
    for phrase, (tool, what) in NEEDS.items():
        if phrase in block.body and shutil.which(tool) is None:
            pytest.skip(f"{block} runs '{phrase}', which needs {what}")
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
