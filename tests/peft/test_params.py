"""Parameter accounting against the paper's formulas (appendix A) and the peft library."""

from __future__ import annotations

from collections.abc import Callable

import peft
import pytest
import torch
from omegaconf import DictConfig
from transformers import BertConfig, BertModel

from autopeft.experiments.modes import mode_params
from autopeft.peft import PeftSpec, peft_from_config
from autopeft.peft.params import parameter_report
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel


def _report(cfg: DictConfig) -> dict:
    backbone = load_backbone(cfg.backbone, weights=False)
    spec = peft_from_config(cfg.peft, backbone.shape)
    with torch.device("meta"):
        model = AutoPeftModel(backbone, spec, "classification", 2)
    return parameter_report(model, spec, backbone.shape, backbone.num_params)


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [("bert_base_arch", 109_482_240), ("bert_large_arch", 335_141_888), ("roberta_large_arch", 355_359_744)],
)
def test_backbone_sizes_match_the_published_models(compose_cfg: Callable, backbone: str, expected: int) -> None:
    cfg = compose_cfg(f"backbone={backbone}")
    assert load_backbone(cfg.backbone, weights=False).num_params == expected


@pytest.mark.parametrize(("backbone", "d_h"), [("bert_base_arch", 768), ("bert_large_arch", 1024)])
def test_adapter_and_prefix_counts_follow_the_paper(compose_cfg: Callable, backbone: str, d_h: int) -> None:
    layers = [4, 5, 6, 7, 8, 9, 10, 11]
    cfg = compose_cfg(
        f"backbone={backbone}",
        "peft=head_only",
        f"peft.layers={layers}",
        "peft.sa_size=48",
        "peft.pa_size=24",
        "peft.prefix_len=6",
    )
    report = _report(cfg)
    n = len(layers)
    paper = n * (2 * 48 * d_h + 2 * 24 * d_h + 2 * 6 * d_h)
    assert report["paper_params"] == paper
    assert report["paper_percent"] == pytest.approx(100 * paper / report["backbone_params"])
    adapters = n * ((2 * 48 * d_h + 48 + d_h) + (2 * 24 * d_h + 24 + d_h))
    prefix = 6 * d_h + (d_h * 800 + 800) + (800 * n * 2 * d_h + n * 2 * d_h)  # embedding + shared 800-wide MLP
    head = (d_h * d_h + d_h) + (d_h * 2 + 2)
    assert report["trainable_peft_params"] == adapters + prefix
    assert report["head_params"] == head
    assert report["trainable_params"] == adapters + prefix + head


def test_mode_params_prints_the_json_contract(compose_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    report = mode_params(compose_cfg("mode=params", "backbone=bert_base_arch", "peft=sa", "peft.layers=all"))
    assert report["paper_params"] == 2 * 48 * 768 * 12 == 884_736
    assert report["paper_percent"] == pytest.approx(0.80811, abs=1e-5)
    printed = capsys.readouterr().out
    for key in ("paper_params", "trainable_params", "backbone_params", "paper_percent"):
        assert f'"{key}"' in printed


def test_full_finetuning_counts_every_weight(compose_cfg: Callable) -> None:
    report = _report(compose_cfg("backbone=bert_base_arch", "peft=fft"))
    assert report["paper_percent"] == 100.0
    pooler = 768 * 768 + 768  # detached from the encoder; the head's dense layer takes its place
    assert report["trainable_peft_params"] == report["backbone_params"] - pooler


@pytest.mark.parametrize("targets", [("query", "value"), ("query", "key", "value", "intermediate", "output")])
def test_lora_count_matches_the_peft_library(targets: tuple[str, ...]) -> None:
    config = BertConfig(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=384)
    hf_modules = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }
    reference = peft.get_peft_model(
        BertModel(config, add_pooling_layer=False),
        # A full-match regex: a suffix list would let "output.dense" also catch "attention.output.dense".
        peft.LoraConfig(
            r=8,
            lora_alpha=8,
            bias="none",
            target_modules=r".*layer\.\d+\.(" + "|".join(hf_modules[t].replace(".", r"\.") for t in targets) + ")",
        ),
    )
    library_count, _ = reference.get_nb_trainable_parameters()

    from tests.helpers import as_backbone

    spec = PeftSpec(layers=(0, 1, 2), lora_rank=8, lora_targets=targets)
    model = AutoPeftModel(as_backbone(BertModel(config)), spec, "classification", 2)
    report = parameter_report(model, spec, as_backbone(BertModel(config)).shape, 1)
    assert report["trainable_peft_params"] == library_count
    square = sum(t in ("query", "key", "value") for t in targets)
    assert report["paper_params"] == 3 * 2 * 8 * 96 * len(targets)
    if len(targets) == square:  # the paper's 2 r D_h is exact for square projections
        assert report["paper_params"] == library_count
