"""What every benchmark script shares: the repository root, the real config composed, the t-interval."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from autopeft.runtime import register_resolvers

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The real ``conf/run.yaml`` with overrides, as ``python run.py <overrides>`` would compose it."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="run", overrides=overrides)


def t_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% t-interval (None from fewer than two values)."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half
