"""Acquisition optimisation by local search over the discrete space (paper appendix, "AutoPEFT Search Setup").

From each starting point (the current Pareto set, topped up with random points) the search
evaluates the acquisition at every neighbour (one layer flipped, or one size moved one step),
moves to the best neighbour while that improves the acquisition, and stops at a local optimum
or after ``max_evals`` acquisition evaluations. This is repeated ``restarts`` times and the best
candidate overall is proposed.

Why not botorch's ``optimize_acqf_discrete_local_search``: it starts only from random raw
samples, has no cap on acquisition evaluations per restart, and compares candidates by their
encoding, whereas here starts come from the Pareto set and configurations that train the same
model (every "nothing inserted" point) must count as one when avoiding evaluated points.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autopeft.errors import ConfigError, check_known_keys
from autopeft.settings import check_positive_int
from autopeft.space import Point, SearchSpace


class SpaceExhaustedError(RuntimeError):
    """Every configuration (or every allowed candidate) has been evaluated or is pending."""


#: Scores a list of points: returns a ``(len(points),)`` tensor of acquisition values.
AcquisitionValues = Callable[[Sequence[Point]], torch.Tensor]


@dataclass(frozen=True)
class LocalSearchSettings:
    """Budget of the acquisition optimiser.

    Attributes:
        restarts: Local searches per proposal; paper 10.
        max_evals: Acquisition evaluations per restart at most; paper 100.
        random_starts: Of the ``restarts`` starting points, how many are random rather than
            drawn from the Pareto set (used also when the Pareto set has too few points).

    """

    restarts: int = 10
    max_evals: int = 100
    random_starts: int = 2

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LocalSearchSettings:
        """Build from the ``search.local_search`` node, naming any bad key or value."""
        check_known_keys(cfg, ("restarts", "max_evals", "random_starts"), "search.local_search")
        settings = cls(**dict(cfg))
        for key in ("restarts", "max_evals"):
            check_positive_int(getattr(settings, key), f"search.local_search.{key}")
        value = settings.random_starts
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= settings.restarts:
            raise ConfigError(
                f"search.local_search.random_starts={value!r} must be an integer in [0, restarts={settings.restarts}]"
            )
        return settings


@dataclass(frozen=True)
class Candidate:
    """The outcome of an acquisition optimisation."""

    point: Point
    value: float
    evaluations: int


def starting_points(
    space: SearchSpace, pareto: Sequence[Point], settings: LocalSearchSettings, rng: random.Random
) -> list[Point]:
    """``restarts`` starts: up to ``restarts - random_starts`` Pareto points, the rest random."""
    n_pareto = min(len(pareto), settings.restarts - settings.random_starts)
    starts = rng.sample(list(pareto), n_pareto)
    return starts + space.sample(rng, settings.restarts - n_pareto)


@dataclass
class _Climb:
    """One hill-climb's state in :func:`climb_all`."""

    current: Point
    value: float
    evals: int
    best: Candidate | None
    rng: random.Random
    done: bool = False


def climb_all(
    acquisition: AcquisitionValues,
    space: SearchSpace,
    starts: Sequence[Point],
    avoid: Collection[Point],
    max_evals: int,
    rngs: Sequence[random.Random],
) -> list[Candidate | None]:
    """Hill-climb the acquisition from every start at once, one batched acquisition call per step.

    Each climb moves to its best neighbour while that improves the acquisition, and stops at a
    local optimum or after ``max_evals`` acquisition evaluations (its start counts as one). The
    climbs are independent, but advancing them in lockstep scores the neighbours of all of them
    in one call: about ten calls per proposal instead of about a hundred, which is what makes the
    acquisition cheap enough to keep parallel workers fed.

    Args:
        acquisition: Scores points (higher is better).
        space: Defines the neighbours.
        starts: First point of each climb (it may itself be evaluated already).
        avoid: Canonical forms of points already evaluated or pending; never returned.
        max_evals: Acquisition evaluations allowed per climb.
        rngs: One generator per climb: picks which neighbours to score when fewer evaluations
            are left than neighbours.

    Returns:
        Per climb, the best-scoring point it saw that is not in ``avoid`` (with the climb's
        evaluation count), or None if every point it saw is.

    """
    values = acquisition(list(starts)).tolist()
    climbs = [
        _Climb(
            current=start,
            value=value,
            evals=1,
            best=None if space.canonical(start) in avoid else Candidate(start, value, 1),
            rng=rng,
            done=max_evals <= 1,
        )
        for start, value, rng in zip(starts, values, rngs, strict=True)
    ]
    while active := [c for c in climbs if not c.done]:
        batches = []
        for climb in active:
            neighbours = space.neighbours(climb.current)
            if len(neighbours) > max_evals - climb.evals:
                neighbours = climb.rng.sample(neighbours, max_evals - climb.evals)
            batches.append(neighbours)
        flat = [point for neighbours in batches for point in neighbours]
        scores = acquisition(flat).tolist() if flat else []
        offset = 0
        for climb, neighbours in zip(active, batches, strict=True):
            step = scores[offset : offset + len(neighbours)]
            offset += len(neighbours)
            climb.evals += len(neighbours)
            for point, value in zip(neighbours, step, strict=True):
                if (climb.best is None or value > climb.best.value) and space.canonical(point) not in avoid:
                    climb.best = Candidate(point, value, climb.evals)
            top = max(range(len(step)), key=step.__getitem__) if step else None
            if top is None or step[top] <= climb.value:
                climb.done = True  # local optimum of the acquisition
                continue
            climb.current, climb.value = neighbours[top], step[top]
            climb.done = climb.evals >= max_evals
    return [None if c.best is None else Candidate(c.best.point, c.best.value, c.evals) for c in climbs]


