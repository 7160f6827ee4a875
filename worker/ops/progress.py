"""Progress of a long command that knows where it writes: on a terminal, a bar redrawn in
place; anywhere else (a log file, a pipe, a CI job), a plain line every few seconds, so logs
get no carriage returns and no thousand redraws."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from worker.ops.reissue import Progress


def bar(p: Progress, width: int = 28) -> str:
    frac = p.done / p.total if p.total else 1.0
    filled = int(width * min(frac, 1.0))
    return f"[{'#' * filled}{'.' * (width - filled)}] {_summary(p)}"


def line(p: Progress) -> str:
    return f"progress: {_summary(p)}"


def _summary(p: Progress) -> str:
    frac = p.done / p.total if p.total else 1.0
    eta = "-" if p.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(p.eta_s))
    counts = " ".join(f"{k}={v}" for k, v in sorted(p.by_status.items()))
    return f"{frac:4.0%} {p.done}/{p.total} {p.rate:6.1f}/s ETA {eta}  {counts}".rstrip()


class ProgressReporter:
    """Call with each Progress; call close() at the end (prints the last state once)."""

    def __init__(
        self,
        stream: TextIO,
        tty: bool | None = None,
        redraw_s: float = 0.2,
        line_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = redraw_s if self.tty else line_every_s
        self.clock = clock
        self._last_at: float | None = None
        self._last: Progress | None = None
        self._shown: Progress | None = None

    def __call__(self, p: Progress) -> None:
        self._last = p
        now = self.clock()
        if self._last_at is not None and now - self._last_at < self.every:
            return
        self._last_at = now
        self._show(p)

    def _show(self, p: Progress) -> None:
        if self.tty:
            self.stream.write(f"\r{bar(p)}   ")
        else:
            self.stream.write(line(p) + "\n")
        self.stream.flush()
        self._shown = p

    def close(self) -> None:
        if self._last is not None and self._last is not self._shown:
            self._show(self._last)
        if self.tty and self._shown is not None:
            self.stream.write("\n")
            self.stream.flush()
