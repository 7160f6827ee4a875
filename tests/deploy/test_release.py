"""One release number, everywhere it shows: worker/version.py (`ticketrelay --version`),
pyproject.toml, the CHANGELOG's newest entry, the image labels and the exporter's
ticketrelay_build_info metric."""

from __future__ import annotations

import platform
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import create_engine

from worker.ops.cli import build_parser
from worker.ops.metrics.collector import TicketrelayCollector
from worker.settings import Settings
from worker.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_one_number_kept_in_pyproject_too() -> None:
    assert SEMVER.match(VERSION), VERSION
    assert pyproject()["project"]["version"] == VERSION  # type: ignore[index]


def test_ticketrelay_version_prints_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.ops.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ticketrelay {VERSION}"
    # --version is an option of the command itself, next to its subcommands.
    assert any("--version" in a.option_strings for a in build_parser()._actions)


def test_the_changelog_has_an_entry_for_this_release() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert releases[0] == ("Unreleased", ""), "the first section is [Unreleased]"
    name, date = releases[1]
    assert name == VERSION and date, (
        f"newest release in CHANGELOG.md is {name}, worker/version.py says {VERSION}"
    )
    entry = text.split(f"## [{VERSION}]", 1)[1].split("\n## [", 1)[0]
    headings = set(re.findall(r"^### (\w+)$", entry, re.MULTILINE))
    assert headings and headings <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def dockerfile_labels() -> dict[str, str]:
    text = (ROOT / "deploy/Dockerfile").read_text().replace("\\\n", " ")
    labels: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("LABEL "):
            for token in shlex.split(line[len("LABEL ") :]):
                key, _, value = token.partition("=")
                labels[key] = value
    return labels


def test_the_image_labels_carry_the_release_and_the_license() -> None:
    labels = dockerfile_labels()
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "ticketrelay"
    assert labels["org.opencontainers.image.licenses"] == pyproject()["project"]["license"]  # type: ignore[index]


def test_the_license_file_is_the_declared_license() -> None:
    assert pyproject()["project"]["license"] == "Apache-2.0"  # type: ignore[index]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_the_exporter_serves_build_info_even_when_no_store_answers() -> None:
    # Nothing listens on port 1 and the database has no tables: both reads fail, and the
    # release is still reported.
    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1)
    collector = TicketrelayCollector(settings, create_engine("sqlite://"), client, [])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    expected = f'ticketrelay_build_info{{python="{platform.python_version()}",version="{VERSION}"}} 1.0'
    assert expected in text, text
    assert 'ticketrelay_exporter_source_up{source="redis"} 0.0' in text
