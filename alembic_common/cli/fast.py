"""The fast path of the commonest runs: ``SERVICE up`` (on one database or a fleet) and
``SERVICE status``.

A container's start hook runs ``migrate SERVICE up`` on every start, nearly always with
nothing to do, a deployment runs it with work, a fleet's job runs it over every tenant's
database (``--targets-file`` or ``<SERVICE>_DATABASE_URLS``), and monitoring runs
``status``. They take the argv parsed here by hand, without building typer's app
(``SERVICE up|status``, ``--url URL`` at most once, ``--json``; for ``up`` also
``--targets-file FILE``, ``--jobs N`` and ``--per-host N``), and import only what they use:
the settings, the connections, the state and the plan. What this path cannot answer
(held steps, the embedded default, a targets file that is a pipe, a usage it does not
know) goes to the whole CLI before anything is done twice; work it runs here exactly as
the whole CLI does (``outcomes.run_one``, ``outcomes.fleet_up``), and an error, before the
work or during it, it reports as the whole CLI does (``shell.failed``): once, so a refused
password is tried once and a signal says what it interrupted.
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
    targets_file: str | None = None
    jobs: int = 4  # the whole CLI's defaults
    per_host: int = 2


FLEET_OPTIONS = ("--targets-file", "--jobs", "--per-host")  # up's only


def parse(argv: Sequence[str]) -> Asked | None:
    """What ``argv`` asks, when it is a run this path knows exactly; None otherwise."""
    if len(argv) < 2 or argv[1] not in COMMANDS or argv[0].startswith("-"):
        return None
    given: dict[str, str] = {}
    as_json = False
    rest = list(argv[2:])
    known = ("--url", *(FLEET_OPTIONS if argv[1] == "up" else ()))
    while rest:
        word = rest.pop(0)
        name, equals, value = word.partition("=")
        if word == "--json" and not as_json:
            as_json = True
        elif name in known and name not in given and equals and value:
            given[name] = value
        elif word in known and word not in given and rest and not rest[0].startswith("-"):
            given[word] = rest.pop(0)
        else:
            return None
    counts = {k: given.get(k, "") for k in ("--jobs", "--per-host")}
    if any(v and not (v.isascii() and v.isdigit() and int(v) >= 1) for v in counts.values()):
        return None  # the whole CLI's parser says what is wrong with it
    if any(
        os.environ.get(name) for name in ("MIGRATE_POOLER_URLS", redact.DEBUG, redact.SHOW_DATA)
    ):
        return None  # the contract gate's poolers, a traceback, data shown: the whole CLI's
    named = given.get("--targets-file")
    if named is not None and not os.path.isfile(named):
        return None  # a pipe is read once: the whole CLI reads it (and says what is wrong)
    upper = argv[0].upper()
    listed = any(f"{upper}_{kind}_URLS" in os.environ for kind in ("DATABASE", "MIGRATION"))
    if argv[1] == "status" and "--url" not in given and listed:
        return None  # a fleet's status
    return Asked(
        argv[0],
        argv[1],
        given.get("--url"),
        as_json,
        given.get("--targets-file"),
        int(counts["--jobs"] or Asked._field_defaults["jobs"]),
        int(counts["--per-host"] or Asked._field_defaults["per_host"]),
    )


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
            except redact.ReaderGone:
                raise
            except (Exception, KeyboardInterrupt) as exc:  # as the whole CLI says it, once
                return shell.failed(exc, argv, debug=False)
    except redact.ReaderGone:
        return shell.stdout_gone()


def _answer(asked: Asked, argv: Sequence[str], scrub: redact.Scrubber) -> int | None:
    from pathlib import Path

    from alembic_common.cli import render, shell
    from alembic_common.cli.connection import Connection, Selection
    from alembic_common.core import runner, settings
    from alembic_common.core.project import Project

    project = Project.find()
    if asked.service not in project.services:
        return None  # the whole CLI names it first, before any setting
    environment = settings.environment(os.environ.get("APP_ENV"), "APP_ENV")
    service = project.service(asked.service)
    chosen = Selection(Path(asked.targets_file) if asked.targets_file is not None else None)
    connection = Connection((asked.url,) if asked.url is not None else ())
    targets = connection.targets(service, chosen=chosen)
    many = len(targets) != 1 or chosen.given  # a fleet (up only: parse saw to that)
    if not many and targets[0].embedded_dir is not None:
        return None  # the whole CLI says that it uses the embedded server
    if asked.command == "status":
        report = runner.status(service, targets[0])
        with shell.reader_may_go():  # the exit code says what was found, read or not
            if asked.as_json:
                render.print_json(report.to_dict())
            else:
                render.show_status(report)
        return 0 if report.ok else 1
    if not many:
        result = runner.first_look(service, targets[0])
        if result is not None and (not result.noop or result.held):
            return None  # held steps to report: the whole CLI
        if result is not None:
            render.show_result(result, asked.as_json)
            return 0
    return _work(asked, argv, scrub, project, service, targets, many, environment)


def _work(
    asked: Asked,
    argv: Sequence[str],
    scrub: redact.Scrubber,
    project: Project,
    service: Service,
    targets: list[Settings],
    many: bool,
    environment: str,
) -> int:
    """``up`` with work on one database, or over a fleet, with the whole CLI's defaults,
    events, report, errors and exit code."""
    from alembic_common.cli import outcomes, render, shell
    from alembic_common.core import runner
    from alembic_common.fleets import fleet

    options = runner.RunOptions(environment=environment)
    reporter = render.Reporter(None, quiet=asked.as_json, scrub=scrub)
    try:
        if many:
            rollout = fleet.Rollout(parallel=asked.jobs, per_host=asked.per_host)
            jobs = [fleet.Job(service.name, t) for t in targets]
            return outcomes.fleet_up(
                project, service.name, jobs, options, rollout, reporter, None, asked.as_json
            )
        outcomes.run_one(
            project,
            targets[0],
            "up",
            lambda: runner.up(service, targets[0], None, options, reporter),
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
