"""`ticketrelay accounts check`: a harmless probe of every configured provider account.

For each account: the credentials are present, the provider accepts them, and the route the
adapter reconciles with answers as documented (Fourvenues: by-code lookup of a random code ->
its JSON not-found; channels: GET /tickets; RemyPass: GET /passes/{random id} -> 404; e-guma:
orders.json for an order number that cannot exist -> an empty list). Nothing is created. The
step before going live (docs/accounts-check.md); exit code 1 when an account is wrong, 2 when
the accounts file does not load or no account matches the selection.

The command is registered by worker/ops/cli.py through `add_parser`; `check_accounts` does the
work and is what tests and other tools call.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import httpx

from worker.ops import errors
from worker.providers import PROVIDER_NAMES, build_client, get_provider
from worker.providers.pipeline import ProbeResult
from worker.settings import AccountConfig, AccountsError, Settings, get_accounts

OK, WARNING, FAILED = "ok", "warning", "failed"
ClientFactory = Callable[[AccountConfig], httpx.Client]


@dataclass(frozen=True)
class AccountCheck:
    account: str  # provider.name, as in the accounts file
    provider: str
    result: str  # ok | warning | failed
    reason: str


def check_account(account: AccountConfig, client_factory: ClientFactory = build_client) -> AccountCheck:
    """Probe one account. Never raises: every problem is a `failed` row with its reason."""
    name = f"{account.provider}.{account.name}"
    adapter = get_provider(account.provider)
    missing = adapter.missing_credentials(account)
    if missing is not None:
        return AccountCheck(name, account.provider, FAILED, f"{missing}: nothing was sent")
    try:
        with client_factory(account) as client:
            probe: ProbeResult = adapter.probe(client, account)
    except Exception as exc:  # a bug must not hide the other accounts' results
        return AccountCheck(name, account.provider, FAILED, f"the check itself failed ({type(exc).__name__})")
    result = FAILED if not probe.ok else WARNING if probe.warning else OK
    return AccountCheck(name, account.provider, result, probe.reason)


def check_accounts(
    accounts: Mapping[tuple[str, str], AccountConfig],
    *,
    account: str | None = None,
    provider: str | None = None,
    client_factory: ClientFactory = build_client,
) -> list[AccountCheck]:
    """Probe the selected accounts (all by default), in provider then account order.
    `account` is an account name ("default") or "provider.name"."""
    selected = []
    for (prov, name), config in sorted(accounts.items()):
        if provider is not None and prov != provider:
            continue
        if account is not None and account not in (name, f"{prov}.{name}"):
            continue
        selected.append(config)
    return [check_account(config, client_factory) for config in selected]


def exit_code(checks: list[AccountCheck]) -> int:
    """0 when every account works (warnings included), 1 when one is wrong, 2 (usage) when
    no configured account matches the selection (the exit codes of worker/ops/errors.py)."""
    if not checks:
        return errors.USAGE
    return errors.FAILED if any(c.result == FAILED for c in checks) else errors.OK


def render_table(checks: list[AccountCheck]) -> str:
    header = AccountCheck("account", "provider", "result", "reason")
    rows = [header, *checks]
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("account", "provider", "result")]
    lines = []
    for r in rows:
        cells = [r.account.ljust(widths[0]), r.provider.ljust(widths[1]), r.result.ljust(widths[2]), r.reason]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run(
    args: argparse.Namespace,
    *,
    accounts: Mapping[tuple[str, str], AccountConfig] | None = None,
    client_factory: ClientFactory | None = None,
) -> int:
    """The command: probe, print a table (or JSON with --json), return the exit code."""
    if accounts is None:
        try:
            accounts = get_accounts(Settings())
        except AccountsError as exc:
            print(f"accounts check: {exc}")
            return errors.USAGE
    checks = check_accounts(
        accounts,
        account=args.account,
        provider=args.provider,
        client_factory=client_factory or build_client,
    )
    code = exit_code(checks)
    if args.json:
        print(json.dumps({"ok": code == 0, "accounts": [asdict(c) for c in checks]}, indent=2))
    elif not checks:
        print("accounts check: no configured account matches the selection")
    else:
        print(render_table(checks))
        failed = [c.account for c in checks if c.result == FAILED]
        if failed:
            print(f"\n{len(failed)} of {len(checks)} accounts are wrong: {', '.join(failed)}")
    return code


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register `accounts check` on the CLI's subcommands (worker/ops/cli.py calls this)."""
    accounts = subparsers.add_parser("accounts", help="provider accounts: check them before going live")
    sub = accounts.add_subparsers(dest="accounts_command", required=True)
    check = sub.add_parser(
        "check",
        help="probe every configured account with a harmless call (exit 1 when one is wrong)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    check.add_argument("--account", help="only this account: NAME or PROVIDER.NAME")
    check.add_argument("--provider", choices=PROVIDER_NAMES, help="only this provider's accounts")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(fn=run)
    return accounts
