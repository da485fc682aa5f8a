"""Scheduling a search's evaluations: keep every worker busy while the surrogate is being fitted.

Sequential mode (one worker, the paper's loop): propose ``search.batch_size`` configurations,
evaluate them one after another, repeat.

Parallel mode: the searcher proposes in a background thread while the workers train. The main
thread only moves work around: it hands queued proposals to free workers, stores finished
evaluations, and starts the next proposal as soon as the previous one is logged. One proposal
asks for as many configurations as will be needed before the next one can arrive: the free
slots and queue refill (``search.parallel.prefetch``), plus the workers expected to finish
while the model is being fitted (``workers x last proposal time / mean evaluation time``, at
most one per worker). The searcher proposes them greedily, with every running and queued
configuration as a pending point, so a slow fit delays no worker, at the price of proposals made
with a model that has not yet seen the last few results.

Every proposal is logged (fsynced) before it is evaluated, with ``records_before``: how many
evaluations the searcher saw, so a resumed search replays exactly what happened.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autopeft.bo.local_search import SpaceExhaustedError
from autopeft.bo.searchers import History, Proposal, Searcher
from autopeft.runs.store import ResultsStore
from autopeft.space import Point, SearchSpace

log = logging.getLogger("autopeft.search")

#: Evaluates one configuration: ``(point, index) -> result fields`` (see TrainingObjective).
Objective = Callable[[Point, int], dict[str, Any]]


@dataclass
class ScheduleStats:
    """What the schedule cost and how busy it kept the workers.

    Attributes:
        workers: Evaluations that could run at once.
        propose_seconds: Wall-clock time spent proposing (in the background in parallel mode).
        evaluate_seconds: Sum of the evaluations' own ``seconds``.
        busy_seconds: Sum over evaluations of submission-to-result wall-clock time.
        completed: Evaluations finished in this schedule.
        idle_seconds: Sum over free worker slots of the time they waited for a proposal (only
            while the budget still had evaluations to give them).
        slot_waits: Each submission's wait from a slot becoming free to work arriving in it.
        proposal_seconds: Each proposal call's duration.
        started: ``time.perf_counter()`` when the schedule began.
        finished: ``time.perf_counter()`` when it ended.

    """

    workers: int
    propose_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    busy_seconds: float = 0.0
    completed: int = 0
    idle_seconds: float = 0.0
    slot_waits: list[float] = field(default_factory=list)
    proposal_seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def wall_seconds(self) -> float:
        """Wall-clock time of the schedule."""
        return (self.finished or time.perf_counter()) - self.started

    def summary(self) -> dict[str, Any]:
        """JSON-able figures: seconds, busy fraction, proposal latency."""
        wall = self.wall_seconds
        return {
            "workers": self.workers,
            "wall_seconds": wall,
            "propose_seconds": self.propose_seconds,
            "evaluate_seconds": self.evaluate_seconds,
            "busy_fraction": self.busy_seconds / (self.workers * wall) if wall > 0 else None,
            "worker_idle_seconds": self.idle_seconds,
            "mean_slot_wait_seconds": statistics.mean(self.slot_waits) if self.slot_waits else 0.0,
            "max_slot_wait_seconds": max(self.slot_waits, default=0.0),
            "mean_proposal_seconds": statistics.mean(self.proposal_seconds) if self.proposal_seconds else 0.0,
            "proposals": len(self.proposal_seconds),
        }


@dataclass
class Schedule:
    """Drives a searcher and an executor until the budget is spent (see the module docstring).

    Attributes:
        searcher: Proposes configurations from the history.
        objective: Evaluates one configuration.
        space: The search space (checks proposals).
        executor: Where evaluations run.
        workers: Evaluations at once; 1 is the sequential mode.
        prefetch: Parallel mode: proposals kept queued beyond the running ones, at least.
        batch_size: Sequential mode: configurations per proposal.
        budget: Evaluations to reach.
        store: Where finished evaluations are appended.
        proposals_log: Where proposals are appended before they run.
        make_record: Builds the stored record from a proposal entry and the objective's result.
        on_record: Called with each stored record.

    """

    searcher: Searcher
    objective: Objective
    space: SearchSpace
    executor: cf.Executor
    workers: int
    prefetch: int
    batch_size: int
    budget: int
    store: ResultsStore
    proposals_log: ResultsStore
    make_record: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
    on_record: Callable[[dict[str, Any]], None]

    def run(self, records: list[dict[str, Any]], proposals: list[dict[str, Any]]) -> tuple[ScheduleStats, str | None]:
        """Evaluate until ``budget`` records exist; ``records`` and ``proposals`` grow in place.

        Returns:
            The schedule's statistics, and why the searcher stopped proposing (None if it never did).

        """
        stats = ScheduleStats(workers=self.workers)
        parallel = self.workers > 1
        proposer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="propose") if parallel else None
        proposing: tuple[cf.Future, float, int] | None = None  # (future, started, records seen)
        in_flight: dict[cf.Future, tuple[dict[str, Any], float]] = {}
        free_since = [stats.started] * self.workers  # when each free slot became free
        exhausted: str | None = None
        try:
            while len(records) < self.budget:
                running = {entry["index"] for entry, _ in in_flight.values()}
                done_indices = {r["index"] for r in records}
                waiting = [p for p in proposals if p["index"] not in done_indices and p["index"] not in running]
                if waiting and len(in_flight) < (self.workers if parallel else 1):
                    entry = waiting[0]
                    now = time.perf_counter()
                    if free_since:
                        stats.slot_waits.append(now - free_since.pop(0))
                        stats.idle_seconds += stats.slot_waits[-1]
                    point = self.space.check(Point.from_dict(entry["point"]))
                    in_flight[self.executor.submit(self.objective, point, entry["index"])] = (entry, now)
                    continue
                wanted = self._wanted(stats, len(in_flight), len(waiting), parallel)
                if proposing is None and exhausted is None and wanted > 0 and len(proposals) < self.budget:
                    count = min(wanted, self.budget - len(proposals))
                    snapshot = History(list(records), list(proposals))
                    started = time.perf_counter()
                    if proposer is None:
                        try:
                            self._log(self.searcher.propose(snapshot, count), proposals, len(records))
                        except SpaceExhaustedError as err:
                            exhausted = self._exhausted(err, proposals)
                        self._timed(stats, started)
                        continue
                    proposing = (proposer.submit(self.searcher.propose, snapshot, count), started, len(records))
                if not in_flight and proposing is None:
                    break  # nothing runs and nothing more will be proposed
                futures = [*in_flight, *([proposing[0]] if proposing else [])]
                done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
                if proposing is not None and proposing[0] in done:
                    future, started, seen = proposing
                    proposing = None
                    self._timed(stats, started)
                    try:
                        self._log(future.result(), proposals, seen)
                    except SpaceExhaustedError as err:
                        exhausted = self._exhausted(err, proposals)
                for future in sorted((f for f in done if f in in_flight), key=lambda f: in_flight[f][0]["index"]):
                    entry, submitted = in_flight.pop(future)
                    now = time.perf_counter()
                    stats.busy_seconds += now - submitted
                    stats.completed += 1
                    free_since.append(now)
                    record = self.make_record(entry, future.result())  # failures are results; anything else a bug
                    self.store.append(record)
                    records.append(record)
                    stats.evaluate_seconds += float(record.get("seconds") or 0.0)
                    self.on_record(record)
        finally:
            # Queued evaluations are dropped (their proposals stay logged and run first on resume).
            self.executor.shutdown(wait=False, cancel_futures=True)
            if proposer is not None:
                proposer.shutdown(wait=False, cancel_futures=True)
            stats.finished = time.perf_counter()
        return stats, exhausted

    def _wanted(self, stats: ScheduleStats, running: int, queued: int, parallel: bool) -> int:
        """How many configurations the next proposal should ask for (0: none needed yet)."""
        if not parallel:
            return self.batch_size if running == 0 and queued == 0 else 0
        lookahead = 0
        if stats.proposal_seconds and stats.completed and stats.busy_seconds > 0:
            # Workers expected to finish while the next proposal is computed, at most one round.
            duration = stats.busy_seconds / stats.completed
            lookahead = min(self.workers, round(self.workers * stats.proposal_seconds[-1] / duration))
        return self.workers + max(self.prefetch, lookahead) - running - queued

    def _log(self, batch: list[Proposal], proposals: list[dict[str, Any]], seen: int) -> None:
        number = proposals[-1]["batch"] + 1 if proposals else 0
        for proposal in batch:
            entry = {
                "index": len(proposals),
                "point": proposal.point.to_dict(),
                "batch": number,
                "records_before": seen,
                "configuration": self.space.describe(proposal.point),
                "info": proposal.info,
            }
            self.proposals_log.append(entry)
            proposals.append(entry)

    @staticmethod
    def _timed(stats: ScheduleStats, started: float) -> None:
        elapsed = time.perf_counter() - started
        stats.propose_seconds += elapsed
        stats.proposal_seconds.append(elapsed)

    @staticmethod
    def _exhausted(err: SpaceExhaustedError, proposals: list[dict[str, Any]]) -> str:
        log.warning("no more proposals after %d evaluations: %s", len(proposals), err)
        return str(err)
