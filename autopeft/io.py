"""Small file helpers: atomic writes, so a killed process never leaves a half-written file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: Test-only fault injection (tests/system/test_fault_injection.py). Set to a number of seconds, every
#: durable write (a results-store append, an atomic file write) writes the first half of its bytes,
#: fsyncs, sleeps that long, then writes the rest, so that a test can SIGKILL a real run in the middle
#: of a write. Unset, as in every real run, each write is one ``write()`` call of the whole data.
FAULT_DELAY_ENV = "AUTOPEFT_FAULT_DELAY_WRITE"


def write_whole(handle: IO[Any], data: Any) -> None:
    """``handle.write(data)`` in one call (see :data:`FAULT_DELAY_ENV` for the test-only pause)."""
    delay = float(os.environ.get(FAULT_DELAY_ENV) or 0)
    if delay > 0:
        half = len(data) // 2
        handle.write(data[:half])
        handle.flush()
        os.fsync(handle.fileno())
        time.sleep(delay)
        data = data[half:]
    handle.write(data)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the umask (read once, at import)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _NEW_FILE_MODE)  # not mkstemp's 0600: readable like any new file
            write_whole(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """``rows`` as CSV text with ``columns`` as the header (Unix line ends, so files are stable)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
