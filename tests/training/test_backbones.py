"""Backbone loading: the embedded offline MiniLM, random architectures, clear errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.training.backbones import load_backbone


def test_minilm_loads_offline_with_its_tokenizer(compose_cfg: Callable) -> None:
    backbone = load_backbone(compose_cfg("backbone=minilm").backbone)
    assert backbone.model.config.model_type == "bert"
    assert (backbone.shape.hidden_size, backbone.shape.num_layers) == (384, 6)
    assert backbone.num_params == 22_713_216 and backbone.pooling == "mean"
    encoded = backbone.tokenizer("a fine film", "not a fine film")
    assert encoded["input_ids"][0] == backbone.tokenizer.cls_token_id
    with torch.no_grad():
        out = backbone.model(input_ids=torch.tensor([encoded["input_ids"]])).last_hidden_state
    assert out.shape[-1] == 384 and torch.isfinite(out).all()
    # Pretrained, not random: the word embeddings are the published ones, not a fresh N(0, 0.02) draw.
    assert backbone.model.embeddings.word_embeddings.weight.std() > 0.03


def test_roberta_architecture_builds_without_token_types(compose_cfg: Callable) -> None:
    backbone = load_backbone(compose_cfg("backbone=roberta_large_arch").backbone, weights=False)
    assert backbone.model.config.model_type == "roberta" and backbone.model.config.type_vocab_size == 1
    assert (backbone.shape.hidden_size, backbone.shape.num_layers, backbone.shape.num_heads) == (1024, 24, 16)


def test_unsupported_architecture_is_named(compose_cfg: Callable) -> None:
    cfg = compose_cfg("backbone=tiny_bert", "backbone.model_type=t5")
    with pytest.raises(
        ConfigError, match=r"backbone\.model_type='t5' is not supported; allowed: 'bert', 'roberta', 'llama', 'qwen2'"
    ):
        load_backbone(cfg.backbone, weights=False)


def test_hub_backbone_offline_says_what_to_use_instead(compose_cfg: Callable) -> None:
    with pytest.raises(ConfigError, match=r"needs? network access.*backbone=minilm"):
        load_backbone(compose_cfg("backbone=bert_base_uncased").backbone, weights=False)


def test_bad_source_and_pooling_are_refused(compose_cfg: Callable) -> None:
    with pytest.raises(
        ConfigError, match=r"backbone\.source='ftp'; allowed: 'package', 'random', 'hub', 'path', 'auto'"
    ):
        load_backbone(compose_cfg("backbone.source=ftp").backbone)
    with pytest.raises(ConfigError, match=r"backbone\.pooling='max'; allowed: 'cls', 'mean'"):
        load_backbone(compose_cfg("backbone.pooling=max").backbone)
