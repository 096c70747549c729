"""The package as a user installs it: a wheel built from the sources, installed in a fresh
virtual environment, runs ``migrate`` from outside the repository (services found through
``MIGRATE_ROOT``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, history, versions

pytestmark = pytest.mark.slow


def _build_wheel(into: Path) -> Path:
    """``pip wheel`` on a copy of what the package is built from, so the build writes
    nothing in the work tree."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "alembic_common", source / "alembic_common",
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(into), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    if built.returncode and "Could not find a version" in built.stderr:
        pytest.skip(f"the build backend cannot be fetched: {built.stderr.strip()[-200:]}")
    assert built.returncode == 0, built.stderr
    (wheel,) = into.glob("*.whl")
    return wheel


def _console_script(wheel: Path, name: str) -> str:
    import configparser

    with zipfile.ZipFile(wheel) as held:
        (path,) = [n for n in held.namelist() if n.endswith(".dist-info/entry_points.txt")]
        points = configparser.ConfigParser()
        points.read_string(held.read(path).decode())
    return points["console_scripts"][name]


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    held = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "alembic_common"
    wanted = {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.suffix in (".py", ".sql", ".html") and "__pycache__" not in path.parts
    }
    assert wanted - held == set()


def test_the_installed_command_migrates_from_outside_the_repository(
    tmp_path: Path, db: str
) -> None:
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    env_site = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The wheel alone in the new environment; its dependencies from this one, by path (a
    # path on PYTHONPATH reads no .pth file, so this checkout's editable install is unseen).
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", env_site,
         str(wheel)],
        check=True,
    )  # fmt: skip
    # The console script the wheel declares, written as pip writes it into a venv's bin.
    entry = _console_script(wheel, "migrate")
    module, attr = entry.split(":")
    script = bin_dir / "migrate"
    script.write_text(
        f"#!{bin_dir / 'python'}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n"
    )
    script.chmod(0o755)
    env = {
        **os.environ,
        "PYTHONPATH": sysconfig.get_path("purelib"),
        "MIGRATE_ROOT": str(ROOT),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import alembic_common; print(alembic_common.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(env_site), where
    helped = subprocess.run(
        ["migrate", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert helped.returncode == 0 and "patient" in helped.stdout, helped.stderr
    for _ in range(2):  # to head, then a no-op
        done = subprocess.run(
            ["migrate", "patient", "up", "--contract", "--url", db],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert history(db) == versions("patient")
