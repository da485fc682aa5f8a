"""Per-layer LoRA ranks and DoRA on every tiny decoder family (and BERT), checked against peft itself.

For each family one configuration mixes ranks by group, by layer and by single projection
(``lora_rank 4``, ``attention 8``, ``1.mlp 2``, and one projection of layer 0 off). peft 0.21.2
is given the same configuration by hand (``LoraConfig`` with exact ``target_modules``,
``rank_pattern``, ``alpha_pattern``, ``use_dora``) on a copy of the same base model, and must
train exactly as many parameters, start from the same outputs (both unchanged at step 0) and,
with the same non-zero factors and magnitudes, compute the same hidden states and gradients.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import peft
import pytest
import torch
from torch import nn

from autopeft.errors import ConfigError
from autopeft.peft import PeftSpec, validate_spec
from autopeft.peft.families import FAMILIES, lora_group_of
from autopeft.peft.lora import LoRALinear
from autopeft.peft.params import parameter_report
from autopeft.training.model import AutoPeftModel
from tests.helpers import TINY_DECODERS, tiny_backbone

#: The tiny config of every decoder family, and BERT's.
NAMES = [*TINY_DECODERS, "tiny_bert"]
#: Matching a peft forward and its gradients: the same arithmetic, in nearly the same order.
ATOL = 1e-5


_backbone = tiny_backbone


def _off_target(name: str) -> str:
    """The projection the pattern switches off in layer 0: ``value``, or the attention output where q/k/v are fused."""
    return "value" if "value" in _targets(name) else "attention_output"


def _targets(name: str) -> tuple[str, ...]:
    """Every projection the family lets LoRA adapt."""
    return tuple(FAMILIES[_backbone(name).model.config.model_type].lora_targets)


def _spec(name: str, use_dora: bool, rule: str = "rank_multiple", dropout: float = 0.0) -> PeftSpec:
    """lora_rank 4, attention 8, layer 1's MLP 2, one projection of layer 0 off (validated)."""
    pattern = {"attention": 8, "1.mlp": 2, f"0.{_off_target(name)}": 0}
    spec = PeftSpec(
        layers=(0, 1),
        lora_rank=4,
        lora_alpha=2.0 if rule == "rank_multiple" else 8.0,
        lora_alpha_rule=rule,
        lora_targets=_targets(name),
        lora_rank_pattern=tuple(sorted(pattern.items())),
        lora_dropout=dropout,
        use_dora=use_dora,
    )
    return validate_spec(spec, _backbone(name).shape)


def _expected_rank(name: str, layer: int, target: str) -> int:
    """The pattern of :func:`_spec` read by hand: the most specific key wins."""
    if layer == 0 and target == _off_target(name):
        return 0
    if layer == 1 and lora_group_of(target) == "mlp":
        return 2
    return 8 if lora_group_of(target) == "attention" else 4


def _sites(name: str) -> dict[str, int]:
    """Module path in the base model -> rank, for every projection the pattern leaves on."""
    family = FAMILIES[_backbone(name).model.config.model_type]
    return {
        f"{family.layers}.{layer}.{path}": rank
        for layer in (0, 1)
        for target, path in family.lora_targets.items()
        if (rank := _expected_rank(name, layer, target))
    }


def _ours(name: str, spec: PeftSpec) -> tuple[AutoPeftModel, nn.Module]:
    """AutoPEFT's model of ``spec`` on a copy of the backbone, and an untouched copy of the base model."""
    backbone = copy.deepcopy(_backbone(name))
    plain = copy.deepcopy(backbone.model).eval()
    torch.manual_seed(1)
    return AutoPeftModel(backbone, spec, "classification", 2).eval(), plain


