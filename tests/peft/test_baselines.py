"""The paper's remaining baselines: MAM, UniPELT, AdapterDrop and Adaptable Adapters."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.peft import BackboneShape, PeftSpec, layer_switches, peft_from_config, validate_spec
from autopeft.peft.config import resolve_layers
from autopeft.peft.gates import Gate, TokenMask
from autopeft.peft.params import parameter_report
from autopeft.peft.switch import LayerSwitch
from autopeft.training.adaptable import select_layers
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel
from autopeft.training.train import TrainingJob, train_and_evaluate
from tests.helpers import as_backbone, batch, frozen_copy, tiny_encoder

ALL = (0, 1, 2)
MINILM = BackboneShape("minilm", 384, 6, 12)
BERT_LARGE = BackboneShape("bert_large_arch", 1024, 24, 16)
UNIPELT_TINY = PeftSpec(layers=ALL, sa_size=8, prefix_len=4, prefix_bottleneck=16, lora_rank=4, gated=True)


def _model(spec: PeftSpec, seed: int = 0) -> AutoPeftModel:
    torch.manual_seed(seed)
    return AutoPeftModel(as_backbone(tiny_encoder()), spec, "classification", 2).eval()


def _hidden(model: AutoPeftModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(ids, mask)


def _randomise_zero_init(model: AutoPeftModel) -> None:
    """Move the zero-initialised up-projections and LoRA B off zero, so every branch contributes."""
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            if param.requires_grad and ("up." in name or "lora_b" in name):
                param.normal_(0, 0.5)


def _meta_report(cfg) -> dict:
    backbone = load_backbone(cfg.backbone, weights=False)
    spec = peft_from_config(cfg.peft, backbone.shape)
    with torch.device("meta"):
        model = AutoPeftModel(backbone, spec, "classification", 2)
    return parameter_report(model, spec, backbone.shape, backbone.num_params)


def _adapter(d_h: int, d: int) -> int:
    """Exact parameters of one bottleneck adapter: down and up projections with biases."""
    return (d_h * d + d) + (d * d_h + d_h)


def _prefix(d_h: int, length: int, bottleneck: int, layers: int) -> int:
    """Exact parameters of the prefix embedding and its shared reparameterisation MLP."""
    return length * d_h + (d_h * bottleneck + bottleneck) + (bottleneck * layers * 2 * d_h + layers * 2 * d_h)


# ----------------------------------------------------------------------------- layers forms


@pytest.mark.parametrize(
    ("layers", "expected"),
    [("all", tuple(range(6))), ("last:2", (4, 5)), ("first:3", (0, 1, 2)), ("last:6", tuple(range(6)))],
)
def test_named_layer_forms_resolve_against_the_backbone(layers: str, expected: tuple[int, ...]) -> None:
    assert resolve_layers(layers, MINILM) == expected


def test_adapterdrop_keeps_the_last_thirteen_of_twenty_four_layers() -> None:
    layers = resolve_layers("last:13", BERT_LARGE)
    assert layers == tuple(range(11, 24))
    assert PeftSpec(layers=layers, sa_size=128).describe() == "SA 128 on layers 11–23"


@pytest.mark.parametrize(
    ("layers", "pattern"),
    [
        ("last:7", r"peft\.layers='last:7': N=7 is outside 1\.\.6 \(backbone 'minilm' has 6 layers\)"),
        ("first:0", r"peft\.layers='first:0': N=0 is outside 1\.\.6"),
        ("middle:2", r"peft\.layers='middle:2' is not allowed"),
        ("last:two", r"peft\.layers='last:two' is not allowed"),
        ("last", r"peft\.layers='last' is not allowed"),
    ],
)
def test_bad_named_layer_forms_name_the_value_the_layer_count_and_the_forms(layers: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as err:
        resolve_layers(layers, MINILM)
    assert "'all', 'first:N' or 'last:N' (N in 1..6), or a list of layer indices in 0..5" in str(err.value)


# ----------------------------------------------------------------------------- size bounds


def test_mam_sizes_fit_minilm_under_the_ffn_width_bound() -> None:
    spec = PeftSpec(layers=tuple(range(6)), pa_size=512, prefix_len=30)
    assert validate_spec(spec, MINILM) is spec
    assert validate_spec(PeftSpec(layers=(0,), sa_size=1536), MINILM).sa_size == 1536


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"pa_size": 1537}, r"peft\.pa_size=1537 is outside what backbone 'minilm' allows: an integer in \[0, 1536\]"),
        ({"prefix_len": 1537}, r"peft\.prefix_len=1537 .*\[0, 1536\] .*4 D_h"),
        ({"lora_rank": 385}, r"peft\.lora_rank=385 .*\[0, 384\] .*hidden size D_h"),
    ],
)
def test_sizes_above_the_bound_name_value_and_range(values: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_spec(PeftSpec(layers=(0,), **values), MINILM)


# ----------------------------------------------------------------------------- UniPELT gates


def test_gate_is_a_masked_sequence_mean_of_a_sigmoid() -> None:
    tokens = TokenMask()
    gate = Gate(8, tokens)
    with torch.no_grad():
        gate.proj.weight.normal_()
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    per_token = torch.sigmoid(gate.proj(x)).squeeze(-1)
    with tokens.active(mask):
        g = gate(x)
    assert g.shape == (2, 1, 1) and tokens.mask is None
    torch.testing.assert_close(g.flatten(), torch.stack([per_token[0].mean(), per_token[1, :2].mean()]))
    assert bool(((g > 0) & (g < 1)).all())
    torch.testing.assert_close(gate(x).flatten(), per_token.mean(dim=1))  # no mask: every position, as the source


def test_unipelt_puts_one_gate_per_module_per_layer() -> None:
    model = _model(UNIPELT_TINY)
    for layer in model.encoder.encoder.layer:
        assert isinstance(layer.output.serial_gate, Gate) and layer.output.parallel_gate is None
        assert isinstance(layer.attention.self.gate, Gate)
        assert isinstance(layer.attention.self.base.query.gate, Gate)
        assert isinstance(layer.attention.self.base.value.gate, Gate)
        assert not hasattr(layer.attention.self.base.key, "gate")
    assert sum(isinstance(m, Gate) for m in model.modules()) == 3 * 4


def test_gated_adapters_and_lora_are_identity_at_init() -> None:
    """The gates multiply zero-initialised branches, so the frozen model is reproduced exactly."""
    encoder = tiny_encoder()
    reference = frozen_copy(encoder)
    spec = PeftSpec(layers=ALL, sa_size=8, pa_size=4, lora_rank=4, gated=True, adapter_init="zero_up")
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    ids, mask = batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(_hidden(model, ids, mask), expected)
    _randomise_zero_init(model)
    assert not torch.allclose(_hidden(model, ids, mask), expected, atol=1e-4)


def test_gated_serial_adapter_and_lora_follow_their_formulas() -> None:
    model = _model(PeftSpec(layers=(0,), sa_size=4, lora_rank=2, gated=True))
    _randomise_zero_init(model)
    block = model.encoder.encoder.layer[0].output
    query = model.encoder.encoder.layer[0].attention.self.query
    torch.manual_seed(5)
    with torch.no_grad():
        block.serial_gate.proj.weight.normal_()
        inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
        h = block.base.dense(inter)
        z = block.base.LayerNorm(h + x)  # the Pfeiffer serial adapter's (and its gate's) input
        g = torch.sigmoid(block.serial_gate.proj(z)).mean(dim=1, keepdim=True)
        expected = block.base.LayerNorm(h + g * block.serial(z) + x)
        torch.testing.assert_close(block(inter, x), expected)
        g_q = torch.sigmoid(query.gate.proj(x)).mean(dim=1, keepdim=True)
        lora = query.scaling * g_q * (x @ query.lora_a.t() @ query.lora_b.t())
        torch.testing.assert_close(query(x), query.base(x) + lora)


def test_prefix_gate_scales_prefix_keys_and_values() -> None:
    """Gate g on prefix-tuning equals ungated prefix-tuning with prefixes g P_k, g P_v."""
    ungated = PeftSpec(layers=ALL, prefix_len=4, prefix_bottleneck=16)
    gated = PeftSpec(layers=ALL, prefix_len=4, prefix_bottleneck=16, gated=True)
    plain, model = _model(ungated), _model(gated)
    model.prefix_encoder.load_state_dict(plain.prefix_encoder.state_dict())
    ids, mask = batch()
    g = 0.3
    with torch.no_grad():
        for layer in model.encoder.encoder.layer:
            layer.attention.self.gate.proj.weight.zero_()
            layer.attention.self.gate.proj.bias.fill_(math.log(g / (1 - g)))  # sigmoid(bias) == g
        last = plain.prefix_encoder.mlp[-1]  # the prefixes are linear in the MLP's last layer
        last.weight.mul_(g)
        last.bias.mul_(g)
    torch.testing.assert_close(_hidden(model, ids, mask), _hidden(plain, ids, mask))
    with torch.no_grad():
        last.weight.div_(g)
        last.bias.div_(g)
    assert not torch.allclose(_hidden(model, ids, mask), _hidden(plain, ids, mask), atol=1e-3)


def test_gradient_reaches_every_gate() -> None:
    model = _model(UNIPELT_TINY)
    _randomise_zero_init(model)
    model.train()
    ids, mask = batch()
    model(ids, mask).sum().backward()
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    assert len(gates) == 12
    for gate in gates:
        assert gate.proj.weight.grad is not None and gate.proj.weight.grad.abs().sum() > 0


def test_gated_model_ignores_the_padding_of_its_batch() -> None:
    model = _model(UNIPELT_TINY)
    _randomise_zero_init(model)
    ids, mask = batch()
    padded = _hidden(model, ids, mask)[1, :5]
    alone = _hidden(model, ids[1:, :5], mask[1:, :5])[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_unipelt_exact_count_adds_one_gate_of_d_h_plus_one_per_module() -> None:
    model = _model(UNIPELT_TINY)
    report = parameter_report(model, UNIPELT_TINY, as_backbone(tiny_encoder()).shape, 1)
    d_h, n = 32, 3
    gates = n * 4 * (d_h + 1)  # serial adapter, prefix, LoRA on query and on value
    lora = n * 2 * (4 * d_h + d_h * 4)
    expected = n * _adapter(d_h, 8) + _prefix(d_h, 4, 16, n) + lora + gates
    assert report["gate_params"] == gates
    assert report["trainable_peft_params"] == expected
    assert report["paper_params"] == n * (2 * 8 * d_h + 2 * 4 * d_h + 2 * 4 * d_h * 2)  # gates excluded


# ----------------------------------------------------------------------------- Adaptable Adapters switch


def test_switch_draws_hard_choices_with_probability_softmax_of_its_logits() -> None:
    switch = LayerSwitch(temperature=0.1).train()
    with torch.no_grad():
        switch.logits.copy_(torch.tensor([1.0, 0.0]))
    torch.manual_seed(0)
    draws = switch(torch.zeros(4000, 3, 8)).flatten()
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert switch.p_on() == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert draws.mean().item() == pytest.approx(switch.p_on(), abs=0.03)


def test_switch_is_straight_through_in_training_and_deterministic_in_eval() -> None:
    switch = LayerSwitch(temperature=0.5).train()
    switch(torch.zeros(16, 2, 4)).sum().backward()
    assert switch.logits.grad is not None and switch.logits.grad.abs().sum() > 0
    switch.eval()
    with torch.no_grad():
        switch.logits.copy_(torch.tensor([0.0, 0.3]))
    assert not switch.is_on() and torch.equal(switch(torch.zeros(3, 2, 4)), torch.zeros(3, 1, 1))


def test_a_switched_off_layer_skips_its_adapter() -> None:
    spec = PeftSpec(layers=ALL, sa_size=8, layer_switch=True)
    encoder = tiny_encoder()
    reference = frozen_copy(encoder)
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    _randomise_zero_init(model)
    switches = layer_switches(model.encoder)
    assert sorted(switches) == list(ALL)
    ids, mask = batch()
    with torch.no_grad():
        for switch in switches.values():
            switch.logits.copy_(torch.tensor([-1.0, 1.0]))
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(_hidden(model, ids, mask), expected)
    with torch.no_grad():
        switches[1].logits.copy_(torch.tensor([1.0, -1.0]))
    assert not torch.allclose(_hidden(model, ids, mask), expected, atol=1e-4)


def test_switch_params_count_two_logits_per_candidate_layer() -> None:
    spec = PeftSpec(layers=ALL, sa_size=8, layer_switch=True, adaptable_layers=2)
    report = parameter_report(_model(spec), spec, as_backbone(tiny_encoder()).shape, 1)
    assert report["switch_params"] == 3 * 2
    assert report["trainable_peft_params"] == 3 * _adapter(32, 8) + 3 * 2
    assert report["paper_params"] == 2 * (2 * 8 * 32)  # the two layers it will keep


@pytest.mark.parametrize(
    ("p_on", "on", "k", "expected"),
    [
        ({0: 0.2, 1: 0.7, 2: 0.6, 3: 0.4}, [1, 2], 3, (1, 2, 3)),
        ({0: 0.5, 1: 0.5, 2: 0.5}, [0, 1, 2], 2, (0, 1)),  # ties go to the lower layer
        ({0: 0.2, 1: 0.7, 2: 0.6}, [1, 2], None, (1, 2)),
        ({0: 0.2, 1: 0.3}, [], None, ()),
    ],
)
def test_layer_selection_rules(p_on: dict, on: list[int], k: int | None, expected: tuple[int, ...]) -> None:
    assert select_layers(p_on, on, k) == expected


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"sa_size": 8, "adaptable_layers": 2}, r"adaptable_layers=2 needs peft\.layer_switch=true"),
        ({"sa_size": 8, "layer_switch": True, "adaptable_layers": 7}, r"adaptable_layers=7 .* in 1\.\.6"),
        ({"sa_size": 8, "layer_switch": True, "adaptable_layers": 0}, r"adaptable_layers=0 .* in 1\.\.6"),
        ({"sa_size": 8, "lora_rank": 2, "layer_switch": True}, r"layer_switch=true .*lora_rank=2"),
        ({"layer_switch": True}, r"layer_switch=true .*needs sa_size or pa_size > 0"),
        ({"sa_size": 8, "layer_switch": True, "switch_temperature": 0.0}, r"switch_temperature=0\.0 must be > 0"),
        ({"sa_size": 8, "gated": "yes"}, r"peft\.gated='yes' must be true or false"),
    ],
)
def test_bad_switch_and_gate_options_are_refused(values: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_spec(PeftSpec(layers=tuple(range(6)), **values), MINILM)


# ----------------------------------------------------------------------------- presets


def test_mam_preset_counts_on_minilm(compose_cfg: Callable) -> None:
    report = _meta_report(compose_cfg("peft=mam"))
    d_h, n = 384, 6
    assert report["configuration"] == "PA 512 + PT 30 on layers 0–5"
    assert report["paper_params"] == n * (2 * 512 * d_h + 2 * 30 * d_h) == 2_497_536
    assert report["trainable_peft_params"] == n * _adapter(d_h, 512) + _prefix(d_h, 30, 800, n)


def test_unipelt_preset_counts_on_minilm(compose_cfg: Callable) -> None:
    cfg = compose_cfg("peft=unipelt")
    spec = peft_from_config(cfg.peft, MINILM)
    # Pfeiffer's D_h/16 serial adapter: 24 on MiniLM (48 on BERT-base, tests/peft/test_presets.py).
    assert (spec.gated, spec.sa_size, spec.prefix_len, spec.lora_rank, spec.lora_alpha) == (True, 24, 10, 8, 8.0)
    assert spec.lora_targets == ("query", "value")
    report = _meta_report(cfg)
    d_h, n = 384, 6
    gates = n * 4 * (d_h + 1)
    lora = n * 2 * (2 * 8 * d_h)
    assert report["gate_params"] == gates == 9240
    assert report["paper_params"] == n * (2 * 24 * d_h + 2 * 10 * d_h) + lora == 230_400
    assert report["trainable_peft_params"] == n * _adapter(d_h, 24) + _prefix(d_h, 10, 512, n) + lora + gates


def test_adapterdrop_preset_on_bert_large(compose_cfg: Callable) -> None:
    report = _meta_report(compose_cfg("peft=adapterdrop", "backbone=bert_large_arch"))
    assert report["configuration"] == "SA 128 on layers 11–23"
    assert report["paper_params"] == 13 * 2 * 128 * 1024 == 3_407_872
    assert report["trainable_peft_params"] == 13 * _adapter(1024, 128)


def test_adapterdrop_preset_is_refused_on_a_six_layer_backbone(compose_cfg: Callable) -> None:
    cfg = compose_cfg("peft=adapterdrop")
    with pytest.raises(ConfigError, match=r"peft\.layers='last:13': N=13 is outside 1\.\.6"):
        peft_from_config(cfg.peft, MINILM)


def test_adaptable_preset_on_bert_large(compose_cfg: Callable) -> None:
    cfg = compose_cfg("peft=adaptable", "backbone=bert_large_arch")
    spec = peft_from_config(cfg.peft, BERT_LARGE)
    assert (spec.layer_switch, spec.adaptable_layers, spec.sa_size, spec.layers) == (True, 13, 128, tuple(range(24)))
    report = _meta_report(cfg)
    assert report["paper_params"] == 13 * 2 * 128 * 1024  # the 13-layer model it deploys
    assert report["switch_params"] == 24 * 2
    assert report["trainable_peft_params"] == 24 * _adapter(1024, 128) + 24 * 2  # what stage 1 trains


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(("peft", "sizes"), [("unipelt", ["peft.sa_size=8", "peft.prefix_bottleneck=16"])])
def test_gated_preset_trains_through_lightning(tiny_cfg: Callable, tmp_path: Path, peft: str, sizes: list) -> None:
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg(f"peft={peft}", *sizes)), tmp_path)
    assert record["status"] == "ok" and math.isfinite(record["score"])
    assert record["params"]["gate_params"] == 2 * 4 * (32 + 1)
    assert record["peft"]["gated"] is True


@pytest.mark.parametrize("k", [1, None])
def test_adaptable_adapters_select_layers_then_retrain_them(tiny_cfg: Callable, tmp_path: Path, k: int | None) -> None:
    cfg = tiny_cfg("peft=adaptable", "peft.sa_size=8", f"peft.adaptable_layers={'null' if k is None else k}")
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] == "ok" and math.isfinite(record["score"])
    info = record["adaptable"]
    assert set(info["switch_probabilities"]) == {"0", "1"}
    assert all(0.0 < p < 1.0 for p in info["switch_probabilities"].values())
    if k is not None:
        assert len(info["selected_layers"]) == k
        best = max(info["switch_probabilities"], key=lambda i: (info["switch_probabilities"][i], -int(i)))
        assert info["selected_layers"] == [int(best)]
    else:
        assert info["selected_layers"] == info["switched_on"]
    # The record is stage 2's: adapters only in the selected layers, no switches left.
    assert record["peft"]["layers"] == info["selected_layers"]
    assert record["peft"]["layer_switch"] is False and "switch_params" not in record["params"]
    assert record["params"]["paper_params"] == len(info["selected_layers"]) * 2 * 8 * 32
    assert info["stage1"]["status"] == "ok" and info["stage1"]["params"]["switch_params"] == 4
    assert record["total_seconds"] > info["stage1"]["total_seconds"]
    assert (tmp_path / "stage1").is_dir()
