"""`ticketrelay webhooks list|replay|purge|check`, the beat task and its schedule entry."""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine

from schemas.result import ResultMessage
from worker.db import make_engine
from worker.ops import webhooks_cli
from worker.settings import AccountConfig, SecretStr, Settings
from worker.webhooks import outbox, signing
from worker.webhooks.config import RetryPolicy
from worker.webhooks.schedule import DELIVER_WEBHOOKS_TASK, beat_entries

URL = "https://hooks.example.com/in?token=receiver-token"
NOW = datetime.now(UTC)


@pytest.fixture
def eng(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    e = make_engine(sqlite_url)
    monkeypatch.setattr(webhooks_cli, "_engine", lambda: e)
    yield e
    e.dispose()


def run(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="ticketrelay")
    webhooks_cli.add_parser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["webhooks", *argv])
    return int(args.fn(args))


def result() -> ResultMessage:
    return ResultMessage(
        message_id="BK-7",
        idempotency_key=str(uuid.uuid4()),
        provider="eguma",
        account="default",
        generation=0,
        status="issued",
        attempts=1,
        metadata={"customer": "Jane Roe"},
        completed_at=NOW,
    )


def queue(engine: Engine, url: str = URL) -> ResultMessage:
    r = result()
    with engine.begin() as conn:
        outbox.enqueue(conn, r, url)
    return r


def kill(engine: Engine) -> outbox.Entry:
    (entry,) = outbox.claim_due(engine, 1, 60)
    assert outbox.mark_dead(engine, entry, 410, "HTTP 410 Gone")
    return entry


def test_list_shows_states_without_query_or_body(eng: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    pending, dead = queue(eng), queue(eng)
    with eng.begin() as conn:  # claim order is oldest first: make `dead` the one claimed
        conn.execute(
            outbox.T.update()
            .where(outbox.C.idempotency_key == pending.idempotency_key)
            .values(next_attempt_at=NOW + timedelta(hours=1))
        )
    kill(eng)
    assert run("list") == 0
    out = capsys.readouterr().out
    assert pending.idempotency_key in out and dead.idempotency_key in out
    assert "https://hooks.example.com/in" in out
    assert "receiver-token" not in out and "Jane Roe" not in out
    assert "HTTP 410 Gone" in out
    assert run("list", "--json", "--state", "dead") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["idempotency_key"], r["state"], r["last_status"]) for r in rows] == [
        (dead.idempotency_key, "dead", 410)
    ]
    assert run("list", "--state", "delivered") == 0
    assert capsys.readouterr().out.strip() == "no entries"


