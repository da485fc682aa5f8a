"""Kill anywhere, lose nothing: real ``run.py`` processes SIGKILLed at many moments and resumed.

Each test starts the real command line as a subprocess, sends SIGKILL at moments drawn from a seeded
RNG (a delay after the run has opened its run directory) or at moments it waits for (a write caught
half-way), resumes with ``resume=<run dir>`` (or reruns the same sweep), and checks after every kill
and at the end that

- every evaluation (training, retraining cell) that had finished before a kill is still there,
  byte for byte, exactly once, and is never redone;
- nothing is half-written: every line of a JSON Lines store but a torn last one parses (and a torn
  last line is dropped on the next open), every JSON file the run publishes parses;
- the finished search equals an uninterrupted run with the same seed (results, proposals, front,
  summary, per-evaluation training logs); a sweep or pipeline finishes every cell or stage once.

``pytest -s`` prints a table of every kill: what the test waited for, what the run was doing
(inferred from its files and log at the kill), evaluations before and after, duplicates.

Why these writes are atomic enough (and not SQLite with WAL)
-------------------------------------------------------------

A search's durable state is two append-only JSON Lines files (``proposals.jsonl``,
``results.jsonl``; ``retrain.jsonl`` for retrainings). Each record is one complete line written by a
single ``write()`` of the whole line (opened for append), then ``fsync``; the next record is only
written after that returns. So every record acknowledged before a kill is on disk in full, and a
kill can damage only the record being written, which is always the file's last line: at worst a
torn last line without its newline (a SIGKILL can cut even a single ``write()`` short). The store
drops such a line when it reads the file and truncates it before the next append, so the evaluation
it belonged to, which never finished being recorded, simply runs again. A damaged line anywhere else
cannot come from a kill and is refused as corruption, never rewritten.

Whole-file outputs (``search.json``, ``results.json`` of a training, ``pipeline.json``,
``front.md``/``front.csv``/``summary.json``) are written to a temp file in the same folder, fsynced,
and put in place with ``os.replace``, an atomic rename: readers see the old file or the new one,
never a mix (a kill may leave a ``.<name>.<random>.tmp`` behind, which nothing reads).

SQLite in WAL mode would give the same guarantee (a committed transaction survives, an uncommitted
one vanishes), plus multi-record transactions we do not need: each record is independent and the
order of appends is the only structure. JSON Lines keeps the results readable and diffable with
``cat``/``jq``/pandas, needs no schema or migration, works on network filesystems where SQLite's
locking (and WAL's shared memory) is unreliable, and the code that makes it crash-safe is a dozen
lines that these tests exercise with real kills, including kills inside a write: with the test-only
``AUTOPEFT_FAULT_DELAY_WRITE=<seconds>`` (:data:`autopeft.io.FAULT_DELAY_ENV`) every durable write
stops half-way for that long, so a kill lands in it deterministically.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from autopeft.io import FAULT_DELAY_ENV, atomic_write_text
from autopeft.runs.store import CorruptStoreError, ResultsStore
from tests.bo.conftest import TINY_SEARCH
from tests.processes import children_of, is_alive
from tests.processes import search_command as tiny_search_command

ROOT = Path(__file__).resolve().parents[2]

#: A 12-evaluation search (5 random, 7 BO) with a short NUTS chain: ~12 s uninterrupted on 2 CPU cores.
SEARCH = [*TINY_SEARCH, "search.n_init=5", "search.n_iter=7"]
N_INIT, BUDGET = 5, 12

#: Seconds each durable write pauses half-way in rounds that kill inside a write.
WRITE_PAUSE = "0.5"


# --------------------------------------------------------------------------- running and killing


class Run:
    """A ``run.py`` subprocess whose merged stdout/stderr is read line by line in a thread."""

    #: Every run started by the current test (the autouse fixture kills those left alive).
    started_runs: ClassVar[list[Run]] = []

    def __init__(self, args: list[str], pause_writes: bool = False) -> None:
        env = dict(os.environ)
        env.pop(FAULT_DELAY_ENV, None)
        if pause_writes:
            env[FAULT_DELAY_ENV] = WRITE_PAUSE
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        Run.started_runs.append(self)
        self.ended: float | None = None
        self.lines: list[str] = []
        self.children: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
        self.ended = time.monotonic()  # EOF: the process has exited

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, condition: Callable[[], bool], timeout: float = 300) -> bool:
        """Poll ``condition`` until it holds (True), or the process exits or time runs out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            self.children |= children_of(self.pid)
            if condition():
                return True
            time.sleep(0.01)
        return False

    def sleep(self, seconds: float) -> bool:
        """Sleep while the process runs; False if it exited first."""
        end = time.monotonic() + seconds
        return self.wait_for(lambda: time.monotonic() >= end, timeout=seconds + 5)

    def kill(self) -> float:
        """SIGKILL the process (not its workers: they must go by themselves); return its lifetime."""
        self.children |= children_of(self.pid)
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=30)
        return time.monotonic() - self.started

    def finish(self, timeout: float = 600) -> int:
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return self.process.returncode


