"""Progress that knows where it writes: a bar redrawn in place on a terminal, a plain line
every few seconds in a log."""

from __future__ import annotations

import io

from worker.ops.progress import ProgressReporter
from worker.ops.reissue import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress(done: int) -> Progress:
    return Progress(total=100, done=done, by_status={"issued": done}, rate=10.0, eta_s=None)


def test_not_a_terminal_gets_plain_lines_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    show = ProgressReporter(out, tty=False, line_every_s=5.0, clock=clock)
    for done in range(100):  # 100 updates over 10 s
        show(progress(done))
        clock.now += 0.1
    show.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3  # at 0 s, at 5 s, and the last state on close
    assert lines[0].startswith("progress:   0% 0/100") and "99/100" in lines[-1]


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    show = ProgressReporter(out, tty=True, redraw_s=0.2, clock=clock)
    for done in (10, 20, 30):
        show(progress(done))
        clock.now += 0.3
    show.close()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")
    assert "[###" in text and "30/100" in text


def test_the_stream_decides_when_not_told() -> None:
    assert ProgressReporter(io.StringIO()).tty is False
