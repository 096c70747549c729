"""``migrate all report --out FILE.html``: the platform as one self-contained page.

The page is read back as a reader would: its tables by an HTML parser, its diagrams as the
SVG they are, and the whole file opened by headless Chromium (Debian's ``chromium``),
which must draw something and fetch nothing. Every expectation comes from the services
found under services/ and their histories, and the catalog is the oracle of each schema.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    OWNER_PASSWORD,
    SERVICES,
    as_superuser,
    before_first_contract,
    create_database,
    drop_database,
    query,
    release,
    run_cli,
    versions,
)

from alembic_common.core import runner, services
from alembic_common.core.settings import Settings
from alembic_common.online import partial

OWN = {"schema_migrations", "alembic_version", partial.TABLE}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)"
)


# --- reading the page ------------------------------------------------------------------------


class _Tables(HTMLParser):
    """Every <table id=...> of a page as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return {name: rows[1:] for name, rows in parser.tables.items()}  # without the header


def section(page: str, service: str) -> str:
    start = page.index(f'<section class="service" data-service="{service}">')
    return page[start : page.index("</section>", start)]


def svg_after(page: str, marker: str) -> ET.Element:
    """The SVG drawing that follows ``marker`` (a diagram's div), as XML."""
    start = page.index("<svg", page.index(marker))
    return ET.fromstring(page[start : page.index("</svg>", start) + len("</svg>")])


def node_titles(svg: ET.Element) -> list[str]:
    """The first text of each node: a table's qualified name in an ERD."""
    found = []
    for g in svg.iter("g"):
        if g.get("class") == "node":
            texts = [t.text or "" for t in g.iter("text")]
            found.append(texts[0] if texts else "")
    return found


def svg_texts(svg: ET.Element) -> list[str]:
    return [" ".join((t.text or "").split()) for t in svg.iter("text")]


# --- the platform under test -----------------------------------------------------------------


def _dependency_order() -> list[str]:
    """Services so that every one comes after the services it requires."""
    needs = {
        name: {o for m in services.get(name).migrations for o in m.requires} for name in SERVICES
    }
    order: list[str] = []
    while len(order) < len(SERVICES):
        ready = [n for n in SERVICES if n not in order and needs[n] <= set(order)]
        assert ready, f"a cycle between services: {needs}"
        order.extend(ready)
    return order


