"""From raw entry to accepted booking or clear rejection, without echoing personal data."""

from __future__ import annotations

import json

import pytest

from schemas.keys import idempotency_key
from tests.helpers import CUSTOMER_EMAIL, CUSTOMER_NAME, entry, envelope
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, Rejected, identifiers, validate_entry

S = Settings(redis_url="redis://unused", database_url="sqlite://")
ACCOUNTS = sandbox_accounts("http://sandbox")


@pytest.mark.parametrize("provider", ["remypass", "fourvenues", "fourvenues_channels", "eguma"])
def test_valid_envelopes_of_every_provider_are_accepted(provider: str) -> None:
    v = validate_entry(entry(envelope(provider, "m-1")), S, ACCOUNTS)
    assert isinstance(v, Accepted), v
    assert v.idempotency_key == idempotency_key(provider, "default", "m-1", 0)
    assert v.reply_to == "ticketrelay:results"


def test_the_key_is_stable_and_distinct() -> None:
    a = idempotency_key("eguma", "default", "m-1", 0)
    assert a == idempotency_key("eguma", "default", "m-1", 0)
    assert (
        len(
            {
                a,
                idempotency_key("eguma", "default", "m-1", 1),
                idempotency_key("eguma", "other", "m-1", 0),
                idempotency_key("remypass", "default", "m-1", 0),
            }
        )
        == 4
    )


def _bad(env_or_text: object, **kw: object) -> Rejected:
    fields = kw.get("fields") or entry(
        env_or_text if isinstance(env_or_text, str) else json.dumps(env_or_text)
    )
    v = validate_entry(fields, S, ACCOUNTS)  # type: ignore[arg-type]
    assert isinstance(v, Rejected), v
    assert CUSTOMER_EMAIL not in v.reason and CUSTOMER_NAME not in v.reason
    return v


def test_not_json() -> None:
    v = _bad("{not json")
    assert v.error_type == "invalid_json" and v.message_id is None and "not valid JSON" in v.reason


def test_no_message_field() -> None:
    v = _bad(None, fields={b"other": b"x"})
    assert v.error_type == "invalid_message"


def test_unknown_provider_names_the_choices() -> None:
    env = envelope("eguma", "m-2")
    env["provider"] = "ticketmaster"
    v = _bad(env)
    assert v.error_type == "unknown_provider" and v.message_id == "m-2"
    assert "remypass" in v.reason


def test_wrong_types_in_payload_name_the_field_not_the_value() -> None:
    env = envelope("eguma", "m-3")
    env["payload"]["items"][0]["quantity"] = "2"
    env["payload"]["customer"]["email"] = "not-an-email-" + CUSTOMER_NAME
    v = _bad(env)
    assert v.error_type == "invalid_payload"
    assert "payload.items.0.quantity" in v.reason and "payload.customer.email" in v.reason


@pytest.mark.parametrize(
    ("provider", "mutate", "needle"),
    [
        ("fourvenues", lambda p: p.update(referral_id="r1"), "mutually exclusive"),
        ("fourvenues", lambda p: p["tickets"][1].update(price_id="other"), "same price_id"),
        ("fourvenues", lambda p: p["tickets"][0].pop("email"), "email"),
        ("fourvenues", lambda p: p.update(quantity=0), "quantity"),
        ("eguma", lambda p: p.update(items=[]), "items"),
        ("eguma", lambda p: p["items"][0].update(quantity=-1), "quantity"),
        ("eguma", lambda p: p.update(starts_at="19.03.2026"), "ISO 8601"),
        ("remypass", lambda p: p.pop("screen"), "screen"),
        ("remypass", lambda p: p.update(startTime="2026-12-25"), "date-time"),
        ("fourvenues_channels", lambda p: p["tickets"][0].update(personal_document_type="id"), "document"),
    ],
)
def test_documented_payload_rules(provider: str, mutate: object, needle: str) -> None:
    env = envelope(provider, "m-4")
    mutate(env["payload"])  # type: ignore[operator]
    v = _bad(env)
    assert v.error_type == "invalid_payload" and needle in v.reason, v.reason


def test_reply_to_outside_the_prefix_is_refused() -> None:
    v = _bad(envelope("eguma", "m-5", reply_to="bookings:other"))
    assert v.error_type == "invalid_envelope" and "reply_to" in v.reason
    assert v.reply_to is None  # the result goes to the default stream, not the foreign key


def test_too_large_is_refused_without_parsing_but_keeps_the_message_id() -> None:
    env = envelope("eguma", "m-big")
    env["metadata"] = {"blob": "x" * (S.max_message_bytes + 10)}
    v = _bad(env)
    assert v.error_type == "too_large" and v.message_id == "m-big"


def test_unknown_account_and_missing_credentials() -> None:
    assert _bad(envelope("eguma", "m-6", account="nope")).error_type == "unknown_account"
    from worker.settings import AccountConfig

    accounts = dict(ACCOUNTS)
    accounts[("eguma", "default")] = AccountConfig(provider="eguma", name="default", base_url="http://x")
    v = validate_entry(entry(envelope("eguma", "m-7")), S, accounts)
    assert isinstance(v, Rejected) and v.error_type == "missing_credentials"


