"""deploy/ kept honest, without Docker or a cluster: every command that a deployment file runs is
a real `ticketrelay` subcommand that worker.ops.cli accepts, every TICKETRELAY_* variable is a real
setting, every path exists in the repository, and every worker stop timeout outlasts the soft
shutdown."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from worker.ops.cli import build_parser
from worker.settings import Settings, load_accounts

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Where the repository lives in each kind of deployment: the image's WORKDIR, the systemd
# WorkingDirectory, and the repository root itself for the Procfile.
REPO_MOUNTS = ("/app/", "/opt/ticketrelay/", "./")
PREFIX = "TICKETRELAY_"
# After the soft shutdown the worker still restores messages and exits; worker/app.py ends the
# process at the latest 3 s later. A stop timeout must cover both, with a little room.
SHUTDOWN_MARGIN_S = 5.0
# libyaml when available: the manifests are parsed many times over.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
HEARTBEAT_RE = re.compile(r"""Heartbeat\(\s*["'](\w+)["']""")
ENV_READ_RE = re.compile(
    r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](TICKETRELAY_[A-Z0-9_]+)["']"""
    r"""|\$\{?(TICKETRELAY_[A-Z0-9_]+)"""
)


# ---------------------------------------------------------------------------------- helpers


def repo_path(path: str) -> Path | None:
    """The repository file a deployment path stands for (`/app/scripts/probe` -> scripts/probe)."""
    for mount in REPO_MOUNTS:
        if path.startswith(mount):
            return ROOT / path[len(mount) :]
    return None


@cache
def subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "command":
            return set(action.choices)
    raise AssertionError("worker.ops.cli.build_parser() has no subcommands")


def check_ticketrelay_argv(argv: list[str], where: str) -> None:
    assert argv, f"{where}: runs `ticketrelay` without a subcommand"
    known = subcommands()
    assert argv[0] in known, (
        f"{where}: `ticketrelay {argv[0]}` is not a subcommand of worker.ops.cli.build_parser() "
        f"(it has: {', '.join(sorted(known))})"
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: worker.ops.cli rejects `ticketrelay {shlex.join(argv)}`: {err.getvalue()}")


def settings_fields() -> set[str]:
    return set(Settings.model_fields)


@cache
def env_vars_read_by_code() -> set[str]:
    """TICKETRELAY_* variables read directly (os.environ, shell) rather than through Settings."""
    found: set[str] = set()
    files = [ROOT / "ticketrelay", *(ROOT / "scripts").iterdir()]
    for package in ("worker", "tasks", "schemas"):
        files += (ROOT / package).rglob("*.py")
    for f in files:
        if f.is_file():
            for m in ENV_READ_RE.finditer(f.read_text(errors="replace")):
                found.add(m.group(1) or m.group(2))
    return found


@cache
def heartbeat_names() -> set[str]:
    names: set[str] = set()
    for package in ("worker", "tasks"):
        for f in (ROOT / package).rglob("*.py"):
            names.update(HEARTBEAT_RE.findall(f.read_text()))
    return names


def check_probe(argv: list[str], where: str) -> None:
    """A probe command: `<repo>/scripts/probe NAME MAX_AGE_S` for a heartbeat the code writes."""
    assert argv and argv[0].endswith("scripts/probe"), f"{where}: probe {argv} does not use scripts/probe"
    target = repo_path(argv[0])
    assert target is not None and target == ROOT / "scripts/probe", f"{where}: {argv[0]} is not scripts/probe"
    assert target.is_file() and os.access(target, os.X_OK), f"{where}: {target} missing or not executable"
    assert len(argv) == 3, f"{where}: usage is scripts/probe NAME MAX_AGE_SECONDS, got {argv}"
    assert argv[1] in heartbeat_names(), f"{where}: no process writes heartbeat {argv[1]!r}"
    assert argv[2].isdigit() and int(argv[2]) > 2, f"{where}: max age {argv[2]!r} (heartbeats every 1-2 s)"


def env_value(envs: list[dict[str, str]], name: str) -> str | None:
    for env in envs:
        if name in env:
            return env[name]
    return None


def soft_shutdown_s(*envs: dict[str, str]) -> float:
    value = env_value(list(envs), "TICKETRELAY_SOFT_SHUTDOWN_TIMEOUT_S")
    return float(value) if value is not None else Settings().soft_shutdown_timeout_s


def duration_s(value: str | int | float) -> float:
    """Compose ("1m30s") and systemd ("30", "30s", "1min 30s") durations in seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|sec|h|m|s)", text)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == re.sub(r"\s+", "", text), f"duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


# ---------------------------------------------------------------------------------- loaders


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            instr, _, rest = full.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, rest in dockerfile():
        if instr == "ENV":
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"Dockerfile: use ENV KEY=value, got {token!r}"
                env[key] = value
    return env


def dockerfile_exec_form(instr: str) -> list[str]:
    found = [rest for i, rest in dockerfile() if i == instr]
    assert len(found) == 1, f"Dockerfile: expected one {instr}, found {len(found)}"
    value = json.loads(found[0])
    assert isinstance(value, list), f"Dockerfile: {instr} must use the exec (JSON) form"
    return value


@cache
def compose() -> dict[str, Any]:
    return yaml.load(COMPOSE.read_text(), Loader=Loader)


def ticketrelay_services() -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in compose()["services"].items() if str(s.get("image", "")).startswith("ticketrelay")
    }


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's variables as its process sees them with deploy/.env's optional variables
    unset: `${NAME:-default}` is the default (Compose interpolates before the process starts)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: re.sub(r"\$\{[A-Za-z0-9_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


@cache
def k8s_docs(*subdirs: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for sub in subdirs or ("config", "secrets", "migrate", "app", "keda"):
        for f in sorted((K8S / sub).glob("*.yaml")):
            if f.name == "kustomization.yaml":
                continue  # kustomize's own file (tests/deploy/test_validators.py)
            for doc in yaml.load_all(f.read_text(), Loader=Loader):
                if doc:
                    doc["__file__"] = f"{f.relative_to(ROOT)}"
                    docs.append(doc)
    return docs


def k8s_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def configmap() -> dict[str, str]:
    (cm,) = k8s_kind("ConfigMap").values()
    return {k: str(v) for k, v in cm["data"].items()}


def secrets_example() -> dict[str, dict[str, str]]:
    return {name: s.get("stringData", {}) for name, s in k8s_kind("Secret").items()}


def workloads() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, workload, its pod spec) for every Deployment and Job."""
    for kind in ("Deployment", "Job"):
        for name, d in k8s_kind(kind).items():
            yield name, d, d["spec"]["template"]["spec"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "ticketrelay-config"
            env = {**configmap(), **env}
        if "secretRef" in source:
            env = {**secrets_example()[source["secretRef"]["name"]], **env}
    return env


@cache
def systemd_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) lists: systemd keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def unit_env(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit_values(unit, "Service", "Environment"):
        for token in shlex.split(value):
            key, _, val = token.partition("=")
            env[key] = val
    return env


def systemd_unescape(text: str) -> str:
    return text.replace("%i", "1").replace("%I", "1").replace("%%", "%")


def env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@cache
def procfile() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, cmd = line.partition(":")
            out[name.strip()] = cmd.strip()
    return out


# ------------------------------------------------------ every command, from every file


@cache
def commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `ticketrelay`) for every process that a deployment file runs."""
    found: list[tuple[str, list[str]]] = []
    for name, cmd in procfile().items():
        tokens = shlex.split(cmd)
        assert tokens[0] == "./ticketrelay", f"Procfile {name}: runs {tokens[0]}, not ./ticketrelay"
        found.append((f"Procfile:{name}", tokens[1:]))
    found.append(("Dockerfile:CMD", dockerfile_exec_form("CMD")))
    for name, svc in ticketrelay_services().items():
        assert "entrypoint" not in svc, f"compose {name}: keep the image's ENTRYPOINT (./ticketrelay)"
        assert isinstance(svc.get("command"), list), f"compose {name}: command must be a list"
        found.append((f"compose:{name}", svc["command"]))
    for name, _, pod in workloads():
        for c in pod["containers"]:
            assert "command" not in c, f"k8s {name}: keep the image's ENTRYPOINT; put the subcommand in args"
            found.append((f"k8s:{name}/{c['name']}", [str(a) for a in c["args"]]))
    for path in sorted(SYSTEMD.glob("*.service")):
        for exec_start in unit_values(systemd_unit(path), "Service", "ExecStart"):
            tokens = shlex.split(systemd_unescape(exec_start))
            assert tokens[0] == "/opt/ticketrelay/ticketrelay", f"{path.name}: ExecStart runs {tokens[0]}"
            found.append((f"systemd:{path.name}", tokens[1:]))
    return found


@pytest.mark.parametrize(("where", "argv"), commands(), ids=[w for w, _ in commands()])
def test_every_command_is_a_ticketrelay_subcommand_the_cli_accepts(where: str, argv: list[str]) -> None:
    check_ticketrelay_argv(argv, where)


def test_the_entry_points_exist() -> None:
    entry = dockerfile_exec_form("ENTRYPOINT")
    assert entry[-1] == "/app/ticketrelay", f"ENTRYPOINT must end in /app/ticketrelay, got {entry}"
    script = repo_path(entry[-1])
    assert script is not None and script.is_file() and os.access(script, os.X_OK)
    assert (ROOT / "scripts/probe").is_file() and os.access(ROOT / "scripts/probe", os.X_OK)


def test_every_procfile_process_is_deployed_everywhere() -> None:
    processes = {shlex.split(cmd)[1] for cmd in procfile().values()}
    deployed: dict[str, set[str]] = {"compose": set(), "k8s": set(), "systemd": set()}
    for where, argv in commands():
        kind = where.split(":")[0]
        if kind in deployed:
            deployed[kind].add(argv[0])
    for kind, subs in deployed.items():
        assert processes <= subs, f"{kind} does not run: {sorted(processes - subs)}"


def test_honcho_accepts_the_procfile() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "honcho", "check", "-f", "Procfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid procfile" in result.stdout + result.stderr


# ---------------------------------------------------------------------------- settings


@cache
def all_env_settings() -> list[tuple[str, dict[str, str]]]:
    """(where, variables) for every place that sets environment variables."""
    sources: list[tuple[str, dict[str, str]]] = [("Dockerfile ENV", dockerfile_env())]
    for name, svc in compose()["services"].items():
        sources.append((f"compose:{name}", service_env(svc)))
    sources.append(("k8s ConfigMap", configmap()))
    for name, values in secrets_example().items():
        sources.append((f"k8s Secret {name}", {k: v for k, v in values.items() if "." not in k}))
    for name, _, pod in workloads():
        for c in pod["containers"]:
            sources.append((f"k8s:{name}", {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}))
    for path in sorted(SYSTEMD.glob("*.service")):
        sources.append((f"systemd:{path.name}", unit_env(systemd_unit(path))))
    for path in (SYSTEMD / "env.example", DEPLOY / "env.example", DEPLOY / "provider-keys.env.example"):
        sources.append((str(path.relative_to(ROOT)), env_file(path)))
    return sources


@pytest.mark.parametrize(("where", "env"), all_env_settings(), ids=[w for w, _ in all_env_settings()])
def test_every_ticketrelay_variable_is_a_real_setting(where: str, env: dict[str, str]) -> None:
    fields, read_directly = settings_fields(), env_vars_read_by_code()
    values: dict[str, str] = {}
    for name, value in env.items():
        if not name.upper().startswith(PREFIX):
            continue
        field = name[len(PREFIX) :].lower()
        assert field in fields or name in read_directly, (
            f"{where}: {name} is neither a field of worker.settings.Settings nor read by the code"
        )
        if field in fields:
            values[field] = value
    Settings(**values)  # the values parse (numbers are numbers, the pool is a known one, ...)


@pytest.mark.parametrize(("where", "env"), all_env_settings(), ids=[w for w, _ in all_env_settings()])
def test_every_flower_variable_is_a_flower_option(where: str, env: dict[str, str]) -> None:
    """Flower reads FLOWER_<OPTION> and stops at start-up on a variable it does not know."""
    import flower.options  # noqa: F401 - defines Flower's options
    from tornado.options import options

    for name, value in env.items():
        if name.startswith("FLOWER_"):
            option = name[len("FLOWER_") :].lower().replace("_", "-")
            assert option in options._options, f"{where}: {name} is not a Flower option"
            if options._options[option].type is int:
                assert value.isdigit(), f"{where}: {name}={value!r} is not a number"


def test_production_uses_postgresql_and_an_accounts_file() -> None:
    database_urls = {
        "compose": service_env(ticketrelay_services()["worker"])["TICKETRELAY_DATABASE_URL"],
        "k8s Secret": secrets_example()["ticketrelay-database"]["TICKETRELAY_DATABASE_URL"],
        "systemd env": env_file(SYSTEMD / "env.example")["TICKETRELAY_DATABASE_URL"],
    }
    for where, url in database_urls.items():
        assert url.startswith("postgresql+psycopg://"), where
    for env in (
        configmap(),
        service_env(ticketrelay_services()["worker"]),
        env_file(SYSTEMD / "env.example"),
    ):
        # Without an accounts file ticketrelay talks to its built-in sandbox.
        assert env["TICKETRELAY_ACCOUNTS_FILE"].endswith("/accounts.toml")


def test_the_example_accounts_load_and_name_their_keys(tmp_path: Path) -> None:
    key_names: list[set[str]] = []
    texts = {
        "deploy/accounts.example.toml": (DEPLOY / "accounts.example.toml").read_text(),
        "k8s Secret ticketrelay-accounts": secrets_example()["ticketrelay-accounts"]["accounts.toml"],
    }
    for where, text in texts.items():
        f = tmp_path / "accounts.toml"
        f.write_text(text)
        accounts = load_accounts(f)
        assert {p for p, _ in accounts} == {"remypass", "fourvenues", "fourvenues_channels", "eguma"}, where
        keys = [t["api_key"] for tables in tomllib.loads(text).values() for t in tables.values()]
        assert all(k.startswith("env:") for k in keys), f"{where}: every secret must be an env: reference"
        names = {k[len("env:") :] for k in keys}
        key_names.append(names)
    for where, provided in (
        ("k8s Secret ticketrelay-provider-keys", set(secrets_example()["ticketrelay-provider-keys"])),
        ("deploy/provider-keys.env.example", set(env_file(DEPLOY / "provider-keys.env.example"))),
        ("deploy/systemd/env.example", set(env_file(SYSTEMD / "env.example"))),
    ):
        for names in key_names:
            assert names <= provided, f"{where} lacks {sorted(names - provided)}"


# -------------------------------------------------------------------------------- Docker


def test_dockerfile_builds_a_non_root_image_with_the_repository_on_pythonpath() -> None:
    instrs = dockerfile()
    froms = [rest for i, rest in instrs if i == "FROM"]
    assert froms == ["python:3.11-slim"]
    assert ("WORKDIR", "/app") in instrs
    users = [rest for i, rest in instrs if i == "USER"]
    assert users, "Dockerfile: no USER, the processes would run as root"
    user = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}: must be a numeric non-root uid"
    pods = [pod for _, _, pod in workloads()]
    assert all(p["securityContext"]["runAsUser"] == int(user) for p in pods)
    env = dockerfile_env()
    assert env.get("PYTHONPATH") == "/app"
    assert env.get("TICKETRELAY_VENV") == "/app/.venv"
    assert env.get("TICKETRELAY_STATE_DIR"), "the probes need a writable state dir"


def test_dockerfile_installs_the_runtime_lock_before_the_code_and_never_at_start() -> None:
    instrs = dockerfile()
    copies = [(n, rest.split()) for n, (i, rest) in enumerate(instrs) if i == "COPY"]
    runs = [(n, rest) for n, (i, rest) in enumerate(instrs) if i == "RUN"]
    (install_at, _) = next((n, r) for n, r in runs if "scripts/bootstrap" in r)
    # The environment in force at the install: the runtime lock (no dev tools), into /app/.venv.
    env_then: dict[str, str] = {}
    for n, (instr, rest) in enumerate(instrs):
        if instr == "ENV" and n < install_at:
            env_then.update(dict(t.partition("=")[::2] for t in shlex.split(rest)))
    assert env_then.get("TICKETRELAY_REQUIREMENTS") == "/app/requirements.txt"
    assert env_then.get("TICKETRELAY_VENV") == "/app/.venv"
    assert env_then.get("TICKETRELAY_NO_INSTALL") != "1", "the build step itself must install"
    before = {src for n, args in copies if n < install_at for src in args[:-1]}
    assert {"requirements.txt", "scripts/bootstrap"} <= before
    assert not any("requirements-dev" in src for _, args in copies for src in args), "dev tools in the image"
    code = [n for n, args in copies if any(s in ("worker", "tasks", "schemas") for s in args[:-1])]
    assert code and min(code) > install_at, "copy the code after installing the dependencies (layer cache)"
    # At run time ./ticketrelay runs bootstrap, which must check, never install.
    assert dockerfile_env().get("TICKETRELAY_NO_INSTALL") == "1"


def test_dockerfile_copies_only_existing_paths_the_dockerignore_lets_through() -> None:
    allowed = {
        line[1:].strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for instr, rest in dockerfile():
        if instr != "COPY":
            continue
        for src in rest.split()[:-1]:
            if src.startswith("--"):
                continue
            assert (ROOT / src).exists(), f"Dockerfile: COPY {src}: no such path in the repository"
            top = src.split("/")[0]
            assert src in allowed or top in allowed, f".dockerignore excludes {src}"


def test_systemd_units_use_the_runtime_lock_and_never_install() -> None:
    for path in sorted(SYSTEMD.glob("*.service")):
        env = unit_env(systemd_unit(path))
        assert env.get("TICKETRELAY_REQUIREMENTS") == "/opt/ticketrelay/requirements.txt", path.name
        assert env.get("TICKETRELAY_NO_INSTALL") == "1", path.name


# ------------------------------------------------------------------------------- Compose


def test_compose_redis_persists_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    cmd = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_compose_postgres_migrate_and_dependencies() -> None:
    services = compose()["services"]
    pg = services["postgres"]
    assert str(pg["image"]).startswith("postgres:16") and "healthcheck" in pg
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, svc in ticketrelay_services().items():
        if name != "migrate":
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_compose_worker_scales_and_outlasts_its_soft_shutdown() -> None:
    services = ticketrelay_services()
    workers = {n: s for n, s in services.items() if s["command"][0] == "worker"}
    assert workers
    for name, svc in workers.items():
        assert "container_name" not in svc and "ports" not in svc, f"{name}: cannot --scale {name}=4"
        grace = duration_s(svc.get("stop_grace_period", "10s"))
        soft = soft_shutdown_s(service_env(svc))
        assert grace >= soft + SHUTDOWN_MARGIN_S, f"compose {name}: stop_grace_period {grace}s, soft {soft}s"


def test_compose_probes_and_flower_auth() -> None:
    services = ticketrelay_services()
    for name in ("intake", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: exec form, no shell"
        check_probe(test[1:], f"compose {name}")
        assert test[2] == name
    flower = services["flower"]
    env = service_env(flower)
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?"), "Flower must not start without auth"
    assert env["FLOWER_READ_ONLY"] == "true"
    for svc in services.values():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"publish on localhost only: {port}"


def test_compose_accounts_secret_is_where_the_setting_points() -> None:
    doc = compose()
    for name, svc in ticketrelay_services().items():
        targets = [s["target"] for s in svc.get("secrets", [])]
        path = service_env(svc)["TICKETRELAY_ACCOUNTS_FILE"]
        if svc["command"][0] in ACCOUNTS_READERS:
            assert path == f"/run/secrets/{targets[0]}", name
    assert set(doc["secrets"]) == {"accounts"}


def test_compose_metrics_listens_where_docker_publishes_it() -> None:
    metrics = ticketrelay_services()["metrics"]
    assert service_env(metrics).get("TICKETRELAY_METRICS_HOST") in ("0.0.0.0", "::")
    port = int(service_env(metrics).get("TICKETRELAY_METRICS_PORT", Settings().metrics_port))
    assert [str(p).rsplit(":", 1)[1] for p in metrics["ports"]] == [str(port)]


# ---------------------------------------------------------------------------- Kubernetes


def test_k8s_manifests_are_namespace_agnostic_and_complete() -> None:
    docs = k8s_docs()
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d["__file__"]
        assert "namespace" not in d["metadata"], f"{d['__file__']}: no namespace, use kubectl -n"
    deployments = k8s_kind("Deployment")
    assert set(deployments) == {
        f"ticketrelay-{n}" for n in ("intake", "worker-live", "worker-bulk", "beat", "flower", "metrics")
    }
    assert deployments["ticketrelay-intake"]["spec"]["replicas"] == 2
    beat = deployments["ticketrelay-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    # KEDA owns the workers' replica counts; a replicas field would be reset on each apply.
    for name in ("ticketrelay-worker-live", "ticketrelay-worker-bulk"):
        assert "replicas" not in deployments[name]["spec"], name
    (job,) = k8s_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # Secret examples are never applied together with the workloads.
    assert all(d["kind"] != "Secret" for d in k8s_docs("config", "migrate", "app", "keda"))
    for d in deployments.values():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_containers_share_one_image_and_reference_existing_config() -> None:
    images = set()
    secrets = secrets_example()
    for name, _, pod in workloads():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            images.add(c["image"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            container_env(c)  # every configMapRef / secretRef exists
        for vol in pod.get("volumes", []):
            if "secret" in vol:
                assert vol["secret"]["secretName"] in secrets, (
                    f"{name}: no Secret {vol['secret']['secretName']}"
                )
    assert len(images) == 1, f"migrations and processes must run the same image: {images}"


# The processes that load the accounts file at start-up (worker.ops.cli cmd_intake, the tasks, the
# exporter's labels in worker/ops/metrics_server.py): without it they stop.
ACCOUNTS_READERS = ("intake", "worker", "metrics")


def test_k8s_accounts_and_state_dir_are_mounted_where_the_settings_point() -> None:
    accounts = Path(configmap()["TICKETRELAY_ACCOUNTS_FILE"])
    state_dir = configmap()["TICKETRELAY_STATE_DIR"]
    key = "accounts.toml"
    assert key in secrets_example()["ticketrelay-accounts"]
    for name, _, pod in workloads():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            sub = c["args"][0]
            if sub in ACCOUNTS_READERS:
                vol = mounts.get(str(accounts.parent))
                assert vol and vol["secret"]["secretName"] == "ticketrelay-accounts", name
                assert accounts.name == key
            if sub in ("intake", "worker", "beat") and c["securityContext"].get("readOnlyRootFilesystem"):
                assert state_dir in mounts, f"{name}: read-only root but no volume at {state_dir}"


def test_k8s_probes_check_heartbeats_without_starting_python() -> None:
    for name, _, pod in workloads():
        for c in pod["containers"]:
            ports = {p.get("name") for p in c.get("ports", [])} | {
                p["containerPort"] for p in c.get("ports", [])
            }
            sub = c["args"][0]
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    continue
                if "exec" in probe:
                    check_probe(probe["exec"]["command"], f"k8s {name} {kind}")
                    assert probe["exec"]["command"][1] == sub, f"{name} {kind}: probes another process"
                else:
                    assert "httpGet" in probe, f"{name} {kind}: exec (scripts/probe) or httpGet only"
                    assert probe["httpGet"]["port"] in ports, f"{name} {kind}: undeclared port"
            if sub in ("intake", "worker"):
                for kind in ("readinessProbe", "livenessProbe"):
                    assert "exec" in c.get(kind, {}), f"{name}: needs an exec {kind} via scripts/probe"


def test_k8s_grace_period_outlasts_the_soft_shutdown() -> None:
    for name, _, pod in workloads():
        for c in pod["containers"]:
            if c["args"][0] == "worker":
                grace = pod.get("terminationGracePeriodSeconds", 30)
                soft = soft_shutdown_s(container_env(c))
                assert grace >= soft + SHUTDOWN_MARGIN_S, f"{name}: grace {grace}s, soft shutdown {soft}s"


def test_k8s_services_scrape_the_declared_ports() -> None:
    deployments = k8s_kind("Deployment")
    services = k8s_kind("Service")
    assert set(services) == {"ticketrelay-flower", "ticketrelay-metrics"}
    metrics_port = int(configmap().get("TICKETRELAY_METRICS_PORT", Settings().metrics_port))
    for name, svc in services.items():
        pod = deployments[name]["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), name
        (port,) = svc["spec"]["ports"]
        container_ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert container_ports[port["targetPort"]] == port["port"], name
        notes = svc["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == port["port"], name
    assert services["ticketrelay-metrics"]["spec"]["ports"][0]["port"] == metrics_port
    metrics_env = container_env(
        deployments["ticketrelay-metrics"]["spec"]["template"]["spec"]["containers"][0]
    )
    # The exporter listens on 127.0.0.1 unless told otherwise: unreachable for Prometheus and kubelet.
    assert metrics_env.get("TICKETRELAY_METRICS_HOST") in ("0.0.0.0", "::")
    flower_env = container_env(deployments["ticketrelay-flower"]["spec"]["template"]["spec"]["containers"][0])
    assert "FLOWER_BASIC_AUTH" in flower_env and flower_env["FLOWER_READ_ONLY"] == "true"
    assert flower_env["FLOWER_PORT"] == str(services["ticketrelay-flower"]["spec"]["ports"][0]["port"])


def test_keda_scales_the_worker_on_the_celery_queue_and_intake_on_the_stream() -> None:
    cm = configmap()
    settings = Settings(**{k[len(PREFIX) :].lower(): v for k, v in cm.items() if k.startswith(PREFIX)})
    url = urlsplit(settings.redis_url)
    db_index = (url.path or "/0").lstrip("/") or "0"
    deployments = k8s_kind("Deployment")
    objects = k8s_kind("ScaledObject")
    for name, queue in (("worker-live", settings.queue), ("worker-bulk", settings.bulk_queue)):
        so = objects[f"ticketrelay-{name}"]
        assert so["spec"]["scaleTargetRef"]["name"] == f"ticketrelay-{name}"
        args = deployments[f"ticketrelay-{name}"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == ["worker", "-Q", queue], f"{name} consumes {args}, KEDA scales it on {queue}"
        # Not 0: retries waiting in a worker's memory (and the sweeper's tasks) need a worker.
        assert so["spec"]["minReplicaCount"] >= 1
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
    assert settings.queue == Settings().queue and settings.bulk_queue == Settings().bulk_queue
    intake = objects["ticketrelay-intake"]
    assert intake["spec"]["scaleTargetRef"]["name"] == "ticketrelay-intake"
    assert intake["spec"]["minReplicaCount"] == deployments["ticketrelay-intake"]["spec"]["replicas"]
    (stream,) = intake["spec"]["triggers"]
    assert stream["type"] == "redis-streams"
    assert stream["metadata"]["stream"] == settings.intake_stream
    assert stream["metadata"]["consumerGroup"] == settings.intake_group
    for so in (objects["ticketrelay-worker-live"], objects["ticketrelay-worker-bulk"], intake):
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        env = container_env(target["spec"]["template"]["spec"]["containers"][0])
        for t in so["spec"]["triggers"]:
            address = env.get(t["metadata"]["addressFromEnv"])
            assert address == f"{url.hostname}:{url.port or 6379}", "KEDA's Redis is not the app's"
            assert t["metadata"]["databaseIndex"] == db_index


def test_k8s_pod_disruption_budgets_cover_the_workers_and_intake_without_blocking_drains() -> None:
    deployments = k8s_kind("Deployment")
    budgets = k8s_kind("PodDisruptionBudget")
    covered = set()
    for name, pdb in budgets.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        (target,) = [
            n
            for n, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        covered.add(target)
        # minAvailable with a single pod (KEDA's minimum) would block every node drain.
        assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] == 1, name
    assert {"ticketrelay-worker-live", "ticketrelay-worker-bulk", "ticketrelay-intake"} <= covered


def worker_queues(argv: list[str]) -> list[str]:
    """The queues `ticketrelay worker ARGS` consumes (both when no -Q is given, as worker.ops.cli)."""
    assert argv[0] == "worker"
    for i, arg in enumerate(argv):
        if arg in ("-Q", "--queues"):
            return argv[i + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
    return [Settings().queue, Settings().bulk_queue]


def test_live_and_bulk_workers_are_deployed_apart_everywhere() -> None:
    """Each deployment kind runs live workers on the live queue only and bulk workers on the bulk
    queue only (docs/operations.md, Scaling out), and together they consume both queues."""
    live, bulk = Settings().queue, Settings().bulk_queue
    k8s = [
        worker_queues([str(a) for a in c["args"]])
        for _, _, pod in workloads()
        for c in pod["containers"]
        if c["args"][0] == "worker"
    ]
    compose_workers = [
        worker_queues(svc["command"])
        for svc in ticketrelay_services().values()
        if svc["command"][0] == "worker"
    ]
    systemd_workers = []
    for path in sorted(SYSTEMD.glob("*.service")):
        (exec_start,) = unit_values(systemd_unit(path), "Service", "ExecStart")
        argv = shlex.split(exec_start)[1:]
        if argv[0] == "worker":
            systemd_workers.append(worker_queues(argv))
    for where, found in (("k8s", k8s), ("compose", compose_workers), ("systemd", systemd_workers)):
        assert sorted(found) == sorted([[live], [bulk]]), f"{where}: workers consume {found}"


# ------------------------------------------------------------------------------- systemd

UNITS = ("intake", "worker@", "worker-bulk@", "beat", "flower", "metrics")


def test_systemd_units_run_each_process_after_the_migration() -> None:
    names = {p.name for p in SYSTEMD.glob("*.service")}
    assert names == {f"ticketrelay-{u}.service" for u in (*UNITS, "migrate")}
    migrate = systemd_unit(SYSTEMD / "ticketrelay-migrate.service")
    assert unit_values(migrate, "Service", "Type") == ["oneshot"]
    assert unit_values(migrate, "Service", "RemainAfterExit") == ["yes"]
    for path in sorted(SYSTEMD.glob("*.service")):
        unit = systemd_unit(path)
        one = {
            key: unit_values(unit, "Service", key) for key in ("User", "WorkingDirectory", "EnvironmentFile")
        }
        assert one == {
            "User": ["ticketrelay"],
            "WorkingDirectory": ["/opt/ticketrelay"],
            "EnvironmentFile": ["/etc/ticketrelay/env"],
        }, path.name
        assert unit_values(unit, "Service", "NoNewPrivileges") == ["yes"], path.name
        assert unit_values(unit, "Service", "ProtectSystem") == ["strict"], path.name
        state_dir = unit_env(unit)["TICKETRELAY_STATE_DIR"]
        writable = " ".join(unit_values(unit, "Service", "ReadWritePaths")).split()
        assert state_dir in writable, f"{path.name}: ProtectSystem=strict but {state_dir} is not writable"
        assert unit_values(unit, "Install", "WantedBy") == ["multi-user.target"], path.name
        if path.name == "ticketrelay-migrate.service":
            continue
        assert unit_values(unit, "Service", "KillSignal") == ["SIGTERM"], path.name
        assert unit_values(unit, "Service", "Restart") == ["on-failure"], path.name
        for key in ("Requires", "After"):
            deps = " ".join(unit_values(unit, "Unit", key)).split()
            assert "ticketrelay-migrate.service" in deps, f"{path.name}: {key}= lacks the migration"


def test_systemd_worker_stop_timeout_outlasts_the_soft_shutdown() -> None:
    env_defaults = env_file(SYSTEMD / "env.example")
    for path in sorted(SYSTEMD.glob("*.service")):
        unit = systemd_unit(path)
        (exec_start,) = unit_values(unit, "Service", "ExecStart")
        if shlex.split(exec_start)[1] != "worker":
            continue
        (timeout,) = unit_values(unit, "Service", "TimeoutStopSec")
        soft = soft_shutdown_s(unit_env(unit), env_defaults)
        assert duration_s(timeout) >= soft + SHUTDOWN_MARGIN_S, f"{path.name}: {timeout} vs soft {soft}s"
        # Several instances on one host need distinct Celery node names.
        assert "%i" in unit_env(unit).get("CELERY_WORKER_HOSTNAME", ""), path.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    for path in SYSTEMD.glob("*.service"):
        name = path.name.replace("@.service", "@1.service")
        text = path.read_text().replace("/opt/ticketrelay/ticketrelay", str(ROOT / "ticketrelay"))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
