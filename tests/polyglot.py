"""How the tests run the producer examples in other languages (examples/node, php, go): one
command line per language, or a skip reason when its toolchain is not on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LANGUAGES = ["node", "php", "go"]
INSTALL = {
    "node": "Node.js 18 or later",
    "php": "apt-get install -y php-cli",
    "go": "apt-get install -y golang-go",
}


@dataclass(frozen=True)
class Example:
    language: str
    argv: list[str]

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _go_build(build_dir: Path) -> list[str]:
    binary = build_dir / "booking-go"
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOPROXY": "off", "CGO_ENABLED": "0"}
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(build_dir / "gocache")
    done = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=EXAMPLES / "go",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"go build failed:\n{done.stdout}\n{done.stderr}"
    return [str(binary)]


def example(language: str, build_dir: Path) -> Example:
    """The example of `language`, ready to run; skips the test when its toolchain is missing."""
    tool = {"node": "node", "php": "php", "go": "go"}[language]
    if shutil.which(tool) is None:
        pytest.skip(f"no `{tool}` on PATH, so the {language} example cannot run here ({INSTALL[language]})")
    if language == "node":
        return Example(language, ["node", str(EXAMPLES / "node" / "booking.mjs")])
    if language == "php":
        return Example(language, ["php", str(EXAMPLES / "php" / "booking.php")])
    return Example(language, _go_build(build_dir))


def printed(stdout: str) -> dict[str, str]:
    """The `name=value` lines an example prints."""
    out = {}
    for line in stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            out[name] = value
    return out
