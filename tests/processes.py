"""Helpers of the tests that run ``run.py`` as a real process: the command line, and its children."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.bo.conftest import TINY_SEARCH


def search_command(
    tmp_path: Path, run_dir: Path, *extra: str, search: Sequence[str] = TINY_SEARCH, cache: str = "cache"
) -> list[str]:
    """``python run.py`` for a short search on the tiny BERT (``debug=smoke`` data) into ``run_dir``."""
    return [
        sys.executable,
        "run.py",
        "experiment=none",
        "backbone=tiny_bert",
        "debug=smoke",
        *search,
        f"data.cache_dir={tmp_path / cache}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def children_of(pid: int) -> set[int]:
    """The pids of the direct children of ``pid`` (Linux ``/proc``; empty once it is gone)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            out |= {int(c) for c in task.read_text().split()}
    return out


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def wait_for_torn_line(
    process: subprocess.Popen, path: Path, complete: int, poll: Callable[[], None] | None = None, timeout: float = 300
) -> bool:
    """Wait until ``path`` holds ``complete`` whole lines and part of the next one (True), or the process ends.

    With ``AUTOPEFT_FAULT_DELAY_WRITE`` set, every durable write of the run pauses half-way, so
    this catches it inside the write of record ``complete + 1``, whatever the machine's speed.
    ``poll`` is called on every check (e.g. to note the run's worker processes while they live).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if poll is not None:
            poll()
        text = path.read_text() if path.exists() else ""
        if text.count("\n") == complete and not text.endswith("\n"):
            return True
        time.sleep(0.01)
    return False
