"""What every benchmark script shares: the repository root and the real config, composed."""

from __future__ import annotations

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
