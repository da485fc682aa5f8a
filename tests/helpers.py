"""Tiny random encoders for the PEFT tests (no files, no downloads)."""

from __future__ import annotations

import copy
from functools import cache

import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

from autopeft.peft import BackboneShape
from autopeft.training.backbones import Backbone, load_backbone

#: The tiny random config of every decoder family (conf/backbone/tiny_*.yaml).
TINY_DECODERS: tuple[str, ...] = (
    "tiny_llama",
    "tiny_qwen2",
    "tiny_qwen3",
    "tiny_mistral",
    "tiny_gemma",
    "tiny_gemma2",
    "tiny_gemma3",
    "tiny_gpt2",
    "tiny_gpt_neox",
)


@cache
def tiny_backbone(name: str) -> Backbone:
    """The tiny backbone ``name`` as its real config builds it, seeded (loaded once: tests copy its model)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="run", overrides=["experiment=none", f"backbone={name}"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_backbone(cfg.backbone)


def tiny_encoder(model_type: str = "bert", attn: str = "sdpa", layers: int = 3) -> torch.nn.Module:
    """A 3-layer, hidden-32 random BERT or RoBERTa in eval mode (dropout off)."""
    kwargs = dict(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64, vocab_size=120)
    torch.manual_seed(0)
    if model_type == "roberta":
        model = RobertaModel(RobertaConfig(**kwargs, type_vocab_size=1, pad_token_id=1, attn_implementation=attn))
    else:
        model = BertModel(BertConfig(**kwargs, attn_implementation=attn))
    return model.eval()


def as_backbone(model: torch.nn.Module, pooling: str = "cls") -> Backbone:
    """Wrap a bare encoder as a :class:`Backbone`."""
    cfg = model.config
    shape = BackboneShape("tiny", cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads)
    return Backbone("tiny", model, None, shape, sum(p.numel() for p in model.parameters()), pooling)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An untouched deep copy to compare an injected encoder against."""
    return copy.deepcopy(model).eval()


def batch(pad_id: int = 0, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of lengths 9 and 5 (the second padded), ids in [5, 120)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (2, 9), generator=gen)
    mask = torch.ones(2, 9, dtype=torch.long)
    ids[1, 5:] = pad_id
    mask[1, 5:] = 0
    return ids, mask
