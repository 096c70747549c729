"""Files the toolkit writes: checked before a run, written without following planted links.

A whole file (metrics, manifests) is written to a temporary file created exclusively in
the destination folder, then renamed over the target: readers never see half a file,
and a symlink planted at the target is replaced, never followed. Appended files (run
events) are opened with ``O_NOFOLLOW``. Nothing is created world-writable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from alembic_common.errors import UsageError

WHOLE_FILE_MODE = 0o644  # node_exporter's textfile collector must read it
APPENDED_MODE = 0o640


def check_target(path: Path, option: str, *, replaced: bool = True) -> None:
    """Refuse, before any work, a file path whose folder is missing or not writable; a file
    that will be ``replaced`` (written whole) must be a regular one, never a device or a
    pipe (a file appended to, as --events, may be one)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name in it")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {folder} is not writable")
    if path.is_symlink():
        raise UsageError(f"{option} {path} is a symbolic link; give the real file")
    if replaced and path.exists() and not path.is_file():
        raise UsageError(f"{option} {path} is not a regular file (a device, a pipe or a socket)")


def write_whole(path: Path, text: str, mode: int = WHOLE_FILE_MODE) -> None:
    """Replace ``path`` with ``text`` atomically, through an exclusive temporary file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode & ~0o002)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def append(path: Path, text: str) -> None:
    """Append ``text`` in one write (lines from several processes never interleave)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, APPENDED_MODE)
    try:
        with contextlib.suppress(OSError):  # not ours to change, or already fine
            if os.fstat(fd).st_mode & 0o002:
                os.fchmod(fd, os.fstat(fd).st_mode & 0o775)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
