"""The decoder LoRA space (``space=llm_lora``): per-layer mask x rank per projection group x DoRA."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.peft.params import paper_param_count
from autopeft.space import SearchSpace, rank_choices
from autopeft.training.backbones import shape_of


def llm_space(compose_cfg: Callable, backbone: str, *overrides: str) -> SearchSpace:
    cfg = compose_cfg(f"backbone={backbone}", "space=llm_lora", *overrides)
    return SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))


def test_rank_choices_follow_the_hidden_size() -> None:
    assert rank_choices(64) == (0, 4, 8, 16)
    assert rank_choices(896) == rank_choices(2048) == (0, 4, 8, 16, 32, 64)
    assert rank_choices(8) == (0, 4)


def test_the_space_on_a_tiny_llama(compose_cfg: Callable) -> None:
    s = llm_space(compose_cfg, "tiny_llama")
    assert s.modules == ("lora_attn", "lora_mlp", "dora") and s.dims == 2 + 3
    assert s.module_choices == {"lora_attn": (0, 4, 8, 16), "lora_mlp": (0, 4, 8, 16), "dora": (0, 1)}
    assert s.size == 4 * 4 * 4 * 2
    # Distinct: 3 non-empty masks x (15 LoRA rank pairs x 2 DoRA) + head only.
    assert s.num_configurations == 3 * 15 * 2 + 1 == len(s.enumerate_configurations())
    assert len({s.canonical(p) for p in s.iter_points()}) == s.num_configurations
    spec = s.to_peft(s.point([True, False], lora_attn=16, lora_mlp=4, dora=1))
    assert spec.use_dora and spec.layers == (0,) and spec.lora_alpha_rule == "rank_multiple"
    assert spec.lora_ranks() == {(0, t): 16 for t in ("query", "key", "value", "attention_output")} | {
        (0, t): 4 for t in ("gate", "intermediate", "output")
    }
    assert spec.lora_alpha_of(16) == 32.0 and spec.lora_dropout == 0.05


def test_dora_without_lora_is_the_same_configuration(compose_cfg: Callable) -> None:
    s = llm_space(compose_cfg, "tiny_llama")
    assert s.canonical(s.point(lora_attn=0, lora_mlp=0, dora=1)) == s.head_only()
    assert not s.to_peft(s.point(lora_attn=0, lora_mlp=0, dora=1)).use_dora


def test_param_count_is_the_paper_count_on_the_real_shapes(compose_cfg: Callable) -> None:
    s = llm_space(compose_cfg, "qwen2_5_0_5b_arch")
    assert s.num_layers == 24 and s.module_choices["lora_attn"] == (0, 4, 8, 16, 32, 64)
    points = s.sample(torch.Generator().manual_seed(0), 25)
    for point in points:
        assert s.param_count(point) == paper_param_count(s.to_peft(point), s.shape, 1)
    assert s.param_count_tensor(s.encode(points)).squeeze(-1).tolist() == [float(s.param_count(p)) for p in points]
    # r 8 on 4 attention + r 16 on 3 MLP projections in every layer, 2 r D_h each.
    assert s.param_count(s.point(lora_attn=8, lora_mlp=16)) == 24 * 2 * 896 * (4 * 8 + 3 * 16)


def test_fused_attention_families_count_their_own_targets(compose_cfg: Callable) -> None:
    s = llm_space(compose_cfg, "tiny_gpt2")
    spec = s.to_peft(s.point(lora_attn=4, lora_mlp=8))
    assert spec.lora_targets == ("attention_output", "intermediate", "output")
    assert s.param_count(s.point(lora_attn=4, lora_mlp=8)) == 2 * 2 * 64 * (1 * 4 + 2 * 8)


def test_a_fixed_dora_choice_encodes_as_one_constant_column(compose_cfg: Callable) -> None:
    s = llm_space(compose_cfg, "tiny_llama", "+space.choices.dora=[1]")
    assert s.num_configurations == 3 * 15 + 1
    X = s.encode([s.point(lora_attn=4, dora=1)])
    assert X[0, -1].item() == 0.0 and s.decode(X)[0] == s.point(lora_attn=4, dora=1)


@pytest.mark.parametrize(
    ("modules", "choices", "message"),
    [
        (["lora", "lora_attn"], {}, r"searches 'lora' \(one rank for every target\) together with 'lora_attn'"),
        (["dora"], {}, r"searches 'dora', an option of LoRA projections, but no LoRA module"),
        (["lora_attn", "dora"], {"dora": [0, 2]}, r"space.choices.dora=\[0, 2\] is not allowed; allowed: \[0, 1\]"),
    ],
)
def test_bad_combinations_are_one_line(compose_cfg: Callable, modules: list, choices: dict, message: str) -> None:
    cfg = compose_cfg("backbone=tiny_llama", "space=llm_lora")
    node = {"name": "x", "modules": modules, "layer_selection": True, "choices": choices, "fixed": {}}
    with pytest.raises(ConfigError, match=message) as caught:
        SearchSpace.from_config(node, shape_of(cfg.backbone))
    assert "\n" not in str(caught.value)
