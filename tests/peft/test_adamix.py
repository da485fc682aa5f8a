"""AdaMix: random routing in training, merged experts in evaluation, consistency loss, counts, preset."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autopeft.errors import ConfigError
from autopeft.export.format import MANIFEST_NAME
from autopeft.export.load import load_export
from autopeft.peft import BackboneShape, PeftSpec, peft_from_config, validate_spec
from autopeft.peft.adamix import (
    AdaMixFeedForwardOutput,
    MergedAdapter,
    MixtureOfAdapters,
    mixtures,
    symmetric_kl,
)
from autopeft.peft.adapters import AdaptedFeedForwardOutput
from autopeft.peft.params import parameter_report
from autopeft.tasks.registry import TASKS
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel
from autopeft.training.module import PeftLightningModule
from autopeft.training.train import TrainingJob, train_and_evaluate
from tests.export.test_export import NEW_SENTENCES, _in_memory_scores, _spy_on_saves
from tests.helpers import as_backbone, batch, frozen_copy, tiny_encoder

ALL = (0, 1, 2)
D_H = 32
MINILM = BackboneShape("minilm", 384, 6, 12)
#: The preset's structure on the tiny encoder: 4 experts of bottleneck 8, shared up-projection.
TINY_ADAMIX = PeftSpec(layers=ALL, sa_size=8, adamix_experts=4, adamix_consistency=1.0)


def _model(spec: PeftSpec = TINY_ADAMIX, seed: int = 0) -> AutoPeftModel:
    torch.manual_seed(seed)
    return AutoPeftModel(as_backbone(tiny_encoder()), spec, "classification", 2)


def _hidden(model: AutoPeftModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(ids, mask)


def _expert_outputs(mixture: MixtureOfAdapters, h: torch.Tensor) -> dict[tuple[int, int], torch.Tensor]:
    """f(h) for every (down expert, up expert) pair, computed from the stacked weights."""
    down, up = mixture.down, mixture.up
    return {
        (i, j): F.linear(F.gelu(F.linear(h, down.weight[i], down.bias[i])), up.weight[j], up.bias[j])
        for i in range(down.experts)
        for j in range(up.experts)
    }


def _mixture(share_up: bool = True, share_down: bool = False, seed: int = 0) -> MixtureOfAdapters:
    torch.manual_seed(seed)
    return MixtureOfAdapters(D_H, 8, 4, share_up=share_up, share_down=share_down)


def _adamix_params(d_h: int, d: int, experts: int, share_up: bool = True, share_down: bool = False) -> int:
    """Exact trainable parameters of one layer's mixture: expert projections with biases."""
    down, up = (d_h * d + d), (d * d_h + d_h)
    return down * (1 if share_down else experts) + up * (1 if share_up else experts)


# ----------------------------------------------------------------------------- routing and merging


def test_training_routes_the_whole_batch_to_one_random_expert_per_projection() -> None:
    mixture = _mixture().train()
    h = torch.randn(2, 5, D_H)
    expected = _expert_outputs(mixture, h)
    assert mixture.up.experts == 1 and mixture.down.experts == 4  # the preset's sharing
    torch.manual_seed(1)
    seen = set()
    for _ in range(40):
        out = mixture(h)
        pair = (mixture.down.last_expert, mixture.up.last_expert)
        assert torch.equal(out, expected[pair])  # one expert for every example of the batch
        seen.add(pair)
    assert seen == {(i, 0) for i in range(4)}


def test_down_and_up_projections_are_routed_independently() -> None:
    mixture = _mixture(share_up=False).train()
    torch.manual_seed(2)
    pairs = set()
    for _ in range(200):
        mixture(torch.randn(1, 2, D_H))
        pairs.add((mixture.down.last_expert, mixture.up.last_expert))
    assert pairs == {(i, j) for i in range(4) for j in range(4)}


