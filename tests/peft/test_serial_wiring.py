"""The serial adapter's two wirings against independent computations, and what initialisation gives.

The reference below recomputes one adapted FFN output block from the raw weight tensors with
``torch.nn.functional``, following the order of operations of the authors' AdapterHub fork
(cambridgeltl/autopeft, ``modeling_sappa.py``, ``Adapter.pre_forward`` -> ``forward`` ->
``post_forward`` with ``AutoPEFTConfig``: ``original_ln_before``, ``residual_before_ln``,
``original_ln_after`` all true, ``scaling`` 1 for SA and 4 for PA, no adapter LayerNorms).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn import functional as F

from autopeft.peft import PeftSpec
from autopeft.peft.adapters import BERT_INIT_STD
from autopeft.peft.params import parameter_report
from autopeft.training.model import AutoPeftModel
from tests.helpers import as_backbone, batch, frozen_copy, tiny_encoder

ALL = (0, 1, 2)


def _model(spec: PeftSpec) -> AutoPeftModel:
    return AutoPeftModel(as_backbone(tiny_encoder()), spec, "classification", 2).eval()


def _adapter(linear_down: torch.nn.Linear, linear_up: torch.nn.Linear, z: torch.Tensor) -> torch.Tensor:
    return F.linear(torch.relu(F.linear(z, linear_down.weight, linear_down.bias)), linear_up.weight, linear_up.bias)


def _reference_block(block: torch.nn.Module, inter: torch.Tensor, x: torch.Tensor, placement: str) -> torch.Tensor:
    """One adapted block recomputed from its tensors (AdapterHub's pre_forward/forward/post_forward)."""
    ln = block.base.LayerNorm

    def layer_norm(z: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(z, ln.normalized_shape, ln.weight, ln.bias, ln.eps)

    h = F.linear(inter, block.base.dense.weight, block.base.dense.bias)  # dropout is off in eval
    # pre_forward: residual = h (residual_before_ln); the adapter input is LN(h + x) (original_ln_before).
    residual = h
    sa_input = layer_norm(h + x) if placement == "pfeiffer" else h
    sa_states = _adapter(block.serial.down, block.serial.up, sa_input) * 1.0 + residual
    pa_states = _adapter(block.parallel.down, block.parallel.up, x) * 4.0
    # post_forward: LN(pa + sa_states + x) (original_ln_after).
    return layer_norm(pa_states + sa_states + x)


@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
def test_adapted_block_matches_the_reference_computation(placement: str) -> None:
    model = _model(PeftSpec(layers=(0,), sa_size=4, pa_size=6, sa_placement=placement))
    block = model.encoder.encoder.layer[0].output
    torch.manual_seed(7)
    with torch.no_grad():
        for param in (*block.serial.parameters(), *block.parallel.parameters()):
            param.normal_(0, 0.3)  # every weight and bias matters in the comparison
        inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
        torch.testing.assert_close(block(inter, x), _reference_block(block, inter, x, placement))


def test_the_two_wirings_differ_once_the_adapter_is_not_zero() -> None:
    """Same weights, two wirings: a test that could not tell them apart would prove nothing."""
    outputs = []
    for placement in ("pfeiffer", "houlsby"):
        model = _model(PeftSpec(layers=(0,), sa_size=4, sa_placement=placement))
        block = model.encoder.encoder.layer[0].output
        torch.manual_seed(8)
        with torch.no_grad():
            for param in block.serial.parameters():
                param.normal_(0, 0.3)
            inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
            outputs.append(block(inter, x))
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-3)


def test_the_default_is_the_papers_wiring_and_initialisation() -> None:
    spec = PeftSpec(layers=ALL, sa_size=8)
    assert (spec.sa_placement, spec.adapter_init) == ("pfeiffer", "adapterhub")


def test_adapterhub_initialisation_as_the_authors_code() -> None:
    """SA: both projections ~ N(0, 0.02), zero biases ("bert"); PA: Kaiming down, zero up and biases."""
    model = _model(PeftSpec(layers=ALL, sa_size=16, pa_size=16))
    serial_weights, parallel_up = [], []
    for layer in model.encoder.encoder.layer:
        block = layer.output
        for linear in (block.serial.down, block.serial.up):
            serial_weights.append(linear.weight.flatten())
            assert torch.count_nonzero(linear.bias) == 0
        assert torch.count_nonzero(block.parallel.down.bias) == 0
        assert torch.count_nonzero(block.parallel.down.weight) == block.parallel.down.weight.numel()
        parallel_up.extend([block.parallel.up.weight, block.parallel.up.bias])
    weights = torch.cat(serial_weights)
    assert abs(weights.mean().item()) < 0.002
    assert weights.std().item() == pytest.approx(BERT_INIT_STD, rel=0.05)
    assert all(torch.count_nonzero(t) == 0 for t in parallel_up)


@pytest.mark.parametrize(
    ("spec", "identity"),
    [
        (PeftSpec(layers=ALL, pa_size=8), True),  # PA: zero up-projection under either initialisation
        (PeftSpec(layers=ALL, lora_rank=4), True),  # LoRA: B = 0
        (PeftSpec(layers=ALL, sa_size=8, adapter_init="zero_up"), True),  # Pfeiffer with f_SA = 0: LN(h + x)
        (PeftSpec(layers=ALL, sa_size=8), False),  # AdapterHub's SA starts as a small random map
        (PeftSpec(layers=ALL, sa_size=8, pa_size=8, sa_placement="houlsby"), False),
    ],
    ids=["pa", "lora", "sa-zero_up", "sa-adapterhub", "sa+pa-houlsby-adapterhub"],
)
def test_which_configurations_are_identities_at_initialisation(spec: PeftSpec, identity: bool) -> None:
    encoder = tiny_encoder()
    reference = frozen_copy(encoder)
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    ids, mask = batch()
    with torch.no_grad():
        got = model.encode(ids, mask)
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(got, expected) == identity
    if not identity:  # N(0, 0.02) weights: a perturbation, not a different model
        assert (got - expected).abs().max().item() < 0.05


@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
@pytest.mark.parametrize("init", ["adapterhub", "zero_up"])
def test_wiring_and_initialisation_do_not_change_parameter_counts(placement: str, init: str) -> None:
    spec = PeftSpec(layers=(1, 2), sa_size=8, pa_size=4, prefix_len=3, prefix_bottleneck=16)
    other = replace(spec, sa_placement=placement, adapter_init=init)
    reports = [parameter_report(_model(s), s, as_backbone(tiny_encoder()).shape, 1_000_000) for s in (spec, other)]
    assert reports[0] == reports[1]
    assert reports[0]["paper_params"] == 2 * 32 * (8 + 4 + 3) * 2  # 2 D D_h per module per layer, 2 layers
