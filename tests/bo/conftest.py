"""Search fixtures: the real configs with tiny search budgets, and a synthetic objective (no training)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from omegaconf import DictConfig

from autopeft.space import Point

#: A short search with a few NUTS steps: seconds on CPU.
TINY_SEARCH = [
    "search.n_init=5",
    "search.n_iter=3",
    "search.progress=false",
    "search.surrogate.warmup_steps=8",
    "search.surrogate.num_samples=8",
    "search.surrogate.thinning=2",
    "search.acquisition.mc_samples=32",
    "search.local_search.restarts=3",
    "search.local_search.max_evals=20",
]


def never_fails(point: Point) -> bool:
    """The default failure rule (module level, so the objective pickles into worker processes)."""
    return False


class SyntheticObjective:
    """A deterministic stand-in for training: score rises with serial-adapter capacity, falls with prefixes.

    Args:
        fail: Points for which the "training" diverges.
        interrupt_after: Raise KeyboardInterrupt on this call (simulates a kill mid-search).

    """

    def __init__(self, fail: Callable[[Point], bool] = never_fails, interrupt_after: int | None = None) -> None:
        self.fail = fail
        self.interrupt_after = interrupt_after
        self.calls: list[int] = []

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(index)
        sizes = point.size_dict
        layers = sum(point.mask)
        capacity = layers * (sizes.get("sa", 0) + 0.5 * sizes.get("pa", 0))
        score = 0.5 + 0.3 * math.tanh(capacity / 40) - 0.002 * sizes.get("prefix", 0)
        percent = 2 * 32 * layers * sum(sizes.values()) / 1e4  # tiny_bert-like scale, exact enough for tests
        failed = self.fail(point)
        return {
            "status": "diverged" if failed else "ok",
            "score": None if failed else round(score, 6),
            "reason": "loss became nan at step 3" if failed else None,
            "param_percent": percent,
            "seconds": 0.01,
        }


@pytest.fixture
def search_cfg(tiny_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """The real run config with a tiny backbone and a tiny search budget."""

    def _compose(*overrides: str) -> DictConfig:
        return tiny_cfg(*TINY_SEARCH, *overrides)

    return _compose
