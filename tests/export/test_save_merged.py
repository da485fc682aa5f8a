"""``trainer.save_merged``: a training run's export holds the merged weights when asked, and only then."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from autopeft.training.train import TrainingJob, train_and_evaluate
from tests.export.libraries import exported


@pytest.mark.parametrize(("save_merged", "written"), [("true", True), ("false", None)])
def test_a_training_run_writes_merged_weights_only_when_asked(
    tiny_cfg: Callable, tmp_path: Path, save_merged: str, written: bool | None
) -> None:
    cfg = tiny_cfg(
        "mode=train",
        "backbone=tiny_llama",
        "peft=dora",
        "peft.sa_size=0",
        "task=snli_binary",
        f"trainer.save_merged={save_merged}",
    )
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] == "ok"
    export = tmp_path / "export"
    libraries = json.loads((export / "autopeft.json").read_text())["libraries"]
    assert libraries.get("merged", {}).get("written") is written
    assert (export / "merged" / "config.json").is_file() is bool(written)


def test_an_encoder_dora_export_goes_to_peft_and_not_to_adapters(tiny_cfg: Callable, tmp_path: Path) -> None:
    """adapters' LoRAConfig has no magnitude vectors: its folder would predict without them."""
    cfg = tiny_cfg("mode=train", "peft.sa_size=0", "peft.lora_rank=2", "peft.use_dora=true")
    _, path, _ = exported(cfg, tmp_path / "export")
    libraries = json.loads((path / "autopeft.json").read_text())["libraries"]
    assert libraries["peft"]["written"] and (path / "peft" / "adapter_config.json").is_file()
    assert json.loads((path / "peft" / "adapter_config.json").read_text())["use_dora"] is True
    assert (
        not libraries["adapters"]["written"]
        and "DoRA (adapters' LoRAConfig has no magnitude vectors)" in (libraries["adapters"]["reason"])
    )
