"""The dev supervisor (worker.devtools.supervisor): starting a name that is already running
replaces the process instead of leaving the old one running, unknown to stop()."""

from __future__ import annotations

from pathlib import Path

from worker.devtools.supervisor import Supervisor


def test_starting_a_running_name_again_ends_the_previous_process(tmp_path: Path) -> None:
    sup = Supervisor(log_dir=tmp_path)
    # The prefix execs a process that lives until it is stopped (python's arguments unused).
    sleeper = ["/bin/sh", "-c", "exec sleep 60", "--"]
    first = sup.start("worker", [], prefix=sleeper)
    second = sup.start("worker", [], prefix=sleeper)
    try:
        assert first.poll() is not None, "the first process was left running"
        assert second.poll() is None and sup.procs["worker"] is second
    finally:
        sup.stop(timeout=5)
    assert second.poll() is not None
