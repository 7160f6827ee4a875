"""A foreign package called `schemas` or `worker` earlier on the path must be refused loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_foreign_schemas_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "__init__.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-c", "import worker"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
        check=False,
    )
    assert proc.returncode != 0 and "was imported from" in proc.stderr


def test_repo_packages_load_together() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import worker, tasks, schemas; print(tasks.issue_ticket.name)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ticketrelay.issue"
