"""Searchers: what proposes the next configurations. AutoPEFT's BO and two baselines, one interface.

A space with no more distinct configurations than the initial design (``n_init``) is not searched
but enumerated (:class:`EnumerationSearcher`, ``search.enumerate=auto``): the SA ablation of the
paper's Figure 7.

Every searcher is a pure function of the search's history (the evaluations stored so far and the
proposals logged so far) and the seed, so a resumed search proposes exactly what the
uninterrupted one would have. None of them ever proposes a configuration that is already
evaluated or pending (compared in canonical form, see :meth:`SearchSpace.canonical`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from autopeft.bo.acquisition import AcquisitionSettings, build_acquisition
from autopeft.bo.local_search import (
    LocalSearchSettings,
    SpaceExhaustedError,
    best_of_candidates,
    optimize_acquisition,
    unseen_random_point,
)
from autopeft.bo.objectives import LINEAR, ParamAxis
from autopeft.bo.pareto import is_success, objective_matrix, pareto_mask, reference_point, search_reference
from autopeft.bo.surrogate import STATE_KEY, SurrogateSettings, fit_surrogate, latest_state
from autopeft.space import Point, SearchSpace

log = logging.getLogger("autopeft.search")


@dataclass
class History:
    """What a searcher may look at.

    Attributes:
        records: Finished evaluations, in proposal order (``index`` ascending).
        proposals: Every proposal logged so far, evaluated or pending, in order; each has
            ``index``, ``point``, ``batch`` and ``records_before`` (how many evaluations had
            finished when its batch was proposed).

    """

    records: list[dict[str, Any]]
    proposals: list[dict[str, Any]]

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Proposals without a record yet."""
        done = {r["index"] for r in self.records}
        return [p for p in self.proposals if p["index"] not in done]

    def seen(self, space: SearchSpace) -> set[Point]:
        """Canonical forms of every evaluated or pending configuration."""
        return {space.canonical(Point.from_dict(p["point"])) for p in self.proposals}


@dataclass
class Proposal:
    """One proposed configuration and how it was chosen (logged with it)."""

    point: Point
    info: dict[str, Any] = field(default_factory=dict)


class Searcher(Protocol):
    """Proposes the next batch of configurations."""

    name: str

    def propose(self, history: History, n: int) -> list[Proposal]:
        """Up to ``n`` new configurations, none evaluated or pending."""
        ...


def step_rng(seed: int, step: int, salt: str) -> random.Random:
    """A generator for one proposal step: depends only on the seed and the step, never on the past."""
    return random.Random(f"{salt}:{seed}:{step}")


#: Salt of the initial design's generator, shared by the searchers that draw one (BO, random), so
#: that with the same seed and ``n_init`` they start from the same configurations (paper Figure 6).
INIT_SALT = "init"


def initial_design(
    space: SearchSpace, seed: int, n_init: int, candidates: Sequence[Point] | None = None
) -> list[Point]:
    """The ``n_init`` distinct random configurations a search starts from.

    Drawn in one go from the seed alone, so the design does not depend on how it is proposed
    (``search.batch_size``) or by which searcher: BO and random search with the same seed and
    ``n_init`` evaluate exactly the same initial configurations. A space (or candidate list) with
    fewer than ``n_init`` distinct configurations gives all of them, in random order.
    """
    count = min(n_init, configuration_count(space, candidates))
    return random_unseen(space, set(), step_rng(seed, 0, INIT_SALT), count, candidates)


def design_proposals(
    space: SearchSpace, seed: int, n_init: int, candidates: Sequence[Point] | None, step: int, n: int
) -> list[Proposal]:
    """Proposals ``step .. step + n`` of the initial design (batches never straddle its end).

    Raises:
        SpaceExhaustedError: If the design is used up before ``n_init`` proposals: the space
            has fewer configurations than ``n_init`` and every one of them is proposed.

    """
    design = initial_design(space, seed, n_init, candidates)
    if step >= len(design):
        raise SpaceExhaustedError(f"all {len(design)} configurations of space {space.name!r} are proposed")
    return [Proposal(p, {"phase": "init"}) for p in design[step : step + n]]


def configuration_count(space: SearchSpace, candidates: Sequence[Point] | None = None) -> int:
    """Distinct configurations a search can propose: of the space, or of ``candidates`` when given."""
    if candidates is None:
        return space.num_configurations
    return len({space.canonical(p) for p in candidates})


