"""deploy/kubernetes: the manifests are well formed, keep secrets out of ConfigMaps and run
only what the CLI accepts.

There is no cluster here: every YAML document is parsed and checked field by field, every
option in a container's command is looked up in the real CLI's ``--help``, the fleet's
passfile copy is tried against libpq, and the single-database Job's command and the
Deployment's schema gate run against real PostgreSQL.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg
import pytest
import yaml
from conftest import ROOT, SECRET, history, query, versions

from alembic_common.core import services, urls
from alembic_common.core.settings import normalize_url
from alembic_common.errors import ConfigError

K8S = ROOT / "deploy" / "kubernetes"
FILES = sorted({*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")})
DOCS: list[tuple[Path, dict[str, Any]]] = [
    (path, doc) for path in FILES for doc in yaml.safe_load_all(path.read_text()) if doc
]
SERVICE_NAMES = sorted(services.discover(ROOT))
MIGRATE = "scripts/migrate.py"
# The Dockerfile's user: `useradd ... --uid 10001 migrate`.
IMAGE_UID = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
WORKLOAD_KINDS = ("Job", "CronJob", "Deployment", "StatefulSet", "DaemonSet", "Pod")


def where(path: Path, doc: dict[str, Any]) -> str:
    return f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}"


def of_kind(*kinds: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in DOCS if d.get("kind") in kinds]


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in of_kind(kind)}


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def words(container: dict[str, Any]) -> list[str]:
    return [str(w) for w in [*container.get("command", []), *container.get("args", [])]]


def invocations(container: dict[str, Any]) -> list[list[str]]:
    """Every ``scripts/migrate.py SERVICE ACTION ...`` a container runs, as the words after
    the script: straight from an exec list, or out of a ``sh -c`` script."""
    argv = words(container)
    if MIGRATE in argv:
        return [argv[argv.index(MIGRATE) + 1 :]]
    found = []
    for word in argv:
        if MIGRATE not in word:
            continue
        lexer = shlex.shlex(word, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token.endswith(MIGRATE):
                rest = []
                for t in tokens[i + 1 :]:
                    if set(t) <= set("|&;()<>"):  # the end of that command
                        break
                    rest.append(t)
                found.append(rest)
    return found


def env_values(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}


def env_from_secret(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{variable: (Secret name, key)} of the env taken from Secrets."""
    found = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            found[e["name"]] = (ref["name"], ref["key"])
    return found