def _targets() -> dict[str, int | None]:
    """Every other service (by name) behind, as far back as the others' requires allow;
    the rest at head."""
    lowest: dict[str, int] = {}
    for name in SERVICES:
        for m in services.get(name).migrations:
            for other, needed in m.requires.items():
                lowest[other] = max(lowest.get(other, 0), needed)
    chosen: dict[str, int | None] = {}
    for i, name in enumerate(SERVICES):
        head = services.get(name).head or 0
        behind = max(lowest.get(name, 1), head // 2, 1)
        chosen[name] = behind if i % 2 == 1 and behind < head else None
    return chosen


@pytest.fixture
def platform(server: str, migrating_role: str) -> Iterator[dict[str, str]]:
    """A fresh database per service, each migrated (contract steps included) to the
    version ``_targets`` chose; their URLs for the migrating role (password included)."""
    urls = {name: create_database(server) for name in SERVICES}
    try:
        where = {name: Settings(name, url, "test") for name, url in urls.items()}
        for name in _dependency_order():
            runner.up(
                services.get(name),
                where[name],
                _targets()[name],
                runner.RunOptions(contract=True),
                peers=lambda other: where[other],
            )
        yield urls
    finally:
        for url in urls.values():
            drop_database(server, url)


def env_of(urls: dict[str, str]) -> dict[str, str]:
    return {f"{name.upper()}_DATABASE_URL": url for name, url in urls.items()}


def report(tmp_path: Path, urls: dict[str, str], *extra: str) -> tuple[Any, str]:
    out = tmp_path / "platform.html"
    done = run_cli("all", "report", "--out", str(out), *extra, env=env_of(urls))
    return done, out.read_text(encoding="utf-8") if out.exists() else ""


def catalog_tables(url: str) -> set[str]:
    """The oracle: pg_catalog's tables outside the system schemas (no partition), without
    the toolkit's own bookkeeping tables."""
    rows = query(
        as_superuser(url),
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'",
    )
    return {f"{s}.{t}" for s, t in rows if not (s == "public" and t in OWN)}


def foreign_key_count(url: str) -> int:
    rows = query(
        as_superuser(url),
        "SELECT count(*) FROM pg_catalog.pg_constraint c"
        " JOIN pg_catalog.pg_class r ON r.oid = c.conrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace"
        " WHERE c.contype = 'f' AND c.conparentid = 0 AND n.nspname !~ '^pg_'",
    )
    return int(rows[0][0])


# --- what the page says ----------------------------------------------------------------------


@needs_dot
def test_each_service_its_version_pending_steps_requires_and_schema(
    tmp_path: Path, platform: dict[str, str]
) -> None:
    chosen = _targets()
    assert None in chosen.values() and any(v is not None for v in chosen.values()), chosen
    done, page = report(tmp_path, platform)
    assert done.exit_code == 0, done.output
    found = tables_of(page)
    rows = {r[0]: r for r in found["services"]}
    assert sorted(rows) == sorted(SERVICES)
    for name in SERVICES:
        service = services.get(name)
        current = chosen[name] if chosen[name] is not None else service.head
        pending = [v for v in service.disk_versions() if v > (current or 0)]
        _, _, shown_current, head, count, state = rows[name]
        assert (shown_current, head, count) == (str(current), str(service.head), str(len(pending)))
        assert ("behind" if pending else "at head") in state, rows[name]
        text = section(page, name)
        if pending:
            assert f"pending ({', '.join(map(str, pending))})" in " ".join(text.split())
            for version in pending:  # the plan shows each, with its statements' locks
                assert f"<h4>Version {version}: " in text, f"{name} {version} not planned"

    declared = sorted(
        (name, str(m.version), f"{other} {needed}")
        for name in SERVICES
        for m in services.get(name).migrations
        for other, needed in m.requires.items()
    )
    assert sorted((r[0], r[1], r[2]) for r in found.get("requirements", [])) == declared
    drawn = set(svg_texts(svg_after(page, '<div class="diagram platform">')))
    for name, version, needs in declared:
        assert f"{name} {version} needs {needs}" in drawn
    for name in SERVICES:
        assert name in drawn

    for name, url in platform.items():
        erd = svg_after(section(page, name), '<div class="diagram erd">')
        assert sorted(node_titles(erd)) == sorted(catalog_tables(url)), name
        edges = [g for g in erd.iter("g") if g.get("class") == "edge"]
        assert len(edges) == foreign_key_count(url), name


@needs_dot
def test_no_patient_value_and_no_password_on_the_page(
    tmp_path: Path, platform: dict[str, str]
) -> None:
    if "patient" not in SERVICES:
        pytest.skip("no patient service")
    from faker import Faker

    fake = Faker(["en_CA", "fr_FR"])
    Faker.seed(31)
    url = platform["patient"]
    runner.up(
        services.get("patient"),
        Settings("patient", url, "test"),
        None,
        runner.RunOptions(contract=True),
    )
    columns = {
        r[0]
        for r in query(
            as_superuser(url),
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'patients'",
        )
    }
    assert {"first_name", "last_name", "email", "phone", "address"} <= columns
    values: list[str] = []
    for _ in range(40):
        row = {
            "healthcare_entity_id": 1,
            "patient_id": f"RPT-{fake.unique.bothify('??###??')}",
            "first_name": fake.first_name(),
            "last_name": fake.last_name(),
            "date_of_birth": fake.date_of_birth(minimum_age=1, maximum_age=99),
            "phone": fake.numerify("+1514555####"),
            "email": fake.unique.email(),
            "address": fake.street_address(),
            "country": "Canada",
            "emergency_contact_name": fake.name(),
            "emergency_contact_phone": fake.phone_number(),
        }
        names = ", ".join(row)
        marks = ", ".join(f"%({k})s" for k in row)
        query(as_superuser(url), f"INSERT INTO public.patients ({names}) VALUES ({marks})", row)
        values += [
            row["patient_id"],
            f"{row['first_name']} {row['last_name']}",
            row["phone"],
            row["email"],
            row["address"],
            row["emergency_contact_name"],
            row["emergency_contact_phone"],
        ]
    query(as_superuser(url), "ANALYZE public.patients")  # the plan's row estimates see them
    done, page = report(tmp_path, platform)
    assert done.exit_code == 0, done.output
    leaked = sorted({v for v in values if v in page})
    assert leaked == [], f"patient values on the page: {leaked[:5]}"
    assert OWNER_PASSWORD not in page
    assert "postgresql://" not in page and "postgres://" not in page
    assert (tmp_path / "platform.html").stat().st_mode & 0o777 == 0o600


@needs_dot
def test_a_held_contract_step_and_the_session_holding_it(
    tmp_path: Path, server: str, migrating_role: str
) -> None:
    held = next((n for n in SERVICES if 0 < len(before_first_contract(n)) < len(versions(n))), None)
    if held is None:
        pytest.skip("no service has a contract step")
    done_before = before_first_contract(held)
    urls = {name: create_database(server) for name in SERVICES}
    try:
        where = {name: Settings(name, url, "test") for name, url in urls.items()}
        for name in _dependency_order():
            target = done_before[-1] if name == held else None
            options = runner.RunOptions(contract=name != held)
            runner.up(services.get(name), where[name], target, options, peers=lambda o: where[o])
        old = f"{held}@{done_before[-1]}"
        with release(urls[held], old) as session:
            done, page = report(tmp_path, urls)
            pid = session.info.backend_pid
    finally:
        for url in urls.values():
            drop_database(server, url)
    assert done.exit_code == 0, done.output
    contract = versions(held)[len(done_before)]
    holders = [r for r in tables_of(page).values() if r and r[0][:1] == [old]]
    assert holders and holders[0][0][:3] == [old, str(pid), str(done_before[-1])], holders
    drawn = " ".join(svg_texts(svg_after(page, '<div class="diagram platform">')))
    assert f"contract {contract} held by {old} (pid {pid})" in drawn


@needs_dot
def test_an_unreachable_service_is_shown_and_exits_1_after_writing(
    tmp_path: Path, platform: dict[str, str]
) -> None:
    gone = SERVICES[-1]
    urls = {**platform, gone: "postgresql://nobody:Gone-pw-31@127.0.0.1:1/nowhere"}
    done, page = report(tmp_path, urls)
    assert done.exit_code == 1, done.output
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("migrate: error: ") and gone in last and "Traceback" not in done.stderr
    rows = {r[0]: r for r in tables_of(page)["services"]}
    assert "unreachable" in rows[gone][-1]
    assert all("unreachable" not in rows[n][-1] for n in SERVICES if n != gone)
    assert "Gone-pw-31" not in page and "Gone-pw-31" not in done.output


@needs_dot
def test_rehearsal_and_fleet_figures_absent_keys_shown_as_absent(
    tmp_path: Path, platform: dict[str, str]
) -> None:
    name = SERVICES[0]
    service = services.get(name)
    version = service.disk_versions()[-1]
    rehearsed = {
        "service": name,
        "target": "127.0.0.1:5432/copy",
        "ok": False,
        "start": version - 1,
        "end": version,
        "steps": [
            {
                "version": version,
                "description": "<script>alert(1)</script> a step",
                "ok": True,
                "seconds": 1.25,
                "locks": [{"table": "public.things", "mode": "ACCESS EXCLUSIVE", "held_ms": 812.5}],
                "rows_changed": {"public.things": 20000},
                "sizes": [{"table": "public.things", "bytes_before": 8192, "bytes_after": 16384}],
            },
            {
                "version": version + 1,
                "description": "fails",
                "ok": False,
                "error": "could not connect: host=h password=Step-pw-31 dbname=db",
            },
        ],
        "way_back": {"ok": False, "tables": [{"table": "public.things", "lost": 3}]},
        "problems": ["version 3's downgrade loses 3 rows of public.things"],
    }
    (tmp_path / "rehearsal.json").write_text(json.dumps(rehearsed))
    fleet = {
        "action": "up",
        "ok": False,
        "summary": {"migrated": 2, "at head": 1, "failed": 1},
        "targets": [
            {"target": "clinic-a", "outcome": "migrated", "service": name, "seconds": 0.5,
             "database": "postgresql://u:Fleet-pw-31@h/db", "result": {"after": version}},
            {"target": "clinic-b", "outcome": "failed", "service": name,
             "error": "connect to postgresql://u:Fleet-pw-31@h/db refused"},
        ],
    }  # fmt: skip
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    done, page = report(
        tmp_path,
        platform,
        "--rehearsal",
        str(tmp_path / "rehearsal.json"),
        "--fleet",
        str(tmp_path / "fleet.json"),
    )
    assert done.exit_code == 0, done.output
    text = section(page, name)
    assert "812.5 ms" in text and "20,000" in text and "ACCESS EXCLUSIVE on public.things" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a step" in text and "<script" not in page
    assert "loses 3 rows" in text
    assert "the copy took (absent)" in " ".join(text.split())  # copy_seconds is missing
    assert "Fleet-pw-31" not in page and "postgresql://" not in page
    assert "Step-pw-31" not in page
    fleet_rows = tables_of(page)
    targets = next(rows for rows in fleet_rows.values() if rows and rows[0][0] == "clinic-a")
    assert [r[:3] for r in targets] == [
        ["clinic-a", name, "migrated"],
        ["clinic-b", name, "failed"],
    ]


# --- bad input -------------------------------------------------------------------------------


def _one_line_usage_error(done: Any) -> None:
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("migrate: error: "), done.stderr
    assert "Traceback" not in done.output


@pytest.mark.parametrize("option", ["--rehearsal", "--fleet"])
@pytest.mark.parametrize("content", [None, "not json {", "[1, 2]"])
def test_a_missing_or_unreadable_input_file_is_a_usage_error(
    tmp_path: Path, option: str, content: str | None
) -> None:
    given = tmp_path / "input.json"
    if content is not None:
        given.write_text(content)
    out = tmp_path / "page.html"
    done = run_cli("all", "report", "--out", str(out), option, str(given))
    _one_line_usage_error(done)
    assert not out.exists()


def test_out_into_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("all", "report", "--out", str(tmp_path / "missing" / "page.html"))
    _one_line_usage_error(done)


def test_out_as_a_symlink_is_refused_and_its_target_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "page.html"
    link.symlink_to(target)
    done = run_cli("all", "report", "--out", str(link))
    _one_line_usage_error(done)
    assert link.is_symlink() and target.read_text() == "keep me\n"


def test_out_as_a_pipe_is_refused_and_stays_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "page.html"
    os.mkfifo(fifo)
    done = run_cli("all", "report", "--out", str(fifo))
    _one_line_usage_error(done)
    assert stat.S_ISFIFO(fifo.stat().st_mode), "the pipe was replaced"


@pytest.mark.parametrize("option", ["--rehearsal", "--fleet"])
def test_an_input_that_is_a_pipe_is_refused_without_reading_it(tmp_path: Path, option: str) -> None:
    fifo = tmp_path / "figures.json"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    done = run_cli("all", "report", "--out", str(tmp_path / "page.html"), option, str(fifo))
    _one_line_usage_error(done)


def test_report_is_for_the_whole_platform_only() -> None:
    done = run_cli(SERVICES[0], "report", "--out", "x.html")
    _one_line_usage_error(done)


def test_without_graphviz_it_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    done = run_cli("all", "report", "--out", str(tmp_path / "page.html"))
    assert done.exit_code == 1, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Graphviz" in lines[0] and "install" in lines[0]


# --- in a browser ----------------------------------------------------------------------------


def _png_colours(path: Path, enough: int = 2) -> int:
    """How many distinct pixel values a PNG has (stops counting at ``enough``): its
    chunks read with struct, its data inflated with zlib, each row unfiltered."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, seen = bytearray(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[i] = (row[i] + pred) & 0xFF
        seen.update(bytes(row[i : i + bpp]) for i in range(0, stride, bpp))
        if len(seen) >= enough:
            return len(seen)
        previous = row
    return len(seen)


@pytest.fixture
def trap() -> Iterator[list[bytes]]:
    """A listening socket given to Chromium as its proxy: whatever connects to it is a
    request that tried to leave the machine."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    caught: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(1)
                try:
                    caught.append(conn.recv(200) or b"(connected)")
                except OSError:
                    caught.append(b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    caught.append(str(listener.getsockname()[1]).encode())  # the port, read by the test
    yield caught
    stop.set()
    thread.join(5)
    listener.close()


# Chromium's own services, which it calls whatever page it shows (component updates,
# sign-in, network time), even with --disable-background-networking: not the page's requests.
CHROMIUM_OWN = {
    "update.googleapis.com",
    "accounts.google.com",
    "clients2.google.com",
    "redirector.gvt1.com",
}


def _host(request: bytes) -> str:
    """The host a proxied request asks for (``CONNECT h:443`` or ``GET http://h/...``)."""
    words = request.decode("latin-1").split()
    target = words[1] if len(words) > 1 else ""
    target = target.split("://", 1)[-1]
    return target.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")


def _browse(page: Path, port: int, tmp_path: Path, shot: Path) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium, its proxy our trap, and take a screenshot."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        f"--proxy-server=127.0.0.1:{port}",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)


@needs_dot
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_draws_the_page_and_nothing_leaves_the_machine(
    tmp_path: Path, platform: dict[str, str], trap: list[bytes]
) -> None:
    done, page = report(tmp_path, platform)
    assert done.exit_code == 0, done.output
    fetched = re.findall(
        r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//|url\(\s*["']?\s*(?:[a-z]+:)?//""", page, re.I
    )
    assert fetched == [] and "<script" not in page.lower() and "<link" not in page.lower()
    port = int(trap.pop(0))
    # The trap catches what a page asks for: a page with one remote image is caught.
    canary = tmp_path / "canary.html"
    canary.write_text('<p>canary</p><img src="http://canary.invalid/x.png">')
    _browse(canary, port, tmp_path, tmp_path / "canary.png")
    assert "canary.invalid" in {_host(r) for r in trap}, trap
    trap.clear()
    shot = tmp_path / "shot.png"
    ran = _browse(tmp_path / "platform.html", port, tmp_path, shot)
    assert shot.exists(), ran.stderr[-2000:]
    assert _png_colours(shot) > 1, "the screenshot is blank"
    asked = {_host(r) for r in trap} - CHROMIUM_OWN
    assert asked == set(), f"the page made Chromium fetch from {asked}: {trap}"
