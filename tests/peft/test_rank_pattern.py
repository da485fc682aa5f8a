"""Per-layer and per-group LoRA ranks (``peft.lora_rank_pattern``), the alpha rule and DoRA's checks."""

from __future__ import annotations

import pytest

from autopeft.errors import ConfigError
from autopeft.peft import BackboneShape, peft_from_config
from autopeft.peft.params import paper_param_count

LLAMA = BackboneShape("tiny_llama", 64, 4, 4, "llama", 2, 128)
GPT2 = BackboneShape("tiny_gpt2", 64, 2, 4, "gpt2")
BERT = BackboneShape("bert_base_arch", 768, 12, 12)


def spec(shape: BackboneShape = LLAMA, **values: object):
    return peft_from_config({"name": "t", "layers": "all", **values}, shape)


def test_the_most_specific_key_wins() -> None:
    s = spec(
        lora_rank=4,
        lora_targets="all",
        lora_rank_pattern={"attention": 8, "value": 2, "3": 16, "3.mlp": 1, "1.value": 0},
    )
    assert s.lora_targets == ("query", "key", "value", "attention_output", "gate", "intermediate", "output")
    assert s.lora_rank_of(0, "query") == 8  # group
    assert s.lora_rank_of(0, "value") == 2  # target beats group
    assert s.lora_rank_of(0, "gate") == 4  # no key: lora_rank
    assert s.lora_rank_of(3, "query") == 16  # layer beats target and group
    assert s.lora_rank_of(3, "output") == 1  # layer.group beats layer
    assert s.lora_rank_of(1, "value") == 0  # layer.target: no LoRA there
    assert (1, "value") not in s.lora_ranks() and s.lora_ranks()[(1, "key")] == 8


def test_ranks_outside_the_mask_or_the_targets_are_zero() -> None:
    s = spec(layers=[1, 2], lora_rank=8)
    assert s.lora_rank_of(0, "query") == 0 and s.lora_rank_of(1, "key") == 0  # key is not a target
    assert s.lora_rank_of(1, "query") == 8 and s.active_layers == (1, 2)


def test_a_pattern_alone_switches_lora_on_and_the_paper_count_sums_each_rank() -> None:
    s = spec(lora_rank=0, lora_targets="all", lora_rank_pattern={"attention": 8, "0.mlp": 4})
    assert s.lora_on and s.active_layers == (0, 1, 2, 3)
    # 4 attention projections at r 8 in 4 layers, 3 MLP projections at r 4 in layer 0; 2 r D_h each.
    assert paper_param_count(s, LLAMA, 10**6) == 2 * 64 * (4 * 8 * 4 + 3 * 4)
    off = spec(lora_rank=0, lora_rank_pattern={"attention": 0})
    assert not off.lora_on and off.active_layers == () and off.describe() == "head only (frozen backbone)"
    # Only layers with some rank are active: layer 1 has every rank 0.
    assert spec(lora_rank=8, lora_rank_pattern={"1": 0}).active_layers == (0, 2, 3)


def test_alpha_rules() -> None:
    assert spec(lora_rank=8, lora_alpha=16.0).lora_alpha_of(4) == 16.0
    assert spec(lora_rank=8, lora_alpha=2.0, lora_alpha_rule="rank_multiple").lora_alpha_of(4) == 8.0


def test_describe_names_the_group_ranks_and_dora() -> None:
    s = spec(lora_targets="all", lora_rank_pattern={"attention": 16, "mlp": 4}, use_dora=True)
    assert s.describe() == "DoRA attention r16 + MLP r4 (7 projection types) on layers 0–3"
    assert spec(lora_rank=8).describe() == "LoRA r8 (query/value) on layers 0–3"
    assert spec(lora_rank=8, lora_rank_pattern={"1.value": 2}).describe() == (
        "LoRA r2–8 (query/value; 1.value 2) on layers 0–3"
    )


def test_all_targets_follow_the_family() -> None:
    assert spec(GPT2, lora_rank=4, lora_targets="all").lora_targets == ("attention_output", "intermediate", "output")
    assert len(spec(BERT, lora_rank=4, lora_targets="all").lora_targets) == 6


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lora_rank_pattern": {"mlpp": 2}}, r"key 'mlpp' is not allowed \(did you mean 'mlp'\?\); a key is a target"),
        ({"lora_rank_pattern": {"7.mlp": 2}}, r"key '7.mlp': layer '7' is not in 0..3"),
        ({"lora_rank_pattern": {"mlp": 65}}, r"lora_rank_pattern.mlp=65 is outside \[0, 64\]"),
        ({"lora_rank_pattern": {"mlp": "x"}}, r"lora_rank_pattern.mlp='x' must be an integer"),
        ({"lora_rank_pattern": [3]}, r"must map targets, groups or layers to ranks"),
        ({"lora_alpha_rule": "double"}, r"lora_alpha_rule='double' is not allowed; allowed: 'constant', 'rank_mult"),
        ({"use_dora": True, "lora_rank": 0}, r"use_dora=true needs LoRA on"),
        ({"use_dora": True, "gated": True}, r"use_dora=true cannot be combined with peft.gated=true"),
    ],
)
def test_bad_patterns_are_one_line(values: dict, message: str) -> None:
    values = {"lora_rank": 8, **values}
    with pytest.raises(ConfigError, match=message) as caught:
        spec(BERT if values.get("gated") else LLAMA, **values)
    assert "\n" not in str(caught.value)
