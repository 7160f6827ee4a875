"""`ticketrelay show | list | resolve | retry` (worker/ops/bookings.py) against real SQLite and
PostgreSQL, a real Redis and the in-process sandbox, on the outage tests' virtual clock; and the
results stream read as a consumer reads it (contract 1.1: keep the highest revision per key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from schemas.statuses import Status
from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME
from tests.integration.test_outage_issuing import Sim, creations_of, make_sim
from worker import ledger
from worker.ops import bookings
from worker.ops.bookings import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, Stores


@pytest.fixture
def sim(engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Sim:
    # Three attempts: three 503s (which may have created the booking) end needs_review.
    monkeypatch.setenv("USER", "alice")
    return make_sim(engine, redis_client, monkeypatch, default_max_attempts=3)


def stores(sim: Sim) -> Stores:
    d = sim.deps
    return Stores(d.engine, d.redis, d.settings, d.accounts, lambda key: sim.at(sim.clock.t, key))


def run(sim: Sim, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = bookings.main(list(argv), stores(sim))
    out, err = capsys.readouterr()
    return code, out, err


def settle(sim: Sim, key: str) -> None:
    sim.run_until(sim.clock.t + 600, stop=lambda: ledger.is_final(ledger.get(sim.deps.engine, key)))  # type: ignore[arg-type]


def needs_review(sim: Sim, provider: str, mid: str) -> str:
    sim.sandbox.set_faults(provider, fail_next=[{"status": 503}] * 3)
    key = sim.accept(provider, mid)
    settle(sim, key)
    sim.sandbox.set_faults(provider)
    row = ledger.get(sim.deps.engine, key)
    assert row is not None and row.status == Status.NEEDS_REVIEW and row.in_doubt
    return key


def consumer_view(client: redis.Redis, stream: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    """What a consumer following the contract ends with: per key, the result of the highest
    revision; and repeats of one revision must be identical."""
    best: dict[str, dict[str, Any]] = {}
    for _id, fields in client.xrange(stream):
        result = json.loads(fields[b"result"])
        key = result["idempotency_key"]
        if key not in keys:
            continue
        seen = best.get(key)
        if seen is None or result["revision"] > seen["revision"]:
            best[key] = result
        elif result["revision"] == seen["revision"]:
            assert result == seen, "two different results with the same revision"
    return best


def true_state(engine: Engine, key: str) -> tuple[str, list[str | None], str | None]:
    row = ledger.get(engine, key)
    assert row is not None
    return row.status, [t["code"] for t in row.tickets], row.provider_reference


def view_state(result: dict[str, Any]) -> tuple[str, list[str | None], str | None]:
    return result["status"], [t["code"] for t in result["tickets"]], result["provider_reference"]


def test_list_filters_by_status_provider_account_and_age(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    key = needs_review(sim, "eguma", "cli-list")
    code, out, _ = run(sim, capsys, "list", "--status", "needs_review", "--json")
    assert code == EXIT_OK and key in [r["idempotency_key"] for r in json.loads(out)]
    assert run(sim, capsys, "list", "--provider", "remypass", "--json")[1].strip() == "[]"
    assert run(sim, capsys, "list", "--account", "v1", "--json")[1].strip() == "[]"
    assert run(sim, capsys, "list", "--older-than", "2h", "--json")[1].strip() == "[]"
    sim.clock.t += 3 * 3600
    code, out, _ = run(sim, capsys, "list", "--older-than", "2h")
    assert code == EXIT_OK and key in out and "1 booking(s) needs_review" in out
    assert run(sim, capsys, "list", "--status", "issued", "--json")[1].strip() == "[]"
    code, _, err = run(sim, capsys, "list", "--older-than", "two hours")
    assert code == EXIT_USAGE and err.count("\n") == 1 and "duration" in err
    assert run(sim, capsys, "list", "--status", "lost")[0] == EXIT_USAGE


def test_show_has_the_row_every_attempt_and_the_results_sent(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    key = needs_review(sim, "eguma", "cli-show")
    code, out, _ = run(sim, capsys, "show", key, "--json")
    assert code == EXIT_OK
    shown = json.loads(out)
    assert shown["row"]["status"] == "needs_review" and shown["row"]["revision"] == 1
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in shown["attempts"]] == [
        (1, "retry", 503),
        (2, "retry", 503),
        (3, "needs_review", 503),
    ]
    assert [(r["status"], r["revision"]) for r in shown["results"]] == [("needs_review", 1)]
    code, text, _ = run(sim, capsys, "show", key)
    assert code == EXIT_OK and "#3" in text and "needs_review" in text
    # Never the payload's personal data, in either form.
    assert CUSTOMER_EMAIL not in out + text and CUSTOMER_NAME not in out + text
    by_mid = json.loads(run(sim, capsys, "show", "--message-id", "cli-show", "--json")[1])
    assert [item["row"]["idempotency_key"] for item in by_mid] == [key]
    code, _, err = run(sim, capsys, "show", "00000000-0000-0000-0000-000000000000")
    assert code == EXIT_REFUSED and "no booking" in err and err.count("\n") == 1
    assert run(sim, capsys, "show")[0] == EXIT_USAGE
    assert run(sim, capsys, "show", key, "--message-id", "x")[0] == EXIT_USAGE


def test_resolve_failed_records_who_and_why_and_corrects_the_result(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    key = needs_review(sim, "eguma", "cli-fail")
    assert run(sim, capsys, "resolve", key, "--failed")[0] == EXIT_USAGE  # no reason
    assert run(sim, capsys, "resolve", key)[0] == EXIT_USAGE  # neither --issued nor --failed
    code, out, _ = run(sim, capsys, "resolve", key, "--failed", "--reason", "no order at e-guma", "--json")
    assert code == EXIT_OK and json.loads(out)["published"] is True
    row = ledger.get(sim.deps.engine, key)
    assert row is not None and row.status == Status.FAILED and row.revision == 2 and not row.in_doubt
    assert row.resolved_by == "alice" and row.resolution == "no order at e-guma" and row.callback_sent_at
    last = ledger.attempts_of(sim.deps.engine, key)[-1]
    assert last["outcome"] == "resolved_failed" and last["worker"] == "operator:alice"
    assert last["message"] == "no order at e-guma"
    # Settled once: a second settlement is refused, and so is --failed on a failed row.
    code, _, err = run(sim, capsys, "resolve", key, "--failed", "--reason", "again")
    assert code == EXIT_REFUSED and "needs_review" in err
    view = consumer_view(sim.deps.redis, row.reply_to, {key})
    assert view[key]["revision"] == 2 and view_state(view[key]) == true_state(sim.deps.engine, key)
    assert view[key]["error"]["type"] == "resolved_failed"


def test_resolve_issued_with_tickets_from_a_file(
    sim: Sim, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = needs_review(sim, "eguma", "cli-issue")
    tickets = tmp_path / "tickets.json"
    tickets.write_text(json.dumps([{"ticket_id": "T-1", "code": "QR-1", "category": "adult", "seat": None}]))
    assert run(sim, capsys, "resolve", key, "--issued", "--tickets", str(tickets))[0] == EXIT_USAGE  # no ref
    bad = tmp_path / "bad.json"
    bad.write_text('[{"ticket_id": 5, "nonsense": true}]')
    code, _, err = run(sim, capsys, "resolve", key, "--issued", "--reference", "R", "--tickets", str(bad))
    assert code == EXIT_USAGE and "bad.json" in err
    code, out, _ = run(
        sim,
        capsys,
        "resolve",
        key,
        "--issued",
        "--reference",
        "ORD-77",
        "--tickets",
        str(tickets),
        "--by",
        "bob",
    )
    assert code == EXIT_OK and "revision 2" in out
    row = ledger.get(sim.deps.engine, key)
    assert row is not None and row.status == Status.ISSUED and row.provider_reference == "ORD-77"
    assert (
        [t["code"] for t in row.tickets] == ["QR-1"] and row.resolved_by == "bob" and row.error_type is None
    )
    view = consumer_view(sim.deps.redis, row.reply_to, {key})
    assert view_state(view[key]) == ("issued", ["QR-1"], "ORD-77") == true_state(sim.deps.engine, key)
    # An issued booking is not settled again, and a failed one may be settled as issued.
    assert run(sim, capsys, "resolve", key, "--issued", "--reference", "X")[0] == EXIT_REFUSED
    sim.sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    failed = sim.accept("remypass", "cli-was-failed")
    settle(sim, failed)
    assert ledger.get(sim.deps.engine, failed).status == Status.FAILED  # type: ignore[union-attr]
    assert run(sim, capsys, "resolve", failed, "--issued", "--reference", "BK-found")[0] == EXIT_OK
    assert ledger.get(sim.deps.engine, failed).revision == 2  # type: ignore[union-attr]


def test_retry_reconciles_first_and_issues_once(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    """needs_review after three 503s: `retry` queues it with its key, keeps in_doubt; the next
    call asks the provider first; the booking is issued once (sandbox ground truth), with its
    result as revision 2."""
    keys = {p: needs_review(sim, p, f"cli-retry-{p}") for p in ("eguma", "remypass")}
    for provider, key in keys.items():
        code, out, _ = run(sim, capsys, "retry", key, "--reason", "provider back", "--json")
        assert code == EXIT_OK and json.loads(out)["enqueued"] is True
        row = ledger.get(sim.deps.engine, key)
        assert row is not None and row.status == Status.QUEUED and row.in_doubt and row.attempts_base == 3
        settle(sim, key)
        row = ledger.get(sim.deps.engine, key)
        assert row is not None and row.status == Status.ISSUED and row.revision == 2, (provider, row.status)
        assert creations_of(sim, provider, row) == [1]
        history = ledger.attempts_of(sim.deps.engine, key)
        assert [a["outcome"] for a in history][-2:] == ["redrive", "issued"]
        assert history[-2]["worker"] == "operator:alice" and history[-2]["message"] == "provider back"
        view = consumer_view(sim.deps.redis, row.reply_to, {key})
        assert view[key]["revision"] == 2 and view_state(view[key]) == true_state(sim.deps.engine, key)
    # Issued: nothing to retry.
    code, _, err = run(sim, capsys, "retry", keys["eguma"])
    assert code == EXIT_REFUSED and "issued" in err
    unknown = "00000000-0000-0000-0000-000000000000"
    for argv in (["retry", unknown], ["resolve", unknown, "--failed", "--reason", "x"]):
        code, _, err = run(sim, capsys, *argv)
        assert code == EXIT_REFUSED and f"no booking with idempotency key {unknown}" in err


def test_a_repeated_publish_is_the_same_revision_and_identical(
    sim: Sim, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.ops.bookings import publish

    key = needs_review(sim, "eguma", "cli-repeat")
    row = ledger.get(sim.deps.engine, key)
    assert row is not None
    publish(stores(sim), row)  # the sweeper or a resend publishes the same revision again
    consumer_view(sim.deps.redis, row.reply_to, {key})  # asserts the repeats are identical
    found = [r for r in bookings.results_on_stream(sim.deps.redis, row.reply_to, key, 1000)]
    assert len(found) >= 2 and {r["revision"] for r in found} == {1}


def test_a_store_that_does_not_answer_is_exit_3(sim: Sim, capsys: pytest.CaptureFixture[str]) -> None:
    key = needs_review(sim, "eguma", "cli-down")
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    s = stores(sim)
    s.client = dead
    code = bookings.main(["show", key], s)
    _, err = capsys.readouterr()
    assert code == EXIT_UNREACHABLE and "Redis unreachable" in err and err.count("\n") == 1
    from worker.db import make_engine

    s = stores(sim)
    s.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    code = bookings.main(["list"], s)
    _, err = capsys.readouterr()
    assert code == EXIT_UNREACHABLE and "unreachable" in err and err.count("\n") == 1


def test_the_commands_are_registered_in_the_cli() -> None:
    from worker.ops.cli import build_parser

    parser = build_parser()
    for argv in (["show", "K"], ["list"], ["resolve", "K", "--failed", "--reason", "x"], ["retry", "K"]):
        args = parser.parse_args(argv)
        assert args.bookings_fn.__name__ == f"cmd_{argv[0]}"


def test_a_bulk_redrive_of_the_same_key_is_the_next_revision(sim: Sim) -> None:
    """Re-issuance without --new-generation re-drives the same key: its next final result is
    revision 2, and its time limit counts from the re-drive (redriven_at)."""
    key = needs_review(sim, "eguma", "cli-reissue")
    sim.clock.t += 2 * 86400  # older than the 24 h time limit by now
    assert ledger.requeue_for_run(sim.deps.engine, key, Status.NEEDS_REVIEW.value, "run-1")
    sim.at(sim.clock.t, key)
    settle(sim, key)
    row = ledger.get(sim.deps.engine, key)
    assert row is not None and row.status == Status.ISSUED and row.revision == 2
    assert creations_of(sim, "eguma", row) == [1]
    view = consumer_view(sim.deps.redis, row.reply_to, {key})
    assert view[key]["revision"] == 2 and view_state(view[key]) == true_state(sim.deps.engine, key)