@pytest.fixture(autouse=True)
def _no_run_left_behind() -> Iterator[None]:
    """A failing test must not leave its subprocesses (or their workers) running."""
    yield
    for run in Run.started_runs:
        for pid in [run.pid, *run.children]:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        run.process.wait()
    Run.started_runs.clear()


def _no_orphans(run: Run) -> None:
    """Worker processes of a killed run must exit by themselves (their pipe to it is gone)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(is_alive(pid) for pid in run.children):
        time.sleep(0.1)
    left = [pid for pid in run.children if is_alive(pid)]
    for pid in left:  # do not leave them running if the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run"


def _holds_lock(run_dir: Path, pid: int) -> bool:
    """The process has taken the run directory's lock (so it is past startup, in the search)."""
    try:
        return (run_dir / ".lock").read_text().startswith(f"pid {pid} ")
    except OSError:
        return False


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _torn(path: Path) -> bool:
    """The file's last line has no newline: a write of it was cut (or is under way)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _temp_files(folder: Path) -> set[Path]:
    """Temp files of atomic writes (``.<name>.<random>.tmp``) in ``folder`` that hold some data."""
    out = set()
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if path.stat().st_size > 0:
                out.add(path)
    return out


# --------------------------------------------------------------------------- reading what a run left


def _complete_lines(path: Path) -> list[str]:
    """The complete (newline-terminated) lines of a JSON Lines file; each must parse."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]  # the last chunk is torn or empty
    out = []
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8")
        json.loads(text)  # a half-written line that is not the last one would fail here
        assert text.strip(), f"{path} line {number} is empty"
        out.append(text)
    return out


