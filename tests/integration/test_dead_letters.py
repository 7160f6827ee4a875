"""`ticketrelay dead` against a real Redis, with dead letters written by a real intake run, and
replays read back by a real intake run into ledger rows (SQLite and PostgreSQL)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.keys import idempotency_key
from schemas.statuses import Status
from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME, envelope
from worker import ledger
from worker.db import make_engine
from worker.intake import Intake
from worker.ops import dead_letters
from worker.ops.dead_letters import Stores, main, parse_when
from worker.settings import Settings, sandbox_accounts

ACCOUNTS = sandbox_accounts("http://sandbox")


@pytest.fixture
def settings(redis_url: str, database_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, database_url=database_url, consumer_name="test-consumer", intake_block_ms=50
    )


@pytest.fixture
def intake(redis_client: redis.Redis, settings: Settings) -> Intake:
    i = Intake(redis_client, make_engine(settings.database_url), settings, ACCOUNTS, lambda _key: None)
    i.ensure_group()
    return i


@pytest.fixture
def stores(redis_client: redis.Redis, settings: Settings, intake: Intake) -> Stores:
    return Stores(
        settings, redis_client, engine_factory=lambda: intake.engine, accounts_factory=lambda: ACCOUNTS
    )


def publish(client: redis.Redis, env: dict[str, Any] | str) -> None:
    client.xadd("ticketrelay:bookings", {"message": env if isinstance(env, str) else json.dumps(env)})


def drain(intake: Intake) -> None:
    while intake.run_once():
        pass


def dead_ids(client: redis.Redis) -> list[str]:
    return [i.decode() for i, _f in client.xrange("ticketrelay:dead")]


def run(capsys: pytest.CaptureFixture[str], stores: Stores, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), stores)
    out, err = capsys.readouterr()
    return code, out, err


def three_dead_letters(client: redis.Redis, intake: Intake) -> list[str]:
    """Three entries intake dead-letters (not JSON, unknown account, invalid payload): their ids."""
    before = set(dead_ids(client))
    publish(client, "{not json")
    publish(client, envelope("eguma", "m-acct", account="nope"))
    bad = envelope("remypass", "m-payload")
    bad["payload"]["customer"] = {"email": CUSTOMER_EMAIL, "name": CUSTOMER_NAME, "phone": 12}
    publish(client, bad)
    drain(intake)
    ids = [i for i in dead_ids(client) if i not in before]
    assert len(ids) == 3
    return ids


def test_list_shows_our_fields_newest_first_and_filters(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, intake: Intake, stores: Stores
) -> None:
    # An old entry first (ids grow): 2024, outside "--since 7d".
    redis_client.xadd(
        "ticketrelay:dead",
        {"message": "x", "dead_reason": "invalid_json: old", "dead_at": "2024-01-01T00:00:00+00:00"},
        id="1704067200000-0",
    )
    ids = three_dead_letters(redis_client, intake)
    code, out, _ = run(capsys, stores, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [*reversed(ids), "1704067200000-0"]
    first = rows[-2]
    assert first["reason"].startswith("invalid_json: message is not valid JSON")
    assert first["stream"] == "ticketrelay:bookings" and first["size"] == len(b"message{not json")
    assert all(r["replayed"] == 0 for r in rows)
    code, out, _ = run(capsys, stores, "list", "--json", "--reason-contains", "UNKNOWN_ACCOUNT")
    assert [r["id"] for r in json.loads(out)] == [ids[1]]
    code, out, _ = run(capsys, stores, "list", "--json", "--since", "7d")
    assert [r["id"] for r in json.loads(out)] == list(reversed(ids))
    code, out, _ = run(capsys, stores, "list", "--json", "--limit", "2")
    assert [r["id"] for r in json.loads(out)] == list(reversed(ids))[:2]
    code, out, _ = run(capsys, stores, "list")
    assert code == 0 and ids[2] in out and "invalid_payload" in out
    assert CUSTOMER_EMAIL not in out and CUSTOMER_NAME not in out


def test_list_scans_past_one_batch(
    capsys: pytest.CaptureFixture[str],
    redis_client: redis.Redis,
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dead_letters, "_SCAN_BATCH", 3)
    for i in range(10):
        reason = "needle: x" if i in (0, 5) else "other: y"
        redis_client.xadd("ticketrelay:dead", {"message": str(i), "dead_reason": reason})
    entries = dead_letters.list_entries(redis_client, stores.settings, reason_contains="needle", limit=None)
    assert [e.original[b"message"] for e in entries] == [b"5", b"0"]
    assert len(dead_letters.list_entries(redis_client, stores.settings, limit=None)) == 10


def test_show_explains_without_personal_data_unless_raw(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, intake: Intake, stores: Stores
) -> None:
    ids = three_dead_letters(redis_client, intake)
    code, out, err = run(capsys, stores, "show", ids[2], "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["reason"].startswith("invalid_payload: remypass payload is invalid")
    assert data["identity"] == {"message_id": "m-payload", "provider": "remypass"}
    customer = data["shape"]["payload"]["customer"]
    assert customer == {
        "email": f"<string, {len(CUSTOMER_EMAIL)} chars>",
        "name": f"<string, {len(CUSTOMER_NAME)} chars>",
        "phone": "<number>",
    }
    assert data["fields"]["message"]["bytes"] > 100
    assert CUSTOMER_EMAIL not in out and CUSTOMER_NAME not in out
    code, text, _ = run(capsys, stores, "show", ids[2])
    assert code == 0 and "m-payload" in text and "invalid_payload" in text
    assert CUSTOMER_EMAIL not in text and CUSTOMER_NAME not in text
    code, out, err = run(capsys, stores, "show", ids[2], "--raw", "--json")
    assert code == 0 and "personal data" in err
    assert CUSTOMER_EMAIL in json.loads(out)["fields"]["message"]
    # Not JSON at all: said so, and not repeated.
    code, out, _ = run(capsys, stores, "show", ids[0], "--json")
    assert json.loads(out)["message"] == "not JSON (9 bytes)" and "{not json" not in out


def test_show_and_replay_answer_not_found_and_usage(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, stores: Stores
) -> None:
    code, out, err = run(capsys, stores, "show", "123-0")
    assert (code, out) == (1, "") and err.count("\n") == 1 and "no dead letter 123-0" in err
    code, _, err = run(capsys, stores, "replay", "not-an-id")
    assert code == 2 and "not a stream entry id" in err
    code, _, err = run(capsys, stores, "list", "--since", "yesterday")
    assert code == 2 and "neither ISO 8601 nor a duration" in err
    code, _, err = run(capsys, stores, "purge")
    assert code == 2 and "needs entry ids or --older-than" in err
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors: 2 as well
        main(["frobnicate"], stores)
    assert exc.value.code == 2
    capsys.readouterr()


def test_a_rejected_message_id_is_not_replayed_unchanged_and_a_corrected_copy_becomes_a_row(
    capsys: pytest.CaptureFixture[str],
    redis_client: redis.Redis,
    intake: Intake,
    stores: Stores,
    tmp_path: Path,
) -> None:
    ids = three_dead_letters(redis_client, intake)
    acct = ids[1]  # unknown_account: intake wrote a `rejected` row for m-acct
    before = redis_client.xlen("ticketrelay:bookings")
    code, _, err = run(capsys, stores, "replay", acct)
    assert code == 1 and "already has a rejected booking" in err and "--corrected" in err
    assert redis_client.xlen("ticketrelay:bookings") == before

    same_id = tmp_path / "same.json"
    same_id.write_text(json.dumps(envelope("eguma", "m-acct")))
    code, _, err = run(capsys, stores, "replay", acct, "--corrected", str(same_id))
    assert code == 1 and "keeps message_id 'm-acct'" in err

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(envelope("eguma", "m-acct-2", account="still-nope")))
    code, _, err = run(capsys, stores, "replay", acct, "--corrected", str(invalid))
    assert code == 1 and "invalid too (unknown_account" in err
    assert redis_client.xlen("ticketrelay:bookings") == before

    good = tmp_path / "good.json"
    good.write_text(json.dumps(envelope("eguma", "m-acct-2")))
    code, out, _ = run(capsys, stores, "replay", acct, "--corrected", str(good))
    assert code == 0 and "corrected copy" in out and "m-acct-2" in out
    drain(intake)
    row = ledger.get(intake.engine, idempotency_key("eguma", "default", "m-acct-2"))
    assert row is not None and row.status == Status.QUEUED and row.payload is not None
    assert len(dead_ids(redis_client)) == 3  # nothing new was dead-lettered

    # Recorded: a second replay needs --force, and `list` and `show` say it was replayed.
    code, _, err = run(capsys, stores, "replay", acct, "--corrected", str(good))
    assert code == 1 and "already replayed" in err and "--force" in err
    code, out, _ = run(capsys, stores, "list", "--json", "--reason-contains", "unknown_account")
    assert json.loads(out)[0]["replayed"] == 1
    code, out, _ = run(capsys, stores, "show", acct, "--json")
    replays = json.loads(out)["replays"]
    assert len(replays) == 1 and replays[0]["corrected"] is True and replays[0]["message_id"] == "m-acct-2"
    assert replays[0]["new_entry_id"]
    code, out, _ = run(capsys, stores, "replay", acct, "--corrected", str(good), "--force")
    assert code == 0
    drain(intake)  # the same booking again: a resend, no second row, no dead letter
    assert len(dead_ids(redis_client)) == 3
    code, out, _ = run(capsys, stores, "show", acct, "--json")
    assert len(json.loads(out)["replays"]) == 2


def test_an_entry_that_failed_inside_intake_is_replayed_untouched_into_a_row(
    capsys: pytest.CaptureFixture[str],
    redis_client: redis.Redis,
    intake: Intake,
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = envelope("fourvenues", "m-bug")
    publish(redis_client, env)
    with monkeypatch.context() as m:  # a bug, since fixed: the entry is dead-lettered
        m.setattr(intake, "_validate", lambda _fields: (_ for _ in ()).throw(RuntimeError("bug")))
        drain(intake)
    [dead_id] = dead_ids(redis_client)
    key = idempotency_key("fourvenues", "default", "m-bug")
    assert ledger.get(intake.engine, key) is None
    code, out, _ = run(capsys, stores, "replay", dead_id)
    assert code == 0 and "original message" in out and "m-bug" in out
    [(_id, fields)] = redis_client.xrevrange("ticketrelay:bookings", count=1)
    assert fields[b"message"] == json.dumps(env).encode()  # byte for byte
    assert fields[b"replay_of"] == dead_id.encode()
    drain(intake)
    row = ledger.get(intake.engine, key)
    assert row is not None and row.status == Status.QUEUED and row.message_id == "m-bug"
    assert dead_ids(redis_client) == [dead_id]  # accepted this time: no new dead letter


def test_a_replay_dead_lettered_again_says_what_it_replayed(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, intake: Intake, stores: Stores
) -> None:
    publish(redis_client, "{still not json")
    drain(intake)
    [first] = dead_ids(redis_client)
    assert run(capsys, stores, "replay", first)[0] == 0  # no message_id, no row: allowed
    drain(intake)
    [_, second] = dead_ids(redis_client)
    code, out, _ = run(capsys, stores, "show", second, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["replay_of"] == first and data["reason"].startswith("invalid_json")
    assert "still not json" not in out


def test_an_entry_without_a_message_needs_a_corrected_copy(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, intake: Intake, stores: Stores
) -> None:
    redis_client.xadd("ticketrelay:bookings", {"body": "wrong field name"})
    drain(intake)
    [dead_id] = dead_ids(redis_client)
    code, _, err = run(capsys, stores, "replay", dead_id)
    assert code == 1 and "no `message` field" in err


def test_purge_by_id_and_by_age(
    capsys: pytest.CaptureFixture[str], redis_client: redis.Redis, intake: Intake, stores: Stores
) -> None:
    old = "1704067200000-0"
    redis_client.xadd("ticketrelay:dead", {"message": "{}", "dead_reason": "invalid_envelope: old"}, id=old)
    ids = three_dead_letters(redis_client, intake)
    redis_client.hset(dead_letters.replays_key(stores.settings), old, "[]")
    redis_client.hset(dead_letters.replays_key(stores.settings), ids[0], "[]")
    code, out, _ = run(capsys, stores, "purge", "--older-than", "7d")
    assert code == 0 and "purged 1 " in out
    assert dead_ids(redis_client) == ids
    assert redis_client.hkeys(dead_letters.replays_key(stores.settings)) == [ids[0].encode()]
    code, out, _ = run(capsys, stores, "purge", ids[0], ids[1])
    assert code == 0 and "purged 2 " in out
    assert dead_ids(redis_client) == [ids[2]]
    assert redis_client.hlen(dead_letters.replays_key(stores.settings)) == 0
    code, _, err = run(capsys, stores, "purge", ids[0])
    assert code == 1 and "none of" in err
    code, _, err = run(capsys, stores, "purge", ids[2], "--older-than", "1d")
    assert code == 2


def test_redis_unreachable_is_exit_3_without_the_password(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    client = redis.Redis(
        port=1, password="s3cret-pw", socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    for argv in (["list"], ["show", "1-0"], ["purge", "--older-than", "7d"]):
        code, out, err = run(capsys, Stores(settings, client), *argv)
        assert code == 3 and out == ""
        assert err.startswith("ticketrelay dead: Redis unreachable at 127.0.0.1:1") or "localhost:1" in err
        assert "s3cret-pw" not in err and err.count("\n") == 1


def test_add_parser_registers_dead_beside_other_commands() -> None:
    parser = argparse.ArgumentParser(prog="ticketrelay")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    dead_letters.add_parser(sub)
    args = parser.parse_args(["dead", "replay", "1-0", "--force"])
    assert args.fn is dead_letters.cmd_dead and args.id == "1-0" and args.force
    assert parser.parse_args(["status"]).command == "status"


def test_parse_when() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("30m", now) == now - timedelta(minutes=30)
    assert parse_when("2026-12-01T10:00:00Z", now) == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert parse_when("2026-12-01T10:00:00", now).tzinfo is UTC
