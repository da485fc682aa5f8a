"""Small file helpers: atomic writes, so a killed process never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_figure(fig: Any, path: Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


class RunDirectoryLock:
    """An exclusive lock on a run directory, so that two processes never write one search.

    ``flock`` locks belong to the open file: the kernel drops them when the process exits, even
    when it is killed with SIGKILL, so a dead process never leaves a directory locked. The lock
    file keeps the holder's pid and start time for the error message.

    Args:
        run_dir: The directory to lock (created if missing).
        what: What the holder is doing, for messages (e.g. ``"search"``).

    """

    def __init__(self, run_dir: Path, what: str = "search") -> None:
        self.path = Path(run_dir) / ".lock"
        self.what = what
        self._handle: Any = None

    def acquire(self) -> RunDirectoryLock:
        """Take the lock or fail at once.

        Raises:
            ConfigError: If another live process holds it (its pid and start time are named).

        """
        import fcntl
        import time

        from autopeft.errors import ConfigError

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"{self.path.parent} is in use by {holder}; one {self.what} per run directory. Wait for it to "
                "finish or stop it (a killed process releases the directory at once)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Give the lock up (closing the file releases it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunDirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
