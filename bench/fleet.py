"""Fleets of databases of one service, measured side by side in one run.

    python bench/fleet.py [scale] [--sizes 10,200,1000] [--runs 3] [--jobs 4] [--shell 50]
    python bench/fleet.py jobs [--databases 50] [--runs 3]

scale (the default; issue 16): databases of the patient service at version 1, taken to 3.
One database is migrated to 1 (`migrate.py patient up --version 1`) and copied with CREATE
DATABASE ... TEMPLATE; the copies are listed (`name=URL`) in a targets file. For each run and
each size (sizes interleaved, so all of them see the same machine), on fresh copies:
  * migrate: `migrate.py patient up --version 3 --targets-file F --jobs 4 --per-host 4 --json`,
    every target must come back migrated;
  * the no-op recheck: the same command again, every target at head.
Each with its wall time, the user+sys CPU of the whole process tree (getrusage of the reaped
children), the server's CPU (every postgres process, when this machine can see them in /proc)
and the peak of the tree's memory: /proc is read every 20 ms, RSS summed over the process and
all its descendants (PSS every 100 ms: RSS counts the pages workers share since the fork once
per worker, PSS splits them), and the largest single process.
Targets at 1,000 databases: migrate <= 30 s, the recheck <= 5 s.

Then, once, to say where the time goes:
  * the usual shell loop, `alembic -c services/patient/alembic.ini -x url=... upgrade 0003` per
    database, on --shell databases, extrapolated linearly to the largest size;
  * ours --jobs 1 on as many: each target's seconds with nothing else running beside it;
  * the server's floor: the SQL of versions 2 and 3 (`migrate.py patient plan --sql`) sent
    directly on one connection per database, one at a time and --jobs at a time, on the
    largest size; and, for the recheck, one connection per database reading alembic_version;
  * one process: `up --version 3 --url` on a database at 1, then again at 3 (the no-op).

--per-host defaults to --jobs: every database here is on one server, where the runner's own
default (2 per server) would hold --jobs 4 to 2 at once.

jobs: three versions on each of --databases empty databases: the shell loop (once) vs ours
--jobs 1 and --jobs 4 (--runs each, alternating). Targets: --jobs 4 <= 0.1x the shell loop and
<= 0.7x --jobs 1.

A default run takes about a quarter of an hour on a 2-core machine (estimated from small runs),
over half of it copying (and checkpointing) and dropping some 5,700 databases; that set-up time
is printed at the end.

The databases are named bench_fleet_*; an interrupted run's leftovers are dropped when the next
one starts (so do not run two of these at once against one server). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import psycopg
from _common import (
    ROOT,
    create_db,
    create_dbs,
    database_of,
    drop_dbs,
    drop_prefixed,
    median,
    server,
    spread,
    timed,
)

INI = str(ROOT / "services" / "patient" / "alembic.ini")
MIGRATE = str(ROOT / "scripts" / "migrate.py")
PREFIX = "bench_fleet_"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


# --- a process tree: its memory and its CPU, from /proc ----------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the process is gone, or not ours to read
        return None


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from its state on (field 3): [1] ppid, [11:15] utime stime cutime cstime."""
    text = _read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2 :].split() if text else None


CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    if CHILDREN_FILES:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
        return [
            int(c) for t in tasks for c in (_read(f"/proc/{pid}/task/{t}/children") or "").split()
        ]
    found = []  # a kernel without the children files: look at every process's parent
    for entry in os.listdir("/proc"):
        stat = _stat(int(entry)) if entry.isdigit() else None
        if stat is not None and int(stat[1]) == pid:
            found.append(int(entry))
    return found


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += _children(pid)
    return pids


def _rss(pid: int) -> int:
    text = _read(f"/proc/{pid}/statm")
    return int(text.split()[1]) * PAGE if text else 0