def test_evaluation_is_deterministic_and_uses_the_averaged_experts() -> None:
    mixture = _mixture(share_up=False).eval()
    h = torch.randn(2, 5, D_H)
    with torch.no_grad():
        first, second = mixture(h), mixture(h)
        down_w, down_b = mixture.down.weight.mean(0), mixture.down.bias.mean(0)
        up_w, up_b = mixture.up.weight.mean(0), mixture.up.bias.mean(0)
        averaged = F.linear(F.gelu(F.linear(h, down_w, down_b)), up_w, up_b)
        merged = mixture.merged()
        singles = _expert_outputs(mixture, h).values()
    assert torch.equal(first, second) and mixture.down.last_expert is None
    torch.testing.assert_close(first, averaged)
    assert isinstance(merged, MergedAdapter) and merged.down.weight.shape == (8, D_H)
    torch.testing.assert_close(merged(h), first)
    assert all(not torch.allclose(first, single, atol=1e-4) for single in singles)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_merged_model_equals_one_adapter_per_layer_with_averaged_weights(model_type: str) -> None:
    torch.manual_seed(0)
    model = AutoPeftModel(as_backbone(tiny_encoder(model_type)), TINY_ADAMIX, "classification", 2).eval()
    ids, mask = batch(pad_id=1 if model_type == "roberta" else 0)
    adamix = _hidden(model, ids, mask)
    for layer in model.encoder.encoder.layer:
        block = layer.output
        assert isinstance(block, AdaMixFeedForwardOutput)
        block.mixture = block.mixture.merged()  # a plain single adapter, same call
    torch.testing.assert_close(_hidden(model, ids, mask), adamix)


def test_adapter_sits_on_the_ffn_output_before_its_dropout() -> None:
    """LayerNorm(dropout(h + f(h)) + x), shown with a dropout stand-in that doubles its input."""

    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    model = _model().eval()
    block = model.encoder.encoder.layer[0].output
    block.base.dropout = Double()
    inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, D_H)
    with torch.no_grad():
        for param in block.mixture.parameters():  # a trained-sized adapter, so the placements differ
            param.normal_(0, 0.5)
        h = block.base.dense(inter)
        f = block.mixture.merged()
        torch.testing.assert_close(block(inter, x), block.base.LayerNorm(2 * (h + f(h)) + x))
        assert not torch.allclose(block(inter, x), block.base.LayerNorm(2 * h + f(2 * h) + x), atol=1e-4)
    for layer in model.encoder.encoder.layer:  # no adapter after the attention block
        assert not any(isinstance(m, MixtureOfAdapters) for m in layer.attention.modules())


def test_experts_start_as_the_source_initialises_them_not_as_the_identity() -> None:
    """AdaMix has no zero initialisation: every expert is its own N(0, 0.02) draw with zero bias."""
    encoder = tiny_encoder()
    reference = frozen_copy(encoder)
    torch.manual_seed(0)
    spec = PeftSpec(layers=ALL, sa_size=64, adamix_experts=4)
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    for mixture in mixtures(model):
        for projection in (mixture.down, mixture.up):
            assert projection.weight.std().item() == pytest.approx(0.02, rel=0.1)
            assert torch.equal(projection.bias, torch.zeros_like(projection.bias))
        assert not torch.equal(mixture.down.weight[0], mixture.down.weight[1])
    ids, mask = batch()
    with torch.no_grad():
        frozen = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(_hidden(model, ids, mask), frozen, atol=1e-6)


def test_adamix_off_keeps_the_serial_adapter_as_it_was() -> None:
    encoder = tiny_encoder()
    reference = frozen_copy(encoder)
    spec = PeftSpec(layers=ALL, sa_size=8, adapter_init="zero_up")
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    assert not mixtures(model)
    assert all(isinstance(layer.output, AdaptedFeedForwardOutput) for layer in model.encoder.encoder.layer)
    ids, mask = batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(_hidden(model, ids, mask), expected)  # zero-initialised SA: identity at init


# ----------------------------------------------------------------------------- consistency loss


