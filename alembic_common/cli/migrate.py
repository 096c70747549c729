"""The migrate commands: ``up``, ``down`` and ``status`` of one service, on one database or several.

Each parses its options, calls one library function and renders what comes back. Every
run that changes anything writes ``run_started`` then, however it ends (an error, a
signal), ``failed`` and ``run_finished`` events and its metrics.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from alembic_common.cli import options, shell
from alembic_common.cli.connection import Connection, Selection
from alembic_common.cli.frame import app, is_all, is_embedded, project_of, service_of
from alembic_common.cli.options import (
    VERSION_PARSER,
    AcceptChanged,
    Atomic,
    Canary,
    Contract,
    Env,
    Events,
    HoldContract,
    Jobs,
    Json,
    LockTimeout,
    LockWait,
    MaxFailures,
    MetricsFile,
    MetricsPerTarget,
    Only,
    PerHost,
    RegistryQuery,
    RegistryUrl,
    Retries,
    Shard,
    StatementTimeout,
    TargetsFile,
    Wait,
    WaveSize,
    with_connection,
)
from alembic_common.cli.outcomes import Pair, fleet_up, run_fleet, run_one, scrubber, write_metrics
from alembic_common.cli.render import (
    Reporter,
    err,
    out,
    print_json,
    show_status,
    spans,
    wrapped,
)
from alembic_common.core import runner, services, xargs
from alembic_common.core.locking import DEFAULT_LOCK_WAIT
from alembic_common.errors import UsageError
from alembic_common.fleets import fleet

# --- up ------------------------------------------------------------------------------------


@app.command()
@with_connection
def up(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", help="Apply up to and including this version.", parser=VERSION_PARSER
        ),
    ] = None,
    wait: Wait = 0,
    lock_wait: LockWait = DEFAULT_LOCK_WAIT,
    lock_timeout: LockTimeout = 5.0,
    statement_timeout: StatementTimeout = 0,
    retries: Retries = 3,
    atomic: Atomic = False,
    contract: Contract = False,
    hold_contract: HoldContract = False,
    accept_changed: AcceptChanged = False,
    backup: Annotated[
        bool | None,
        typer.Option(
            "--backup/--no-backup",
            help="Take a verified pg_dump before the first change (only when there is work). "
            "Default: on in production (APP_ENV), off elsewhere.",
        ),
    ] = None,
    backup_to: Annotated[
        Path | None,
        typer.Option(
            "--backup-to",
            metavar="DIR",
            help="Folder for that backup (default $MIGRATE_BACKUP_DIR, else backups/).",
        ),
    ] = None,
    on_failure: Annotated[
        str,
        typer.Option(
            "--on-failure",
            metavar="stop|rollback",
            help="rollback: when a step fails, undo the steps this run applied, newest first, "
            "by their downgrades, or restore the run's backup if one is irreversible or its "
            "downgrade fails (needs --backup or production). Under --atomic nothing of the "
            "batch is ever left applied, which is the same outcome.",
        ),
    ] = "stop",
    jobs: Jobs = 4,
    events: Events = None,
    metrics_file: MetricsFile = None,
    as_json: Json = False,
    targets_file: TargetsFile = None,
    registry_url: RegistryUrl = None,
    registry_query: RegistryQuery = None,
    shard: Shard = None,
    only: Only = None,
    per_host: PerHost = 2,
    canary: Canary = None,
    wave_size: WaveSize = None,
    max_failures: MaxFailures = None,
    metrics_per_target: MetricsPerTarget = False,
) -> None:
    """Apply pending migrations (all, or up to --version); 'all up' does every service in order.

    Over many databases (a fleet) every target is first looked at on one short connection;
    only those with work are migrated, at most --jobs at once and --per-host on one server,
    canary first, then in waves. The summary counts the outcomes and lists failures and
    held targets; a rerun of the same command finishes what did not (finished targets are
    no-ops).
    """
    options.outputs(events, metrics_file)
    chosen = Selection(targets_file, registry_url, registry_query, shard, only)
    chosen.check()
    options.share(canary, "--canary")
    options.share(max_failures, "--max-failures")
    if contract and hold_contract:
        raise UsageError("--contract and --hold-contract contradict each other; give one")
    if backup_to is not None and backup_to.exists() and not backup_to.is_dir():
        raise UsageError(f"--backup-to {backup_to} is not a folder")
    run_options = runner.RunOptions(
        wait=wait,
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        atomic=atomic,
        contract=contract,
        hold_contract=hold_contract,
        accept_changed=accept_changed,
        environment=options.environment(None),
        backup=backup,
        backup_dir=str(backup_to) if backup_to is not None else None,
        on_failure=on_failure.strip().lower(),
    )
    reporter = Reporter(events, quiet=as_json, scrub=scrubber())
    project = project_of(ctx)
    runner.refuse_rollback_without_backup(
        "all" if is_all(ctx) else service_of(ctx).name, run_options
    )
    if is_all(ctx):
        from alembic_common.cli.platform import all_up

        if chosen.given:
            raise UsageError("'all up' takes no targets file, registry, --shard or --only")
        if version is not None or conn.url:
            raise UsageError(
                "'all up' takes neither --version nor --url: each service uses its own settings"
            )
        all_up(project, conn, run_options, jobs, reporter, metrics_file, as_json)
        return
    service = service_of(ctx)
    if version is not None:  # usage errors come before any connection is made
        runner.check_version(service, service.disk_versions(), version)
    targets = conn.targets(service, say=err, chosen=chosen)
    if len(targets) != 1 or chosen.given:
        rollout = fleet.Rollout(
            parallel=jobs,
            per_host=per_host,
            canary=limit(canary, len(targets), "--canary") or 0,
            wave_size=wave_size,
            max_failures=limit(max_failures, len(targets), "--max-failures"),
        )
        ended = fleet_up(
            project,
            service.name,
            [fleet.Job(service.name, t, version) for t in targets],
            run_options,
            rollout,
            reporter,
            metrics_file,
            as_json,
            metrics_per_target,
        )
        if ended:
            raise typer.Exit(ended)
        return
    run_one(
        project,
        targets[0],
        "up",
        lambda: runner.up(service, targets[0], version, run_options, reporter),
        reporter,
        metrics_file,
        as_json,
    )


def limit(text: str | None, total: int, option: str) -> int | None:
    from alembic_common.fleets.targets import limit as within

    return None if text is None else within(text, total, option)


# --- down ----------------------------------------------------------------------------------


@app.command()
@with_connection
def down(
    ctx: typer.Context,
    conn: Connection,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", help="Roll back this version and every later one.", parser=VERSION_PARSER
        ),
    ] = None,
    env: Env = None,
    allow_production: Annotated[
        bool,
        typer.Option(
            "--allow-production", help="Permit 'down' when the environment is production."
        ),
    ] = False,
    lock_wait: LockWait = DEFAULT_LOCK_WAIT,
    lock_timeout: LockTimeout = 5.0,
    statement_timeout: StatementTimeout = 0,
    retries: Retries = 3,
    events: Events = None,
    metrics_file: MetricsFile = None,
    as_json: Json = False,
    x: Annotated[
        list[str] | None,
        typer.Option(
            "-x",
            "--x-arg",
            metavar="KEY=VALUE",
            help="Passed to the migrations as Alembic's -x (repeatable). A downgrade that "
            "would lose data refuses unless told what to do, e.g. patient's version 3: "
            "-x rh_null=NULL maps blood type Rh-null to NULL.",
        ),
    ] = None,
) -> None:
    """Roll back --version N and every later version, newest first (development only)."""
    service = service_of(ctx)
    if version is None:
        raise UsageError(
            f"{service.name}: down needs --version N (the oldest version to roll back)",
            service=service.name,
        )
    x_arguments = xargs.parse(x or [])
    options.outputs(events, metrics_file)
    run_options = runner.RunOptions(
        lock_wait=lock_wait,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
        retries=retries,
        environment=options.environment(env),
        allow_production=allow_production,
    )
    # Usage errors and the production guard come before any connection is made.
    runner.check_version(service, service.disk_versions(), version)
    xargs.check((m for m in service.migrations if m.version >= version), x_arguments)
    runner.refuse_production(service, "down", run_options)
    settings = conn.settings(service, say=err)
    reporter = Reporter(events, quiet=as_json, scrub=scrubber())
    with xargs.given(x_arguments):
        run_one(
            project_of(ctx),
            settings,
            "down",
            lambda: runner.down(service, settings, version, run_options, reporter),
            reporter,
            metrics_file,
            as_json,
        )


# --- status --------------------------------------------------------------------------------


@app.command()
@with_connection
def status(
    ctx: typer.Context,
    conn: Connection,
    jobs: Jobs = 4,
    metrics_file: MetricsFile = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Also exit 1 when an applied step's SQL changed since it ran, when a step "
            "stopped part-way, or when a constraint is NOT VALID or an index INVALID.",
        ),
    ] = False,
    as_json: Json = False,
    targets_file: TargetsFile = None,
    registry_url: RegistryUrl = None,
    registry_query: RegistryQuery = None,
    shard: Shard = None,
    only: Only = None,
    metrics_per_target: MetricsPerTarget = False,
) -> None:
    """List every version with its state; exit 1 if the database is ahead or inconsistent.

    'all status' shows every service in one table and exits 1 if any is behind, ahead,
    inconsistent or waiting on another service. Over many databases, each is read on one
    short connection, --jobs (at least 16) at a time, with no Alembic. 'embedded status'
    shows the embedded server: its data folder, whether it runs, and its databases.
    """
    if is_embedded(ctx):
        from alembic_common.cli.ops import show_embedded

        if conn.url or metrics_file is not None or strict:
            raise UsageError("'embedded status' takes only --json")
        show_embedded(project_of(ctx).data_dir, as_json)
        return
    options.outputs(None, metrics_file)
    chosen = Selection(targets_file, registry_url, registry_query, shard, only)
    chosen.check()
    if is_all(ctx):
        from alembic_common.cli.platform import all_status

        if chosen.given:
            raise UsageError("'all status' takes no targets file, registry, --shard or --only")
        if conn.url:
            raise UsageError(
                "'all status' takes no --url: each service uses its own settings "
                "(<SERVICE>_DATABASE_URL)"
            )
        all_status(project_of(ctx), conn, metrics_file, as_json)
        return
    service = service_of(ctx)
    targets = conn.targets(service, say=err, chosen=chosen)
    if len(targets) != 1 or chosen.given:
        jobs_list = [fleet.Job(service.name, t) for t in targets]
        pairs = run_fleet(
            [j.settings for j in jobs_list],
            as_json,
            lambda advance: fleet.check(
                jobs_list,
                fleet.status_work,
                root=project_of(ctx).root,
                threads=max(jobs, fleet.CHECK_THREADS),
                on_outcome=advance,
            ),
        )
        show_target_status(service, pairs, as_json)
        if metrics_file is not None:
            write_metrics(
                project_of(ctx),
                metrics_file,
                pairs,
                run=False,
                aggregate=True,
                per_target=metrics_per_target,
            )
        wrong = [o for _, o in pairs if not (isinstance(o.result, runner.Status) and o.result.ok)]
        if wrong:
            err(f"migrate: error: status: {len(wrong)} of {len(pairs)} database(s) need a look")
            raise typer.Exit(1)
        return
    report = runner.status(service, targets[0])
    if metrics_file is not None:
        outcome = fleet.Outcome(service.name, targets[0].display, "ok", report)
        write_metrics(project_of(ctx), metrics_file, [(targets[0], outcome)], run=False)
    with shell.reader_may_go():  # the exit code says what was found, read or not
        if as_json:
            print_json(report.to_dict())
        else:
            show_status(report)
    if not report.ok or (strict and (report.changed or report.invalid or report.in_progress)):
        raise typer.Exit(1)


def target_state(outcome: fleet.Outcome) -> str:
    """One word for where a target stands: at head, behind, held, ahead, inconsistent, error."""
    r = outcome.result if isinstance(outcome.result, runner.Status) else None
    if r is None:
        return "error"
    if r.unknown:
        return "ahead"
    if r.problem:
        return "inconsistent"
    if r.in_progress:
        return "part-way"
    return "held" if r.held else "behind" if r.pending else "at head"


def show_target_status(service: services.Service, pairs: list[Pair], json_output: bool) -> None:
    """Counts per state, databases behind grouped by version, and each one needing a look."""
    if json_output:
        print_json(
            {
                "service": service.name,
                "head": service.head,
                "summary": dict(Counter(target_state(o) for _, o in pairs)),
                "targets": [
                    {"target": s.label, "outcome": target_state(o), **o.to_dict()} for s, o in pairs
                ],
            }
        )
        return
    states = Counter(target_state(o) for _, o in pairs)
    shown = ", ".join(f"{n} {state}" for state, n in states.most_common()) or "no targets"
    out(f"{service.name}: {len(pairs)} database(s), head {service.head}: {shown}")
    behind = Counter(
        "empty" if o.result.current is None else f"version {o.result.current}"
        for _, o in pairs
        if target_state(o) == "behind" and isinstance(o.result, runner.Status)
    )
    if behind:
        out(
            wrapped(
                "behind: "
                + ", ".join(
                    f"{n} empty" if v == "empty" else f"{n} at {v}"
                    for v, n in sorted(behind.items(), key=str)
                )
            )
        )
    for settings, o in pairs:
        state = target_state(o)
        r = o.result if isinstance(o.result, runner.Status) else None
        if state == "error":
            out(f"error: {settings.label}: {o.error}")
        elif state == "ahead" and r is not None:
            out(f"ahead: {settings.label}: unknown versions {r.unknown}")
        elif state == "inconsistent" and r is not None:
            out(f"inconsistent: {settings.label}: {r.problem}")
        elif state == "held" and r is not None:
            out(wrapped(f"held: {settings.label}: at {r.current}; {r.why_held}"))
        elif state == "behind" and r is not None:
            at = "empty" if r.current is None else f"at {r.current}"
            out(wrapped(f"behind: {settings.label}: {at}, pending {spans(r.pending)}"))
        elif state == "part-way" and r is not None and r.in_progress is not None:
            out(wrapped(f"part-way: {settings.label}: {r.in_progress.describe()}"))
