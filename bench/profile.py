"""py-spy profiles of the worker and intake during a 0 ms run, summarised as hot spots.

py-spy writes collapsed stacks (`--format raw`; speedscope.app and flamegraph.pl open them).
Samples are of the thread holding the GIL (`--gil`), so the shares are of the Python CPU time
that limits one process, not of waiting."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Stack frames from these paths are put together when the question is "what does it cost".
CATEGORIES: dict[str, tuple[str, ...]] = {
    "SQL (sqlalchemy + driver)": ("/sqlalchemy/", "/sqlite3/", "/psycopg/", "sqlmodel"),
    "Redis client (redis-py)": ("/redis/",),
    "Celery + kombu": ("/celery/", "/kombu/", "/billiard/", "/vine/"),
    "HTTP client (httpx/httpcore)": ("/httpx/", "/httpcore/", "/h11/"),
    "pydantic": ("/pydantic/", "/pydantic_core/"),
    "json": ("/json/",),
    "logging": ("/logging/", "worker/logs.py"),
    "ticketrelay metrics": ("worker/metrics.py",),
    "ticketrelay code (self)": ("/worker/", "/tasks/", "/schemas/"),
}


# Leaf frames of a thread that waits. With --gil py-spy samples the last GIL holder even when
# nobody holds it, so such samples are idle time and are left out of the percentages.
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
    "_epoll.poll (",
    "select (selectors.py",
    "Queue.get (queue.py",
    "SimpleQueue.get (",
    # Waiting for a lock in our own code: the group commit's leader and SQLite's writer turn
    # (worker/db.py); the work those locks guard shows up under SQL frames.
    "GroupCommit.run (worker/db.py",
    "writing (worker/db.py",
)


def available() -> str | None:
    found = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv/bin/py-spy")
    return found if Path(found).exists() else None


def start_record(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    exe = available()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--format",
        "raw",
        "-o",
        str(out),
    ]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


@dataclass
class Hotspots:
    samples: int = 0
    idle: int = 0
    self_pct: list[tuple[str, float]] = field(default_factory=list)
    total_pct: list[tuple[str, float]] = field(default_factory=list)
    categories: list[tuple[str, float]] = field(default_factory=list)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarise(path: Path, top: int = 15) -> Hotspots:
    if not path.exists():
        return Hotspots()
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    cat_c: Counter[str] = Counter()
    samples = idle_n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        leaf = stack.rsplit(";", 1)[-1]
        if any(leaf.startswith(idle) for idle in IDLE_LEAVES):
            idle_n += count
            continue
        samples += count
        frames = []
        files = []
        for raw in stack.split(";"):
            m = _FRAME.match(raw)
            func, file = (m.group("func"), m.group("file")) if m else (raw, "")
            frames.append(f"{func} ({_short(file)})")
            files.append(file)
        if frames:
            self_c[frames[-1]] += count
        for name in set(frames):
            total_c[name] += count
        # A sample counts for the innermost category found (so "ticketrelay code" means time
        # in ticketrelay's own frames, not in what it calls).
        for frame_file in reversed(files):
            where = "/" + frame_file  # py-spy prints paths relative to sys.path: "redis/client.py"
            cat = next((c for c, marks in CATEGORIES.items() if any(mk in where for mk in marks)), None)
            if cat is not None:
                cat_c[cat] += count
                break
        else:
            cat_c["other (stdlib, threads, sockets)"] += count
    pct = 100 / max(1, samples)
    return Hotspots(
        samples=samples,
        idle=idle_n,
        self_pct=[(n, c * pct) for n, c in self_c.most_common(top)],
        total_pct=[(n, c * pct) for n, c in total_c.most_common(top + 10) if c < samples][:top],
        categories=[(n, c * pct) for n, c in cat_c.most_common()],
    )


def render(name: str, h: Hotspots) -> str:
    if not h.samples:
        return f"### {name}: no profile\n"
    title = f"### {name}: {h.samples} busy samples (holding the GIL; {h.idle} idle left out)"
    lines = [title, "", "| innermost category | % of samples |", "|---|---:|"]
    lines += [f"| {n} | {p:.1f} |" for n, p in h.categories]
    lines += ["", "| self (leaf) function | % |", "|---|---:|"]
    lines += [f"| `{n}` | {p:.1f} |" for n, p in h.self_pct]
    lines += ["", "| inclusive function (on the stack) | % |", "|---|---:|"]
    lines += [f"| `{n}` | {p:.1f} |" for n, p in h.total_pct]
    return "\n".join(lines) + "\n"
