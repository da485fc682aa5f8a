"""Concurrent and pipelined evaluations: every evaluation exactly once, also across a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.bo.executor import InlineExecutor, ParallelSettings, make_executor, resolve_workers
from autopeft.bo.loop import PROPOSAL_KEYS
from autopeft.errors import ConfigError
from autopeft.experiments.search import run_search
from autopeft.io import FAULT_DELAY_ENV
from autopeft.runs.store import ResultsStore
from tests.bo.conftest import TINY_SEARCH, SyntheticObjective
from tests.processes import children_of, is_alive, search_command, wait_for_torn_line

ROOT = Path(__file__).resolve().parents[2]


def _indices(run_dir: Path) -> list[int]:
    return [r["index"] for r in ResultsStore(run_dir / "results.jsonl").load()]


def test_process_pool_search_records_every_evaluation_exactly_once(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = search_cfg("search.parallel.workers=2", "search.parallel.prefetch=1")
    result = run_search(cfg, tmp_path / "run", objective=SyntheticObjective())
    assert result["timings"]["workers"] == 2
    indices = _indices(tmp_path / "run")
    assert sorted(indices) == list(range(8)), indices
    proposals = ResultsStore(tmp_path / "run" / "proposals.jsonl", required_keys=PROPOSAL_KEYS).load()
    assert [p["index"] for p in proposals] == list(range(8))
    points = {json.dumps(p["point"], sort_keys=True) for p in proposals}
    assert len(points) == 8, "a configuration was proposed twice"
    # Pipelined: BO proposals were made while earlier ones were still pending.
    bo = [p for p in proposals if p["info"]["phase"] == "bo"]
    assert bo and any(p["records_before"] < p["index"] for p in bo)


@pytest.mark.parametrize("method", ["random", "nsga2"])
def test_baseline_searchers_run_in_parallel_too(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str
) -> None:
    cfg = search_cfg(f"search={method}", *TINY_SEARCH, "search.parallel.workers=3", "search.parallel.executor=process")
    run_search(cfg, tmp_path / method, objective=SyntheticObjective())
    assert sorted(_indices(tmp_path / method)) == list(range(8))


def test_one_worker_is_the_sequential_loop(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """workers=1 runs inline, in proposal order, exactly as the paper's loop (and as before)."""
    sequential = run_search(search_cfg(), tmp_path / "a", objective=SyntheticObjective())
    explicit = run_search(
        search_cfg("search.parallel.workers=1", "search.parallel.executor=process"),
        tmp_path / "b",
        objective=SyntheticObjective(),
    )
    assert _indices(tmp_path / "a") == list(range(8)) == _indices(tmp_path / "b")
    assert [r["point"] for r in sequential["records"]] == [r["point"] for r in explicit["records"]]
    assert isinstance(make_executor(ParallelSettings(workers=1), 1), InlineExecutor)


def test_auto_workers_follow_gpu_memory() -> None:
    auto = ParallelSettings(workers="auto", worker_memory_gb=6.0, max_workers_per_gpu=8)
    assert resolve_workers(auto, free_gb=[]) == 1  # no GPU: training already uses every core
    assert resolve_workers(auto, free_gb=[79.0]) == 8  # capped per GPU
    assert resolve_workers(auto, free_gb=[20.0, 3.0]) == 3 + 1  # at least one per GPU
    assert resolve_workers(ParallelSettings(workers=5), free_gb=[79.0]) == 5


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": 0}, r"search\.parallel\.workers=0 must be 'auto' or an integer >= 1"),
        ({"workers": "many"}, r"search\.parallel\.workers='many'"),
        ({"executor": "ray"}, r"search\.parallel\.executor='ray'; allowed: 'inline', 'process', 'submitit', 'thread'"),
        ({"prefetch": -1}, r"search\.parallel\.prefetch=-1 must be an integer >= 0"),
        ({"worker_memory_gb": 0}, r"search\.parallel\.worker_memory_gb=0 must be > 0"),
        ({"worker": 2}, r"unknown key search\.parallel\.worker \(did you mean 'workers'\?\)"),
    ],
)
def test_bad_parallel_settings_are_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ParallelSettings.from_config(values)


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_sigkilled_parallel_search_resumes_and_leaves_no_worker_behind(tmp_path: Path) -> None:
    """A real run.py search with 2 worker processes, SIGKILLed mid-search, then resumed."""
    run_dir = tmp_path / "run"
    args = search_command(tmp_path, run_dir, "search.n_init=6", "search.n_iter=4", "search.parallel.workers=2")
    # Every durable write pauses half-way (FAULT_DELAY_ENV), and the kill lands inside the write of
    # the 4th result: the same moment on a fast machine and a slow one.
    env = {**os.environ, FAULT_DELAY_ENV: "0.3"}
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = run_dir / "results.jsonl"
    workers: set[int] = set()

    def note_workers() -> None:
        workers.update(children_of(process.pid))

    assert wait_for_torn_line(process, store, 3, poll=note_workers), "the search never wrote its 4th result"
    workers |= children_of(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert store.read_text().count("\n") == 3  # 3 complete records; the torn 4th is dropped on resume
    before = _indices(run_dir)
    assert len(before) == 3 and len(set(before)) == 3
    assert workers, "no worker process was seen"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(is_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(is_alive(pid) for pid in workers), "a worker outlived the killed search"

    resumed = subprocess.run(
        [sys.executable, "run.py", f"resume={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _indices(run_dir)
    assert sorted(after) == list(range(10)), after
    assert after[: len(before)] == before, "finished evaluations were redone or reordered"
    proposals = ResultsStore(run_dir / "proposals.jsonl", required_keys=PROPOSAL_KEYS).load()
    assert [p["index"] for p in proposals] == list(range(10))


def test_submitit_executor_runs_evaluations_as_jobs(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    """The cluster path, with submitit's local backend standing in for SLURM."""
    cfg = search_cfg(
        "search.n_init=3",
        "search.n_iter=1",
        "search.parallel.workers=2",
        "search.parallel.executor=submitit",
        f"+search.parallel.submitit={{folder: '{tmp_path / 'jobs'}', cluster: local, timeout_min: 5}}",
    )
    run_search(cfg, tmp_path / "run", objective=SyntheticObjective())
    assert sorted(_indices(tmp_path / "run")) == [0, 1, 2, 3]
    assert len(list((tmp_path / "jobs").glob("*_submitted.pkl"))) == 4  # one job per evaluation
