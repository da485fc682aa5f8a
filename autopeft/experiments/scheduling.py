"""Run a pipeline's stages in dependency order: one at a time, or several at once in worker processes.

A stage may start once every stage it comes ``after`` has finished (a front's retraining after its
search, a transfer after its search and front); the baselines depend on nothing, so with
``pipeline.workers`` > 1 they train while the search runs. Among the stages that may start, the
plan's order decides. The worker processes are :func:`autopeft.bo.executor.make_executor`'s
``process`` pool (``spawn``, dying with the pipeline, the CPU cores shared between them); with one
worker every stage runs in the pipeline's own process, exactly as a sequential loop would.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

#: Log line format of a stage running in a worker process (its stage path says which one wrote it).
WORKER_LOG_FORMAT = "[%(asctime)s][{stage}][%(name)s][%(levelname)s] - %(message)s"


@dataclass(frozen=True)
class Job:
    """One unit of work and what it waits for.

    Attributes:
        key: Its name, which later jobs list in ``after``.
        after: Keys of the jobs that must finish (successfully or not) before it starts.
        fn: What runs (module-level, so a worker process can unpickle it).
        args: Its arguments (picklable).

    """

    key: str
    after: tuple[str, ...]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def run_in_dependency_order(
    jobs: Sequence[Job],
    executor: cf.Executor,
    capacity: int,
    on_start: Callable[[int], None],
    on_done: Callable[[int, cf.Future, float], None],
) -> None:
    """Submit each job once the jobs it comes after are done, at most ``capacity`` at a time.

    Args:
        jobs: The plan, in its order.
        executor: Where jobs run (an inline executor runs each when submitted).
        capacity: Jobs running at once (the executor's workers).
        on_start: Called with a job's index just before it is submitted.
        on_done: Called with the index, the finished future and its wall-clock seconds, in the
            order jobs finish; an exception it raises stops the scheduling and propagates.

    Raises:
        ValueError: If a job waits for a key no job has (the plan would never finish).

    """
    keys = {job.key for job in jobs}
    for job in jobs:
        missing = [key for key in job.after if key not in keys]
        if missing:
            raise ValueError(f"job {job.key!r} waits for {missing}, which are not in the plan")
    finished: set[str] = set()
    waiting = list(range(len(jobs)))
    running: dict[cf.Future, tuple[int, float]] = {}
    while waiting or running:
        for index in [i for i in waiting if all(key in finished for key in jobs[i].after)]:
            if len(running) >= capacity:
                break
            waiting.remove(index)
            on_start(index)
            job = jobs[index]
            running[executor.submit(job.fn, *job.args)] = (index, time.perf_counter())
        if not running:
            raise ValueError(f"jobs {[jobs[i].key for i in waiting]} wait for each other")
        done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: running[f][0]):
            index, started = running.pop(future)
            finished.add(jobs[index].key)
            on_done(index, future, time.perf_counter() - started)


def run_stage(runner: Callable[[DictConfig, Path], Any], cfg: DictConfig, stage_dir: Path, stage: str) -> Any:
    """Run one stage; in a worker process, its log lines also go to the console and ``stage.log``.

    Args:
        runner: The mode's function, ``fn(stage cfg, stage dir)``.
        cfg: The stage's config.
        stage_dir: Its run directory.
        stage: Its path in the plan (names its log lines).

    Returns:
        What the runner returns.

    """
    if multiprocessing.parent_process() is None:
        return runner(cfg, stage_dir)  # the pipeline's own process: Hydra's log handlers are in place
    stage_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(WORKER_LOG_FORMAT.format(stage=stage))
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(stage_dir / "stage.log")]
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    try:
        return runner(cfg, stage_dir)
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)
