"""`ticketrelay accounts check` against the simulators over HTTP, as an operator runs it."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.server import SandboxHTTPServer, start_in_thread
from worker.ops import accounts_check


@pytest.fixture
def server() -> Iterator[SandboxHTTPServer]:
    srv = start_in_thread(Sandbox(seed=1))
    yield srv
    srv.stop()


def accounts_file(tmp_path: Path, url: str, fourvenues_base: str) -> Path:
    # Simulators over plain http: each account says it is a sandbox (real ones need https).
    path = tmp_path / "accounts.toml"
    path.write_text(
        f"""
[remypass.default]
base_url = "{url}/remypass/api/v1/public"
sandbox = true
api_key = "sandbox-key"

[fourvenues.default]
base_url = "{fourvenues_base}"
sandbox = true
api_key = "sandbox-key"

[fourvenues.v1]
base_url = "{url}/fourvenues"
sandbox = true
auth = "v1"
integration_id = "sandbox-integration"
secret = "sandbox-secret"

[fourvenues_channels.default]
base_url = "{url}/fourvenues-channels"
sandbox = true
api_key = "sandbox-key"

[eguma.default]
base_url = "{url}/eguma/v1"
sandbox = true
api_key = "sandbox-key"
"""
    )
    return path


def command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ticketrelay")
    accounts_check.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_every_sandbox_account_passes(
    server: SandboxHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(
        "TICKETRELAY_ACCOUNTS_FILE", str(accounts_file(tmp_path, server.url, f"{server.url}/fourvenues"))
    )
    args = command(["accounts", "check", "--json"])
    assert args.fn(args) == 0
    report = json.loads(capsys.readouterr().out)
    results = {a["account"]: a["result"] for a in report["accounts"]}
    assert set(results) == {
        "eguma.default",
        "fourvenues.default",
        "fourvenues.v1",
        "fourvenues_channels.default",
        "remypass.default",
    }
    assert all(r in ("ok", "warning") for r in results.values()), report


def test_a_wrong_fourvenues_base_url_exits_nonzero_naming_the_account_and_why(
    server: SandboxHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = f"{server.url}/fourvenues/wrong"
    monkeypatch.setenv("TICKETRELAY_ACCOUNTS_FILE", str(accounts_file(tmp_path, server.url, wrong)))
    args = command(["accounts", "check"])
    assert args.fn(args) == 1
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("fourvenues.default"))
    assert " failed " in line and "base_url" in line
    assert "1 of 5 accounts are wrong: fourvenues.default" in out
    assert "sandbox-key" not in out
    # Nothing was created anywhere.
    truth = server.sandbox.ground_truth()
    assert all(truth[p]["tickets"] == 0 for p in ("remypass", "fourvenues", "fourvenues_channels", "eguma"))