def _all_outputs_whole(root: Path) -> int:
    """Every JSON file under ``root`` parses, every JSON Lines file has at most a torn last line."""
    count = 0
    for path in root.rglob("*.json*"):
        if path.name.startswith(".") or "wandb" in path.parts:
            continue  # temp files of atomic writes are never read
        if path.suffix == ".jsonl":
            _complete_lines(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        count += 1
    return count


def _key(line: str) -> tuple:
    r = json.loads(line)
    return r["index"], json.dumps(r["point"], sort_keys=True), r["status"], r["score"]


def _duplicates(values: list) -> int:
    return sum(n - 1 for n in Counter(values).values() if n > 1)


@dataclass
class Kill:
    """One SIGKILL and what it left."""

    number: int
    trigger: str
    phase: str
    before: int
    after: int
    duplicates: int
    seconds: float


def _table(title: str, kills: list[Kill], unit: str = "evaluations") -> str:
    rows = [
        f"\n{title}",
        f"| kill | trigger | phase at the kill | {unit} before | {unit} after | duplicates | run s |",
        "|--:|:--|:--|--:|--:|--:|--:|",
    ]
    rows += [
        f"| {k.number} | {k.trigger} | {k.phase} | {k.before} | {k.after} | {k.duplicates} | {k.seconds:.1f} |"
        for k in kills
    ]
    return "\n".join(rows)


# --------------------------------------------------------------------------- searches


def search_command(tmp_path: Path, run_dir: Path, *extra: str, cache: str = "cache") -> list[str]:
    return tiny_search_command(tmp_path, run_dir, *extra, search=SEARCH, cache=cache)


def resume_command(tmp_path: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "run.py", f"resume={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"]


def _search_phase(run_dir: Path, run: Run, start: dict[str, tuple[int, int] | None], before: int) -> str:
    """What the search was doing when it was killed, from the files and log it left."""
    results, proposals = run_dir / "results.jsonl", run_dir / "proposals.jsonl"
    done = [json.loads(line) for line in _complete_lines(results)]
    logged = [json.loads(line) for line in _complete_lines(proposals)]
    finished = {r["index"] for r in done}
    pending = [p for p in logged if p["index"] not in finished]
    new_tmp = sorted(p.name for p in _temp_files(run_dir) - start["tmp"])
    # A torn line left by an earlier kill stays until the next append: only count one written now.
    if _torn(results) and _stamp(results) != start["results"]:
        return f"writing result #{pending[0]['index'] if pending else '?'} (torn line)"
    if _torn(proposals) and _stamp(proposals) != start["proposals"]:
        return f"logging proposal #{len(logged)} (torn line)"
    if new_tmp:
        return f"writing report ({new_tmp[0].split('.')[1]}.{new_tmp[0].split('.')[2]} half-written)"
    if before and "resuming " not in run.output:
        return "opening the run directory"
    if pending:
        indices = ", ".join(f"#{p['index']}" for p in pending)
        return f"training {indices} ({pending[0]['info'].get('phase', '?')})"
    if len(done) < BUDGET:
        what = "surrogate fit + acquisition" if len(logged) >= N_INIT else "initial design"
        return f"proposing #{len(logged)}: {what}"
    return "after the last evaluation"


def _kill_search_round(
    tmp_path: Path, run_dir: Path, number: int, trigger: str, delay: float, first_args: list[str]
) -> tuple[Kill | None, Run]:
    """Start (or resume) the search, SIGKILL it at ``trigger``, check what it left.

    Returns no Kill when the search finished before the moment came (a delay longer than the work left).
    """
    results, proposals = run_dir / "results.jsonl", run_dir / "proposals.jsonl"
    kept = _complete_lines(results)
    before = len(kept)
    if trigger == "write:proposals" and len(_complete_lines(proposals)) >= BUDGET:
        trigger = "write:results"  # every proposal is logged: no proposal write is left to kill
    if before >= BUDGET:
        trigger = "write:report"  # only the report is left to kill
    tmp_before = _temp_files(run_dir) if run_dir.exists() else set()
    start = {"tmp": tmp_before, "results": _stamp(results), "proposals": _stamp(proposals)}
    args = resume_command(tmp_path, run_dir) if (run_dir / "search.json").is_file() else first_args
    run = Run(args, pause_writes=trigger.startswith("write:"))
    if trigger == "timed":  # a delay after the run has opened its directory (startup takes seconds)
        ready = run.wait_for(lambda: _holds_lock(run_dir, run.pid) and (run_dir / "search.json").is_file())
        ready = ready and run.sleep(delay)
        label = f"timed {delay:.2f}s"
    elif trigger == "after-result":  # a delay after this run has recorded an evaluation
        ready = run.wait_for(lambda: len(_complete_lines(results)) > before) and run.sleep(delay)
        label = f"{delay:.2f}s after a result"
    elif trigger in ("write:results", "write:proposals"):
        path = results if trigger == "write:results" else proposals
        ready = run.wait_for(lambda: _torn(path) and _stamp(path) != start[path.stem])
        label = f"mid-write {path.name}"
    else:
        ready = run.wait_for(lambda: bool(_temp_files(run_dir) - tmp_before))
        label = "mid-write report"
    if not ready and not run.alive() and trigger in ("timed", "after-result"):
        assert run.finish() == 0, run.output[-3000:]
        return None, run
    assert ready, f"kill {number} ({trigger}) never came: the run ended or stalled\n{run.output[-3000:]}"
    seconds = run.kill()
    _no_orphans(run)
    phase = _search_phase(run_dir, run, start, before)
    after_lines = _complete_lines(results)
    # Nothing that had finished is lost or changed: the old records are a prefix of the new file.
    assert after_lines[:before] == kept, f"kill {number}: finished records changed"
    assert len(after_lines) >= before
    ResultsStore(results).load()  # the real reader accepts what the kill left (a torn tail at most)
    logged = [json.loads(line) for line in _complete_lines(proposals)]
    assert [p["index"] for p in logged] == list(range(len(logged))), f"kill {number}: proposal log damaged"
    by_index = {p["index"]: p["point"] for p in logged}
    indices = [json.loads(line)["index"] for line in after_lines]
    assert all(by_index[json.loads(line)["index"]] == json.loads(line)["point"] for line in after_lines)
    _all_outputs_whole(run_dir)
    kill = Kill(number, label, phase, before, len(after_lines), _duplicates(indices), seconds)
    return kill, run


def _kill_plan(seed: int, kills: int, writes: dict[str, int]) -> list[tuple[str, float]]:
    """Seeded ``(trigger, u)``: the first kill timed, the last in the report, the rest shuffled; ``u`` in [0, 1)."""
    rng = random.Random(seed)
    middle = [kind for kind, n in writes.items() for _ in range(n)]
    middle += ["timed"] * (kills - 2 - len(middle))
    rng.shuffle(middle)
    kinds = ["timed", *middle, "write:report"]
    return [(kind, rng.random()) for kind in kinds]


def _kill_search(
    tmp_path: Path, run_dir: Path, plan: list[tuple[str, float]], first_args: list[str], max_delay: float
) -> tuple[list[Kill], dict[int, str], set[int]]:
    """SIGKILL the search once per entry of ``plan``, resuming each time; returns the kills, the lines
    of every evaluation seen finished after some kill, and the worker processes seen.

    A timed kill comes ``u * max_delay`` seconds in; a quarter of that while the search is ahead of an
    even spread of the kills over its evaluations (a fast machine), so that they do not all end up in
    the report. A kill that would come after the search finished is made again in the report.
    """
    kills: list[Kill] = []
    completed: dict[int, str] = {}
    workers: set[int] = set()
    moments = iter(plan)
    while len(kills) < len(plan):
        trigger, u = next(moments, ("write:report", 0.0))
        ahead = len(_complete_lines(run_dir / "results.jsonl")) > BUDGET * len(kills) / (len(plan) - 1)
        delay = round(u * max_delay / (4 if ahead else 1), 2)
        kill, run = _kill_search_round(tmp_path, run_dir, len(kills) + 1, trigger, delay, first_args)
        workers |= run.children
        if kill is None:
            print(f"({trigger} {delay:.2f}s: the search finished first; no kill)")
            continue
        kills.append(kill)
        for line in _complete_lines(run_dir / "results.jsonl"):
            completed.setdefault(json.loads(line)["index"], line)
    return kills, completed, workers


def _finish_and_check_search(tmp_path: Path, run_dir: Path, kills: list[Kill], completed: dict[int, str]) -> Run:
    final = Run(resume_command(tmp_path, run_dir))
    assert final.finish() == 0, final.output[-3000:]
    lines = _complete_lines(run_dir / "results.jsonl")
    indices = [json.loads(line)["index"] for line in lines]
    assert _duplicates(indices) == 0 and sorted(indices) == list(range(BUDGET)), indices
    for index, line in completed.items():  # finished before some kill: there, unchanged, once
        assert lines.count(line) == 1, f"evaluation {index} was lost or redone"
    for name in ("results.jsonl", "proposals.jsonl"):
        data = (run_dir / name).read_bytes()
        assert data.endswith(b"\n"), f"{name} ends in a torn line"
    assert len(ResultsStore(run_dir / "results.jsonl").load()) == BUDGET
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"]["evaluations"] == BUDGET
    assert all(k.duplicates == 0 for k in kills)
    return final


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
@pytest.mark.timeout(900)
def test_twenty_kills_lose_nothing(tmp_path: Path) -> None:
    """20 SIGKILLs of a 12-evaluation BO search, each resumed: the same results as no kill at all."""
    reference = tmp_path / "reference"
    # The uninterrupted run goes alongside (its own tokenisation cache: the killed run builds one too).
    ref = Run(search_command(tmp_path, reference, cache="cache-reference"))

    run_dir = tmp_path / "killed"
    plan = _kill_plan(seed=7, kills=20, writes={"write:results": 3, "write:proposals": 2})
    kills, completed, _ = _kill_search(tmp_path, run_dir, plan, search_command(tmp_path, run_dir), max_delay=2.0)
    final = _finish_and_check_search(tmp_path, run_dir, kills, completed)
    assert ref.finish() == 0, ref.output[-3000:]
    uninterrupted = ref.ended - ref.started
    print(_table(f"20 SIGKILLs of a {BUDGET}-evaluation search (uninterrupted run: {uninterrupted:.0f}s)", kills))
    leftovers = sorted(p.name for p in run_dir.glob(".*.tmp"))
    print(f"final resume: {kills[-1].after} -> {BUDGET} evaluations, duplicates 0; temp files left: {leftovers}")

    # The same search as without kills: results, proposals, front, training logs.
    assert [_key(x) for x in _complete_lines(run_dir / "results.jsonl")] == [
        _key(x) for x in _complete_lines(reference / "results.jsonl")
    ]
    points = [(json.loads(x)["index"], json.loads(x)["point"]) for x in _complete_lines(run_dir / "proposals.jsonl")]
    assert points == [
        (json.loads(x)["index"], json.loads(x)["point"]) for x in _complete_lines(reference / "proposals.jsonl")
    ]
    assert (run_dir / "front.csv").read_text() == (reference / "front.csv").read_text()
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    for key in ("front", "hypervolume_trace"):
        assert ours[key] == theirs[key], key
    assert ours["state"] == theirs["state"]
    for log in sorted(reference.glob("evals/*/csv/metrics.csv")):
        assert (run_dir / log.relative_to(reference)).read_text() == log.read_text(), log
    assert f"resuming {run_dir}: {kills[-1].after} of {BUDGET} evaluations done" in final.output
    # The kills landed where they were meant to: in training, in BO proposals, in every kind of write.
    phases = " ".join(k.phase for k in kills)
    for phase in ("training", "surrogate fit", "writing result", "logging proposal", "half-written"):
        assert phase in phases, f"no kill landed in {phase!r}: {phases}"


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
@pytest.mark.timeout(600)
def test_parallel_search_survives_kills(tmp_path: Path) -> None:
    """Two worker processes: 4 kills, every evaluation exactly once, the budget completed."""
    run_dir = tmp_path / "run"
    first = search_command(tmp_path, run_dir, "search.parallel.workers=2")
    rng = random.Random(3)
    kinds = ["after-result", "write:results", "after-result", "write:proposals"]
    plan = [(kind, rng.random()) for kind in kinds]
    kills, completed, workers = _kill_search(tmp_path, run_dir, plan, first, max_delay=1.5)
    assert workers, "no worker process was seen"
    _finish_and_check_search(tmp_path, run_dir, kills, completed)
    print(_table(f"4 SIGKILLs of a {BUDGET}-evaluation search with 2 workers", kills))


# --------------------------------------------------------------------------- the store, byte by byte


def test_a_kill_at_any_byte_of_an_append_loses_only_that_record(tmp_path: Path) -> None:
    """Every prefix of a record's line, as a kill could leave it: the earlier records load, the next append works."""
    record = {
        "index": 2,
        "point": {"mask": [True, False], "sizes": {"sa": 8}},
        "status": "ok",
        "score": 0.75,
        "param_percent": 0.1,
        "seconds": 1.0,
        "seed": 0,
        "configuration": "SA 8 on layer 0 – ünïcode",
    }
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(2):
        store.append({**record, "index": i})
    good = store.path.read_bytes()
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    for cut in range(len(line)):  # cut == len(line) - 1: all but the newline, still not acknowledged
        store.path.write_bytes(good + line[:cut])
        assert [r["index"] for r in store.load()] == [0, 1], cut
        store.append(record)
        assert store.path.read_bytes() == good + line, cut
    store.path.write_bytes(good + line[:10] + b"\n" + line)  # a damaged line that is not the last
    with pytest.raises(CorruptStoreError):
        store.load()


def test_atomic_write_killed_half_way_keeps_the_old_file(tmp_path: Path) -> None:
    """A real process killed inside atomic_write_text: the target holds the old text, never a mix."""
    target = tmp_path / "results.json"
    atomic_write_text(target, '{"old": true}\n')
    script = (
        "import sys; from pathlib import Path; from autopeft.io import atomic_write_text; "
        "atomic_write_text(Path(sys.argv[1]), '{\"new\": ' + '1' * 100000 + '}\\n')"
    )
    run = Run([sys.executable, "-c", script, str(target)], pause_writes=True)
    assert run.wait_for(lambda: bool(_temp_files(tmp_path)), timeout=60)
    run.kill()
    (tmp,) = _temp_files(tmp_path)
    assert 0 < tmp.stat().st_size < 100000  # the kill landed half-way through the write
    assert target.read_text() == '{"old": true}\n'
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # an atomically written file has the permissions of any new file (not mkstemp's 0600)
    assert target.stat().st_mode == plain.stat().st_mode


# --------------------------------------------------------------------------- a multirun sweep


def _cells(sweep: Path) -> dict[str, Path]:
    return {p.parent.name: p for p in sweep.glob("*/results.json")}


def _sweep_temps(sweep: Path) -> set[Path]:
    return {p for cell in sweep.glob("*") for p in _temp_files(cell)}


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
@pytest.mark.timeout(600)
def test_killed_sweep_reruns_only_unfinished_cells(tmp_path: Path) -> None:
    """A 6-cell multirun killed three times (once inside a results.json write), then rerun."""
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "run.py",
        "-m",
        "mode=train",
        "experiment=none",
        "backbone=tiny_bert",
        "debug=smoke",
        "seed=0,1,2,3,4,5",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]
    rng = random.Random(11)
    stamps: dict[str, int] = {}
    kills: list[Kill] = []
    cut: set[str] = set()
    for number, trigger in enumerate(["timed", "write", "timed"], start=1):
        before = _cells(sweep)
        tmp_before = _sweep_temps(sweep)
        run = Run(args, pause_writes=trigger == "write")
        if trigger == "timed" and number == 1:  # a random moment once 2 cells have finished
            delay = rng.uniform(0, 0.5)
            ready = run.wait_for(lambda: len(_cells(sweep)) >= 2) and run.sleep(delay)
            label = f"{delay:.2f}s after cell 2 finished"
        elif trigger == "timed":  # a random moment once the first unfinished cell has started
            delay, launch = rng.uniform(0, 0.5), f"[HYDRA] \t#{len(before)} : "
            ready = run.wait_for(lambda r=run, h=launch: any(h in line for line in r.lines)) and run.sleep(delay)
            label = f"{delay:.2f}s after cell {len(before) + 1} started"
        else:
            ready = run.wait_for(lambda old=tmp_before: bool(_sweep_temps(sweep) - old))
            label = "mid-write results.json"
        assert ready, f"the sweep ended before kill {number}\n{run.output[-3000:]}"
        seconds = run.kill()
        after = _cells(sweep)
        redone = 0
        for name, path in after.items():  # every results.json is whole, and one that was there is unchanged
            assert json.loads(path.read_text())["status"] == "ok", name
            redone += path.stat().st_mtime_ns != stamps.setdefault(name, path.stat().st_mtime_ns)
        assert redone == 0, f"kill {number}: a finished cell was redone"
        _all_outputs_whole(sweep)
        torn = {p.parent.name for p in _sweep_temps(sweep) - tmp_before}
        if trigger == "write":
            assert torn and not (torn & set(after)), "the kill did not land inside a results.json write"
            cut |= torn
        launched = [line.split("seed=")[1].split()[0] for line in run.lines if "[HYDRA] \t#" in line]
        cell = f"seed={launched[-1]}" if launched else "?"
        if torn:
            phase = f"writing results.json of cell {cell}"
        elif any(name.endswith(cell) for name in after):
            phase = f"after cell {cell} finished"
        else:
            phase = f"training cell {cell}"
        kills.append(Kill(number, label, phase, len(before), len(after), redone, seconds))
    finished = _cells(sweep)
    assert 2 <= len(finished) < 6
    final = Run(args)
    assert final.finish() == 0, final.output[-3000:]
    cells = _cells(sweep)
    assert len(cells) == 6 and all(json.loads(p.read_text())["status"] == "ok" for p in cells.values())
    assert cut <= set(cells), "the cell killed inside its results.json write did not finish on the rerun"
    assert {name: cells[name].stat().st_mtime_ns for name in stamps} == stamps, "a finished cell was redone"
    assert final.output.count("already finished, skipped") == len(finished)
    assert sorted(json.loads(p.read_text())["config"]["seed"] for p in cells.values()) == list(range(6))
    print(
        _table("3 SIGKILLs of a 6-cell sweep, then the same command again (duplicates: cells redone)", kills, "cells")
    )
    leftovers = sorted(p.name for p in sweep.glob("*/.*.tmp"))
    print(
        f"rerun: {len(finished)} cells skipped, {6 - len(finished)} trained, finished mtimes unchanged; "
        f"temp files left by kills: {leftovers}"
    )


