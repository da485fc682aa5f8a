"""Stages in dependency order: the scheduler alone, and a pipeline with two worker processes."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.bo.executor import InlineExecutor
from autopeft.experiments.pipeline import hydra_composer, run_pipeline
from autopeft.experiments.scheduling import Job, run_in_dependency_order

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = hydra_composer(ROOT / "conf")


def _recorder(events: list[tuple[str, str]], lock: threading.Lock, pause: float) -> object:
    def work(key: str) -> str:
        with lock:
            events.append(("start", key))
        time.sleep(pause)
        with lock:
            events.append(("end", key))
        return key

    return work


def _plan(work: object) -> list[Job]:
    return [
        Job("search", (), work, ("search",)),
        Job("front", ("search",), work, ("front",)),
        Job("transfer", ("search", "front"), work, ("transfer",)),
        Job("baseline0", (), work, ("baseline0",)),
        Job("baseline1", (), work, ("baseline1",)),
    ]


def test_jobs_start_after_what_they_wait_for_and_never_beyond_capacity() -> None:
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    jobs = _plan(_recorder(events, lock, 0.05))
    finished: list[str] = []
    with cf.ThreadPoolExecutor(max_workers=2) as executor:
        run_in_dependency_order(jobs, executor, 2, lambda i: None, lambda i, f, s: finished.append(f.result()))
    order = [key for kind, key in events if kind == "start"]
    ends = [key for kind, key in events if kind == "end"]
    assert sorted(finished) == sorted(job.key for job in jobs)
    # A baseline fills the second worker while the search runs; the front starts only after the search.
    assert order[:2] == ["search", "baseline0"]
    assert ends.index("search") < order.index("front") and ends.index("front") < order.index("transfer")
    running = peak = 0
    for kind, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_one_inline_worker_runs_the_plan_in_its_order() -> None:
    events: list[tuple[str, str]] = []
    jobs = _plan(_recorder(events, threading.Lock(), 0.0))
    started: list[int] = []
    run_in_dependency_order(jobs, InlineExecutor(), 1, started.append, lambda i, f, s: None)
    assert started == [0, 1, 2, 3, 4]
    assert [key for kind, key in events if kind == "start"] == [job.key for job in jobs]


def test_a_job_waiting_for_a_missing_key_is_refused_before_anything_runs() -> None:
    events: list[tuple[str, str]] = []
    jobs = [Job("a", (), _recorder(events, threading.Lock(), 0.0), ("a",)), Job("b", ("c",), print, ())]
    with pytest.raises(ValueError, match=r"job 'b' waits for \['c'\]"):
        run_in_dependency_order(jobs, InlineExecutor(), 1, lambda i: None, lambda i, f, s: None)
    assert events == []


# Module-level fake runners: the worker processes unpickle them by name.
def _stamp(stage_dir: Path, name: str) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / name).write_text(repr(time.time()))


def fake_search(cfg: DictConfig, stage_dir: Path) -> dict:
    import logging

    _stamp(stage_dir, "started")
    logging.getLogger("autopeft.search").info("fake search on %s", cfg.task.name)
    time.sleep(3.0)
    _stamp(stage_dir, "ended")
    return {"state": {"evaluations": 1, "front_size": 1}}


def fake_retrain(cfg: DictConfig, stage_dir: Path) -> list[dict]:
    _stamp(stage_dir, "started")
    return [{"configuration": "x", "mean": 0.5, "sd": 0.0, "seeds": 1, "failed": 0, "pick": None}]


def fake_train(cfg: DictConfig, stage_dir: Path) -> dict:
    _stamp(stage_dir, "started")
    assert cfg.trainer.progress_bar is False  # concurrent stages would draw over each other
    return {"status": "ok", "score": 0.5}


def fake_report(cfg: DictConfig, stage_dir: Path) -> dict:
    return {}


def test_a_pipeline_with_two_workers_trains_baselines_while_the_search_runs(tmp_path: Path, cache_dir: Path) -> None:
    overrides = ["experiment=glue_transfer", "debug=smoke", f"data.cache_dir={cache_dir}"]
    overrides += ["pipeline.baselines=[sa]", "retrain.seeds=[0]", "pipeline.workers=2"]
    cfg = COMPOSE(overrides)
    runners = {"search": fake_search, "retrain": fake_retrain, "train": fake_train, "report": fake_report}
    run_pipeline(cfg, tmp_path, overrides, runners, COMPOSE)
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert all(stage["status"] == "done" for stage in state["stages"]), state["stages"]
    by_path = {stage["path"]: stage for stage in state["stages"]}
    assert by_path["front/snli_binary"]["after"] == ["search/snli_binary"]

    def stamp(path: str, name: str) -> float:
        return float((tmp_path / path / name).read_text())

    search_end = stamp("search/snli_binary", "ended")
    baselines = [p for p in by_path if p.startswith("baselines/")]
    assert baselines and stamp(baselines[0], "started") < search_end
    assert stamp("front/snli_binary", "started") >= search_end
    assert "fake search on snli_binary" in (tmp_path / "search" / "snli_binary" / "stage.log").read_text()
