"""One owner per table, one place per piece of plumbing: worker/ledger.py alone speaks SQL to
ticket_issuances, worker/redis_clients.py alone builds Redis clients, worker/queues.py alone
knows kombu's Redis key layout. Checked on the source (AST), so a new module cannot quietly
grow a second copy."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "tasks")

TABLE_OWNER = "worker/ledger.py"
TABLE_EXEMPT = ("worker/migrations/",)  # migrations create and alter the table
TABLE_NAMES = {"T", "C"}  # worker.ledger's table objects
SQL_ON_TABLE = re.compile(r"\b(from|into|update|join|table)\s+\"?ticket_issuances\b", re.IGNORECASE)

REDIS_OWNER = "worker/redis_clients.py"
# Files owned by others at the time of writing, still building their own client; each should
# call worker.redis_clients.client(purpose) instead (see the line named in the message).
REDIS_NOT_YET_MOVED = {"worker/runtime.py"}
KOMBU_OWNER = "worker/queues.py"


def _sources() -> list[tuple[str, str]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out.append((path.relative_to(ROOT).as_posix(), path.read_text()))
    return out


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def table_violations(source: str) -> list[str]:
    """Ways a module other than the ledger reaches ticket_issuances directly."""
    tree = ast.parse(source)
    parents = _parents(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "worker.ledger":
            found += [
                f"line {node.lineno}: imports the table object {a.name} from worker.ledger"
                for a in node.names
                if a.name in TABLE_NAMES
            ]
        elif isinstance(node, ast.Attribute) and node.attr in TABLE_NAMES:
            if isinstance(node.value, ast.Name) and node.value.id == "ledger":
                found.append(f"line {node.lineno}: uses ledger.{node.attr}")
        elif isinstance(node, ast.Name) and node.id == "TicketIssuance":
            parent = parents.get(node)
            # As a type it is fine; as a value (its __table__, a constructor, select(...)) not.
            if isinstance(parent, ast.Attribute):
                found.append(f"line {node.lineno}: TicketIssuance.{parent.attr}")
            elif isinstance(parent, ast.Call) and (parent.func is node or node in parent.args):
                found.append(f"line {node.lineno}: TicketIssuance used as a value in a call")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_ON_TABLE.search(node.value)
        ):
            found.append(f"line {node.lineno}: SQL text on ticket_issuances")
    return found


def redis_client_violations(source: str) -> list[str]:
    """Redis clients built outside worker/redis_clients.py."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        from_url = isinstance(f, ast.Attribute) and f.attr == "from_url" and "Redis" in ast.unparse(f.value)
        if from_url or ast.unparse(f) in ("redis.Redis", "Redis", "redis.StrictRedis", "StrictRedis"):
            found.append(f"line {node.lineno}: {ast.unparse(f)}(...)")
    return found


def test_only_the_ledger_speaks_sql_to_ticket_issuances() -> None:
    problems = [
        f"{path}: {why}"
        for path, source in _sources()
        if path != TABLE_OWNER and not path.startswith(TABLE_EXEMPT)
        for why in table_violations(source)
    ]
    assert not problems, "go through a worker.ledger function instead:\n" + "\n".join(problems)


def test_only_redis_clients_builds_redis_clients() -> None:
    problems = [
        f"{path}: {why}"
        for path, source in _sources()
        if path != REDIS_OWNER and path not in REDIS_NOT_YET_MOVED
        for why in redis_client_violations(source)
    ]
    assert not problems, "use worker.redis_clients.client(purpose):\n" + "\n".join(problems)


def test_kombu_key_layout_is_known_in_one_module() -> None:
    # The separator of kombu's priority lists and its unacked hash are kombu internals.
    unacked_key = re.compile(r"""h(len|getall|keys)\(\s*["']unacked["']""")
    holders = [
        path
        for path, source in _sources()
        if ("\\x06\\x16" in source or "\x06\x16" in source or unacked_key.search(source))
        and path != KOMBU_OWNER
    ]
    assert holders == []


@pytest.mark.parametrize(
    "source",
    [
        "from worker.ledger import C, T\n",
        "from worker import ledger\nx = select(ledger.C.status)\n",
        "from schemas.table import TicketIssuance\nt = TicketIssuance.__table__\n",
        "from schemas.table import TicketIssuance\nrow = TicketIssuance(**m)\n",
        "q = select(TicketIssuance)\n",
        "conn.execute(text('UPDATE ticket_issuances SET status = 1'))\n",
        "conn.execute(text('select count(*) from ticket_issuances'))\n",
    ],
)
def test_the_table_check_catches_each_way_in(source: str) -> None:
    assert table_violations(source)


def test_the_table_check_allows_types_and_ledger_functions() -> None:
    source = (
        "from schemas.table import TicketIssuance\n"
        "from worker import ledger\n"
        "Step = tuple[int, TicketIssuance | None]\n"
        "def f(row: TicketIssuance) -> list[TicketIssuance]:\n"
        "    '''Rows of ticket_issuances, by status.'''\n"
        "    return [ledger.get(e, row.idempotency_key)]\n"
    )
    assert table_violations(source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import redis\nr = redis.Redis.from_url(u)\n",
        "import redis\nr = redis.Redis(host='x')\n",
        "from redis import Redis\nr = Redis.from_url(u, socket_timeout=1)\n",
    ],
)
def test_the_redis_check_catches_clients(source: str) -> None:
    assert redis_client_violations(source)