def _pss(pid: int) -> int:
    for line in (_read(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Peaks of a process tree's memory: the summed RSS (every ``every`` s), the summed PSS
    (every fifth look: reading it costs the kernel a walk of the page tables), the largest
    single RSS."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.done = threading.Event()
        self.rss = self.pss = self.largest = 0

    def run(self) -> None:
        looks = 0
        while True:
            pids = _tree(self.pid)
            sizes = [_rss(p) for p in pids]
            self.rss = max(self.rss, sum(sizes))
            self.largest = max(self.largest, *sizes)
            if looks % 5 == 0:
                self.pss = max(self.pss, sum(_pss(p) for p in pids))
            looks += 1
            if self.done.wait(self.every):
                return

    def stop(self) -> None:
        self.done.set()
        self.join()


class ServerCpu:
    """CPU seconds the PostgreSQL server has used so far: the postmaster, its live children
    and the children it has reaped (so backends that came and went count too)."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster

    @classmethod
    def find(cls, srv: str) -> ServerCpu | None:
        """None when the server's processes are not visible here (another host or container)."""
        with psycopg.connect(srv) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = _stat(row[0]) if row else None
        if backend is None or not _is_postgres(row[0]) or not _is_postgres(int(backend[1])):
            return None
        return cls(int(backend[1]))

    def seconds(self) -> float:
        stat = _stat(self.postmaster)
        if stat is None:
            raise SystemExit("the PostgreSQL server went away")
        ticks = sum(int(v) for v in stat[11:15])
        for child in _children(self.postmaster):
            mine = _stat(child)
            ticks += sum(int(v) for v in mine[11:13]) if mine else 0
        return ticks / TICK


def _is_postgres(pid: int) -> bool:
    return (_read(f"/proc/{pid}/comm") or "").strip() in ("postgres", "postmaster")


@dataclass
class Measured:
    seconds: float
    cpu: float  # user + sys of the command and all its descendants
    server_cpu: float | None  # every postgres process on this machine, other clients included
    rss: int  # peak of the RSS summed over the process tree
    pss: int  # peak of the PSS summed over the tree (0: not readable)
    largest: int  # the largest single process's RSS
    stdout: str

    def report(self) -> dict:
        return json.loads(self.stdout)


def measure(cmd: list[str], srv_cpu: ServerCpu | None) -> Measured:
    """Run ``cmd`` (it must succeed), watching its process tree and the server."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = srv_cpu.seconds() if srv_cpu else None
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        out, err = proc.communicate()
    finally:
        sampler.stop()
        if proc.poll() is None:  # interrupted: its forked workers die with it
            proc.kill()
            proc.wait()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({proc.returncode}):\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server = srv_cpu.seconds() - server_before if srv_cpu and server_before is not None else None
    return Measured(seconds, cpu, server, sampler.rss, sampler.pss, sampler.largest, out)


# --- the commands measured ---------------------------------------------------------------------


def ours_cmd(
    jobs: int, per_host: int, *, targets_file: Path | None = None, urls: list[str] | None = None
) -> list[str]:
    cmd = [sys.executable, MIGRATE, "patient", "up", "--version", "3", "--jobs", str(jobs)]
    cmd += ["--per-host", str(per_host), "--json"]
    if targets_file is not None:
        cmd += ["--targets-file", str(targets_file)]
    for url in urls or []:
        cmd += ["--url", url]
    return cmd


def shell_cmd(dbs: list[str]) -> list[str]:
    script = "\n".join(
        f"{sys.executable} -m alembic -c {INI} -x url='{db}' upgrade 0003 >/dev/null 2>&1 || exit 1"
        for db in dbs
    )
    return ["bash", "-c", script]


def expect(done: Measured, outcome: str, count: int) -> list[float]:
    """Every target ended as ``outcome``; each target's seconds."""
    report = done.report()
    if not report["ok"] or report["summary"].get(outcome) != count:
        raise SystemExit(f"expected {count} {outcome}, got {report['summary']}")
    return [t["seconds"] for t in report["targets"]]


@contextmanager
def targets_file(dbs: list[str]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
        path = Path(folder) / "targets.txt"
        path.write_text("".join(f"{database_of(db)}={db}\n" for db in dbs))
        yield path


def each(urls: list[str], work: Callable[[str], None], threads: int) -> float:
    """Wall time of ``work`` on every URL, ``threads`` at a time."""
    started = time.perf_counter()
    if threads <= 1:
        for url in urls:
            work(url)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(work, urls))
    return time.perf_counter() - started


def version_of(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def apply(script: str) -> Callable[[str], None]:
    """The server's floor for one database: connect, send the whole script at once, check."""

    def work(url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(script)  # no parameters: one simple query, many statements
            if version_of(conn) != "0003":
                raise SystemExit(f"the SQL of versions 2 and 3 left {database_of(url)} elsewhere")

    return work


def read_version(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        version_of(conn)


# --- scale: issue 16 ---------------------------------------------------------------------------


class Fleet:
    """Copies of one database at version 1, all named ``<run prefix>_*``."""

    def __init__(self, srv: str, threads: int) -> None:
        self.srv, self.threads = srv, threads
        self.setup, self.made = 0.0, 0  # seconds spent copying and dropping, copies made
        self.prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}"
        self.template = create_db(srv, prefix=self.prefix)
        timed([sys.executable, MIGRATE, "patient", "up", "--version", "1", "--url", self.template])
        plan = [sys.executable, MIGRATE, "patient", "plan", "--sql", "--version", "3"]
        done = subprocess.run(
            [*plan, "--url", self.template], capture_output=True, text=True, check=True
        )
        self.sql_2_3 = done.stdout  # the server is left with no connection on the template

    @contextmanager
    def copies(self, count: int) -> Iterator[list[str]]:
        started = time.perf_counter()
        dbs = create_dbs(self.srv, count, template=self.template, prefix=self.prefix)
        try:
            with psycopg.connect(self.srv, autocommit=True) as conn, suppress(psycopg.Error):
                conn.execute("CHECKPOINT")  # the copies' pages on disk before anything is timed
            self.setup += time.perf_counter() - started
            yield dbs
        finally:
            started = time.perf_counter()
            drop_dbs(self.srv, dbs, self.threads)
            self.setup += time.perf_counter() - started
            self.made += len(dbs)


@dataclass
class Round:
    migrate: Measured
    recheck: Measured
    seconds: list[float]  # each target's, in the migrate


def note(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def mb(value: float) -> str:
    return f"{value / MB:.0f}" if value else "n/a"


def at_1000(rounds: dict[int, list[Round]], part: str) -> float:
    """The median time at 1000 databases, extrapolated along the line through the two largest
    sizes (through 0 with one size): a run's fixed start is not multiplied."""
    sizes = sorted(rounds)
    times = {n: median([getattr(r, part).seconds for r in rounds[n]]) for n in sizes}
    big = sizes[-1]
    small, base = (sizes[-2], times[sizes[-2]]) if len(sizes) > 1 else (0, 0.0)
    return times[big] + (1000 - big) * (times[big] - base) / (big - small)


def scale(args: argparse.Namespace, srv: str) -> None:
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    largest, jobs, per_host = sizes[-1], args.jobs, args.per_host or args.jobs
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    srv_cpu = ServerCpu.find(srv)
    fleet = Fleet(srv, args.threads)
    rounds: dict[int, list[Round]] = {size: [] for size in sizes}
    connect_floor: list[float] = []
    background: list[float] = []  # the server's CPU per second, idle, beside the largest fleet
    for run in range(args.runs):
        for size in sizes:
            with fleet.copies(size) as dbs, targets_file(dbs) as file:
                cmd = ours_cmd(jobs, per_host, targets_file=file)
                migrate = measure(cmd, srv_cpu)
                seconds = expect(migrate, "migrated", size)
                recheck = measure(cmd, srv_cpu)
                expect(recheck, "at head", size)
                rounds[size].append(Round(migrate, recheck, seconds))
                if size == largest:
                    connect_floor.append(each(dbs, read_version, 16))
                    if srv_cpu is not None:
                        idle = srv_cpu.seconds()
                        time.sleep(2)
                        background.append((srv_cpu.seconds() - idle) / 2)
            note(
                f"run {run + 1}/{args.runs}, {size} databases: migrate {migrate.seconds:.2f} s, "
                f"recheck {recheck.seconds:.2f} s"
            )

    with fleet.copies(args.shell) as dbs:
        loop = measure(shell_cmd(dbs), srv_cpu)
    note(f"shell loop on {args.shell}: {loop.seconds:.2f} s")
    with fleet.copies(args.shell) as dbs, targets_file(dbs) as file:
        alone = measure(ours_cmd(1, 1, targets_file=file), srv_cpu)
        alone_seconds = expect(alone, "migrated", args.shell)
    note(f"ours --jobs 1 on {args.shell}: {alone.seconds:.2f} s")
    floors: dict[int, tuple[float, float | None]] = {}
    for threads in dict.fromkeys((1, jobs)):
        with fleet.copies(largest) as dbs:
            server_before = srv_cpu.seconds() if srv_cpu else None
            wall = each(dbs, apply(fleet.sql_2_3), threads)
            used = (
                srv_cpu.seconds() - server_before if srv_cpu and server_before is not None else None
            )
            floors[threads] = (wall, used)
        note(f"server floor, {threads} at a time: {wall:.2f} s")
    single: list[tuple[Measured, Measured]] = []
    for _ in range(args.runs):
        with fleet.copies(1) as (db,):
            one = [sys.executable, MIGRATE, "patient", "up", "--version", "3", "--url", db]
            single.append((measure(one, srv_cpu), measure(one, srv_cpu)))

    command = " ".join(["migrate.py", *ours_cmd(jobs, per_host, targets_file=Path("F"))[2:]])
    print(f"patient 1 -> 3 over fleets of databases: {command}")
    print(
        f"median of {args.runs} runs (range min-max); {cpus} CPUs here; server CPU: "
        + ("every postgres process" if srv_cpu else "not visible from here")
    )
    print()
    print(f"{'databases':>9}  {'migrate s':<24} {'ms/db':>6}   {'recheck s':<24} {'ms/db':>6}")
    for size in sizes:
        up = [r.migrate.seconds for r in rounds[size]]
        again = [r.recheck.seconds for r in rounds[size]]
        print(
            f"{size:>9}  {spread(up):<24} {median(up) / size * 1000:>6.1f}   "
            f"{spread(again):<24} {median(again) / size * 1000:>6.1f}"
        )
    for small, big in pairwise(sizes):
        grow = [
            median([getattr(r, part).seconds for r in rounds[big]])
            / median([getattr(r, part).seconds for r in rounds[small]])
            for part in ("migrate", "recheck")
        ]
        print(
            f"  {small} -> {big} databases ({big / small:.0f}x): "
            f"migrate {grow[0]:.1f}x the time, recheck {grow[1]:.1f}x"
        )
    print()
    print(
        "memory, peak over the whole process tree, MB (median of runs): "
        "RSS summed / PSS summed / largest single process"
    )
    for size in sizes:
        cells = []
        for part in ("migrate", "recheck"):
            got = [getattr(r, part) for r in rounds[size]]
            cells.append(
                " / ".join(
                    mb(median([getattr(m, f) for m in got])) for f in ("rss", "pss", "largest")
                )
            )
        print(f"{size:>9}  migrate {cells[0]:<18} recheck {cells[1]}")
    print(f"{'shell':>9}  loop    {mb(loop.rss)} / {mb(loop.pss)} / {mb(loop.largest)}")

    at = {
        part: median([getattr(r, part).seconds for r in rounds[largest]])
        for part in ("migrate", "recheck")
    }
    print()
    scaled = ""
    if largest != 1000:
        guess = {part: at_1000(rounds, part) for part in ("migrate", "recheck")}
        scaled = (
            f"; at 1000, from the slope of the two largest sizes: ~{guess['migrate']:.1f} s "
            f"and ~{guess['recheck']:.1f} s"
        )
    print(
        f"at {largest} databases: migrate {at['migrate']:.2f} s (target at 1000: <= 30 s), "
        f"recheck {at['recheck']:.2f} s (target at 1000: <= 5 s){scaled}"
    )
    per_db = loop.seconds / args.shell
    print(
        f"shell loop of plain `alembic upgrade 0003`: {args.shell} databases {loop.seconds:.2f} s "
        f"({per_db * 1000:.0f} ms each; CPU {loop.cpu / args.shell * 1000:.0f} ms each) -> "
        f"{largest} databases ~{per_db * largest:.0f} s "
        f"(extrapolated linearly); ours / shell loop at {largest}: "
        f"{at['migrate'] / (per_db * largest):.3f}x"
    )
    print(
        f"ours --jobs 1 on the same {args.shell}: {alone.seconds:.2f} s "
        f"({alone.seconds / args.shell * 1000:.0f} ms each): {alone.seconds / loop.seconds:.3f}x "
        "the shell loop"
    )

    big = rounds[largest]
    wall = at["migrate"]
    ours_cpu = median([r.migrate.cpu for r in big])
    look_cpu = median([r.recheck.cpu for r in big])
    servers = [r.migrate.server_cpu for r in big if r.migrate.server_cpu is not None]
    server_used = median(servers) if servers else None
    targets = sorted(s for r in big for s in r.seconds)
    alone_mid = median(alone_seconds)
    floor_one, floor_one_cpu = floors[1]
    floor_par, _ = floors[jobs]

    def row(label: str, seconds: float) -> None:
        print(f"  {label:<48} {seconds:8.2f} s {seconds / largest * 1000:7.1f} ms/db")

    print()
    print(f"where the time goes, migrating {largest} databases with --jobs {jobs} (medians):")
    row("wall", wall)
    row("CPU, our process tree (user+sys)", ours_cpu)
    row("  the start and the quick look (the recheck's)", look_cpu)
    row("  the rest: the migrations, in forked workers", ours_cpu - look_cpu)
    if server_used is not None:
        row("CPU, the server (every postgres process)", server_used)
        if background:
            row("  its idle rate beside the fleet x the wall", median(background) * wall)
        used = ours_cpu + server_used
        print(
            f"  => ours + server = {used / (wall * (cpus or 1)):.0%} of {cpus} CPUs over the wall; "
            f"of that CPU ours {ours_cpu / used:.0%}, the server's {server_used / used:.0%}"
        )
    row("floor: SQL of 2 and 3 sent directly, 1 at once", floor_one)
    row(f"floor: the same, {jobs} at once", floor_par)
    if floor_one_cpu is not None:
        row("  the server's CPU in the floor, 1 at once", floor_one_cpu)
    print(
        f"  per target (JSON seconds): median {median(targets) * 1000:.0f} ms, "
        f"p90 {targets[int(len(targets) * 0.9)] * 1000:.0f} ms, {jobs} at once; "
        f"alone (--jobs 1, {args.shell} databases) {alone_mid * 1000:.0f} ms"
    )
    print(
        f"  => per target beyond its SQL: {alone_mid * 1000:.0f} - "
        f"{floor_one / largest * 1000:.0f} = {(alone_mid - floor_one / largest) * 1000:.0f} ms: "
        "Alembic's per-target set-up and our runner"
    )
    first = median([a.seconds for a, _ in single])
    noop = median([b.seconds for _, b in single])
    print(
        f"  one process, `up --version 3 --url`: at 1 {first:.2f} s, at 3 (no-op) {noop:.2f} s: "
        f"{first - noop:.2f} s to import Alembic, set it up and run two versions"
    )
    checks = [r.recheck for r in big]
    server_check = [m.server_cpu for m in checks if m.server_cpu is not None]
    print(
        f"recheck of {largest}: {at['recheck']:.2f} s, CPU ours "
        f"{median([m.cpu for m in checks]):.2f} s"
        + (f", the server's {median(server_check):.2f} s" if server_check else "")
        + f"; floor, a connection each reading alembic_version, 16 at once: "
        f"{median(connect_floor):.2f} s"
    )
    if background:
        print(f"server's idle CPU beside the fleet: {median(background):.2f} CPU-s per s")
    print(f"bench set-up: {fleet.made} copies made and dropped in {fleet.setup:.0f} s")


# --- jobs: the earlier comparison on empty databases -------------------------------------------


def compare_jobs(args: argparse.Namespace, srv: str) -> None:
    prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    count = args.databases
    plans: list[tuple[str, Callable[[list[str]], list[str]]]] = [
        ("shell loop of plain alembic", shell_cmd)
    ]
    for _ in range(args.runs):  # alternate, so both see the same machine
        plans += [
            ("ours, --jobs 1", lambda d: ours_cmd(1, 1, urls=d)),
            ("ours, --jobs 4", lambda d: ours_cmd(4, 4, urls=d)),
        ]
    samples: dict[str, list[float]] = {}
    for label, cmd in plans:
        dbs = create_dbs(srv, count, prefix=prefix, threads=args.threads)
        try:
            done = measure(cmd(dbs), None)
            if label.startswith("ours"):
                expect(done, "migrated", count)
            samples.setdefault(label, []).append(done.seconds)
        finally:
            drop_dbs(srv, dbs, args.threads)
    timings = {label: median(values) for label, values in samples.items()}
    print(
        f"3 versions on each of {count} databases (patient up to version 3); ours: median of "
        f"{args.runs}; --per-host = --jobs"
    )
    for label, seconds in timings.items():
        print(f"  {label:<30} {seconds:6.2f} s")
    four, one = timings["ours, --jobs 4"], timings["ours, --jobs 1"]
    loop = timings["shell loop of plain alembic"]
    print(f"  --jobs 4 / shell loop          {four / loop:6.2f}x   (target <= 0.1x)")
    print(f"  --jobs 4 / --jobs 1            {four / one:6.2f}x   (target <= 0.7x)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("scale", "jobs"), default="scale")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument(
        "--sizes", default="10,200,1000", help="scale: fleet sizes, comma-separated"
    )
    parser.add_argument("--jobs", type=int, default=4, help="scale: --jobs of ours")
    parser.add_argument("--per-host", type=int, help="scale: --per-host of ours (default --jobs)")
    parser.add_argument("--shell", type=int, default=50, help="scale: databases for the shell loop")
    parser.add_argument("--databases", type=int, default=50, help="jobs: databases")
    parser.add_argument(
        "--threads", type=int, default=8, help="CREATE/DROP DATABASE at once (set-up only)"
    )
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: whole numbers separated by commas, not {args.sizes!r}")
    if min([*sizes, args.runs, args.shell, args.jobs, args.databases, args.threads]) < 1:
        parser.error("sizes, --runs, --shell, --jobs, --databases and --threads must be >= 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a kill too
    srv = server()
    left = drop_prefixed(srv, PREFIX, args.threads)
    if left:
        note(f"dropped {left} databases left by an earlier run")
    try:
        (scale if args.part == "scale" else compare_jobs)(args, srv)
    except KeyboardInterrupt:
        note("interrupted; dropping the databases")
        raise SystemExit(130) from None
    finally:
        drop_prefixed(srv, PREFIX, args.threads)


if __name__ == "__main__":
    main()
