"""The scheduler: in parallel mode evaluations go on while the searcher proposes."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from pathlib import Path
from typing import Any

from autopeft.bo.loop import PROPOSAL_KEYS
from autopeft.bo.scheduler import Schedule, ScheduleStats
from autopeft.bo.searchers import History, Proposal, RandomSearcher
from autopeft.runs.store import ResultsStore
from autopeft.space import Point, SearchSpace
from autopeft.training.backbones import shape_of


class SlowModelSearcher:
    """Random proposals; each model-based call blocks until ``gate`` opens (a long surrogate fit)."""

    name = "slow"

    def __init__(self, space: SearchSpace, gate: threading.Event, n_init: int) -> None:
        self.inner = RandomSearcher(space, seed=0)
        self.gate, self.n_init = gate, n_init
        self.calls: list[tuple[int, int]] = []  # (records seen, configurations asked)

    def propose(self, history: History, n: int) -> list[Proposal]:
        self.calls.append((len(history.records), n))
        if len(history.proposals) >= self.n_init:
            assert self.gate.wait(timeout=30), "evaluations did not go on while the searcher was proposing"
        return self.inner.propose(history, n)


class CountingObjective:
    """Opens ``gate`` once evaluation ``open_at`` has started."""

    def __init__(self, gate: threading.Event, open_at: int) -> None:
        self.gate, self.open_at = gate, open_at
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        with self.lock:
            self.done += 1
            if index >= self.open_at:
                self.gate.set()
        return {"status": "ok", "score": 0.5, "reason": None, "param_percent": 0.1, "seconds": 0.0}


def schedule(
    space: SearchSpace, searcher: Any, objective: Any, tmp_path: Path, workers: int, budget: int, prefetch: int = 1
) -> Schedule:
    return Schedule(
        searcher=searcher,
        objective=objective,
        space=space,
        executor=cf.ThreadPoolExecutor(max_workers=workers) if workers > 1 else cf.ThreadPoolExecutor(1),
        workers=workers,
        prefetch=prefetch,
        batch_size=1,
        budget=budget,
        store=ResultsStore(tmp_path / "results.jsonl"),
        proposals_log=ResultsStore(tmp_path / "proposals.jsonl", required_keys=PROPOSAL_KEYS),
        make_record=lambda entry, result: {"index": entry["index"], "point": entry["point"], "seed": 0, **result},
        on_record=lambda record: None,
    )


def tiny_space(search_cfg: Any) -> SearchSpace:
    cfg = search_cfg()
    return SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))


def test_workers_keep_evaluating_while_the_model_proposes(search_cfg: Any, tmp_path: Path) -> None:
    """The first model-based proposal returns only once a queued configuration has started.

    Only the main loop hands queued configurations to free workers, so this deadlocks (and the
    searcher's wait times out) if proposing blocks the loop.
    """
    space = tiny_space(search_cfg)
    gate = threading.Event()
    searcher = SlowModelSearcher(space, gate, n_init=6)
    # 2 workers and 3 queued: the design's configurations 0-4 come at once, 5 when a worker
    # frees up; the model-based call starts while configuration 5 still waits in the queue.
    objective = CountingObjective(gate, open_at=5)
    stats, exhausted = schedule(space, searcher, objective, tmp_path, workers=2, budget=10, prefetch=3).run([], [])
    assert exhausted is None
    records = ResultsStore(tmp_path / "results.jsonl").load()
    assert sorted(r["index"] for r in records) == list(range(10))
    proposals = ResultsStore(tmp_path / "proposals.jsonl", required_keys=PROPOSAL_KEYS).load()
    blocked = next(p for p in proposals if p["index"] >= 6)
    # It was asked while fewer evaluations were done than when it was logged.
    assert blocked["records_before"] < 6
    assert stats.completed == 10 and stats.summary()["proposals"] == len({p["batch"] for p in proposals})


def test_sequential_mode_proposes_only_when_idle(search_cfg: Any, tmp_path: Path) -> None:
    space = tiny_space(search_cfg)
    gate = threading.Event()
    gate.set()
    searcher = SlowModelSearcher(space, gate, n_init=0)
    objective = CountingObjective(gate, open_at=0)
    schedule(space, searcher, objective, tmp_path, workers=1, budget=5).run([], [])
    # One configuration per call, each after the previous one was evaluated.
    assert searcher.calls == [(k, 1) for k in range(5)]


def test_a_slow_proposal_asks_for_the_workers_that_will_finish_meanwhile(search_cfg: Any, tmp_path: Path) -> None:
    sched = schedule(tiny_space(search_cfg), None, None, tmp_path, workers=8, budget=100)
    fast = ScheduleStats(workers=8, busy_seconds=30.0, completed=10, proposal_seconds=[0.1])
    slow = ScheduleStats(workers=8, busy_seconds=30.0, completed=10, proposal_seconds=[1.5])
    very_slow = ScheduleStats(workers=8, busy_seconds=30.0, completed=10, proposal_seconds=[40.0])
    # 8 running, nothing queued: a fast model refills the prefetch queue only.
    assert sched._wanted(fast, running=8, queued=0, parallel=True) == 1
    # Evaluations take 3 s; a 1.5 s proposal lets 8 x 1.5 / 3 = 4 workers finish meanwhile.
    assert sched._wanted(slow, running=8, queued=0, parallel=True) == 4
    # Never more than one round of workers ahead.
    assert sched._wanted(very_slow, running=8, queued=0, parallel=True) == 8
    assert sched._wanted(very_slow, running=5, queued=2, parallel=True) == 9