def test_symmetric_kl_is_half_the_sum_of_both_kl_directions() -> None:
    p_logits, q_logits = torch.randn(3, 4), torch.randn(3, 4)
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    kl_qp = (q * (q.log() - p.log())).sum(-1).mean()
    kl_pq = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(symmetric_kl(p_logits, q_logits), 0.5 * (kl_qp + kl_pq))
    assert symmetric_kl(p_logits, p_logits.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # Each direction holds the other pass fixed: the first pass's gradient is that of KL(sg(q) || p).
    first, second = p_logits.clone().requires_grad_(), q_logits.clone().requires_grad_()
    symmetric_kl(first, second).backward()
    for mine, other, grad in ((p_logits, q_logits, first.grad), (q_logits, p_logits, second.grad)):
        held = mine.clone().requires_grad_()
        (0.5 * F.kl_div(held.log_softmax(-1), other.softmax(-1), reduction="batchmean")).backward()
        torch.testing.assert_close(grad, held.grad)


def _make_experts_distinct(model: AutoPeftModel, seed: int = 1) -> None:
    """Give the experts and the head weights large enough that swapping an expert moves the logits.

    At their initialisation the experts of a random tiny encoder differ so little that the
    logits of two routed passes differ by about 1e-6: their symmetric KL (about 1e-12) is below
    float32 rounding, so it came out as 0 or 1e-8 depending on the kernel, and a test of
    "positive" passed or failed with the machine and the library versions.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mixture in mixtures(model):
            for weight in (mixture.down.weight, mixture.up.weight):
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
        # The head's output layer starts at std 0.02, which would shrink the difference again.
        model.head.out.weight.copy_(torch.randn(model.head.out.weight.shape, generator=generator))


def _symmetric_kl_float64(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The consistency loss written out from its definition, in float64."""
    p, q = F.softmax(first.detach().double(), -1), F.softmax(second.detach().double(), -1)
    kl_qp = (q * (q.log() - p.log())).sum(-1).mean()
    kl_pq = (p * (p.log() - q.log())).sum(-1).mean()
    return 0.5 * (kl_qp + kl_pq)


def test_consistency_between_two_routed_passes_is_positive_and_trains_the_experts_they_used() -> None:
    model = _model().train()
    for module in model.modules():  # routing alone makes the two passes differ
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    _make_experts_distinct(model)
    ids, mask = batch()
    torch.manual_seed(4)
    first = model(ids, mask)
    used = [{m.down.last_expert} for m in mixtures(model)]
    second = model(ids, mask)
    for experts, mixture in zip(used, mixtures(model), strict=True):
        experts.add(mixture.down.last_expert)
    assert any(len(experts) == 2 for experts in used)  # some layer took another expert
    loss = symmetric_kl(first, second)
    # Far above float32 rounding (~1e-8 for these logits) and equal to the float64 formula.
    assert loss.item() > 1e-6
    torch.testing.assert_close(loss.double(), _symmetric_kl_float64(first, second), rtol=1e-2, atol=0.0)
    loss.backward()
    for experts, mixture in zip(used, mixtures(model), strict=True):
        grads = mixture.down.weight.grad.flatten(1).abs().sum(1)
        assert {i for i in range(4) if grads[i] > 0} == experts
        assert mixture.up.weight.grad.abs().sum() > 0


def _training_loss(module: PeftLightningModule, seed: int, step_batch: dict) -> tuple[torch.Tensor, int]:
    calls = []
    hook = module.model.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(seed)
    with pytest.warns(UserWarning, match="self.log"):  # no Trainer attached in a unit test
        loss = module.training_step(step_batch, 0)
    hook.remove()
    return loss, len(calls)


def test_training_step_adds_the_weighted_consistency_of_a_second_pass() -> None:
    spec = PeftSpec(layers=ALL, sa_size=8, adamix_experts=4, adamix_consistency=0.5)
    model = _model(spec).train()
    module = PeftLightningModule(model, TASKS["rte"], lr=1e-3)
    ids, mask = batch()
    step_batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    loss, passes = _training_loss(module, 7, step_batch)
    torch.manual_seed(7)
    first, second = model(ids, mask), model(ids, mask)
    task_loss = F.cross_entropy(first, step_batch["labels"])
    assert passes == 2
    torch.testing.assert_close(loss, task_loss + 0.5 * symmetric_kl(first, second))
    assert loss > task_loss


@pytest.mark.parametrize(
    ("spec", "task", "passes"),
    [
        (PeftSpec(layers=ALL, sa_size=8, adamix_experts=4, adamix_consistency=0.0), "rte", 1),
        (PeftSpec(layers=ALL, sa_size=8), "rte", 1),
        (TINY_ADAMIX, "stsb", 1),  # a single regression output: the KL would be 0
    ],
)
def test_one_pass_without_consistency_loss(spec: PeftSpec, task: str, passes: int) -> None:
    model = AutoPeftModel(as_backbone(tiny_encoder()), spec, TASKS[task].type, TASKS[task].num_labels).train()
    ids, mask = batch()
    labels = torch.tensor([0.5, 1.0]) if task == "stsb" else torch.tensor([0, 1])
    module = PeftLightningModule(model, TASKS[task], lr=1e-3)
    _, calls = _training_loss(module, 0, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert calls == passes


# ----------------------------------------------------------------------------- counts and validation


@pytest.mark.parametrize(("share_up", "share_down"), [(True, False), (False, True), (False, False)])
def test_counts_follow_the_formulas(share_up: bool, share_down: bool) -> None:
    spec = PeftSpec(layers=ALL, sa_size=8, adamix_experts=4, adamix_share_up=share_up, adamix_share_down=share_down)
    report = parameter_report(_model(spec), spec, as_backbone(tiny_encoder()).shape, 1)
    trained = 3 * _adamix_params(D_H, 8, 4, share_up, share_down)
    assert report["adamix_params"] == report["trainable_peft_params"] == trained
    assert report["adamix_deployed_params"] == 3 * _adamix_params(D_H, 8, 1)  # one merged adapter per layer
    assert report["paper_params"] == 3 * 2 * 8 * D_H  # the deployed adapter, as for a serial adapter


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"adamix_experts": 4}, r"adamix_experts=4 .* needs sa_size > 0"),
        ({"sa_size": 8, "pa_size": 8, "adamix_experts": 4}, r"pa_size = 0.*\(got .*pa_size=8"),
        ({"sa_size": 8, "adamix_experts": 4, "gated": True}, r"gated = false.*gated=True"),
        ({"sa_size": 8, "adamix_experts": 4, "adapter_dropout": 0.1}, r"adapter_dropout=0\.1"),
        ({"sa_size": 8, "adamix_experts": -1}, r"adamix_experts=-1 must be >= 0"),
        ({"sa_size": 8, "adamix_consistency": 1.0}, r"adamix_consistency=1\.0 needs peft\.adamix_experts > 0"),
        ({"sa_size": 8, "adamix_experts": 4, "adamix_consistency": -0.5}, r"adamix_consistency=-0\.5 must be"),
        ({"sa_size": 8, "adamix_experts": 4, "adamix_share_up": "yes"}, r"adamix_share_up='yes' must be true"),
    ],
)
def test_bad_adamix_options_are_refused(values: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        validate_spec(PeftSpec(layers=tuple(range(6)), **values), MINILM)


def test_describe_names_the_mixture() -> None:
    assert TINY_ADAMIX.describe() == "AdaMix SA 8 x4 experts (shared up-projection) on layers 0–2"
    assert PeftSpec(layers=ALL, sa_size=8).describe() == "SA 8 on layers 0–2"


# ----------------------------------------------------------------------------- preset


def test_preset_holds_the_authors_bert_base_settings_and_counts(compose_cfg: Callable) -> None:
    cfg = compose_cfg("peft=adamix", "backbone=bert_base_arch")
    backbone = load_backbone(cfg.backbone, weights=False)
    spec = peft_from_config(cfg.peft, backbone.shape)
    assert (spec.sa_size, spec.adamix_experts, spec.adamix_share_up, spec.adamix_share_down) == (48, 4, True, False)
    assert spec.adamix_consistency == 1.0 and spec.layers == tuple(range(12))
    with torch.device("meta"):
        model = AutoPeftModel(backbone, spec, "classification", 2)
    report = parameter_report(model, spec, backbone.shape, backbone.num_params)
    assert report["paper_params"] == 12 * 2 * 48 * 768 == 884_736
    assert report["trainable_peft_params"] == report["adamix_params"] == 12 * _adamix_params(768, 48, 4) == 2_223_360
    assert report["adamix_deployed_params"] == 12 * _adamix_params(768, 48, 1) == 894_528


def test_preset_trains_logs_its_consistency_and_exports_merged_predictions(
    tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = _spy_on_saves(monkeypatch)
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg("peft=adamix", "mode=train")), tmp_path / "run")
    assert record["status"] == "ok" and math.isfinite(record["score"])
    assert record["peft"]["adamix_experts"] == 4 and record["peft"]["sa_size"] == 8  # TINY's size
    assert record["params"]["adamix_params"] == 2 * _adamix_params(D_H, 8, 4)
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as handle:
        logged = [float(row["train/consistency"]) for row in csv.DictReader(handle) if row.get("train/consistency")]
    assert logged and all(value > 0 for value in logged)

    (model,) = models
    predictor = load_export(tmp_path / "run")
    assert [type(m) for m in mixtures(predictor.model)] == [MixtureOfAdapters] * 2
    for saved, loaded in zip(mixtures(model), mixtures(predictor.model), strict=True):
        assert torch.equal(saved.down.weight.cpu(), loaded.down.weight.cpu())  # every expert travels
    assert torch.equal(predictor.scores(NEW_SENTENCES), _in_memory_scores(model, predictor, NEW_SENTENCES))
    assert MANIFEST_NAME in {p.name for p in (tmp_path / "run" / "export").iterdir()}
