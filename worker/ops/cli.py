"""The `ticketrelay` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from worker import redis_clients
from worker.logs import setup_logging
from worker.ops import accounts_check, bookings, dead_letters, errors, purge, webhooks_cli
from worker.ops.reissue_cli import add_arguments as reissue_args
from worker.redis_clients import Purpose
from worker.settings import AccountsError, Settings, get_accounts, get_settings, require_accounts_or_sandbox
from worker.version import VERSION


def _redis(purpose: Purpose = "ops") -> Any:
    return redis_clients.client(purpose, get_settings())


def cmd_migrate(_args: argparse.Namespace) -> int:
    from worker.ops.migrate import upgrade

    upgrade(get_settings().database_url)
    print(f"database is at the newest schema: {_safe_url(get_settings().database_url)}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        from worker import db

        stop.set()
        db.stop_waiting()  # a connect waiting for a refusing database gives up

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _refuse(command: str, exc: AccountsError) -> int:
    """One line on stderr, exit code 2: no accounts file and no TICKETRELAY_SANDBOX=1, or an
    accounts file that does not load (the error names the key, never a value)."""
    print(f"ticketrelay {command}: {exc}", file=sys.stderr)
    return 2


def cmd_intake(_args: argparse.Namespace) -> int:
    from worker import db_budget
    from worker.app import enqueue_cancel, enqueue_issue, enqueue_issue_many
    from worker.db import get_engine, pool_options
    from worker.intake import Intake

    setup_logging()
    settings = get_settings()
    try:
        require_accounts_or_sandbox(settings)
        accounts = get_accounts(settings)
    except AccountsError as exc:
        return _refuse("intake", exc)
    db_budget.check_in_background(get_engine(), pool_options(settings))
    intake = Intake(
        _redis("intake"),
        get_engine(),
        settings,
        accounts,
        enqueue_issue,
        enqueue_issue_many,
        enqueue_cancel=enqueue_cancel,
    )
    intake.run(_stop_on_signals())
    return 0


def _celery(argv: list[str], extra_env: dict[str, str] | None = None) -> int:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra_env or {})
    os.execvpe(sys.executable, [sys.executable, "-m", "celery", "-A", "worker.app:app", *argv], env)
    return 0  # pragma: no cover


def cmd_worker(args: argparse.Namespace) -> int:
    s = get_settings()
    try:
        require_accounts_or_sandbox(s)
    except AccountsError as exc:
        return _refuse("worker", exc)
    # The pool and concurrency come from the app's configuration (worker.app): the thread pool
    # there is a subclass that can be shut down within a bound.
    queues = (
        []
        if any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in args.celery_args)
        else ["-Q", f"{s.queue},{s.bulk_queue}"]
    )
    argv = [
        "worker",
        *queues,
        "-E",
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "INFO",
        *args.celery_args,
    ]
    # Plain SIGTERM makes Celery wait for running tasks without limit; as SIGQUIT it honours
    # worker_soft_shutdown_timeout, then returns unfinished messages to the queue.
    return _celery(argv, {"REMAP_SIGTERM": "SIGQUIT"})


def cmd_beat(args: argparse.Namespace) -> int:
    try:
        require_accounts_or_sandbox(get_settings())
    except AccountsError as exc:
        return _refuse("beat", exc)
    state = get_settings().state_dir
    state.mkdir(parents=True, exist_ok=True)
    return _celery(
        [
            "beat",
            "--loglevel",
            "INFO",
            "-s",
            str(state / "celerybeat-schedule"),
            # The default scheduler plus a heartbeat file for the liveness probe.
            "-S",
            "worker.beat_scheduler:HeartbeatScheduler",
            *args.celery_args,
        ]
    )


# Passwords guessed first (lower case, digits and punctuation around them ignored), and the
# marks of an example file's placeholder anywhere in a password.
_GUESSED_PASSWORDS = frozenset({"password", "passwort", "admin", "secret", "flower", "celery", "qwerty"})
_PLACEHOLDER_MARKS = ("changeme", "change-me", "change_me", "placeholder")
FLOWER_MIN_PASSWORD = 16
# A real OAuth setup: the provider's handler class, the e-mails it lets in, and the client.
# FLOWER_AUTH_PROVIDER alone lets everybody in (Flower checks e-mails only when FLOWER_AUTH is set).
_FLOWER_OAUTH = ("FLOWER_AUTH_PROVIDER", "FLOWER_AUTH", "FLOWER_OAUTH2_KEY", "FLOWER_OAUTH2_SECRET")


def _flower_options(env: dict[str, str], argv: list[str]) -> dict[str, str]:
    """Flower's options as it will read them: FLOWER_<NAME> variables, then --name=value
    arguments (Flower takes both spellings, - and _)."""
    found = {k: v for k, v in env.items() if k.startswith("FLOWER_")}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if arg.startswith("--") and sep:
            found["FLOWER_" + name[2:].upper().replace("-", "_")] = value
    return found


def flower_auth_problem(options: dict[str, str]) -> str | None:
    """Why Flower must not start with these options (one line, never a password), or None."""
    basic = options.get("FLOWER_BASIC_AUTH", "").strip()
    if basic:
        for credential in basic.split(","):
            user, sep, password = credential.partition(":")
            if not sep or not user or not password:
                return "FLOWER_BASIC_AUTH must be user:password (several: user1:pw1,user2:pw2)"
            if len(password) < FLOWER_MIN_PASSWORD:
                return (
                    f"the FLOWER_BASIC_AUTH password of {user} is shorter than "
                    f"{FLOWER_MIN_PASSWORD} characters"
                )
            lowered = password.lower()
            core = lowered.strip("0123456789-_.!#")
            if (
                lowered == user.lower()
                or core in _GUESSED_PASSWORDS
                or any(mark in lowered for mark in _PLACEHOLDER_MARKS)
            ):
                return f"the FLOWER_BASIC_AUTH password of {user} is a placeholder or guessable"
        return None
    if any(options.get(name) for name in _FLOWER_OAUTH):
        missing = [name for name in _FLOWER_OAUTH if not options.get(name)]
        if missing:
            return f"OAuth needs {', '.join(_FLOWER_OAUTH)} (missing: {', '.join(missing)})"
        return None
    return "set FLOWER_BASIC_AUTH=user:password, or OAuth (" + ", ".join(_FLOWER_OAUTH) + ")"


def cmd_flower(args: argparse.Namespace) -> int:
    # Flower's UI and API can revoke tasks and shut workers down: never open by accident,
    # never behind a placeholder password, read-only unless FLOWER_READ_ONLY says otherwise.
    options = _flower_options(dict(os.environ), args.celery_args)
    problem = flower_auth_problem(options)
    if problem is not None:
        print(f"ticketrelay flower: {problem}", file=sys.stderr)
        return 2
    extra = {} if "FLOWER_READ_ONLY" in options else {"FLOWER_READ_ONLY": "true"}
    return _celery(["flower", *args.celery_args], extra)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from worker.devtools.sandbox.server import main as sandbox_main

    return sandbox_main(["--host", args.host, "--port", str(args.port)])


def cmd_publish(args: argparse.Namespace) -> int:
    from worker.producer import publish_lines

    path = Path(args.file)
    with sys.stdin if args.file == "-" else path.open() as fh:
        n = publish_lines(_redis(), fh, get_settings().intake_stream)
    print(f"published {n} envelope(s) to {get_settings().intake_stream}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from worker.ops.status import collect, redis_unreachable, render

    settings = get_settings()
    data = collect(settings)
    print(json.dumps(data, indent=2, default=str) if args.json else render(data))
    if redis_unreachable(data):
        where = errors.redis_url_for_humans(settings.redis_url)
        print(f"ticketrelay status: Redis unreachable at {where}", file=sys.stderr)
        return errors.UNREACHABLE
    return errors.OK


def cmd_redis_cli(args: argparse.Namespace) -> int:
    """A stand-in for redis-cli on machines without it: runs one command, prints the reply."""
    reply = _redis().execute_command(*args.words)
    print(_format_reply(reply))
    return 0


def _format_reply(reply: Any, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(reply, bytes):
        return pad + reply.decode(errors="replace")
    if isinstance(reply, (list, tuple)):
        return "\n".join(_format_reply(r, indent + 2) for r in reply) or pad + "(empty)"
    if isinstance(reply, dict):
        return "\n".join(f"{pad}{_format_reply(k)}: {_format_reply(v)}" for k, v in reply.items())
    return pad + str(reply)


def cmd_metrics(args: argparse.Namespace) -> int:
    from worker.ops.metrics.server import main as metrics_main

    return metrics_main(args.metrics_args)


def cmd_reissue(args: argparse.Namespace) -> int:
    from worker.ops.reissue_cli import run

    setup_logging("WARNING")
    try:
        return run(args)
    except AccountsError as exc:  # re-driving against a fake is the same mistake as issuing
        return _refuse("reissue", exc)


def cmd_schema(_args: argparse.Namespace) -> int:
    from schemas.jsonschema import write_schemas

    # On stderr, so the older `schema > schemas/envelope.schema.json` still leaves a good file.
    for path in write_schemas():
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from worker.devtools.dev import run_dev

    return run_dev(demo=args.demo, exit_when_done=False, join=args.join)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.devtools.dev import run_dev

    return run_dev(demo=True, exit_when_done=True, join=args.join)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ticketrelay",
        description="Relay bookings to ticket providers.",
        epilog=errors.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ticketrelay {VERSION}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(fn=cmd_migrate)
    sub.add_parser("intake", help="consume the bookings stream").set_defaults(fn=cmd_intake)
    for name, fn, text in (
        ("worker", cmd_worker, "run the Celery worker"),
        ("beat", cmd_beat, "run Celery beat (the sweeper schedule)"),
        ("flower", cmd_flower, "run Flower"),
    ):
        # prefix_chars="+": every "-" argument after the command goes to celery as it is
        # (argparse would read a leading "--port=..." as an option of ours and refuse it).
        sp = sub.add_parser(name, help=text, prefix_chars="+", add_help=False)
        sp.add_argument("celery_args", nargs=argparse.REMAINDER, help="passed on to celery")
        sp.set_defaults(fn=fn)
    sp = sub.add_parser("sandbox", help="serve the provider simulators over HTTP")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8765)
    sp.set_defaults(fn=cmd_sandbox)
    sp = sub.add_parser("publish", help="publish envelopes from a JSONL file (- for stdin)")
    sp.add_argument("file")
    sp.set_defaults(fn=cmd_publish)
    sp = sub.add_parser("status", help="queue depths and counts by status")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=cmd_status)
    sp = sub.add_parser("redis-cli", help="run one Redis command (for machines without redis-cli)")
    sp.add_argument("words", nargs="+")
    sp.set_defaults(fn=cmd_redis_cli)
    sp = sub.add_parser(
        "metrics", help="serve Prometheus metrics (/metrics, /healthz)", add_help=False, prefix_chars="+"
    )
    sp.add_argument("metrics_args", nargs=argparse.REMAINDER)
    sp.set_defaults(fn=cmd_metrics)
    sp = sub.add_parser("reissue", help="bulk re-issuance: re-drive failed bookings, or a JSONL export")
    reissue_args(sp)
    sp.set_defaults(fn=cmd_reissue)
    sub.add_parser("schema", help="write schemas/{envelope,result}.schema.json").set_defaults(fn=cmd_schema)
    accounts_check.add_parser(sub)
    dead_letters.add_parser(sub)
    webhooks_cli.add_parser(sub)
    purge.add_parser(sub)
    bookings.add_parser(sub)  # show, list, resolve, retry
    sp = sub.add_parser("dev", help="everything on one machine, embedded defaults")
    sp.add_argument("--demo", action="store_true", help="publish sample bookings of every provider")
    sp.add_argument(
        "--join", action="store_true", help="join a Redis whose intake group other consumers already use"
    )
    sp.set_defaults(fn=cmd_dev)
    sp = sub.add_parser("demo", help="run everything, issue sample bookings of every provider, stop")
    sp.add_argument("--join", action="store_true", help="as for dev")
    sp.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        print(f"ticketrelay {args.command}: interrupted", file=sys.stderr)
        return errors.STOPPED
    except Exception as exc:
        # One line naming the problem, for what an operator can fix (a store down, a missing
        # file, a database not migrated); anything else is a bug and keeps its traceback.
        problem = errors.describe(exc, _settings_or_none())
        if problem is None:
            raise
        print(f"ticketrelay {args.command}: {problem.message}", file=sys.stderr)
        return problem.code


def _settings_or_none() -> Settings | None:
    try:
        return get_settings()
    except ValueError:  # the settings themselves are what failed
        return None


if __name__ == "__main__":
    sys.exit(main())
