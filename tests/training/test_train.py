"""Training and evaluation through the real configs on a tiny random BERT."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from autopeft.training.module import PeftLightningModule
from autopeft.training.train import TrainingJob, build, train_and_evaluate

ROOT = Path(__file__).resolve().parents[2]


def test_train_reports_metrics_params_and_timing(tiny_cfg: Callable, tmp_path: Path) -> None:
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg()), tmp_path)
    assert record["status"] == "ok"
    assert set(record["metrics"]["validation"]) == {"accuracy", "f1"}
    assert set(record["metrics"]["test"]) == {"accuracy", "f1"}
    assert 0.0 <= record["score"] <= 1.0 and record["score"] == record["metrics"]["validation"]["accuracy"]
    assert record["params"]["paper_params"] == 2 * 8 * 32 * 2
    assert record["train_examples"] == 64 and record["samples_per_second"] > 0
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_only_peft_weights_and_head_change(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("peft.pa_size=4", "peft.prefix_len=2", "peft.lora_rank=2")
    setup = build(TrainingJob.from_config(cfg))
    before = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    module = PeftLightningModule(setup.model, setup.task, lr=1e-2)
    trainer = pl.Trainer(
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=setup.datamodule)
    for name, param in setup.model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == param.requires_grad, name


def test_regression_task_trains_with_correlation_metrics(tiny_cfg: Callable, tmp_path: Path) -> None:
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg("task=vader_movies")), tmp_path)
    assert record["status"] == "ok" and record["main_metric"] == "spearman"
    assert set(record["metrics"]["test"]) == {"spearman", "pearson"}


@pytest.mark.parametrize("peft", ["fft", "lora", "prefix", "pa", "head_only"])
def test_every_preset_trains(tiny_cfg: Callable, tmp_path: Path, peft: str) -> None:
    sizes = {"prefix": ["peft.prefix_len=4"], "pa": ["peft.pa_size=8"], "fft": ["peft.sa_size=0"]}
    record = train_and_evaluate(
        TrainingJob.from_config(tiny_cfg(f"peft={peft}", "task=snli_binary", *sizes.get(peft, []))), tmp_path
    )
    assert record["status"] == "ok" and math.isfinite(record["score"])
    assert record["lr"] == (2e-5 if peft == "fft" else 1e-4)


def test_full_fidelity_stops_early_and_keeps_the_best_epoch(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("fidelity=full", "fidelity.epochs=4", "fidelity.early_stopping_patience=1", "trainer.lr=0.5")
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] in {"ok", "diverged"}
    if record["status"] == "ok":
        assert record["epochs_trained"] <= 4 and 0 <= record["best_epoch"] < record["epochs_trained"]


def test_nan_loss_is_reported_as_diverged(tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        PeftLightningModule,
        "forward",
        lambda self, batch: torch.full((len(batch["labels"]), 2), float("nan"), requires_grad=True),
    )
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg()), tmp_path)
    assert record["status"] == "diverged" and "nan" in record["reason"]
    assert record["params"]["paper_params"] > 0 and "metrics" not in record


def test_wandb_logger_works_offline(tiny_cfg: Callable, tmp_path: Path) -> None:
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg("logger=wandb")), tmp_path)
    assert record["status"] == "ok"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]  # Hydra's flags must precede the overrides
    return subprocess.run(
        [
            sys.executable,
            "run.py",
            *flags,
            "mode=train",
            "backbone=tiny_bert",
            "debug=smoke",
            "peft.sa_size=8",
            f"output_root={tmp_path / 'out'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            *[a for a in args if a not in flags],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_train_writes_results_json(tmp_path: Path) -> None:
    result = _run([], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (results,) = (tmp_path / "out" / "train").rglob("results.json")
    record = json.loads(results.read_text())
    assert record["status"] == "ok" and record["config"]["backbone"]["name"] == "tiny_bert"
    assert record["run_dir"] == str(results.parent)
    assert "AutoPEFT train | task rotten_tomatoes" in result.stdout


@pytest.mark.slow  # 9 s of real run.py sweeps: .ci/run runs it after the default suite
def test_multirun_cells_get_their_own_directories(tmp_path: Path) -> None:
    result = _run(["-m", "seed=0,1"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted((tmp_path / "out" / "multirun").rglob("results.json"))
    assert len(files) == 2 and files[0].parent != files[1].parent
    assert sorted(json.loads(f.read_text())["seed"] for f in files) == [0, 1]


@pytest.mark.slow  # 18 s of real run.py sweeps: .ci/run runs it after the default suite
def test_rerun_of_a_sweep_skips_finished_cells(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = _run(["-m", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    cells = sorted(p.parent.name for p in sweep.rglob("results.json"))
    assert [c.rsplit(",", 1)[-1] for c in cells] == ["seed=0", "seed=1"]  # named by the cell's overrides
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("results.json")}
    second = _run(["-m", "seed=0,1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("already finished, skipped") == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert len(list(sweep.rglob("results.json"))) == 3


def test_a_cell_directory_holding_another_configuration_is_not_overwritten(tiny_cfg: Callable, tmp_path: Path) -> None:
    from omegaconf import open_dict

    from autopeft.errors import ConfigError
    from autopeft.experiments.modes import mode_train, train_cell

    cfg = tiny_cfg("mode=train")
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "cell")
    mode_train(cfg)
    before = (tmp_path / "cell" / "results.json").read_bytes()
    other = tiny_cfg("mode=train", "peft.sa_size=4")
    with open_dict(other):
        other.run_dir = str(tmp_path / "cell")
    with pytest.raises(ConfigError, match=r"already holds a finished run of a different configuration"):
        mode_train(other)
    assert (tmp_path / "cell" / "results.json").read_bytes() == before
    # Settings that leave the result as it was (a pipeline's workers, the progress bar) reuse the cell.
    same = tiny_cfg("mode=train", "pipeline.workers=2", f"trainer.progress_bar={not cfg.trainer.progress_bar}")
    with open_dict(same):
        same.run_dir = str(tmp_path / "cell")
    assert train_cell(same, tmp_path / "cell")["score"] == json.loads(before)["score"]
    assert (tmp_path / "cell" / "results.json").read_bytes() == before


def _oom_above(limit: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make training steps on batches larger than ``limit`` (all, if None) run out of "GPU memory"."""
    from autopeft.training.module import PeftLightningModule

    original = PeftLightningModule.training_step

    def step(self: PeftLightningModule, batch: dict, batch_idx: int) -> torch.Tensor:
        if limit is None or batch["labels"].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(PeftLightningModule, "training_step", step)


def test_out_of_memory_is_retried_with_half_the_micro_batch(
    tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _oom_above(8, monkeypatch)
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg()), tmp_path)  # debug=smoke trains at batch 16
    assert record["status"] == "ok"
    assert record["oom_retry"] == {
        "first_reason": "CUDA out of memory. Tried to allocate 2.00 GiB",
        "micro_batch": 8,
        "accumulate_grad_batches": 2,
    }
    assert (record["batch_size"], record["accumulate_grad_batches"]) == (8, 2)


def test_out_of_memory_twice_is_recorded_as_oom(
    tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _oom_above(None, monkeypatch)
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg()), tmp_path)
    assert record["status"] == "oom" and record["reason"].startswith("CUDA out of memory")
    assert record["oom_retry"]["micro_batch"] == 8
    no_retry = train_and_evaluate(TrainingJob.from_config(tiny_cfg("trainer.oom_retry=false")), tmp_path / "no_retry")
    assert no_retry["status"] == "oom" and "oom_retry" not in no_retry
