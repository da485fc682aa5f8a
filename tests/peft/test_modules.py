"""PEFT modules on tiny random encoders: identity at initialisation, placement, masking."""

from __future__ import annotations

import pytest
import torch

from autopeft.peft import PeftSpec
from autopeft.peft.adapters import AdaptedFeedForwardOutput
from autopeft.peft.lora import LoRALinear
from autopeft.peft.prefix import PrefixSelfAttention, extend_attention_mask
from autopeft.training.model import AutoPeftModel
from tests.helpers import as_backbone, batch, frozen_copy, tiny_encoder

ALL = (0, 1, 2)
# With zero up-projections every adapter is an exact identity at initialisation, in either
# serial-adapter wiring; AdapterHub's initialisation (the default) keeps it for PA and LoRA only
# (tests/peft/test_serial_wiring.py).
IDENTITY_SPECS = {
    "sa": PeftSpec(layers=ALL, sa_size=8, adapter_init="zero_up"),
    "sa-houlsby": PeftSpec(layers=ALL, sa_size=8, adapter_init="zero_up", sa_placement="houlsby"),
    "pa": PeftSpec(layers=ALL, pa_size=8),
    "lora": PeftSpec(layers=ALL, lora_rank=4, lora_targets=("query", "key", "value", "intermediate", "output")),
    "sa+pa+lora": PeftSpec(layers=(1, 2), sa_size=4, pa_size=16, lora_rank=2, adapter_init="zero_up"),
}


def _injected(spec: PeftSpec, model_type: str = "bert", attn: str = "sdpa") -> tuple[AutoPeftModel, torch.nn.Module]:
    encoder = tiny_encoder(model_type, attn)
    reference = frozen_copy(encoder)
    model = AutoPeftModel(as_backbone(encoder), spec, "classification", 2).eval()
    return model, reference


def _hidden(model: AutoPeftModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(ids, mask)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
@pytest.mark.parametrize("name", list(IDENTITY_SPECS))
def test_adapters_and_lora_are_identity_at_init(name: str, model_type: str) -> None:
    model, reference = _injected(IDENTITY_SPECS[name], model_type)
    ids, mask = batch(pad_id=1 if model_type == "roberta" else 0)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(_hidden(model, ids, mask), expected)


@pytest.mark.parametrize("name", list(IDENTITY_SPECS))
def test_modules_sit_in_the_forward_path(name: str) -> None:
    """Moving the zero-initialised weights off zero must change the output: the modules are wired in."""
    model, reference = _injected(IDENTITY_SPECS[name])
    ids, mask = batch()
    with torch.no_grad():
        for param_name, param in model.encoder.named_parameters():
            if param.requires_grad and ("up." in param_name or "lora_b" in param_name):
                param.normal_(0, 0.5)
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(_hidden(model, ids, mask), expected, atol=1e-4)


def test_insertion_mask_selects_layers() -> None:
    spec = PeftSpec(layers=(0, 2), sa_size=4, prefix_len=3, lora_rank=2)
    model, _ = _injected(spec)
    layers = model.encoder.encoder.layer
    for index, layer in enumerate(layers):
        inserted = index in (0, 2)
        assert isinstance(layer.output, AdaptedFeedForwardOutput) == inserted
        assert isinstance(layer.attention.self, PrefixSelfAttention) == inserted
        query = layer.attention.self.base.query if inserted else layer.attention.self.query
        assert isinstance(query, LoRALinear) == inserted
    assert model.prefix_encoder is not None and model.prefix_encoder.num_layers == 2


def test_houlsby_serial_adapter_follows_equation_one() -> None:
    """Houlsby wiring: LayerNorm(h + ReLU(h W_down) W_up + x) with h the FFN output (eq. 1 literally)."""
    model, _ = _injected(PeftSpec(layers=(0,), sa_size=4, sa_placement="houlsby"))
    block = model.encoder.encoder.layer[0].output
    torch.manual_seed(3)
    with torch.no_grad():
        block.serial.up.weight.normal_()
        inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
        h = block.base.dense(inter)
        expected = block.base.LayerNorm(h + block.serial.up(torch.relu(block.serial.down(h))) + x)
        assert torch.allclose(block(inter, x), expected, atol=1e-6)


def test_parallel_adapter_reads_ffn_input_and_scales_by_four() -> None:
    model, _ = _injected(PeftSpec(layers=(0,), pa_size=4))
    block = model.encoder.encoder.layer[0].output
    assert block.parallel_scale == 4.0
    torch.manual_seed(4)
    with torch.no_grad():
        block.parallel.up.weight.normal_()
        inter, x = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
        h = block.base.dense(inter)
        expected = block.base.LayerNorm(h + 4.0 * block.parallel.up(torch.relu(block.parallel.down(x))) + x)
        assert torch.allclose(block(inter, x), expected, atol=1e-6)


def test_lora_scaling_is_alpha_over_rank() -> None:
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, rank=2, alpha=8.0)
    torch.nn.init.normal_(lora.lora_b)
    x = torch.randn(3, 6)
    expected = base(x) + 4.0 * (x @ lora.lora_a.t() @ lora.lora_b.t())
    assert torch.allclose(lora(x), expected, atol=1e-6)


