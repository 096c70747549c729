"""One history on disk: the toolkit and plain Alembic agree on every service's revisions and
head, and a versions folder holding a file they would read differently is refused, naming it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, SERVICES, run_cli

from alembic_common.core import services
from alembic_common.errors import ScriptError


def alembic_revisions(service: services.Service) -> tuple[set[str], tuple[str, ...]]:
    """What plain Alembic reads from the folder: every revision, and the heads."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(service.config())
    return {s.revision for s in script.walk_revisions()}, tuple(script.get_heads())


@pytest.mark.parametrize("name", SERVICES)
def test_the_toolkit_and_alembic_agree_on_every_service(name: str) -> None:
    service = services.get(name, ROOT)
    revisions, heads = alembic_revisions(service)
    assert revisions == {m.revision for m in service.migrations}
    assert heads == (services.revision_id(service.head or 0),)


def step(revision: str, down: str | None) -> str:
    return (
        f'"""A step"""\n\nrevision = "{revision}"\ndown_revision = {down!r}\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    pass\n\n\n"
        "def downgrade():\n    pass\n"
    )


def copy_of(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "services", tmp_path / "services", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


# name -> the revision its file declares; every one of these Alembic would load, and the
# toolkit would place differently or not at all.
REFUSED = {
    "0002_second_copy.py": "0002",  # a second file for an existing version
    "00002_padded.py": "0002",  # the same number, written longer
    "0099_Upper_Case.py": "0099",
    "0099-dashed.py": "0099",
    "notes.py": "0099",
    "٠٠٩٩_arabic_digits.py": "0099",
    "0099_x.PY.py": "0099",
}
# Names neither loads: both agree the history is unchanged.
IGNORED = [
    ".#0099_editor_lock.py",
    "0099_backup.py.bak",
    "__init__.py",
    "0099_compiled.pyc",
    "README",
]


@pytest.mark.parametrize("filename", sorted(REFUSED))
def test_a_file_alembic_would_load_but_the_toolkit_cannot_place_is_refused(
    tmp_path: Path, filename: str
) -> None:
    root = copy_of(tmp_path)
    service = services.get("user", root)
    head = service.head
    (service.versions_dir / filename).write_text(step(REFUSED[filename], f"{head:04d}"))
    fresh = services.Service("user", service.path)
    with pytest.raises(ScriptError) as refused:
        _ = fresh.migrations
    assert filename in str(refused.value)
    result = run_cli("user", "lint", "--all", env={"MIGRATE_ROOT": str(root)})
    assert result.exit_code != 0 and filename in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("filename", IGNORED)
def test_a_file_neither_loads_changes_nothing(tmp_path: Path, filename: str) -> None:
    root = copy_of(tmp_path)
    service = services.get("user", root)
    head = service.head
    (service.versions_dir / filename).write_text(step("0099", f"{head:04d}"))
    fresh = services.Service("user", service.path)
    revisions, heads = alembic_revisions(fresh)
    assert revisions == {m.revision for m in fresh.migrations}
    assert heads == (f"{head:04d}",) and fresh.head == head