def _peft(name: str, spec: PeftSpec, base: nn.Module) -> peft.PeftModel:
    """peft's model of the same configuration on ``base``, its rank and alpha given per module by hand."""
    sites = _sites(name)
    alpha = {
        path: spec.lora_alpha * rank if spec.lora_alpha_rule == "rank_multiple" else spec.lora_alpha
        for path, rank in sites.items()
    }
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8.0,
        target_modules=sorted(sites),
        rank_pattern={re.escape(path): rank for path, rank in sites.items()},
        alpha_pattern={re.escape(path): value for path, value in alpha.items()},
        lora_dropout=spec.lora_dropout,
        use_dora=spec.use_dora,
        # GPT-2's projections are Conv1D (in x out); peft would flip this itself, with a warning.
        fan_in_fan_out=name == "tiny_gpt2",
    )
    return peft.get_peft_model(base, config)


def _batch(name: str) -> dict[str, torch.Tensor]:
    """A right-padded batch of two texts of different lengths."""
    batch = _backbone(name).tokenizer(["a fine film", "not a fine film at all, and far too long"], padding=True)
    tensors = {key: torch.tensor(batch[key]) for key in ("input_ids", "attention_mask")}
    assert tensors["attention_mask"][0, -1] == 0  # padded
    return tensors


def _hidden(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).last_hidden_state


def _copy_into_peft(ours: AutoPeftModel, theirs: peft.PeftModel, sites: dict[str, int]) -> None:
    """Give every peft LoRA module the factors (and magnitude) of ours."""
    with torch.no_grad():
        for path, rank in sites.items():
            mine = ours.encoder.get_submodule(path)
            other = theirs.base_model.model.get_submodule(path)
            assert isinstance(mine, LoRALinear) and mine.lora_a.shape[0] == rank
            other.lora_A["default"].weight.copy_(mine.lora_a)
            other.lora_B["default"].weight.copy_(mine.lora_b)
            if mine.use_dora:
                other.lora_magnitude_vector["default"].weight.copy_(mine.lora_magnitude)


@pytest.mark.parametrize("name", NAMES)
def test_per_layer_ranks_and_dora_count_as_peft_counts(name: str) -> None:
    for use_dora in (False, True):
        spec = _spec(name, use_dora)
        model, plain = _ours(name, spec)
        adapted = {
            f"{n.removesuffix('.base')}": m.lora_a.shape[0]
            for n, m in model.encoder.named_modules()
            if isinstance(m, LoRALinear)
        }
        assert adapted == _sites(name)  # exactly the projections and ranks the pattern names
        theirs = _peft(name, spec, plain)
        peft_count = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
        backbone = _backbone(name)
        report = parameter_report(model, spec, backbone.shape, backbone.num_params)
        assert report["trainable_peft_params"] == peft_count
        widths = {path: model.encoder.get_submodule(path).out_features for path in adapted}
        if use_dora:
            assert report["dora_params"] == sum(widths.values()) > 0
            magnitudes = sum(p.numel() for n, p in theirs.named_parameters() if "lora_magnitude_vector" in n)
            assert report["dora_params"] == magnitudes
        else:
            assert "dora_params" not in report
        # The paper's count prices DoRA as LoRA: 2 r D_h per projection, magnitudes left out.
        assert report["paper_params"] == sum(2 * r * backbone.shape.hidden_size for r in adapted.values())


@pytest.mark.parametrize("name", NAMES)
def test_lora_and_dora_leave_the_outputs_unchanged_at_step_0(name: str) -> None:
    batch = _batch(name)
    for use_dora in (False, True):
        model, plain = _ours(name, _spec(name, use_dora, rule="constant"))
        with torch.no_grad():
            before, after = _hidden(plain, batch), _hidden(model.encoder, batch)
        assert torch.equal(before, after)
        if use_dora:  # the magnitude starts at the norm of each output feature's weights
            module = next(m for m in model.encoder.modules() if isinstance(m, LoRALinear))
            torch.testing.assert_close(module.lora_magnitude, module.base_weight().norm(dim=1))


