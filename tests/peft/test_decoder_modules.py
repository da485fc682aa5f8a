"""The paper's serial and parallel adapters and prefix-tuning in every decoder family.

What each test pins down:

* a zero adapter leaves every family's outputs exactly as they were, at the family's MLP, and
  the default (AdapterHub) initialisation is the encoders' one;
* prefix-tuning masks right: a padded batch gives each row's states as the row alone gives them
  (the padded batch reaches the attention with a mask tensor, a row alone under sdpa with none);
* the prefix changes the outputs, trains, and has the attention's key/value heads under GQA;
* the prefix-tuned attention equals an independent reference: the same frozen model given the
  prefix as a ``DynamicCache`` prefilled with the prefix keys and values (transformers' own
  cache, mask and rotary code), the real tokens at positions 0..T-1;
* the exact trainable counts match a hand formula per family, and the modules that decoders
  still refuse are refused in one line;
* float32 adapters run inside a bf16 decoder, and an export with every module loads back and
  scores the same.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import DynamicCache

from autopeft.errors import ConfigError
from autopeft.experiments.modes import mode_params, mode_space
from autopeft.export import load_export, save_export
from autopeft.peft import peft_from_config
from autopeft.peft.adapters import Bottleneck
from autopeft.peft.decoder_layers import DecoderAdaptedMLP, PrefixDecoderAttention
from autopeft.peft.families import family_of
from autopeft.peft.inject import backbone_layers
from autopeft.peft.lora import LoRALinear
from autopeft.peft.params import parameter_report
from autopeft.training.model import AutoPeftModel
from autopeft.training.train import TrainingJob, build
from tests.helpers import tiny_backbone

#: Every tiny decoder config, its key/value heads (hidden 64, 4 query heads of 16; GQA: 2 key/value heads).
KV_HEADS = {
    "tiny_llama": 2,
    "tiny_qwen2": 2,
    "tiny_qwen3": 2,
    "tiny_mistral": 2,
    "tiny_gemma": 2,
    "tiny_gemma2": 2,
    "tiny_gemma3": 2,
    "tiny_gpt2": 4,
    "tiny_gpt_neox": 4,
}
FAMILIES = list(KV_HEADS)
HEAD_DIM = 16
PREFIX = {"prefix_len": 3, "prefix_bottleneck": 16}


_backbone = tiny_backbone


def _build(name: str, implementation: str | None = None, **peft: Any) -> tuple[AutoPeftModel, torch.nn.Module]:
    """(adapted AutoPeftModel, an untouched copy of its frozen base model), both in eval mode."""
    loaded = _backbone(name)
    backbone = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
    if implementation is not None:
        backbone.model.set_attn_implementation(implementation)
    reference = copy.deepcopy(backbone.model).eval()
    torch.manual_seed(0)
    spec = peft_from_config({"layers": "all", **peft}, backbone.shape)
    return AutoPeftModel(backbone, spec, "classification", 2).eval(), reference


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded rows of 7, 4 and 6 real tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 500, (3, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 6:] = 0
    return ids * mask, mask


def _base_states(reference: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


@pytest.mark.parametrize("name", FAMILIES)
def test_zero_up_adapters_leave_every_family_unchanged_and_train(name: str) -> None:
    model, reference = _build(name, sa_size=8, pa_size=4, adapter_init="zero_up")
    ids, mask = _batch()
    with torch.no_grad():
        after = model.encode(ids, mask)
    torch.testing.assert_close(after, _base_states(reference, ids, mask), rtol=0, atol=0)
    family = family_of(model.encoder.config.model_type)
    adapted = [layer.get_submodule(family.mlp) for layer in backbone_layers(model.encoder)]
    assert all(isinstance(m, DecoderAdaptedMLP) for m in adapted)
    model(ids, mask).sum().backward()
    for mlp in adapted:  # zero up-projections: their gradient is what moves the adapters first
        assert mlp.serial.up.weight.grad.abs().sum() > 0 and mlp.parallel.up.weight.grad.abs().sum() > 0


def test_the_default_initialisation_is_the_encoders() -> None:
    model, reference = _build("tiny_qwen3", sa_size=32, pa_size=32)
    mlp = backbone_layers(model.encoder)[0].mlp
    for linear in (mlp.serial.down, mlp.serial.up):  # AdapterHub's "bert" init: N(0, 0.02), zero bias
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.15) and not linear.bias.any()
    assert not mlp.parallel.up.weight.any() and mlp.parallel.down.weight.abs().sum() > 0  # He et al.'s "mam"
    ids, mask = _batch()
    with torch.no_grad():
        assert not torch.allclose(model.encode(ids, mask), _base_states(reference, ids, mask))  # the SA's noise


def test_adapters_sit_inside_gemma2s_post_feedforward_norm() -> None:
    model, _ = _build("tiny_gemma2", pa_size=4, adapter_init="zero_up")
    layer = backbone_layers(model.encoder)[0]
    with torch.no_grad():
        layer.mlp.parallel.up.bias.fill_(1.0)  # the adapter now adds s * 1 = 4 to every MLP output feature
    seen: dict[str, torch.Tensor] = {}

    def keep(key: str) -> Callable:
        def hook(_module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
            seen[key] = args[0]  # returning None leaves the output alone

        return hook

    layer.mlp.register_forward_hook(keep("mlp_input"))
    layer.post_feedforward_layernorm.register_forward_hook(keep("norm_input"))
    with torch.no_grad():
        model.encode(*_batch())
        # The post-feedforward norm reads the MLP's output plus the adapter's, as BERT's LayerNorm does.
        torch.testing.assert_close(seen["norm_input"], layer.mlp.base(seen["mlp_input"]) + 4.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_padded_batch_gives_each_row_its_states_alone(name: str) -> None:
    model, _ = _build(name, pa_size=4, **PREFIX)
    ids, mask = _batch()
    with torch.no_grad():
        batch = model.encode(ids, mask)
        for row in range(3):
            n = int(mask[row].sum())
            alone = model.encode(ids[row : row + 1, :n], mask[row : row + 1, :n])
            torch.testing.assert_close(batch[row : row + 1, :n], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_prefix_changes_outputs_trains_and_has_the_key_value_heads(name: str) -> None:
    model, reference = _build(name, **PREFIX)
    ids, mask = _batch()
    with torch.no_grad():
        assert not torch.allclose(model.encode(ids, mask), _base_states(reference, ids, mask), atol=1e-4)
    family = family_of(model.encoder.config.model_type)
    kv_heads = KV_HEADS[name]
    assert model.prefix_encoder().shape == (2, 2, 3, kv_heads * HEAD_DIM)  # layers, k/v, L_PT, kv width
    for layer in backbone_layers(model.encoder):
        attention = layer.get_submodule(family.attention)
        assert isinstance(attention, PrefixDecoderAttention)
        key, value = attention.layer_prefix()
        assert key.shape == value.shape == (1, kv_heads, 3, HEAD_DIM)
    model(ids, mask).sum().backward()
    for param in model.prefix_encoder.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0


def _prefilled_cache(model: AutoPeftModel, reference: torch.nn.Module, kv_heads: int) -> DynamicCache:
    """The prefix of every layer as a cache of already-computed (rotated) keys and values."""
    cache = DynamicCache(config=reference.config)
    with torch.no_grad():
        prefixes = model.prefix_encoder()  # (layers, 2, L_PT, kv_heads * head_dim)
    for index in range(prefixes.shape[0]):
        key, value = (p.view(1, 3, kv_heads, HEAD_DIM).transpose(1, 2).expand(3, -1, -1, -1) for p in prefixes[index])
        cache.update(key.contiguous(), value.contiguous(), index)
    return cache


@pytest.mark.parametrize(
    ("name", "implementation"),
    [(name, None) for name in FAMILIES] + [("tiny_llama", "eager"), ("tiny_gpt_neox", "eager")],
)
def test_the_prefix_equals_a_cache_prefilled_with_it(name: str, implementation: str | None) -> None:
    model, reference = _build(name, implementation, **PREFIX)
    ids, mask = _batch()
    with torch.no_grad():
        ours = model.encode(ids, mask)
        cache = _prefilled_cache(model, reference, KV_HEADS[name])
        # The cache holds 3 earlier positions; the real tokens keep positions 0..6 and see all of them.
        theirs = reference(
            input_ids=ids,
            attention_mask=torch.cat([torch.ones(3, 3, dtype=mask.dtype), mask], dim=1),
            position_ids=torch.arange(7).expand(3, -1),
            cache=cache,
            use_cache=True,
        ).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def _exact_count(sa: int, pa: int, prefix_len: int, bottleneck: int, kv_width: int, layers: int = 2) -> int:
    """A hand count on D_h = 64: each adapter 2 D D_h + D + D_h; the prefix embedding and its MLP."""
    adapters = sum(2 * d * 64 + d + 64 for d in (sa, pa) if d)
    prefix = prefix_len * 64 + (64 * bottleneck + bottleneck) + (bottleneck + 1) * layers * 2 * kv_width
    return layers * adapters + (prefix if prefix_len else 0)


MODULES = {"sa_size": 8, "pa_size": 4, "prefix_len": 5, "prefix_bottleneck": 16}


@pytest.mark.parametrize("name", FAMILIES)
def test_module_counts_are_exact(name: str) -> None:
    model, _ = _build(name, **MODULES)
    shape = _backbone(name).shape
    report = parameter_report(model, model.spec, shape, _backbone(name).num_params)
    assert report["trainable_peft_params"] == _exact_count(8, 4, 5, 16, KV_HEADS[name] * HEAD_DIM)
    assert report["paper_params"] == 2 * (2 * 8 * 64 + 2 * 4 * 64 + 2 * 5 * 64)  # the paper's formula, 2 layers


def test_mode_params_counts_decoder_modules_on_the_meta_device(compose_cfg: Callable) -> None:
    overrides = [f"peft.{key}={value}" for key, value in MODULES.items()]
    report = mode_params(compose_cfg("backbone=tiny_gemma", "task=snli_binary", "peft=head_only", *overrides))
    assert report["trainable_peft_params"] == _exact_count(8, 4, 5, 16, 2 * HEAD_DIM)
    assert report["head_params"] == 64 * 2


def test_a_layer_mask_inserts_in_the_chosen_layers_only() -> None:
    model, _ = _build("tiny_mistral", sa_size=8, **{**PREFIX, "layers": [1]})
    first, second = backbone_layers(model.encoder)
    assert not isinstance(first.mlp, DecoderAdaptedMLP) and not isinstance(first.self_attn, PrefixDecoderAttention)
    assert isinstance(second.mlp, DecoderAdaptedMLP) and isinstance(second.self_attn, PrefixDecoderAttention)
    assert model.prefix_encoder().shape == (1, 2, 3, 2 * HEAD_DIM)
    assert second.self_attn.slot == 0


def test_lora_goes_inside_the_adapter_and_prefix_wrappers() -> None:
    model, _ = _build("tiny_llama", pa_size=4, lora_rank=2, lora_targets="all", **PREFIX)
    layer = backbone_layers(model.encoder)[0]
    assert isinstance(layer.self_attn.base.q_proj, LoRALinear) and isinstance(layer.mlp.base.down_proj, LoRALinear)
    ids, mask = _batch()
    model(ids, mask).sum().backward()
    assert layer.self_attn.base.q_proj.lora_b.grad.abs().sum() > 0


def test_an_attention_without_a_mask_tensor_is_refused_in_one_line() -> None:
    loaded = _backbone("tiny_qwen2")
    backbone = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
    backbone.model.config._attn_implementation = "flash_attention_2"  # the name is enough: refused before use
    spec = peft_from_config({"layers": "all", **PREFIX}, backbone.shape)
    with pytest.raises(ConfigError) as caught:
        AutoPeftModel(backbone, spec, "classification", 2)
    assert str(caught.value) == (
        "prefix-tuning on decoder backbones needs an attention implementation in 'eager', 'sdpa'; "
        "this 'qwen2' backbone uses 'flash_attention_2'"
    )
    # Switching after injection is caught at the next forward pass, not deep inside transformers.
    model, _ = _build("tiny_qwen2", **PREFIX)
    model.encoder.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match=r"^prefix-tuning on decoder backbones needs .* uses 'flash_attention_2'$"):
        model.encode(*_batch())


@pytest.mark.parametrize(
    ("options", "module"),
    [
        ({"lora_rank": 8, "gated": True}, "UniPELT gates"),
        ({"sa_size": 8, "layer_switch": True}, "Adaptable Adapters' layer switches"),
        ({"sa_size": 8, "adamix_experts": 4}, "AdaMix"),
    ],
)
def test_gates_switches_and_adamix_stay_refused_in_one_line(options: dict, module: str) -> None:
    with pytest.raises(ConfigError) as caught:
        peft_from_config({"layers": "all", **options}, _backbone("tiny_gemma").shape)
    assert str(caught.value) == (
        f"{module}: not supported on decoder backbones yet (backbone 'tiny_gemma' is 'gemma'); supported there: "
        "serial and parallel adapters (peft=sa, peft=pa), prefix-tuning (peft=prefix), LoRA (peft=lora) and their "
        "combinations (e.g. peft=mam), full fine-tuning (peft=fft) and the task head alone (peft=head_only)"
    )


def test_the_autopeft_space_takes_decoders(compose_cfg: Callable) -> None:
    info = mode_space(compose_cfg("backbone=tiny_qwen2", "space=autopeft"))
    assert info["modules"] == ["sa", "pa", "prefix"] and info["num_layers"] == 2
    assert info["choices"]["prefix"] == [0, 1, 2, 4, 8, 16, 32, 64]  # D_h = 64 halved down to 1


def test_float32_adapters_run_in_a_half_precision_decoder() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Linear(8, 8).to(torch.bfloat16)
    adapted = DecoderAdaptedMLP(mlp, Bottleneck(8, 2, init="bert"), Bottleneck(8, 2, init="bert"), 4.0)
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    out = adapted(x)  # no autocast: the float32 adapters compute in float32 and hand back bf16
    assert out.dtype == torch.bfloat16
    expected = mlp(x).float() + adapted.serial(mlp(x).float()) + 4.0 * adapted.parallel(x.float())
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_an_export_with_every_decoder_module_loads_back_and_scores_the_same(tiny_cfg: Callable, tmp_path: Path) -> None:
    overrides = ["peft.sa_size=4", "peft.pa_size=4", "peft.prefix_len=3", "peft.prefix_bottleneck=16"]
    cfg = tiny_cfg("backbone=tiny_llama", "peft=head_only", *overrides, "task=snli_binary")
    torch.manual_seed(int(cfg.seed))  # as training seeds it: the loader rebuilds the random backbone from the seed
    setup = build(TrainingJob.from_config(cfg))
    with torch.no_grad():  # non-zero up-projections, so that the round trip has something to lose
        for name, param in setup.model.named_parameters():
            if name.endswith("up.weight"):
                param.normal_(std=0.1)
    predictor = load_export(save_export(setup.model, cfg, tmp_path / "export", tokenizer=setup.backbone.tokenizer))
    rows = [{"premise": "A man plays a guitar.", "hypothesis": "A man makes music."}]
    batch = setup.backbone.tokenizer(rows[0]["premise"], rows[0]["hypothesis"], return_tensors="pt")
    setup.model.eval()
    with torch.no_grad():
        expected = setup.model(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(predictor.scores(rows), expected, atol=1e-5, rtol=1e-5)
