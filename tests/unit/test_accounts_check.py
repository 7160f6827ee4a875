"""`ticketrelay accounts check` against scripted providers: one harmless call per account."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import httpx
import pytest
from provider_fakes import HOSTS, account, fv_not_found, html_404

from worker.ops import accounts_check
from worker.ops.accounts_check import FAILED, OK, WARNING, check_accounts, exit_code
from worker.providers import build_client
from worker.settings import AccountConfig, AccountsError

Handler = Callable[[httpx.Request], httpx.Response]


def documented(request: httpx.Request) -> httpx.Response:
    """Every provider answering its lookup route as its docs say, for a code that does not exist."""
    path, host = request.url.path, request.url.host
    if host == "api.fourvenues.test" and path.startswith("/integrations/tickets/by-code/"):
        return fv_not_found()
    if host == "channels-service.fourvenues.test" and path == "/tickets":
        known = {"_id": "c1", "qr_code": "KNOWN"}
        code = request.url.params.get("qr_code")
        data = [known] if code in (None, "KNOWN") else []
        return httpx.Response(200, json={"success": True, "data": data})
    if host == "api.remypass.test" and path.startswith("/api/v1/public/passes/"):
        return httpx.Response(404, json={"success": False, "message": "Pass not found"})
    if host == "api.e-guma.test" and path == "/v1/ticketing/orders.json":
        return httpx.Response(200, json=[])
    return html_404()


def all_accounts(**fourvenues: object) -> dict[tuple[str, str], AccountConfig]:
    return {
        (p, "default"): account(p, **(fourvenues if p == "fourvenues" else {}))  # type: ignore[arg-type]
        for p in HOSTS
    }


def factory(
    handler: Handler, seen: list[httpx.Request] | None = None
) -> Callable[[AccountConfig], httpx.Client]:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return handler(request)

    return lambda acct: build_client(acct, transport=httpx.MockTransport(handle))


def test_every_documented_answer_is_ok_and_nothing_is_created() -> None:
    seen: list[httpx.Request] = []
    checks = check_accounts(all_accounts(), client_factory=factory(documented, seen))
    assert {c.account: c.result for c in checks} == {
        "eguma.default": OK,
        "fourvenues.default": OK,
        "fourvenues_channels.default": OK,
        "remypass.default": OK,
    }, checks
    assert exit_code(checks) == 0
    assert {r.method for r in seen} == {"GET"}


def test_a_wrong_fourvenues_base_url_fails_naming_the_account_and_the_reason() -> None:
    accounts = all_accounts(base_url=HOSTS["fourvenues"] + "/wrong")
    checks = check_accounts(accounts, client_factory=factory(documented))
    [bad] = [c for c in checks if c.result == FAILED]
    assert bad.account == "fourvenues.default"
    assert "base_url" in bad.reason and "404" in bad.reason
    assert exit_code(checks) == 1


@pytest.mark.parametrize("provider", list(HOSTS))
def test_refused_credentials_fail(provider: str) -> None:
    checks = check_accounts(
        {(provider, "default"): account(provider)},
        client_factory=factory(lambda r: httpx.Response(401, json={"success": False, "message": "bad key"})),
    )
    [check] = checks
    assert check.result == FAILED and "401" in check.reason
    assert "live-key" not in check.reason


@pytest.mark.parametrize("provider", list(HOSTS))
def test_an_html_page_where_the_lookup_route_should_be_fails(provider: str) -> None:
    [check] = check_accounts(
        {(provider, "default"): account(provider)}, client_factory=factory(lambda r: html_404())
    )
    assert check.result == FAILED


def test_missing_credentials_fail_without_a_call() -> None:
    seen: list[httpx.Request] = []
    [check] = check_accounts(
        {("eguma", "default"): account("eguma", api_key=None)}, client_factory=factory(documented, seen)
    )
    assert check.result == FAILED and "api_key" in check.reason
    assert seen == []


def test_a_channel_that_ignores_the_filter_is_a_warning() -> None:
    def ignoring(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"success": True, "data": [{"_id": "c1", "qr_code": "OTHER"}]})

    [check] = check_accounts(
        {("fourvenues_channels", "default"): account("fourvenues_channels")}, client_factory=factory(ignoring)
    )
    assert check.result == WARNING and "ignores the qr_code filter" in check.reason
    assert exit_code([check]) == 0


def test_selection_by_account_and_provider() -> None:
    accounts = {**all_accounts(), ("eguma", "second"): account("eguma", name="second")}
    by_name = check_accounts(accounts, account="second", client_factory=factory(documented))
    assert [c.account for c in by_name] == ["eguma.second"]
    by_full = check_accounts(accounts, account="eguma.default", client_factory=factory(documented))
    assert [c.account for c in by_full] == ["eguma.default"]
    by_provider = check_accounts(accounts, provider="eguma", client_factory=factory(documented))
    assert [c.account for c in by_provider] == ["eguma.default", "eguma.second"]
    assert exit_code(check_accounts(accounts, account="nope")) == 2  # nothing matched: usage


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ticketrelay")
    accounts_check.add_parser(p.add_subparsers(dest="command", required=True))
    return p


def test_the_command_prints_a_table_and_exits_nonzero_for_a_wrong_account(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = all_accounts(base_url=HOSTS["fourvenues"] + "/wrong")
    monkeypatch.setattr(accounts_check, "get_accounts", lambda settings: accounts)
    monkeypatch.setattr(accounts_check, "build_client", factory(documented))
    args = parser().parse_args(["accounts", "check"])
    assert args.fn(args) == 1
    out = capsys.readouterr().out
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["account", "provider", "result", "reason"]
    wrong = next(line for line in rows if line.startswith("fourvenues.default"))
    assert " failed " in wrong and "base_url" in wrong
    assert "1 of 4 accounts are wrong: fourvenues.default" in out


def test_the_command_json_and_selection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(accounts_check, "get_accounts", lambda settings: all_accounts())
    monkeypatch.setattr(accounts_check, "build_client", factory(documented))
    args = parser().parse_args(["accounts", "check", "--provider", "remypass", "--json"])
    assert args.fn(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [(a["account"], a["result"]) for a in report["accounts"]] == [("remypass.default", "ok")]
    with pytest.raises(SystemExit):
        parser().parse_args(["accounts", "check", "--provider", "nope"])


def test_an_accounts_file_that_does_not_load_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(settings: object) -> object:
        raise AccountsError("cannot read accounts file x.toml: no such file")

    monkeypatch.setattr(accounts_check, "get_accounts", broken)
    args = parser().parse_args(["accounts", "check"])
    assert args.fn(args) == 2
    assert "cannot read accounts file" in capsys.readouterr().out
