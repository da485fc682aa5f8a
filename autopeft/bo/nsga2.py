"""NSGA-II baseline searcher, driven by Optuna's ``NSGAIISampler`` through its ask/tell interface.

Optuna keeps its own state (generations, random generator); to resume exactly, the study is
rebuilt by replaying the logged proposals in order (ask, then tell each result at the point of
the history where the original run told it), which puts the sampler back in the state the
uninterrupted run had. Replay checks every re-asked configuration against the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autopeft.bo.pareto import is_success
from autopeft.bo.searchers import History, Proposal, initial_design, random_unseen, step_rng
from autopeft.errors import ConfigError, check_known_keys
from autopeft.space import Point, SearchSpace

#: Keys of ``search.nsga2``.
NSGA2_KEYS = ("population_size", "crossover_prob", "swapping_prob", "mutation_prob")

# Asks that returned an already seen configuration before falling back to a random unseen one.
_MAX_DUPLICATE_ASKS = 200


def nsga2_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``search.nsga2`` as keyword arguments of ``optuna.samplers.NSGAIISampler``."""
    values = dict(cfg or {})
    check_known_keys(values, NSGA2_KEYS, "search.nsga2")
    size = values.get("population_size", 50)
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ConfigError(f"search.nsga2.population_size={size!r} must be an integer >= 2")
    for key in ("crossover_prob", "swapping_prob", "mutation_prob"):
        value = values.get(key)
        if value is not None and not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise ConfigError(f"search.nsga2.{key}={value!r} must be a probability in [0, 1] (or null: Optuna's)")
    return {k: v for k, v in values.items() if v is not None}


@dataclass
class NSGA2Searcher:
    """NSGA-II over the same space: mask bits and sizes as categorical genes."""

    space: SearchSpace
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    # Restrict to these configurations (tabulated benchmarks): each asked configuration is
    # replaced by the nearest unseen candidate (L1 distance of encodings), whose result the
    # trial is then told.
    candidates: Sequence[Point] | None = None
    # The first n_init individuals are the shared random initial design (BO's, for the same
    # seed), enqueued into the study, so that benchmarks compare searchers on paired designs.
    n_init: int = 0
    name: str = "nsga2"

    def __post_init__(self) -> None:
        self._study: Any = None
        self._trials: dict[int, Any] = {}  # proposal index -> optuna trial awaiting its result
        self._replayed = 0  # proposals already asked in this process

    # ------------------------------------------------------------------ genes <-> points

    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        genes = {f"layer_{i:02d}": CategoricalDistribution([False, True]) for i in range(self.space.mask_dims)}
        genes.update({f"size_{m}": CategoricalDistribution(list(options)) for m, options in self.space.choices})
        return genes

    def _point(self, params: Mapping[str, Any]) -> Point:
        if self.space.mask_dims:
            mask = tuple(bool(params[f"layer_{i:02d}"]) for i in range(self.space.mask_dims))
        else:
            mask = (True,) * self.space.num_layers
        return Point(mask=mask, sizes=tuple((m, int(params[f"size_{m}"])) for m, _ in self.space.choices))

    def _snap(self, point: Point, seen: Mapping[Point, Any]) -> Point:
        if self.candidates is None:
            return point
        left = [p for p in self.candidates if self.space.canonical(p) not in seen]
        if not left:
            return point  # nothing left: the caller sees a repeat and falls back
        distances = (self.space.encode(left) - self.space.encode([point])).abs().sum(-1)
        return left[int(distances.argmin())]

    # ------------------------------------------------------------------ optuna state

    def _new_study(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        sampler = optuna.samplers.NSGAIISampler(seed=self.seed, **self.settings)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for point in initial_design(self.space, self.seed, self.n_init, self.candidates):
            study.enqueue_trial(self._genes(point))
        return study

    def _genes(self, point: Point) -> dict[str, Any]:
        genes: dict[str, Any] = {f"layer_{i:02d}": bool(point.mask[i]) for i in range(self.space.mask_dims)}
        genes.update({f"size_{m}": size for m, size in point.sizes})
        return genes

    def _tell(self, trial: Any, record: Mapping[str, Any] | None) -> None:
        from optuna.trial import TrialState

        if record is not None and is_success(record):
            self._study.tell(trial, [float(record["score"]), float(record["param_percent"])])
        else:
            self._study.tell(trial, state=TrialState.FAIL)

    def _ask(self, seen: dict[Point, Mapping[str, Any] | None]) -> tuple[Any, Point]:
        """Ask until an unseen configuration comes; duplicates are told their known result."""
        for _ in range(_MAX_DUPLICATE_ASKS):
            trial = self._study.ask(self._distributions())
            point = self._snap(self._point(trial.params), seen)
            key = self.space.canonical(point)
            if key not in seen:
                return trial, point
            self._tell(trial, seen[key])  # a repeat costs nothing: its result is already known
        return None, Point(mask=(), sizes=())

    def _sync(self, history: History, upto: int) -> None:
        """Tell every asked trial whose record is among the first ``upto`` records."""
        for record in history.records[:upto]:
            trial = self._trials.pop(record["index"], None)
            if trial is not None:
                self._tell(trial, record)

    def _seen(self, history: History, proposals: int, records: int) -> dict[Point, Mapping[str, Any] | None]:
        known = {r["index"]: r for r in history.records[:records]}
        return {
            self.space.canonical(Point.from_dict(p["point"])): known.get(p["index"])
            for p in history.proposals[:proposals]
        }

    def _replay(self, history: History) -> None:
        """Re-ask the logged proposals batch by batch, telling results as the original run did."""
        proposals = history.proposals
        while self._replayed < len(proposals):
            batch = [p for p in proposals[self._replayed :] if p["batch"] == proposals[self._replayed]["batch"]]
            before = batch[0]["records_before"]
            self._sync(history, before)
            seen = self._seen(history, self._replayed, before)
            for logged in batch:
                trial, point = self._ask(seen)
                expected = Point.from_dict(logged["point"])
                if trial is None and logged.get("info", {}).get("phase") == "random-fallback":
                    point = expected
                elif trial is None or point != expected:
                    raise ConfigError(
                        f"cannot resume the NSGA-II search: replaying proposal {logged['index']} gave a different "
                        "configuration than the log (was the Optuna version or search.nsga2 changed?). "
                        "Start a new run directory"
                    )
                if trial is not None:
                    self._trials[logged["index"]] = trial
                seen[self.space.canonical(point)] = None
                self._replayed += 1

    def propose(self, history: History, n: int) -> list[Proposal]:
        """The next ``n`` configurations from the NSGA-II population."""
        if self._study is None:
            self._study = self._new_study()
        self._replay(history)
        self._sync(history, len(history.records))
        seen = self._seen(history, len(history.proposals), len(history.records))
        proposals = []
        for _ in range(n):
            trial, point = self._ask(seen)
            if trial is None:  # the sampler keeps repeating itself: explore at random instead
                rng = step_rng(self.seed, len(history.proposals) + len(proposals), self.name)
                point = random_unseen(self.space, set(seen), rng, 1, self.candidates)[0]
                proposals.append(Proposal(point, {"phase": "random-fallback"}))
            else:
                self._trials[len(history.proposals) + len(proposals)] = trial
                phase = "init" if trial.number < self.n_init else "nsga2"
                proposals.append(Proposal(point, {"phase": phase, "trial": trial.number}))
            seen[self.space.canonical(point)] = None
        self._replayed += len(proposals)  # the loop logs them before anything else happens
        return proposals
