"""The append-only results store of a search: one JSON line per finished evaluation.

Why JSON Lines with append + fsync: a completed evaluation costs minutes of GPU time, so it
must be on disk before the next one starts, and a process killed at any instant must leave
every earlier record intact. Appending one line and fsyncing does that without rewriting the
file; the only damage a kill can do is a torn last line (no trailing newline), which belongs
to an evaluation that never finished writing and is dropped on the next open. Anything else
that does not parse is corruption: the store refuses to load and never rewrites the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from autopeft.errors import ConfigError
from autopeft.io import write_whole

#: Keys every record must have.
REQUIRED_KEYS = ("index", "point", "status", "score", "param_percent", "seconds", "seed")


class CorruptStoreError(ConfigError):
    """The results file has a damaged record that a kill cannot explain."""


class ResultsStore:
    """Evaluations of one search, in the order they finished.

    Args:
        path: The JSON Lines file (created on the first append).
        required_keys: Keys every record must have (the proposals log uses its own).

    """

    def __init__(self, path: Path, required_keys: tuple[str, ...] = REQUIRED_KEYS) -> None:
        self.path = Path(path)
        self.required_keys = tuple(required_keys)

    def _lines(self) -> Iterator[tuple[int, str, bool]]:
        data = self.path.read_bytes() if self.path.exists() else b""
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                complete = number < len(lines)  # the last chunk has no newline after it
                yield number, raw.decode("utf-8", errors="replace"), complete

    def load(self) -> list[dict[str, Any]]:
        """All complete records, oldest first.

        Raises:
            CorruptStoreError: If a complete line is not a valid record; the file is left as it is.

        """
        records = []
        for number, text, complete in self._lines():
            if not complete:
                continue  # torn by a kill mid-append: that evaluation never finished being recorded
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise CorruptStoreError(
                    f"results store {self.path} is corrupt at line {number} ({err.msg}); it was not modified. "
                    "Fix or remove that line, or start a new run directory"
                ) from None
            missing = [k for k in self.required_keys if not isinstance(record, dict) or k not in record]
            if missing:
                raise CorruptStoreError(
                    f"results store {self.path} line {number} lacks {missing}; every record needs "
                    f"{list(self.required_keys)}. The file was not modified"
                )
            records.append(record)
        return records

    def _drop_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one finished evaluation durably (written and fsynced before returning).

        Raises:
            ValueError: If ``record`` lacks a required key (nothing is written).

        """
        missing = [k for k in self.required_keys if k not in record]
        if missing:
            raise ValueError(f"record lacks {missing}; required: {list(self.required_keys)}")
        line = json.dumps(dict(record), sort_keys=True, default=str) + "\n"
        self._drop_torn_tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            write_whole(handle, line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