def option_value(argv: list[str], option: str) -> str | None:
    for i, word in enumerate(argv):
        if word == option:
            return argv[i + 1] if i + 1 < len(argv) else None
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def mounts(doc: dict[str, Any], container: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(mountPath, volume) of each of the container's mounts."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    return [(m["mountPath"], volumes[m["name"]]) for m in container.get("volumeMounts", [])]


def mount_of(doc: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, dict] | None:
    """The mount that ``path`` lies in (the deepest), or None."""
    inside = [
        (m, v)
        for m, v in mounts(doc, container)
        if PurePosixPath(path).is_relative_to(PurePosixPath(m)) and path != m
    ]
    return max(inside, key=lambda mv: len(mv[0]), default=None)


def migrate_container(doc: dict[str, Any], action: str) -> dict[str, Any]:
    """The one container that runs ``migrate.py SERVICE <action>``."""
    found = [c for c in containers(doc) if any(i[1:2] == [action] for i in invocations(c))]
    assert len(found) == 1, f"{doc['metadata']['name']}: {len(found)} containers run {action}"
    return found[0]


def service_of(doc: dict[str, Any], action: str = "up") -> str:
    return next(i[0] for i in invocations(migrate_container(doc, action)) if i[1] == action)


def secret_data(secret: dict[str, Any]) -> dict[str, Any]:
    return {**secret.get("data", {}), **secret.get("stringData", {})}


JOBS = of_kind("Job")
FLEET = [(p, d) for p, d in JOBS if d["spec"].get("completionMode") == "Indexed"]
SINGLE = [(p, d) for p, d in JOBS if d["spec"].get("completionMode") != "Indexed"]
WORKLOADS = of_kind(*WORKLOAD_KINDS)
CONFIGMAPS = of_kind("ConfigMap")
INVOCATIONS = [
    (path, doc, container, invocation)
    for path, doc in WORKLOADS
    for container in containers(doc)
    for invocation in invocations(container)
]


def ids(pairs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    return [where(p, d) for p, d in pairs]


# --- the folder as a whole ----------------------------------------------------------------


def _named_versions() -> list[str]:
    """Every Kubernetes minor version from the oldest the deploy README names to the newest."""
    named = {int(m) for m in re.findall(r"\b1\.(\d\d)\b", (K8S / "README.md").read_text())}
    return [f"1.{minor}" for minor in range(min(named), max(named) + 1)]


@pytest.mark.parametrize("version", _named_versions())
def test_every_manifest_validates_against_the_api_schemas_of(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for path, doc in DOCS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_every_file_parses_into_named_documents() -> None:
    assert FILES, f"no YAML under {K8S}"
    seen = set()
    for path in FILES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.relative_to(K8S)} holds no document"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in seen, f"{path.relative_to(K8S)}: {key} defined twice"
            seen.add(key)


def test_a_fleet_job_per_service_and_a_single_database_job() -> None:
    assert sorted({service_of(d) for _, d in FLEET}) == SERVICE_NAMES
    assert [service_of(d) for _, d in SINGLE] == ["user"]
    assert [d["metadata"]["name"] for _, d in of_kind("Deployment")] == ["user-service"]


# --- the fleet's Indexed Jobs -----------------------------------------------------------------


def exit_code_action(rules: list[dict[str, Any]], container: str, code: int) -> str | None:
    """What podFailurePolicy does with a pod whose ``container`` exited with ``code``: the
    first rule that matches, as Kubernetes evaluates them."""
    for rule in rules:
        on = rule.get("onExitCodes")
        if not on or on.get("containerName", container) != container:
            continue
        listed = code in on["values"]
        if listed if on["operator"] == "In" else not listed:
            return rule["action"]
    return None


@pytest.mark.parametrize(("path", "job"), FLEET, ids=ids(FLEET))
def test_fleet_job_is_indexed_with_per_index_retries(path: Path, job: dict[str, Any]) -> None:
    spec = job["spec"]
    completions, parallelism = spec.get("completions"), spec.get("parallelism")
    assert spec["completionMode"] == "Indexed"
    assert isinstance(completions, int) and completions >= 1, completions
    assert isinstance(parallelism, int) and 1 <= parallelism <= completions, parallelism
    assert isinstance(spec.get("backoffLimitPerIndex"), int) and spec["backoffLimitPerIndex"] >= 0
    if "maxFailedIndexes" in spec:
        assert 0 <= spec["maxFailedIndexes"] < completions, spec["maxFailedIndexes"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    migrate = migrate_container(job, "up")
    # Kubernetes sets JOB_COMPLETION_INDEX but never the count: the manifest must, equal.
    assert env_values(migrate).get("JOB_COMPLETIONS") == str(completions)
    rules = spec["podFailurePolicy"]["rules"]
    assert exit_code_action(rules, migrate["name"], 2) == "FailIndex"  # bad usage: no retry
    assert exit_code_action(rules, migrate["name"], 1) in (None, "Count")  # failed targets: retry


@pytest.mark.parametrize(("path", "job"), FLEET, ids=ids(FLEET))
def test_fleet_job_command_shards_and_names_its_targets(path: Path, job: dict[str, Any]) -> None:
    migrate = migrate_container(job, "up")
    argv = words(migrate)
    assert argv[:2] == ["python", MIGRATE] and argv[3] == "up", argv
    assert option_value(argv, "--shard") == "auto"
    assert "--json" in argv
    jobs, per_host = option_value(argv, "--jobs"), option_value(argv, "--per-host")
    assert jobs and per_host and 1 <= int(per_host) <= int(jobs), (jobs, per_host)
    assert re.fullmatch(r"\d+%?", option_value(argv, "--max-failures") or ""), argv
    targets_file = option_value(argv, "--targets-file")
    registry = option_value(argv, "--registry-url")
    assert (targets_file is None) != (registry is None), "exactly one targets source"
    if targets_file is not None:
        found = mount_of(job, migrate, targets_file)
        assert found and "configMap" in found[1], f"{targets_file} is in no ConfigMap volume"
        mount_path, volume = found
        configmap = by_name("ConfigMap")[volume["configMap"]["name"]]
        relative = str(PurePosixPath(targets_file).relative_to(mount_path))
        keys = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
        assert keys.get(relative, relative) in configmap["data"], (relative, configmap["data"])
    else:
        variable = re.fullmatch(r"\$\((\w+)\)", registry)
        assert variable, f"--registry-url {registry}: take it from a Secret through the env"
        assert variable.group(1) in env_from_secret(migrate), variable.group(1)
        assert option_value(argv, "--registry-query"), "--registry-url without --registry-query"


@pytest.mark.parametrize(("path", "job"), FLEET, ids=ids(FLEET))
def test_fleet_passwords_come_from_a_copied_passfile(path: Path, job: dict[str, Any]) -> None:
    """PGPASSFILE names a 0600 copy (in an emptyDir) of a Secret's file: libpq refuses the
    Secret's own file, which is root-owned and, under fsGroup, group-readable."""
    migrate = migrate_container(job, "up")
    env = env_values(migrate)
    assert "PGPASSWORD" not in env and env.get("PGUSER"), env
    passfile = env["PGPASSFILE"]
    found = mount_of(job, migrate, passfile)
    assert found and "emptyDir" in found[1], f"{passfile} is not in an emptyDir"
    copier = [c for c in pod_spec(job).get("initContainers", []) if words(c)[-1:] == [passfile]]
    assert len(copier) == 1, "no init container writes PGPASSFILE"
    argv = words(copier[0])
    assert argv[:3] == ["install", "-m", "0600"], argv
    source = mount_of(job, copier[0], argv[-2])
    assert source and "secret" in source[1], f"{argv[-2]} is not in a Secret volume"
    assert source[1]["secret"].get("defaultMode") in (0o400, 0o600)
    secret = by_name("Secret")[source[1]["secret"]["secretName"]]
    key = str(PurePosixPath(argv[-2]).relative_to(source[0]))
    assert key in secret_data(secret), f"Secret {secret['metadata']['name']} has no {key!r}"
    assert pod_spec(job)["securityContext"].get("fsGroup") == IMAGE_UID  # to read it at all


@pytest.mark.parametrize(("path", "job"), FLEET, ids=ids(FLEET))
def test_the_passfile_copy_is_what_libpq_accepts(
    path: Path,
    job: dict[str, Any],
    auth_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The init container, run here with its mounts mapped to folders: the Secret's file as
    the kubelet leaves it (0440) is refused by libpq, the copy is used."""
    migrate = migrate_container(job, "up")
    passfile = env_values(migrate)["PGPASSFILE"]
    copier = next(c for c in pod_spec(job)["initContainers"] if words(c)[-1:] == [passfile])
    local = {m: tmp_path / f"mount{i}" for i, (m, _) in enumerate(mounts(job, copier))}
    for folder in local.values():
        folder.mkdir()

    def mapped(word: str) -> str:
        for mount_path, folder in local.items():
            if word.startswith(mount_path + "/"):
                return str(folder / word[len(mount_path) + 1 :])
        return word

    argv = [mapped(w) for w in words(copier)]
    secret_file = Path(argv[-2])
    secret_file.write_text(f"*:*:*:postgres:{SECRET}\n")
    secret_file.chmod(0o440)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    copy = Path(argv[-1])
    assert copy.stat().st_mode & 0o777 == 0o600
    assert copy.read_text() == secret_file.read_text()

    no_password = auth_server.replace("postgres:{password}@", "postgres@")
    monkeypatch.setenv("PGPASSFILE", str(secret_file))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(no_password).close()
    monkeypatch.setenv("PGPASSFILE", str(copy))
    with psycopg.connect(no_password) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


# --- every workload -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "doc"), WORKLOADS, ids=ids(WORKLOADS))
def test_pods_run_non_root_read_only_and_bounded(path: Path, doc: dict[str, Any]) -> None:
    pod = pod_spec(doc)
    assert pod.get("automountServiceAccountToken") is False
    pod_context = pod.get("securityContext", {})
    for container in containers(doc):
        context = {**pod_context, **container.get("securityContext", {})}
        name = container["name"]
        assert context.get("runAsNonRoot") is True, name
        assert context.get("runAsUser") == IMAGE_UID, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert "ALL" in context.get("capabilities", {}).get("drop", []), name
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), (name, kind)
    if doc["kind"] == "Job":
        for field in ("ttlSecondsAfterFinished", "activeDeadlineSeconds"):
            value = doc["spec"].get(field)
            assert isinstance(value, int) and value > 0, (field, value)
        assert pod["restartPolicy"] == "Never"


@pytest.mark.parametrize(("path", "doc"), WORKLOADS, ids=ids(WORKLOADS))
def test_referenced_secrets_and_configmaps_exist(path: Path, doc: dict[str, Any]) -> None:
    wanted: list[tuple[str, str, str | None]] = []  # (kind, name, key or None)
    for volume in pod_spec(doc).get("volumes", []):
        for field, kind, name_field in (
            ("secret", "Secret", "secretName"),
            ("configMap", "ConfigMap", "name"),
        ):
            if field in volume:
                source = volume[field]
                keys = [i["key"] for i in source.get("items", [])] or [None]
                wanted += [(kind, source[name_field], k) for k in keys]
    for container in containers(doc):
        for e in container.get("env", []):
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = e.get("valueFrom", {}).get(field)
                if ref:
                    wanted.append((kind, ref["name"], ref["key"]))
        for e in container.get("envFrom", []):
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if field in e:
                    wanted.append((kind, e[field]["name"], None))
    assert wanted, "references no Secret or ConfigMap"
    for kind, name, key in wanted:
        known = by_name(kind)
        assert name in known, f"{kind} {name} is not defined in deploy/kubernetes"
        data = secret_data(known[name]) if kind == "Secret" else known[name].get("data", {})
        assert key is None or key in data, f"{kind} {name} has no key {key!r}"


@pytest.mark.parametrize(("path", "doc"), WORKLOADS, ids=ids(WORKLOADS))
def test_env_references_in_commands_resolve(path: Path, doc: dict[str, Any]) -> None:
    """Kubernetes leaves a $(NAME) it cannot resolve as it is: the CLI would get it literally."""
    for container in containers(doc):
        defined = {e["name"] for e in container.get("env", [])}
        for word in words(container):
            for name in re.findall(r"(?<!\$)\$\((\w+)\)", word):
                assert name in defined, f"{container['name']}: $({name}) is not in its env"


# --- no password in a ConfigMap -----------------------------------------------------------

CREDENTIAL_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/@:]*:[^\s/]*@", re.I)


def password_findings(text: str) -> list[str]:
    """Lines of ``text`` that carry a password: ``user:pass@`` in a URL, or ``password=``."""
    return [
        line
        for line in text.splitlines()
        if CREDENTIAL_URL.search(line) or re.search(r"password\s*=", line, re.I)
    ]


def test_the_password_check_catches_credentials() -> None:
    assert password_findings("a=postgresql://me:s3cret@db:5432/x") == [
        "a=postgresql://me:s3cret@db:5432/x"
    ]
    assert password_findings("postgresql://db/x?sslmode=require&password=s3cret")
    assert password_findings("host=db PASSWORD = s3cret")
    assert password_findings("a=postgresql://me@db:5432/x\n# a comment\nb=postgres://db/y") == []


@pytest.mark.parametrize(("path", "configmap"), CONFIGMAPS, ids=ids(CONFIGMAPS))
def test_configmaps_hold_no_password(path: Path, configmap: dict[str, Any]) -> None:
    data = configmap.get("data", {})
    assert data and not configmap.get("binaryData")
    for key, value in data.items():
        assert "password" not in key.lower(), key
        assert password_findings(str(value)) == [], key


@pytest.mark.parametrize(("path", "configmap"), CONFIGMAPS, ids=ids(CONFIGMAPS))
def test_targets_lists_are_urls_the_toolkit_accepts(path: Path, configmap: dict[str, Any]) -> None:
    lines = [
        line.strip()
        for line in configmap["data"]["targets.txt"].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert lines
    names = []
    for line in lines:
        name, eq, url = line.partition("=")
        if not eq or "://" in name:
            name, url = "", line
        names.append(name)
        try:
            normalize_url(url)
        except ConfigError as exc:
            pytest.fail(f"{line}: {exc}")
        parsed = urls.parse(url)
        assert parsed.user is None and parsed.password is None, f"{line}: user from PGUSER"
    named = [n for n in names if n]
    assert len(named) == len(set(named)), "a target name listed twice"


# --- every option is one the CLI accepts ---------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def help_options(text: str) -> set[str]:
    """The option names of a --help: the words that begin an option's row, in click's plain
    layout or rich's boxes (continuation lines of a description are indented further)."""
    found = set()
    for raw in ANSI.sub("", text).splitlines():
        line = re.sub(r"^\s*[│┃|]", "", raw)
        row = re.match(r"^ {0,4}(?:\* +)?(-[-\w].*)$", line)
        if not row:
            continue
        for word in re.split(r"[\s,/]+", row.group(1)):
            if not word.startswith("-"):
                break
            found.add(word)
    return found


@functools.cache
def cli_options(service: str, action: str) -> frozenset[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / MIGRATE), service, action, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return frozenset(help_options(done.stdout))


def test_help_options_are_read_from_both_layouts() -> None:
    plain = (
        "Options:\n  --version <int>      Apply up to here.\n"
        "  --backup / --no-backup  Take a backup. Under\n"
        "                          --atomic nothing is left.\n"
        "  -x, --x-arg KEY=VALUE  Handed over.\n"
    )
    assert help_options(plain) == {"--version", "--backup", "--no-backup", "-x", "--x-arg"}
    boxed = (
        "\x1b[2m╭─ Options ───╮\x1b[0m\n"
        "│ \x1b[1;36m--wait\x1b[0m      \x1b[33m<seconds>\x1b[0m  Keep retrying.   │\n"
        "│ *  --url     TEXT   A URL; see            │\n"
        "│                     --jobs for more.       │\n"
        "│ --json               Print JSON.          │\n"
        "╰─────────────╯\n"
    )
    assert help_options(boxed) == {"--wait", "--url", "--json"}
    up, status = cli_options("user", "up"), cli_options("user", "status")
    assert {"--wait", "--jobs", "--json", "--url", "--no-backup", "--metrics-file"} <= up
    assert "--strict" in status and "--strict" not in up
    assert "--no-such-option" not in up


@pytest.mark.parametrize(
    ("path", "doc", "container", "invocation"),
    INVOCATIONS,
    ids=[f"{where(p, d)}:{c['name']}:{i[1] if len(i) > 1 else '?'}" for p, d, c, i in INVOCATIONS],
)
def test_every_option_is_one_the_cli_accepts(
    path: Path, doc: dict[str, Any], container: dict[str, Any], invocation: list[str]
) -> None:
    service, action, *rest = invocation
    assert service in SERVICE_NAMES, service
    accepted = cli_options(service, action)
    given = sorted({w.split("=", 1)[0] for w in rest if re.match(r"^--?[A-Za-z][\w-]*(=|$)", w)})
    assert given, f"no option in {invocation}"
    unknown = [o for o in given if o not in accepted]
    assert not unknown, (
        f"{where(path, doc)} ({container['name']}): `migrate {service} {action}` does not "
        f"accept {', '.join(unknown)}"
    )


# --- the single-database Job and the Deployment's schema gate ---------------------------------


def single_job() -> dict[str, Any]:
    (found,) = [d for _, d in SINGLE if service_of(d) == "user"]
    return found


def test_single_database_job_runs_up_with_its_url_from_a_secret() -> None:
    job = single_job()
    migrate = migrate_container(job, "up")
    assert words(migrate) == ["python", MIGRATE, "user", "up", "--wait", "60"]
    assert list(env_from_secret(migrate)) == ["USER_DATABASE_URL"]
    assert "USER_DATABASE_URL" not in env_values(migrate)
    assert exit_code_action(job["spec"]["podFailurePolicy"]["rules"], "migrate", 2) == "FailJob"


def gate() -> tuple[list[str], str]:
    """The Deployment's init container that waits for the schema: its command (``python``
    being this interpreter) and URL variable."""
    (deployment,) = [d for _, d in of_kind("Deployment")]
    container = migrate_container(deployment, "wait")
    assert invocations(container)[0][:2] == ["user", "wait"]
    (variable,) = env_from_secret(container)
    return [sys.executable if w == "python" else w for w in words(container)], variable


def run_gate(command: list[str], env: dict[str, str], seconds: float) -> tuple[int | None, str]:
    """Run the gate for up to ``seconds``: its exit code (None if still waiting) and stderr."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=seconds)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err


def test_single_database_job_reaches_head_and_opens_the_gate(db: str) -> None:
    job = single_job()
    migrate = migrate_container(job, "up")
    (variable,) = env_from_secret(migrate)
    script, gate_variable = gate()
    assert gate_variable == variable  # the same Secret's URL
    # `python` in the manifests is this interpreter; the URL the Secret would hold is `db`.
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", variable: db}
    head = services.get("user", ROOT).head

    code, err = run_gate(script, env, seconds=4)
    assert code is None, f"the gate opened on an empty database: {err}"
    assert f"user: waiting for version {head}: the database has no version yet" in err
    assert history(db) == []

    command = [sys.executable if w == "python" else w for w in words(migrate)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert query(db, "SELECT max(version) FROM public.schema_migrations") == [(head,)]
    assert history(db) == versions("user")

    code, err = run_gate(script, env, seconds=60)
    assert code == 0, err
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # the next release's Job: nothing to do
    assert history(db) == versions("user")

    # A database ahead (a newer release migrated it; this one was rolled back to) passes.
    query(
        db,
        "INSERT INTO public.schema_migrations (version, description) VALUES (%s, 'x')",
        [head + 1],
    )
    query(db, "UPDATE public.alembic_version SET version_num = %s", [f"{head + 1:04d}"])
    code, err = run_gate(script, env, seconds=60)
    assert code == 0, err