def test_deep_nesting_does_not_crash() -> None:
    v = _bad('{"a":' * 100000 + "1" + "}" * 100000)
    assert v.error_type in {"invalid_json", "too_large"}


def test_a_trailing_newline_is_not_part_of_a_valid_id_or_email() -> None:
    env = envelope("eguma", "m-nl")
    env["message_id"] = "m-nl\n"
    v = _bad(env)
    assert v.error_type == "invalid_envelope" and v.message_id is None  # not readable as an id
    env = envelope("eguma", "m-nl2")
    env["payload"]["customer"]["email"] = "a@b.ch\n"
    assert _bad(env).error_type == "invalid_payload"


@pytest.mark.parametrize("version", [True, 1.0, "1", 2])
def test_version_must_be_the_integer_1(version: object) -> None:
    v = _bad(envelope("eguma", "m-v", version=version))
    assert v.error_type == "invalid_envelope" and "version" in v.reason


@pytest.mark.parametrize(
    "reply_to",
    [
        "ticketrelay:results:a\x00b",
        "ticketrelay:results:\x00",
        "ticketrelay:results:a b",
        "ticketrelay:results:\n",
        "ticketrelay:results:é",
        "ticketrelay:results:*",
        "ticketrelay:results:{x}",
        "ticketrelay:results:" + "x" * 237,  # 257 characters in all
        "ticketrelay:resultsX\u202e",
        "ticketrelay:results\n",
    ],
)
def test_reply_to_outside_the_strict_pattern_is_refused(reply_to: str) -> None:
    v = _bad(envelope("eguma", "m-rt", reply_to=reply_to))
    assert v.error_type == "invalid_envelope" and "reply_to" in v.reason
    assert v.reply_to is None and v.message_id == "m-rt"  # answered on the default stream


@pytest.mark.parametrize(
    "reply_to",
    [
        "ticketrelay:results",
        "ticketrelay:results:box-7",
        "ticketrelay:results.a_b:9",
        "ticketrelay:results:" + "x" * 236,
    ],
)
def test_reply_to_inside_the_pattern_is_kept(reply_to: str) -> None:
    v = validate_entry(entry(envelope("eguma", "m-ok", reply_to=reply_to)), S, ACCOUNTS)
    assert isinstance(v, Accepted) and v.reply_to == reply_to


def test_an_unknown_field_is_named_by_its_position_never_by_its_name() -> None:
    env = envelope("eguma", "m-uk")
    env["payload"]["customer"]["x\x00" + CUSTOMER_NAME] = "y"  # the 4th key of customer
    env["payload"]["\x1b[31m" + CUSTOMER_EMAIL] = 1
    v = _bad(env)
    assert v.error_type == "invalid_payload"
    assert "payload.customer.<unknown field 4>: Extra inputs are not permitted" in v.reason
    position = list(env["payload"]).index("\x1b[31m" + CUSTOMER_EMAIL) + 1
    assert f"payload.<unknown field {position}>" in v.reason
    assert "\x00" not in v.reason and "\x1b" not in v.reason and "x" + CUSTOMER_NAME not in v.reason


def test_known_field_names_are_named_and_metadata_keys_by_position() -> None:
    env = envelope("eguma", "m-kn", metadata={"ok": "v", CUSTOMER_NAME: 5})
    env["payload"]["items"][0]["quantity"] = "many"
    v = _bad(env)
    assert v.reason == "metadata.<key 2>: Input should be a valid string"
    env = envelope("eguma", "m-kn2")
    env["payload"]["items"][0]["quantity"] = "many"
    assert "payload.items.0.quantity" in _bad(env).reason


def test_a_reason_is_printable_and_at_most_300_characters() -> None:
    env = envelope("eguma", "m-long")
    for i in range(40):  # forty unknown fields: ten are named, then "..."
        env["payload"][f"\x00\u2028{i}"] = i
    v = _bad(env)
    assert len(v.reason) <= 300 and v.reason.endswith("...")
    assert all(ch.isprintable() for ch in v.reason)


def test_an_account_name_is_not_echoed() -> None:
    v = _bad(envelope("eguma", "m-acct", account="Secretcustomer"))
    assert v.error_type == "unknown_account" and "Secretcustomer" not in v.reason


def test_identifiers_keep_only_valid_ids() -> None:
    data = {"message_id": "m-1", "provider": "eguma", "account": "venue-a", "payload": {"x": CUSTOMER_EMAIL}}
    assert identifiers(data) == {"message_id": "m-1", "provider": "eguma", "account": "venue-a"}
    bad = {"message_id": "has space", "provider": "nope", "account": CUSTOMER_NAME, "version": 1}
    assert identifiers(bad) == {}
    assert identifiers({}) == {}
    assert identifiers({}, default_account="default") == {"account": "default"}