def test_prefix_of_length_zero_is_off() -> None:
    model, reference = _injected(PeftSpec(layers=ALL, prefix_len=0))
    ids, mask = batch()
    assert model.prefix_encoder is None
    with torch.no_grad():
        assert torch.equal(_hidden(model, ids, mask), reference(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_prefix_changes_attention_and_receives_gradients() -> None:
    """Prefix-tuning is not an identity at initialisation: its keys take attention mass."""
    model, reference = _injected(PeftSpec(layers=ALL, prefix_len=4))
    ids, mask = batch()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(_hidden(model, ids, mask), expected, atol=1e-4)
    model.train()
    model(ids, mask).sum().backward()
    grads = [p.grad for p in model.prefix_encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_prefix_mask_is_right_for_padded_batches(model_type: str, attn: str) -> None:
    """A short sequence gives the same states alone as when padded inside a longer batch."""
    model, _ = _injected(PeftSpec(layers=ALL, prefix_len=5, sa_size=4), model_type, attn)
    pad = 1 if model_type == "roberta" else 0
    ids, mask = batch(pad_id=pad)
    padded = _hidden(model, ids, mask)[1, :5]
    alone = _hidden(model, ids[1:, :5], mask[1:, :5])[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_extend_attention_mask_forms() -> None:
    assert extend_attention_mask(None, 3, torch.float32) is None
    boolean = torch.tensor([[[[True, False]]]])
    assert extend_attention_mask(boolean, 2, torch.float32).tolist() == [[[[True, True, True, False]]]]
    additive = torch.tensor([[[[0.0, -1e9]]]])
    assert extend_attention_mask(additive, 1, torch.float32).tolist() == [[[[0.0, 0.0, -1e9]]]]
    padding = torch.tensor([[1, 0]])
    assert extend_attention_mask(padding, 1, torch.float32).tolist() == [[[[True, True, False]]]]


def test_backbone_is_frozen_and_only_peft_and_head_train() -> None:
    model, _ = _injected(PeftSpec(layers=(1,), sa_size=4, pa_size=4, prefix_len=2, lora_rank=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    for name in trainable:
        assert name.startswith(("head.", "prefix_encoder.")) or any(
            key in name for key in ("serial.", "parallel.", "lora_")
        ), name
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    pretrained = sum(p.numel() for p in tiny_encoder().parameters())
    pooler = sum(p.numel() for p in tiny_encoder().pooler.parameters())
    assert frozen == pretrained - pooler  # every pretrained weight is frozen (the pooler moved to the head)


def test_full_finetune_trains_everything() -> None:
    model, _ = _injected(PeftSpec(full_finetune=True))
    assert all(p.requires_grad for p in model.parameters())


def test_multiple_choice_scores_each_choice_on_its_own() -> None:
    encoder = tiny_encoder()
    model = AutoPeftModel(as_backbone(encoder), PeftSpec(layers=ALL, sa_size=4), "multiple_choice", 2).eval()
    ids = torch.randint(5, 120, (3, 2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        scores = model(ids, mask)
        second = model.head(model.encode(ids[:, 1], mask[:, 1]), mask[:, 1]).squeeze(-1)
    assert scores.shape == (3, 2)
    torch.testing.assert_close(scores[:, 1], second)
