"""Decoder exports for peft and as merged weights: every tiny family's LoRA with per-layer and per-group
ranks (DoRA on Llama, Qwen2 and GPT-2's Conv1D) loads in peft on the family's
``AutoModelForSequenceClassification`` with our logits on a padded batch; a merged folder loads in
plain transformers with our logits; what peft cannot express is refused in one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

from autopeft.export.library import NotExpressible, lora_sites
from autopeft.export.load import load_export
from autopeft.export.peft_format import peft_folder
from autopeft.export.save import save_export
from autopeft.tasks.registry import task_from_config
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer
from tests.export.libraries import INPUTS, base_backbone, batches, exported, ours
from tests.helpers import TINY_DECODERS

#: A round trip through another library: the same arithmetic, in another order.
ATOL = 1e-5
FUSED_QKV = ("tiny_gpt2", "tiny_gpt_neox")
#: (backbone, DoRA): every decoder family with LoRA, and DoRA on two GQA families and GPT-2's Conv1D.
CASES = [
    *[(name, False) for name in TINY_DECODERS],
    ("tiny_llama", True),
    ("tiny_qwen2", True),
    ("tiny_gpt2", True),
]


def _overrides(name: str, dora: bool) -> tuple[str, ...]:
    """Every projection at r 4, attention at r 8, layer 1's MLP at r 2, one projection of layer 0 off."""
    off = "attention_output" if name in FUSED_QKV else "value"
    preset = ("peft=dora",) if dora else ("peft=lora", "peft.lora_rank=4", "peft.lora_targets=all")
    return (
        "mode=train",
        f"backbone={name}",
        "task=rotten_tomatoes",
        "peft.sa_size=0",
        *preset,
        "peft.lora_rank=4",
        f"peft.lora_rank_pattern={{attention: 8, 1.mlp: 2, 0.{off}: 0}}",
    )


def _expected_rank(path: str) -> int:
    """The rank the pattern gives the projection at ``path`` (``model.layers.1.mlp.up_proj``): attention 8,
    layer 1's MLP 2, other MLPs 4 (the projection of layer 0 it switches off is checked to be absent)."""
    if ".mlp." not in path:
        return 8
    return 2 if re.search(r"\.1\.mlp\.", path) else 4