@pytest.mark.parametrize("name", NAMES)
def test_dora_computes_what_peft_computes_with_the_same_weights(name: str) -> None:
    """Eval without dropout, then training with dropout (same seed, so the same masks), and the gradients."""
    batch = _batch(name)
    sites = _sites(name)
    for dropout in (0.0, 0.1):
        spec = _spec(name, use_dora=True, dropout=dropout)
        model, plain = _ours(name, spec)
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for module in model.encoder.modules():
                if isinstance(module, LoRALinear):
                    module.lora_b.normal_(std=0.2, generator=gen)
                    module.lora_magnitude.mul_(1 + 0.1 * torch.randn(module.lora_magnitude.shape, generator=gen))
        theirs = _peft(name, spec, plain)
        _copy_into_peft(model, theirs, sites)
        if dropout == 0:
            model.eval(), theirs.eval()
            with torch.no_grad():
                ours_out, peft_out = _hidden(model.encoder, batch), _hidden(theirs, batch)
            diff = (ours_out - peft_out).abs().max().item()
            print(f"DoRA vs peft, {name}: max abs diff {diff:.3g}")
            assert diff < ATOL
            # The DoRA update is really there: the untouched base model differs.
            assert (ours_out - _hidden(copy.deepcopy(_backbone(name).model).eval(), batch)).abs().max() > 1e-3
            continue
        model.train(), theirs.train()
        torch.manual_seed(3)
        ours_out = _hidden(model.encoder, batch)
        torch.manual_seed(3)
        peft_out = _hidden(theirs, batch)
        assert (ours_out - peft_out).abs().max().item() < ATOL
        ours_out.square().sum().backward()
        peft_out.square().sum().backward()
        for path in sites:
            mine, other = model.encoder.get_submodule(path), theirs.base_model.model.get_submodule(path)
            for got, want in (
                (mine.lora_a.grad, other.lora_A["default"].weight.grad),
                (mine.lora_b.grad, other.lora_B["default"].weight.grad),
                (mine.lora_magnitude.grad, other.lora_magnitude_vector["default"].weight.grad),
            ):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_merged_weight_folds_lora_and_dora_into_the_base(name: str = "tiny_gpt2") -> None:
    """``merged_weight`` in the base's own layout gives the adapted projection's output (Conv1D and Linear)."""
    torch.manual_seed(0)
    for base in (copy.deepcopy(_backbone(name).model.h[0].mlp.c_fc), nn.Linear(8, 6)):
        for use_dora in (False, True):
            module = LoRALinear(base, 3, 6.0, use_dora=use_dora)
            with torch.no_grad():
                module.lora_b.normal_(std=0.5)
                if use_dora:
                    module.lora_magnitude.mul_(1.5)
            x = torch.randn(2, 5, module.in_features)
            merged = copy.deepcopy(base)
            merged.weight.data = module.merged_weight()
            with torch.no_grad():
                torch.testing.assert_close(merged(x), module(x), rtol=0, atol=1e-5)


def test_dora_refuses_a_gate_and_a_quantized_weight() -> None:
    with pytest.raises(ValueError, match="DoRA takes no UniPELT gate"):
        LoRALinear(nn.Linear(4, 4), 2, 4.0, gate=nn.Identity(), use_dora=True)
    with pytest.raises(ConfigError, match=r"use_dora=true cannot be combined with peft\.gated=true"):
        validate_spec(PeftSpec(layers=(0,), lora_rank=2, use_dora=True, gated=True), _backbone("tiny_bert").shape)
    packed = nn.Linear(4, 4)
    packed.weight = nn.Parameter(torch.zeros(4, 4, dtype=torch.uint8), requires_grad=False)  # as 4-bit storage
    with pytest.raises(ValueError, match=r"DoRA needs a floating-point base weight; this one is torch\.uint8"):
        LoRALinear(packed, 2, 4.0, use_dora=True)
    assert LoRALinear(packed, 2, 4.0).lora_magnitude is None  # plain LoRA never reads the weight