def local_search(
    acquisition: AcquisitionValues,
    space: SearchSpace,
    start: Point,
    avoid: Collection[Point],
    max_evals: int,
    rng: random.Random,
) -> Candidate | None:
    """Hill-climb the acquisition from ``start`` over neighbours (one climb of :func:`climb_all`).

    Returns:
        The best-scoring point seen that is not in ``avoid``, or None if every point seen is.

    """
    return climb_all(acquisition, space, [start], avoid, max_evals, [rng])[0]


def optimize_acquisition(
    acquisition: AcquisitionValues,
    space: SearchSpace,
    pareto: Sequence[Point],
    avoid: Collection[Point],
    settings: LocalSearchSettings,
    rng: random.Random,
) -> Candidate:
    """The best candidate over ``restarts`` local searches; never a point in ``avoid``.

    Args:
        acquisition: Scores points (higher is better).
        space: The search space.
        pareto: Current Pareto-optimal points (starting points).
        avoid: Canonical forms of evaluated and pending points.
        settings: Restarts and per-restart budget.
        rng: Seeded generator (random starts, then one generator per restart).

    Raises:
        SpaceExhaustedError: If the space has no point left outside ``avoid``.

    """
    starts = starting_points(space, pareto, settings, rng)
    rngs = [random.Random(rng.getrandbits(64)) for _ in starts]
    found = climb_all(acquisition, space, starts, avoid, settings.max_evals, rngs)
    total = sum(c.evaluations for c in found if c is not None)
    best: Candidate | None = None
    for candidate in found:
        if candidate is not None and (best is None or candidate.value > best.value):
            best = candidate
    if best is None:
        # Every point every restart saw is evaluated already (tiny or nearly exhausted spaces).
        point = unseen_random_point(space, avoid, rng)
        return Candidate(point, float(acquisition([point])[0]), total + 1)
    return Candidate(best.point, best.value, total)


def unseen_random_point(space: SearchSpace, avoid: Collection[Point], rng: random.Random, tries: int = 10_000) -> Point:
    """A uniformly random point whose canonical form is not in ``avoid``.

    Raises:
        SpaceExhaustedError: If none is found (the space is exhausted or nearly so).

    """
    for _ in range(tries):
        point = space.sample(rng, 1)[0]
        if space.canonical(point) not in avoid:
            return point
    if space.size <= 100_000:
        for point in space.iter_points():
            if space.canonical(point) not in avoid:
                return point
    raise SpaceExhaustedError(f"no configuration of space {space.name!r} is left to evaluate ({space.size} points)")


def best_of_candidates(
    acquisition: AcquisitionValues,
    space: SearchSpace,
    candidates: Sequence[Point],
    avoid: Collection[Point],
    chunk: int = 512,
) -> Candidate:
    """Exhaustive acquisition optimisation over a fixed candidate list (a tabulated benchmark).

    Raises:
        SpaceExhaustedError: If every candidate is in ``avoid``.

    """
    left = [p for p in candidates if space.canonical(p) not in avoid]
    if not left:
        raise SpaceExhaustedError(f"all {len(candidates)} candidates have been evaluated")
    values = torch.cat([acquisition(left[i : i + chunk]) for i in range(0, len(left), chunk)])
    best = int(values.argmax())
    return Candidate(left[best], float(values[best]), len(left))
