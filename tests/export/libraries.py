"""Helpers of the library-export tests: build, perturb and export a tiny model; its base encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from autopeft.export.predictor import Predictor
from autopeft.export.save import save_export
from autopeft.settings import plain
from autopeft.tasks.registry import default_label_names
from autopeft.training.backbones import Backbone, load_backbone
from autopeft.training.model import AutoPeftModel
from autopeft.training.train import TrainingJob, build

#: A 4-layer tiny BERT, so that "a subset of layers" leaves layers on both sides out.
FOUR_LAYERS = "backbone.arch.num_hidden_layers=4"

#: A 4-layer tiny RoBERTa (random weights; the bundled WordPiece ids fit its vocabulary).
TINY_ROBERTA = (
    "backbone=roberta_large_arch",
    "backbone.arch.hidden_size=32",
    "backbone.arch.num_hidden_layers=4",
    "backbone.arch.num_attention_heads=4",
    "backbone.arch.intermediate_size=64",
)

#: Inputs per task kind, of different lengths so that batches are padded.
INPUTS: dict[str, list[Any]] = {
    "rotten_tomatoes": ["a gripping, beautifully acted film", "dull", "meh " * 30],
    "vader_movies": ["wonderful", "awful and far too long for what it says"],
    "copa": [
        ("The man broke his toe. What was the cause?", "He dropped a hammer.", "He got a hole in his sock."),
        ("The girl ran. What happened as a result?", "She was out of breath.", "She slept."),
    ],
}


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor off its initialisation (LoRA's B starts at 0, PA's up too).

    Without this an untrained module contributes nothing, and a tensor loaded into the wrong
    place, or not at all, could go unnoticed.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))


def exported(
    cfg: DictConfig, path: Path, edit: Callable[[AutoPeftModel], None] | None = None
) -> tuple[AutoPeftModel, Path, dict[str, Any]]:
    """Build ``cfg``'s model as training builds it, optionally ``edit`` it, perturb it and export it.

    Returns:
        ``(model in eval mode, export folder, parameter report)``.

    """
    torch.manual_seed(cfg.seed)
    setup = build(TrainingJob.from_config(cfg))
    model = setup.model.eval()
    if edit is not None:
        edit(model)
    perturb(model)
    record = {"params": setup.params, "status": "ok", "score": 0.5, "protocol": "heldout", "scoring": "heldout"}
    return model, save_export(model, cfg, path, record=record, task=setup.task), setup.params


def base_backbone(cfg: DictConfig) -> Backbone:
    """The untouched backbone the run was built on (random weights: from its seed, as loading does)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return load_backbone(plain(cfg.backbone))


def batches(model: AutoPeftModel, cfg: DictConfig, task_name: str) -> dict[str, torch.Tensor]:
    """One padded batch of :data:`INPUTS`, tokenised as training and ``load_export`` tokenise."""
    job = TrainingJob.from_config(cfg)
    backbone = base_backbone(cfg)
    predictor = Predictor(model, job.task, backbone.tokenizer, cfg.data.max_length, default_label_names(job.task))
    return next(predictor._batches(INPUTS[task_name], 32))


@torch.no_grad()
def ours(model: AutoPeftModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """AutoPEFT's outputs on ``batch`` (logits, regression values or choice scores)."""
    return model.eval()(**batch).float()