def enumeration_order(space: SearchSpace, candidates: Sequence[Point] | None = None) -> list[Point]:
    """Every distinct configuration once, ascending in parameter count (a pure function of the space).

    With ``candidates``: each distinct one (its first occurrence, as listed) in the same order.
    """
    if candidates is None:
        return space.enumerate_configurations()
    unique: dict[Point, Point] = {}
    for point in candidates:
        unique.setdefault(space.canonical(point), point)
    return [unique[key] for key in sorted(unique, key=space.enumeration_key)]


def random_unseen(
    space: SearchSpace,
    seen: set[Point],
    rng: random.Random,
    n: int,
    candidates: Sequence[Point] | None = None,
) -> list[Point]:
    """``n`` distinct random configurations outside ``seen`` (``seen`` is extended with them).

    With ``candidates`` they are drawn from that list instead of the whole space.
    """
    points = []
    for _ in range(n):
        if candidates is None:
            point = unseen_random_point(space, seen, rng)
        else:
            left = [p for p in candidates if space.canonical(p) not in seen]
            if not left:
                raise SpaceExhaustedError(f"all {len(candidates)} candidates have been evaluated")
            point = rng.choice(left)
        seen.add(space.canonical(point))
        points.append(point)
    return points


@dataclass
class EnumerationSearcher:
    """Every configuration of a small space once, in ascending % params (paper Figure 7's SA).

    Used instead of a search when the space has no more distinct configurations than the initial
    design ``n_init`` (``search.enumerate=auto``). The order is a pure function of the space (or
    candidate list), and each proposal is the next configuration not yet evaluated or pending, so
    a resumed enumeration goes on where it stopped.

    Attributes:
        space: The search space.
        candidates: Restrict the enumeration to these configurations (tabulated benchmarks).

    """

    space: SearchSpace
    candidates: Sequence[Point] | None = None
    name: str = "enumeration"

    def __post_init__(self) -> None:
        self.order = enumeration_order(self.space, self.candidates)

    @property
    def size(self) -> int:
        """Number of configurations enumerated."""
        return len(self.order)

    def propose(self, history: History, n: int) -> list[Proposal]:
        """The next ``n`` configurations of :attr:`order` that are neither evaluated nor pending.

        Raises:
            SpaceExhaustedError: If every configuration has been proposed.

        """
        seen = history.seen(self.space)
        left = [p for p in self.order if self.space.canonical(p) not in seen]
        if not left:
            raise SpaceExhaustedError(f"all {self.size} configurations of space {self.space.name!r} are proposed")
        return [Proposal(p, {"phase": "enumeration"}) for p in left[:n]]


@dataclass
class RandomSearcher:
    """Uniform random search without repeats (the paper's Figure 6 baseline)."""

    space: SearchSpace
    seed: int
    candidates: Sequence[Point] | None = None  # restrict to these (tabulated benchmarks)
    n_init: int = 0  # the first n_init draws are BO's initial design (same seed: same points)
    name: str = "random"

    def propose(self, history: History, n: int) -> list[Proposal]:
        """``n`` random unseen configurations."""
        step = len(history.proposals)
        if step < self.n_init:  # batches never straddle the initial design, as in BO
            return design_proposals(self.space, self.seed, self.n_init, self.candidates, step, n)
        rng = step_rng(self.seed, step, self.name)
        seen = history.seen(self.space)
        return [Proposal(p, {"phase": "random"}) for p in random_unseen(self.space, seen, rng, n, self.candidates)]


def pareto_points(records: Sequence[dict[str, Any]]) -> list[Point]:
    """Configurations of ``records`` on their observed front (score vs % params).

    The local search starts most of its restarts from these (paper appendix).

    Args:
        records: Successful evaluations only (each has a ``score``); this does not filter.

    """
    mask = pareto_mask(objective_matrix(list(records))).tolist()
    return [Point.from_dict(r["point"]) for r, keep in zip(records, mask, strict=True) if keep]


def acquisition_scorer(acq: Any, space: SearchSpace) -> Callable[[Sequence[Point]], torch.Tensor]:
    """The acquisition as the local search calls it: configurations in, one value each (q = 1) out."""

    def values(candidates: Sequence[Point]) -> torch.Tensor:
        with torch.no_grad():
            return acq(space.encode(candidates).unsqueeze(-2)).detach()

    return values