# --------------------------------------------------------------------------- a pipeline


def _pipeline_state(run_dir: Path) -> dict:
    path = run_dir / "pipeline.json"
    return json.loads(path.read_text()) if path.exists() else {"stages": []}


def _stage_phase(header: str) -> str:
    """``[k/8] <label>: <stage dir>`` plus how far that stage had got."""
    label, folder = header.rsplit(": ", 1)
    folder_path = Path(folder)
    if (folder_path / "results.json").exists():
        return f"{label} (results.json written)"
    if (folder_path / "search.json").exists():
        return f"{label} ({len(_complete_lines(folder_path / 'results.jsonl'))}/5 evaluations recorded)"
    if (folder_path / "retrain.jsonl").exists():
        return f"{label} (retrain.jsonl: {len(_complete_lines(folder_path / 'retrain.jsonl'))} record)"
    return f"{label} (training)" if "baseline" in label or "retrained" in label else label


def _retrain_keys(run_dir: Path) -> list[tuple[str, str, int]]:
    keys = []
    for path in sorted(run_dir.glob("transfer/*/retrain.jsonl")):
        keys += [(path.parent.name, r["choice"], r["seed"]) for r in ResultsStore(path, ("choice", "seed")).load()]
    return keys


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
@pytest.mark.timeout(600)
def test_killed_pipeline_resumes_without_redoing_work(tmp_path: Path) -> None:
    """glue_transfer (search, front retraining, 2 transfers, 4 baseline trainings, report) killed 3 times."""
    run_dir = tmp_path / "run"
    first = [
        sys.executable,
        "run.py",
        "experiment=glue_transfer",
        "debug=smoke",
        "pipeline.baselines=[sa,lora]",
        "pipeline.transfer_tasks=[snli_binary,rotten_tomatoes]",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]
    # One kill in the search stage, one in the front retraining or a transfer, one among the baselines:
    # a random delay after the stage starts (its header line), so the moments are random but none falls
    # after the pipeline's end.
    rng = random.Random(5)
    targets = [(1, 6.0), (rng.choice([2, 3, 4]), 3.0), (rng.choice([5, 6, 7, 8]), 1.5)]
    stamps: dict[Path, int] = {}
    kills: list[Kill] = []
    for number, (target, longest) in enumerate(targets, start=1):
        done_before = sum(s["status"] == "done" for s in _pipeline_state(run_dir)["stages"])
        stores = {path: _complete_lines(path) for path in run_dir.rglob("*.jsonl")}
        run = Run([sys.executable, "run.py", f"resume={run_dir}"] if (run_dir / "pipeline.json").exists() else first)
        delay = rng.uniform(0, longest)
        header = f"[{target}/8] "
        ready = run.wait_for(lambda r=run, h=header: any(line.startswith(h) for line in r.lines))
        assert ready and run.sleep(delay), f"the pipeline ended before kill {number}\n{run.output[-3000:]}"
        seconds = run.kill()
        stage = [line for line in run.lines if line.startswith("[") and "] " in line and ": " + str(run_dir) in line]
        phase = _stage_phase(stage[-1]) if stage else "composing stages"
        for path in run_dir.glob("baselines/*/*/seed*/results.json"):
            assert json.loads(path.read_text())["status"] == "ok"
            stamps.setdefault(path, path.stat().st_mtime_ns)
            assert path.stat().st_mtime_ns == stamps[path], f"{path} was trained again"
        for path, lines in stores.items():  # search results, proposals, retrain.jsonl: records kept, in order
            assert _complete_lines(path)[: len(lines)] == lines, f"kill {number}: {path} lost a record"
        _all_outputs_whole(run_dir)
        keys = _retrain_keys(run_dir)
        assert _duplicates(keys) == 0, keys
        done_after = sum(s["status"] == "done" for s in _pipeline_state(run_dir)["stages"])
        label = f"{delay:.2f}s into stage {target}"
        kills.append(Kill(number, label, phase, done_before, done_after, _duplicates(keys), seconds))
    final = Run([sys.executable, "run.py", f"resume={run_dir}"])
    assert final.finish() == 0, final.output[-3000:]
    state = _pipeline_state(run_dir)
    assert len(state["stages"]) == 8 and all(s["status"] == "done" for s in state["stages"]), state["stages"]
    baselines = sorted(run_dir.glob("baselines/*/*/seed*/results.json"))
    assert len(baselines) == 4
    assert {p: stamps[p] for p in stamps} == {p: p.stat().st_mtime_ns for p in stamps}, "a baseline was trained twice"
    assert final.output.count("already finished, skipped") == len(stamps)
    keys = _retrain_keys(run_dir)
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 2, keys
    search = [json.loads(x)["index"] for x in _complete_lines(run_dir / "search/snli_binary/results.jsonl")]
    assert sorted(search) == list(range(len(search))) and len(search) == 5
    assert "| configuration |" in (run_dir / "report" / "table.md").read_text()
    print(_table("3 SIGKILLs of a 7-stage pipeline, each resumed", kills, unit="stages done"))
    print(f"final resume: {kills[-1].after} -> 7 stages, {len(stamps)} baselines skipped, retrain.jsonl {keys}")