def test_replay_needs_a_selection_and_resends_dead_entries(
    eng: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    r = queue(eng)
    entry = kill(eng)
    assert run("replay") == 2
    assert outbox.claim_due(eng, 10, 60) == []
    assert run("replay", "--dead") == 0
    assert "replayed 1 entry" in capsys.readouterr().out
    (again,) = outbox.claim_due(eng, 10, 60)
    assert again.id == entry.id and again.webhook_id == outbox.webhook_id_for(r.idempotency_key, 1)
    assert outbox.mark_delivered(eng, again, 200)
    # A delivered entry is replayed only when asked for explicitly.
    assert run("replay", str(entry.id)) == 0
    assert "replayed 0 entries" in capsys.readouterr().out
    assert run("replay", str(entry.id), "--delivered") == 0
    assert "replayed 1 entry" in capsys.readouterr().out
    assert [e.id for e in outbox.claim_due(eng, 10, 60)] == [entry.id]


def test_purge_keeps_pending_and_by_default_dead_entries(eng: Engine) -> None:
    queue(eng)
    queue(eng)
    queue(eng)
    claimed = outbox.claim_due(eng, 2, 60)
    outbox.mark_delivered(eng, claimed[0], 204, now=NOW - timedelta(days=8))
    outbox.mark_retry(eng, claimed[1], RetryPolicy(1, 1, 1, 60), 500, "HTTP 500", now=NOW - timedelta(days=8))
    assert run("purge") == 0
    assert outbox.counts(eng) | {"oldest_pending_s": 0} == {
        "pending": 1,
        "dead": 1,
        "delivered": 0,
        "oldest_pending_s": 0,
    }
    assert run("purge", "--dead-older-than", "7d") == 0
    assert outbox.counts(eng)["dead"] == 0 and outbox.counts(eng)["pending"] == 1


def test_check_names_the_problem_but_not_the_secret(
    eng: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = signing.generate_secret()
    accounts = {
        ("eguma", "default"): AccountConfig(
            provider="eguma",
            name="default",
            base_url="https://api.example",
            callback_url=URL,
            callback_secret=(SecretStr(secret),),
        )
    }
    monkeypatch.setattr("worker.settings.get_accounts", lambda _s=None: accounts)
    monkeypatch.setattr("worker.settings.get_settings", lambda: Settings(callback_allowed_hosts=""))
    assert run("check") == 1
    out = capsys.readouterr().out
    assert "hooks.example.com is not in TICKETRELAY_CALLBACK_ALLOWED_HOSTS" in out
    assert secret not in out and "receiver-token" not in out
    monkeypatch.setattr(
        "worker.settings.get_settings", lambda: Settings(callback_allowed_hosts="hooks.example.com")
    )
    assert run("check") == 0
    assert "problem" not in capsys.readouterr().out


def test_the_beat_task_delivers(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.webhooks as task_module
    from worker.app import app

    got: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            got.append(self.headers["webhook-id"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    engine = make_engine(sqlite_url)
    try:
        r = queue(engine, url)
        s = Settings(callback_allowed_hosts="127.0.0.1", callback_http_hosts="127.0.0.1")
        accounts = {
            ("eguma", "default"): AccountConfig(
                provider="eguma",
                name="default",
                base_url="https://api.example",
                callback_url=url,
                callback_secret=(SecretStr(signing.generate_secret()),),
            )
        }
        fake = SimpleNamespace(engine=engine, settings=s, accounts=accounts)
        monkeypatch.setattr(task_module, "deps", lambda: fake)
        assert DELIVER_WEBHOOKS_TASK in app.tasks
        report = task_module.deliver_webhooks()
        assert report["delivered"] == 1 and got == [outbox.webhook_id_for(r.idempotency_key, 1)]
        assert task_module.deliver_webhooks()["claimed"] == 0
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()
    entry = beat_entries(Settings(callback_interval_s=3))["deliver-webhooks"]
    assert entry == {"task": DELIVER_WEBHOOKS_TASK, "schedule": 3, "options": {"expires": 3}}


def test_a_lease_shorter_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="callback_lease_s"):
        Settings(callback_timeout_s=30, callback_lease_s=30)


def test_accounts_file_callback_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.settings import load_accounts
    from worker.webhooks.config import account_problem, signing_keys

    new, old = signing.generate_secret(), signing.generate_secret()
    monkeypatch.setenv("HOOK_NEW", new)
    monkeypatch.delenv("HOOK_UNSET", raising=False)
    path = tmp_path / "accounts.toml"
    path.write_text(
        "[eguma.default]\n"
        'base_url = "https://api.e-guma.ch/v1"\n'
        'api_key = "k"\n'
        'callback_url = "https://hooks.example.com/in"\n'
        f'callback_secret = ["env:HOOK_NEW", "{old}"]\n'
        "[eguma.unset]\n"
        'base_url = "https://api.e-guma.ch/v1"\n'
        'api_key = "k"\n'
        'callback_url = "https://hooks.example.com/in"\n'
        'callback_secret = "env:HOOK_UNSET"\n'
        "[eguma.bad]\n"
        'base_url = "https://api.e-guma.ch/v1"\n'
        'api_key = "k"\n'
        'callback_url = "https://hooks.example.com/in"\n'
        'callback_secret = "whsec_c2hvcnQ="\n'
        "[eguma.plain]\n"
        'base_url = "https://api.e-guma.ch/v1"\n'
        'api_key = "k"\n'
    )
    accounts = load_accounts(path)
    good = accounts[("eguma", "default")]
    assert [signing.sign(k, "msg_1", 1, b"{}") for k in signing_keys(good)] == [
        signing.sign(new, "msg_1", 1, b"{}"),
        signing.sign(old, "msg_1", 1, b"{}"),
    ]
    assert new not in repr(good) and old not in repr(good)
    assert account_problem(good) is None
    assert "callback_secret is not set" in (account_problem(accounts[("eguma", "unset")]) or "")
    bad = account_problem(accounts[("eguma", "bad")]) or ""
    assert "24 to 64 bytes" in bad and "c2hvcnQ" not in bad
    assert account_problem(accounts[("eguma", "plain")]) is None
    assert accounts[("eguma", "plain")].callback_url is None


def test_delivered_entries_are_purged_after_the_keep_time(sqlite_url: str) -> None:
    from worker.webhooks.deliver import purge_delivered

    engine = make_engine(sqlite_url)
    try:
        queue(engine)
        queue(engine)
        old, recent = outbox.claim_due(engine, 2, 60)
        outbox.mark_delivered(engine, old, 204, now=NOW - timedelta(hours=30))
        outbox.mark_delivered(engine, recent, 204, now=NOW - timedelta(hours=10))
        assert purge_delivered(engine, Settings(callback_keep_delivered_h=0), force=True) == 0
        assert purge_delivered(engine, Settings(callback_keep_delivered_h=24), force=True) == 1
        assert [e.id for e in outbox.entries(engine, states=("delivered",))] == [recent.id]
        # At most every ten minutes per process unless forced.
        assert purge_delivered(engine, Settings(callback_keep_delivered_h=1)) == 0
        assert purge_delivered(engine, Settings(callback_keep_delivered_h=1), force=True) == 1
    finally:
        engine.dispose()
