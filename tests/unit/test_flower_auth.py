"""`ticketrelay flower` starts only behind real authentication, and read-only by default."""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest

from worker.ops import cli
from worker.ops.cli import build_parser, flower_auth_problem

STRONG = "ops:Vx9-r2Lq7Tz0bWm4Kp8s"
OAUTH = {
    "FLOWER_AUTH_PROVIDER": "flower.views.auth.GoogleAuth2LoginHandler",
    "FLOWER_AUTH": ".*@example.com",
    "FLOWER_OAUTH2_KEY": "client-id",
    "FLOWER_OAUTH2_SECRET": "client-secret-value",
}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Records what cmd_flower would exec instead of exec'ing it; a clean FLOWER_* env."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def fake_celery(argv: list[str], extra_env: dict[str, str] | None = None) -> int:
        calls.append((argv, dict(extra_env or {})))
        return 0

    monkeypatch.setattr(cli, "_celery", fake_celery)
    for name in list(os.environ):
        if name.startswith("FLOWER_") or name == "TICKETRELAY_FLOWER_NO_AUTH":
            monkeypatch.delenv(name)
    return calls


def run_flower(argv: list[str] | None = None) -> int:
    args: argparse.Namespace = build_parser().parse_args(["flower", *(argv or [])])
    return cli.cmd_flower(args)


@pytest.mark.parametrize(
    "basic",
    [
        "ops:change-me",  # the example files' placeholder
        "ops:CHANGE-ME-CHANGE-ME-123",
        "ops:changeme0123456789",
        "ops:password12345678901",
        "ops:admin12345678901234",
        "ops:__secret__2026__2026",
        "ops:my-placeholder-for-now",
        "ops:short-but-ok",  # 13 characters
        "ops:",
        "ops",
        ":Vx9-r2Lq7Tz0bWm4Kp8s",
        "opsopsopsopsopsops:opsopsopsopsopsops",  # the user name again
        f"{STRONG},dev:tiny-pw",  # every credential must be strong
    ],
)
def test_weak_or_malformed_basic_auth_is_refused(basic: str) -> None:
    problem = flower_auth_problem({"FLOWER_BASIC_AUTH": basic})
    assert problem is not None and "FLOWER_BASIC_AUTH" in problem
    user, _, password = basic.split(",")[-1].partition(":")
    if password and password != user:
        assert password not in problem, "the message never shows a password"


def test_strong_basic_auth_and_a_whole_oauth_setup_are_accepted() -> None:
    assert flower_auth_problem({"FLOWER_BASIC_AUTH": STRONG}) is None
    assert flower_auth_problem({"FLOWER_BASIC_AUTH": f"{STRONG},dev:Q7w-e8r9t0y1u2i3o4"}) is None
    assert flower_auth_problem(OAUTH) is None
    # A password may contain a common word: only the word alone (with digits) is refused.
    assert flower_auth_problem({"FLOWER_BASIC_AUTH": "ops:flower-test-password-7"}) is None


@pytest.mark.parametrize("missing", sorted(OAUTH))
def test_oauth_needs_every_part(missing: str) -> None:
    """FLOWER_AUTH_PROVIDER alone lets everybody in: Flower checks e-mails only with FLOWER_AUTH."""
    partial = {k: v for k, v in OAUTH.items() if k != missing}
    problem = flower_auth_problem(partial)
    assert problem is not None and missing in problem
    assert "client-secret-value" not in problem


def test_flower_refuses_to_start_without_auth(
    started: list[Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_flower() == 2
    assert started == []
    assert "FLOWER_BASIC_AUTH" in capsys.readouterr().err
    monkeypatch.setenv("TICKETRELAY_FLOWER_NO_AUTH", "1")  # the old way to run it open is gone
    assert run_flower() == 2 and started == []
    monkeypatch.setenv("FLOWER_AUTH_PROVIDER", OAUTH["FLOWER_AUTH_PROVIDER"])
    assert run_flower() == 2 and started == []
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "FLOWER_AUTH" in err  # one line per refusal


def test_a_weak_password_on_the_command_line_is_refused_too(
    started: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", STRONG)
    # The command line wins over the environment in Flower, so it is what gets checked.
    assert run_flower(["--basic_auth=ops:change-me"]) == 2
    assert run_flower(["--basic-auth=ops:change-me"]) == 2
    assert started == []
    assert run_flower(["--port=5556"]) == 0


def test_read_only_is_the_default_and_an_explicit_choice_is_kept(
    started: list[tuple[list[str], dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWER_BASIC_AUTH", STRONG)
    assert run_flower(["--port=5556"]) == 0
    argv, env = started[-1]
    assert argv == ["flower", "--port=5556"] and env == {"FLOWER_READ_ONLY": "true"}
    monkeypatch.setenv("FLOWER_READ_ONLY", "false")
    assert run_flower() == 0
    assert "FLOWER_READ_ONLY" not in started[-1][1]
    monkeypatch.delenv("FLOWER_READ_ONLY")
    assert run_flower(["--read_only=false"]) == 0
    assert "FLOWER_READ_ONLY" not in started[-1][1]


def test_flower_checks_the_option_names_it_reads() -> None:
    """The names checked are Flower's own options (FLOWER_<OPTION> or --<option>)."""
    import flower.options  # noqa: F401 - defines Flower's options
    from tornado.options import options

    for name in ("FLOWER_BASIC_AUTH", "FLOWER_READ_ONLY", *OAUTH):
        assert name[len("FLOWER_") :].lower().replace("_", "-") in options._options, name
