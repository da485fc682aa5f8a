"""PEFT on decoder backbones: exact counts of the head and LoRA, the one-line refusals, the LoRA space."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.experiments.modes import mode_params, mode_space
from autopeft.peft import peft_from_config
from autopeft.peft.lora import LoRALinear
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel

LLAMA_STYLE = ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral", "tiny_gemma", "tiny_gemma2", "tiny_gemma3"]
FUSED_QKV = ["tiny_gpt2", "tiny_gpt_neox"]
#: Every projection LoRA may adapt, by family kind, and its (in, out) widths in the tiny configs:
#: hidden 64, 4 query heads of 16, 2 key/value heads (32 wide) where the family has GQA, MLP 128.
WIDTHS = {
    "llama": {
        "query": (64, 64),
        "key": (64, 32),
        "value": (64, 32),
        "attention_output": (64, 64),
        "gate": (64, 128),
        "intermediate": (64, 128),
        "output": (128, 64),
    },
    "fused": {"attention_output": (64, 64), "intermediate": (64, 128), "output": (128, 64)},
}


def _lora_count(rank: int, widths: dict[str, tuple[int, int]], layers: int = 2) -> int:
    """A hand count: r (in + out) per adapted projection, per layer."""
    return layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in widths.values())


def _params(compose_cfg: Callable, name: str, *overrides: str) -> dict:
    return mode_params(compose_cfg(f"backbone={name}", "task=snli_binary", *overrides))


@pytest.mark.parametrize("name", LLAMA_STYLE + FUSED_QKV)
def test_head_only_and_lora_counts_are_exact(compose_cfg: Callable, name: str) -> None:
    widths = WIDTHS["fused" if name in FUSED_QKV else "llama"]
    head = _params(compose_cfg, name, "peft=head_only")
    assert head["trainable_params"] == head["head_params"] == 64 * 2 and head["paper_params"] == 0
    targets = "peft.lora_targets=[" + ",".join(widths) + "]"
    report = _params(compose_cfg, name, "peft=lora", "peft.lora_rank=4", targets)
    assert report["trainable_peft_params"] == _lora_count(4, widths)
    assert report["paper_params"] == 2 * 2 * 4 * 64 * len(widths)  # the paper's 2 r D_h per projection
    assert report["paper_percent"] == pytest.approx(100 * report["paper_params"] / report["backbone_params"])
    # ... and what a built model (real tensors, not the meta device) trains.
    cfg = compose_cfg(f"backbone={name}", "peft=lora", "peft.lora_rank=4", targets)
    backbone = load_backbone(cfg.backbone)
    assert report["backbone_params"] == sum(p.numel() for p in backbone.model.parameters())
    model = AutoPeftModel(backbone, peft_from_config(cfg.peft, backbone.shape), "classification", 2)
    assert report["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_the_report_states_the_attention_shape(compose_cfg: Callable) -> None:
    report = _params(compose_cfg, "tiny_qwen2", "peft=lora")
    assert (report["model_type"], report["num_heads"], report["num_kv_heads"], report["intermediate_size"]) == (
        "qwen2",
        4,
        2,
        128,
    )
    # r 8 on q (64 -> 64) and v (64 -> 32) in each of 2 layers: v is narrower under GQA.
    assert report["trainable_peft_params"] == 2 * (8 * 128 + 8 * 96)


def test_real_shapes_count_on_the_meta_device(compose_cfg: Callable) -> None:
    report = _params(compose_cfg, "qwen2_5_0_5b_arch", "peft=lora")
    # r 8 on q (896 -> 896) and v (896 -> 2 heads x 64 = 128), 24 layers; head 896 x 2.
    assert report["trainable_peft_params"] == 24 * (8 * (896 + 896) + 8 * (896 + 128))
    assert report["head_params"] == 896 * 2 and report["backbone_params"] == 494_032_768


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3", "tiny_gpt2"])
def test_lora_starts_as_the_identity_and_its_gradient_flows(compose_cfg: Callable, name: str) -> None:
    torch.manual_seed(0)
    targets = "[attention_output,output]" if name in FUSED_QKV else "[query,value,gate,output]"
    cfg = compose_cfg(f"backbone={name}", "peft=lora", f"peft.lora_targets={targets}")
    backbone = load_backbone(cfg.backbone)
    backbone.model.eval()  # GPT-2's dropout would otherwise differ between the two passes
    ids = torch.randint(3, 500, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = backbone.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    model = AutoPeftModel(backbone, peft_from_config(cfg.peft, backbone.shape), "classification", 2)
    model.eval()
    with torch.no_grad():
        after = model.encode(ids, mask)
    torch.testing.assert_close(after, before)  # B = 0: every wrapped projection unchanged
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 2 * len(targets.split(","))
    model(ids, mask).sum().backward()
    assert all(m.lora_b.grad.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))


@pytest.mark.parametrize(
    ("overrides", "module"),
    [
        (["peft=unipelt"], "UniPELT gates"),
        (["peft=lora", "peft.gated=true"], "UniPELT gates"),
        (["peft=adaptable"], "Adaptable Adapters' layer switches"),
        (["peft=adamix"], "AdaMix"),
    ],
)
def test_modules_decoders_cannot_take_yet_are_one_line(compose_cfg: Callable, overrides: list, module: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _params(compose_cfg, "tiny_mistral", *overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"{module}: not supported on decoder backbones yet (backbone 'tiny_mistral' is 'mistral')"
    )
    assert message.endswith(
        "supported there: serial and parallel adapters (peft=sa, peft=pa), prefix-tuning (peft=prefix), LoRA "
        "(peft=lora) and their combinations (e.g. peft=mam), full fine-tuning (peft=fft) and the task head alone "
        "(peft=head_only)"
    )


@pytest.mark.parametrize(
    ("overrides", "paper", "exact"),
    [
        # SA D_h/16 = 4 in 2 layers: 2 D D_h each, plus biases D + D_h.
        (["peft=sa"], 2 * 2 * 4 * 64, 2 * (2 * 4 * 64 + 4 + 64)),
        # PA D_h/2 = 32.
        (["peft=pa"], 2 * 2 * 32 * 64, 2 * (2 * 32 * 64 + 32 + 64)),
        # PT 30 (paper: 2 L_PT D_h per layer); exact: embedding 30 x 64, MLP 64 -> 800 -> 2 layers x 2 x 32 (GQA).
        (["peft=prefix"], 2 * 2 * 30 * 64, 30 * 64 + 64 * 800 + 800 + 801 * 2 * 2 * 32),
    ],
)
def test_the_papers_presets_count_on_decoders(compose_cfg: Callable, overrides: list, paper: int, exact: int) -> None:
    report = _params(compose_cfg, "tiny_mistral", *overrides)
    assert (report["paper_params"], report["trainable_peft_params"]) == (paper, exact)


def test_fused_attention_names_its_projection(compose_cfg: Callable) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'query', which 'gpt_neox' layers do not have \(gpt_neox fuses query, key and value into one "
        r"projection, attention.query_key_value\); allowed: 'attention_output', 'intermediate', 'output'",
    ):
        _params(compose_cfg, "tiny_gpt_neox", "peft=lora")
    with pytest.raises(ConfigError, match=r"peft.lora_targets has 'gate'; allowed: 'query', 'key'"):
        _params(compose_cfg, "tiny_bert", "peft=lora", "peft.lora_targets=[gate]")  # encoders have no gate


def test_full_finetuning_trains_the_whole_decoder(compose_cfg: Callable) -> None:
    report = _params(compose_cfg, "tiny_llama", "peft=fft")
    assert report["trainable_peft_params"] == report["backbone_params"] == report["paper_params"]


def test_the_lora_and_autopeft_spaces_run_on_decoders(compose_cfg: Callable) -> None:
    info = mode_space(compose_cfg("backbone=tiny_qwen3", "space=lora"))
    assert info["modules"] == ["lora"] and info["choices"]["lora"] == [0, 1, 2, 4, 8, 16, 32, 64]
    assert info["num_layers"] == 2 and info["configurations"] == 1 + 3 * 7  # all off, or r > 0 on a non-empty mask
    info = mode_space(compose_cfg("backbone=tiny_qwen3", "space=autopeft"))
    assert info["modules"] == ["sa", "pa", "prefix"] and info["size"] == 2**2 * 8**3  # mask x D_SA x D_PA x L_PT
    with pytest.raises(ConfigError, match=r"^space.fixed of space 'lora': peft.lora_targets has 'query', which 'gpt2'"):
        mode_space(compose_cfg("backbone=tiny_gpt2", "space=lora"))
    info = mode_space(compose_cfg("backbone=tiny_gpt2", "space=lora", "space.fixed.lora_targets=[attention_output]"))
    assert info["fixed"]["lora_targets"] == ["attention_output"]
