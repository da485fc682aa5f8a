"""The results store keeps every finished record through kills and refuses corrupt files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autopeft.runs.store import CorruptStoreError, ResultsStore


def _record(i: int) -> dict:
    return {
        "index": i,
        "point": {"mask": [True], "sizes": {"sa": 8}},
        "status": "ok",
        "score": 0.5 + i / 100,
        "param_percent": 0.1,
        "seconds": 1.0,
        "seed": 0,
    }


def test_round_trip_in_order(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "run" / "evaluations.jsonl")
    assert store.load() == []
    for i in range(3):
        store.append(_record(i))
    assert [r["index"] for r in store.load()] == [0, 1, 2]
    assert store.load()[1] == _record(1)


def test_a_torn_last_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "evaluations.jsonl")
    store.append(_record(0))
    with store.path.open("a") as handle:
        handle.write('{"index": 1, "poi')  # a kill in the middle of an append
    assert [r["index"] for r in store.load()] == [0]
    store.append(_record(1))
    assert [r["index"] for r in store.load()] == [0, 1]


def test_corruption_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "evaluations.jsonl")
    store.append(_record(0))
    store.path.write_text(store.path.read_text() + "not json\n" + store.path.read_text())
    before = store.path.read_bytes()
    with pytest.raises(CorruptStoreError, match=r"corrupt at line 2 .*not modified"):
        store.load()
    assert store.path.read_bytes() == before


def test_a_record_without_required_keys_is_refused(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "evaluations.jsonl")
    with pytest.raises(ValueError, match="lacks \\['score'"):
        store.append({k: v for k, v in _record(0).items() if k != "score"})
    assert not store.path.exists()
    store.path.write_text('{"index": 0}\n')
    with pytest.raises(CorruptStoreError, match="line 1 lacks"):
        store.load()


def test_sigkill_during_appends_loses_no_finished_record(tmp_path: Path) -> None:
    path = tmp_path / "evaluations.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from autopeft.runs.store import ResultsStore
        store = ResultsStore({str(path)!r})
        for i in range(50):
            store.append({{"index": i, "point": {{}}, "status": "ok", "score": i, "param_percent": 0,
                          "seconds": 0, "seed": 0, "pad": "x" * 5000}})
            print(i, flush=True)
            if i == 20:
                with open({str(path)!r}, "a") as h:
                    h.write('{{"index": 21, "pa')
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9
    acknowledged = [int(x) for x in result.stdout.split()]
    records = ResultsStore(path).load()
    assert [r["index"] for r in records] == acknowledged == list(range(21))