@dataclass
class BayesianSearcher:
    """AutoPEFT: random initial design, then SAAS-GP + NEHVI + local search (paper §2.2).

    Attributes:
        space: The search space.
        backbone_params: Denominator of % trainable parameters.
        n_init: Random configurations before the first model-based proposal (paper 100).
        surrogate: Score surrogate settings.
        acquisition: NEHVI settings.
        local_search: Acquisition optimiser settings.
        ref_point: Configured ``(score, param_percent)`` reference, None entries inferred.
        seed: Seeds the initial design, NUTS, the QMC samples and the local search.
        candidates: Restrict the search to these configurations (tabulated benchmarks); the
            acquisition is then maximised over all unseen candidates instead of by local search.
        param_axis: The parameter objective (``search.param_objective``): the axis of the
            acquisition's hypervolume and of its reference point.

    """

    space: SearchSpace
    backbone_params: int
    n_init: int
    surrogate: SurrogateSettings
    acquisition: AcquisitionSettings
    local_search: LocalSearchSettings
    ref_point: tuple[float | None, float | None]
    seed: int
    candidates: Sequence[Point] | None = None
    param_axis: ParamAxis = LINEAR
    name: str = "bo"

    def propose(self, history: History, n: int) -> list[Proposal]:
        """Initial-design points while fewer than ``n_init`` are proposed, BO proposals after."""
        step = len(history.proposals)
        seen = history.seen(self.space)
        if step < self.n_init:
            return design_proposals(self.space, self.seed, self.n_init, self.candidates, step, n)
        ok = [r for r in history.records if is_success(r)]
        if len({r["score"] for r in ok}) < 2:
            # Nothing to model: every evaluation failed, or all scored the same (e.g. every
            # configuration predicts the majority class); keep exploring at random.
            log.warning(
                "%d successful evaluations with %d distinct score(s): proposing at random until scores differ",
                len(ok),
                len({r["score"] for r in ok}),
            )
            points = random_unseen(self.space, seen, step_rng(self.seed, step, self.name), n, self.candidates)
            return [Proposal(p, {"phase": "random-fallback"}) for p in points]
        return self._model_based(history, ok, seen, n, step_rng(self.seed, step, self.name), step)

    def _model_based(
        self,
        history: History,
        ok: list[dict[str, Any]],
        seen: set[Point],
        n: int,
        rng: random.Random,
        step: int,
    ) -> list[Proposal]:
        points = [Point.from_dict(r["point"]) for r in ok]
        X = self.space.encode(points)
        Y = torch.tensor([[float(r["score"])] for r in ok], dtype=torch.float64)
        # Warm start from the state logged with the last fit's proposals: a resumed search reads the same one.
        warm = latest_state(history.proposals) if self.surrogate.warm_starts else None
        fitted = fit_surrogate(X, Y, self.surrogate, seed=self.seed * 100_003 + step, warm_start=warm)
        ref = search_reference(history.records, self.ref_point, self.n_init, self.param_axis)
        if ref is None:  # the whole initial design failed: infer from what has succeeded since
            ref = reference_point(self.ref_point, objective_matrix(ok, self.param_axis), self.param_axis)
        pareto = pareto_points(ok)
        pending = [Point.from_dict(p["point"]) for p in history.pending]
        proposals = []
        for k in range(n):
            started = time.perf_counter()
            acq = build_acquisition(
                fitted.model,
                X,
                ref,
                self.space,
                self.backbone_params,
                self.acquisition,
                ensemble=self.surrogate.is_ensemble,
                X_pending=self.space.encode(pending) if pending else None,
                seed=self.seed * 100_003 + step + k,
                param_axis=self.param_axis,
            )
            values = acquisition_scorer(acq, self.space)
            if self.candidates is None:
                best = optimize_acquisition(values, self.space, pareto, seen, self.local_search, rng)
            else:
                best = best_of_candidates(values, self.space, self.candidates, seen)
            seen.add(self.space.canonical(best.point))
            pending.append(best.point)
            proposals.append(
                Proposal(
                    best.point,
                    {
                        "phase": "bo",
                        "acquisition": self.acquisition.name,
                        "acq_value": best.value,
                        "acq_evaluations": best.evaluations,
                        "fit_seconds": fitted.seconds if k == 0 else 0.0,
                        "acq_seconds": time.perf_counter() - started,
                        "observations": fitted.num_observations,
                        "ref_point": ref.tolist(),
                        **({STATE_KEY: fitted.state} if k == 0 and self.surrogate.warm_starts else {}),
                    },
                )
            )
        return proposals