def _task_model(saved_base: Path, entry: dict) -> torch.nn.Module:
    """The family's sequence-classification model from the saved base, as the model card loads it."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        saved_base, num_labels=entry["num_labels"], pad_token_id=entry["pad_token_id"]
    )
    assert type(model).__name__ == entry["model_class"]
    return model.eval()


@pytest.mark.parametrize(("name", "dora"), CASES)
def test_a_decoder_lora_export_loads_in_peft_with_the_same_logits(
    tiny_cfg: Callable, tmp_path: Path, name: str, dora: bool
) -> None:
    cfg = tiny_cfg(*_overrides(name, dora))
    model, path, _ = exported(cfg, tmp_path / "export")
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]
    assert entry["written"] and entry["use_dora"] is dora and entry["pad_token_id"] == 0
    assert f"{entry['model_class']}.from_pretrained(BACKBONE" in (path / "README.md").read_text()
    assert "num_labels=2, pad_token_id=0)" in (path / "README.md").read_text()  # how the card loads it
    config = json.loads((path / "peft" / "adapter_config.json").read_text())
    prefix = {"tiny_gpt2": "transformer.h", "tiny_gpt_neox": "gpt_neox.layers"}.get(name, "model.layers")
    assert all(t.startswith(f"{prefix}.") for t in config["target_modules"])
    assert config["fan_in_fan_out"] is (name == "tiny_gpt2") and config["use_dora"] is dora
    assert config["modules_to_save"] == ["score"]
    # Each module's rank and alpha as peft reads them (rank_pattern, alpha_pattern, else r, lora_alpha).
    ranks = {t: config["rank_pattern"].get(re.escape(t), config["r"]) for t in config["target_modules"]}
    alphas = {t: config["alpha_pattern"].get(re.escape(t), config["lora_alpha"]) for t in config["target_modules"]}
    assert ranks == {t: _expected_rank(t) for t in config["target_modules"]} and set(ranks.values()) == {8, 4, 2}
    # rank_multiple (peft=dora): alpha 2 r follows each rank; constant: alpha 8 everywhere.
    assert alphas == {t: 2.0 * r if dora else 8.0 for t, r in ranks.items()}
    off = [f"{prefix}.0.{p}" for p in ("self_attn.v_proj", "attn.c_proj", "attention.dense")]
    assert not set(off) & set(config["target_modules"]) and len(config["target_modules"]) == len(lora_sites(model))
    tensors = load_file(path / "peft" / "adapter_model.safetensors")
    assert sum(k.endswith(".lora_magnitude_vector") for k in tensors) == (len(config["target_modules"]) if dora else 0)

    base_backbone(cfg).model.save_pretrained(tmp_path / "base")
    peft_model = peft.PeftModel.from_pretrained(_task_model(tmp_path / "base", entry), str(path / "peft")).eval()
    adapted = {n for n, m in peft_model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert adapted == {f"base_model.model.{t}" for t in config["target_modules"]}
    batch = batches(model, cfg, "rotten_tomatoes")
    assert (batch["attention_mask"] == 0).any()  # padded
    expected = ours(model, batch)
    with torch.no_grad():
        got = peft_model(**batch).logits.float()
    diff = (got - expected).abs().max().item()
    print(f"peft round trip, {name} {'DoRA' if dora else 'LoRA'}: max abs diff {diff:.3g}")
    assert diff < ATOL
    with torch.no_grad(), peft_model.disable_adapter():  # the adapter is what loaded
        assert (peft_model(**batch).logits - got).abs().max() > 1e-3


#: A BERT LoRA (pooler and classifier) and a Llama DoRA with per-layer ranks.
MERGED_CASES = {
    "bert-lora": ("mode=train", "peft.sa_size=0", "peft.lora_rank=3", "peft.lora_targets=all"),
    "llama-dora": _overrides("tiny_llama", True),
}


@pytest.mark.parametrize("case", list(MERGED_CASES))
def test_merged_weights_load_in_plain_transformers_with_the_same_logits(
    tiny_cfg: Callable, tmp_path: Path, case: str
) -> None:
    cfg = tiny_cfg(*MERGED_CASES[case])
    model, path, _ = exported(cfg, tmp_path / "export")
    save_export(model, cfg, path, merged=True)
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["merged"]
    assert entry["written"] and entry["auto_class"] == "AutoModelForSequenceClassification"
    merged = transformers.AutoModelForSequenceClassification.from_pretrained(path / "merged").eval()
    assert type(merged).__name__ == entry["model_class"] and entry["merged_lora_modules"] > 0
    assert not any("lora" in name for name, _ in merged.named_parameters())  # a plain model
    texts = INPUTS["rotten_tomatoes"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path / "merged")
    assert tokenizer(texts)["input_ids"] == base_backbone(cfg).tokenizer(texts)["input_ids"]
    batch = batches(model, cfg, "rotten_tomatoes")
    expected = ours(model, batch)
    with torch.no_grad():
        got = merged(**batch).logits.float()
    diff = (got - expected).abs().max().item()
    print(f"merged round trip, {case}: max abs diff {diff:.3g}")
    assert diff < ATOL
    assert "### transformers, merged weights (`merged/`" in (path / "README.md").read_text()
    # AutoPEFT's own export of the same model (DoRA's magnitudes included) loads back to the same outputs.
    torch.testing.assert_close(load_export(path).scores(texts), expected, rtol=0, atol=ATOL)
    # A file of an earlier export's merged folder that this one lacks is removed (a stale vocabulary would load).
    (path / "merged" / "vocab.txt").write_text("stale")
    save_export(model, cfg, path, merged=True)
    assert sorted(p.name for p in (path / "merged").iterdir()) == sorted(entry["files"])
    # An export into the same folder that does not ask for merged weights removes the stale ones.
    save_export(model, cfg, path)
    assert not (path / "merged").exists()
    assert "merged" not in json.loads((path / "autopeft.json").read_text())["libraries"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (("backbone.pooling=mean",), "mean pooling in the head (transformers' task heads read the last real token)"),
        (("task=copa",), "multiple choice on a 'llama' decoder (transformers has no decoder *ForMultipleChoice)"),
        (("peft=head_only",), "no PEFT module (a head-only model has no adapter to write)"),
    ],
)
def test_what_peft_cannot_express_on_a_decoder_is_recorded_and_not_written(
    tiny_cfg: Callable, tmp_path: Path, extra: tuple[str, ...], reason: str
) -> None:
    cfg = tiny_cfg("mode=train", "backbone=tiny_llama", "peft=lora", "peft.sa_size=0", "task=rotten_tomatoes", *extra)
    _, path, _ = exported(cfg, tmp_path / "export")
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]
    assert not entry["written"] and reason in entry["reason"] and not (path / "peft").exists()


def test_a_pad_token_that_ends_real_sequences_is_refused(tiny_cfg: Callable, tmp_path: Path) -> None:
    """Padding with the EOS every sequence ends with: transformers' head would read the token before it."""
    cfg = tiny_cfg("mode=train", "backbone=tiny_llama", "peft=lora", "peft.sa_size=0", "task=rotten_tomatoes")
    model, _, _ = exported(cfg, tmp_path / "export")
    tokenizer = standin_bpe_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(NotExpressible, match=r"pad token \(id 1, '<\|endoftext\|>'\) also occurs in real sequences"):
        peft_folder(model, task_from_config(cfg.task), dict(cfg.backbone), tokenizer)
