"""The acquisition optimiser: hill-climbing over neighbours with restarts, a budget and no repeats."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch

from autopeft.bo.local_search import (
    LocalSearchSettings,
    SpaceExhaustedError,
    climb_all,
    local_search,
    optimize_acquisition,
    starting_points,
    unseen_random_point,
)
from autopeft.errors import ConfigError
from autopeft.peft import BackboneShape
from autopeft.space import Point, SearchSpace

SHAPE = BackboneShape("bert_base_arch", 768, 12, 12)
SPACE = SearchSpace.from_config({"name": "t", "modules": ["sa", "pa", "prefix"], "layer_selection": True}, SHAPE)
TARGET = SPACE.point(mask=[i % 3 == 0 for i in range(12)], sa=48, prefix=6)


class Distance:
    """A smooth acquisition with one maximum at TARGET; counts its evaluations."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, points: Sequence[Point]) -> torch.Tensor:
        self.calls += len(points)
        target = SPACE.encode([TARGET])
        return -(SPACE.encode(points) - target).abs().sum(-1)


def test_hill_climbing_reaches_the_optimum_from_a_random_start() -> None:
    acq = Distance()
    start = SPACE.sample(random.Random(0), 1)[0]
    found = local_search(acq, SPACE, start, set(), max_evals=10_000, rng=random.Random(0))
    assert found is not None and found.point == TARGET
    assert found.evaluations == acq.calls


def test_each_restart_stops_at_max_evals() -> None:
    acq = Distance()
    start = SPACE.sample(random.Random(1), 1)[0]
    found = local_search(acq, SPACE, start, set(), max_evals=25, rng=random.Random(0))
    assert acq.calls == 25 == found.evaluations
    assert found.point != TARGET  # 25 evaluations are not enough from a random start


class Bumpy(Distance):
    """Several local optima (so climbs from different starts end in different places); counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def __call__(self, points: Sequence[Point]) -> torch.Tensor:
        self.batches += 1
        self.calls += len(points)
        X = SPACE.encode(points)
        return torch.cos(7 * X).sum(-1) - (X - SPACE.encode([TARGET])).abs().sum(-1)


def test_lockstep_climbs_equal_separate_climbs_with_far_fewer_acquisition_calls() -> None:
    starts = SPACE.sample(random.Random(5), 6)
    avoid = {SPACE.canonical(starts[0])}
    together = Bumpy()
    joint = climb_all(together, SPACE, starts, avoid, 60, [random.Random(i) for i in range(6)])
    alone = Bumpy()
    separate = [local_search(alone, SPACE, s, avoid, 60, random.Random(i)) for i, s in enumerate(starts)]
    assert joint == separate
    assert len({c.point for c in joint if c is not None}) > 1  # the starts reach different optima
    assert together.calls == alone.calls
    assert together.batches <= max(c.evaluations for c in joint if c is not None)
    assert together.batches * 3 < alone.batches


def test_evaluated_and_pending_points_are_never_returned() -> None:
    acq = Distance()
    avoid = {SPACE.canonical(TARGET)}
    found = optimize_acquisition(acq, SPACE, [TARGET], avoid, LocalSearchSettings(restarts=3), random.Random(0))
    assert found.point != TARGET
    assert SPACE.canonical(found.point) not in avoid
    assert found.point in SPACE.neighbours(TARGET)  # the best point left is next to the optimum


def test_restarts_budget_is_respected() -> None:
    acq = Distance()
    settings = LocalSearchSettings(restarts=10, max_evals=100, random_starts=10)
    optimize_acquisition(acq, SPACE, [], set(), settings, random.Random(0))
    assert acq.calls <= 10 * 100


def test_starting_points_prefer_the_pareto_set() -> None:
    pareto = SPACE.sample(random.Random(5), 20)
    settings = LocalSearchSettings(restarts=10, random_starts=2)
    starts = starting_points(SPACE, pareto, settings, random.Random(0))
    assert len(starts) == 10 and sum(s in pareto for s in starts) >= 8
    few = starting_points(SPACE, pareto[:3], settings, random.Random(0))
    assert len(few) == 10 and few[:3] == [p for p in few[:3] if p in pareto[:3]]


def test_exhausted_space_fails_clearly() -> None:
    tiny = SearchSpace.from_config(
        {"name": "tiny", "modules": ["sa"], "layer_selection": False, "choices": {"sa": [0, 8]}}, SHAPE
    )
    everything = {tiny.canonical(p) for p in tiny.iter_points()}
    with pytest.raises(SpaceExhaustedError, match="no configuration of space 'tiny' is left"):
        unseen_random_point(tiny, everything, random.Random(0))


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ({"restarts": 0}, r"restarts=0 must be a positive integer"),
        ({"max_evals": -5}, r"max_evals=-5 must be a positive integer"),
        ({"restarts": 4, "random_starts": 5}, r"random_starts=5 must be an integer in \[0, restarts=4\]"),
        ({"restart": 4}, r"restart"),
    ],
)
def test_bad_settings_are_named(node: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        LocalSearchSettings.from_config(node)
