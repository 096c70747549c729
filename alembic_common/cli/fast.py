"""The fast path of the commonest runs: ``SERVICE up`` and ``SERVICE status``.

A container's start hook runs ``migrate SERVICE up`` on every start, nearly always with
nothing to do, a deployment runs it with work, and monitoring runs ``status``. They take
the argv parsed here by hand, without building typer's app (``SERVICE up|status``,
``--url URL`` at most once, ``--json``), and import only what they use: the settings, one
connection, the state and the plan. Until ``up`` has looked and found work, anything this
path cannot answer (an error, held steps, a usage it does not know) goes to the whole CLI,
which reads again and says what it says; once it has found work, it runs it here exactly
as the whole CLI runs one target (``outcomes.run_one``) and says how it ended as the whole
CLI does (``shell.failed``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from alembic_common.safety import redact

if TYPE_CHECKING:
    from alembic_common.core.project import Project
    from alembic_common.core.services import Service
    from alembic_common.core.settings import Settings

COMMANDS = ("up", "status")


class Asked(NamedTuple):
    service: str
    command: str
    url: str | None
    as_json: bool


def parse(argv: Sequence[str]) -> Asked | None:
    """What ``argv`` asks, when it is a run this path knows exactly; None otherwise."""
    if len(argv) < 2 or argv[1] not in COMMANDS or argv[0].startswith("-"):
        return None
    url: str | None = None
    as_json = False
    rest = list(argv[2:])
    while rest:
        word = rest.pop(0)
        if word == "--json" and not as_json:
            as_json = True
        elif word == "--url" and url is None and rest and not rest[0].startswith("-"):
            url = rest.pop(0)
        elif word.startswith("--url=") and url is None and len(word) > len("--url="):
            url = word[len("--url=") :]
        else:
            return None
    if any(
        os.environ.get(name) for name in ("MIGRATE_POOLER_URLS", "MIGRATE_DEBUG", redact.SHOW_DATA)
    ):
        return None  # the contract gate's poolers, a traceback, data shown: the whole CLI's
    upper = argv[0].upper()
    if url is None and any(
        f"{upper}_{kind}_URLS" in os.environ for kind in ("DATABASE", "MIGRATION")
    ):
        return None  # a fleet
    return Asked(argv[0], argv[1], url, as_json)


def run(argv: Sequence[str]) -> int | None:
    """The exit code of a run this path finished; None: the whole CLI takes it from the start."""
    asked = parse(argv)
    if asked is None:
        return None
    import warnings

    from alembic_common.cli import shell

    warnings.simplefilter("ignore")  # as the whole CLI does without --debug
    scrub = redact.Scrubber(redact.gather(argv, os.environ))
    try:
        with shell.scrubbed(scrub), shell.signals():
            try:
                return _answer(asked, argv, scrub)
            except KeyboardInterrupt as exc:  # a signal while looking: nothing was changed
                return shell.failed(exc, argv, debug=False)
    except redact.ReaderGone:
        return shell.stdout_gone()
    except Exception:  # the whole CLI reads again and reports it its way
        return None


def _answer(asked: Asked, argv: Sequence[str], scrub: redact.Scrubber) -> int | None:
    from alembic_common.cli import render
    from alembic_common.core import runner, settings
    from alembic_common.core.project import Project

    environment = settings.environment(os.environ.get("APP_ENV"), "APP_ENV")
    project = Project.find()
    if asked.service not in project.services:
        return None
    service = project.service(asked.service)
    resolved = settings.resolve(service.name, url=asked.url, root=service.root)
    if resolved.embedded_dir is not None:
        return None  # the whole CLI says that it uses the embedded server
    if asked.command == "status":
        report = runner.status(service, resolved)
        if asked.as_json:
            render.print_json(report.to_dict())
        else:
            render.show_status(report)
        return 0 if report.ok else 1
    result = runner.first_look(service, resolved)
    if result is None:
        return _work(asked, argv, scrub, project, service, resolved, environment)
    if not result.noop or result.held:
        return None  # held steps to report: the whole CLI
    render.show_result(result, asked.as_json)
    return 0


def _work(
    asked: Asked,
    argv: Sequence[str],
    scrub: redact.Scrubber,
    project: Project,
    service: Service,
    resolved: Settings,
    environment: str,
) -> int:
    """``up`` with work on one database, with the whole CLI's defaults, events and errors."""
    from alembic_common.cli import outcomes, render, shell
    from alembic_common.core import runner

    options = runner.RunOptions(environment=environment)
    reporter = render.Reporter(None, quiet=asked.as_json, scrub=scrub)
    try:
        outcomes.run_one(
            project,
            resolved,
            "up",
            lambda: runner.up(service, resolved, None, options, reporter),
            reporter,
            None,
            asked.as_json,
        )
    except redact.ReaderGone:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        return shell.failed(exc, argv, debug=False)
    return 0


def main() -> None:
    """The process's entry point: this path when it can, else the whole CLI."""
    code = run(sys.argv[1:])
    if code is None:
        from alembic_common.cli.frame import run as whole

        whole()
        return
    from alembic_common.cli import shell

    shell.finish(code)
