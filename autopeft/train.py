"""Train and evaluate one PEFT configuration: the unit of work of every experiment.

:func:`build` turns a composed config into a model, data and Lightning pieces;
:func:`train_and_evaluate` trains at the configured fidelity, keeps the best validation
epoch, and reports validation (search) and test (reported) metrics with both parameter counts.
Which splits those are is ``data.protocol``'s choice (:mod:`autopeft.protocol`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from autopeft.adaptable import run_adaptable, switch_report, wants_layer_selection
from autopeft.backbones import Backbone, load_backbone
from autopeft.data import TaskDataModule
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.model import AutoPeftModel
from autopeft.module import DivergedError, KeepBestTrainable, PeftLightningModule, TrainThroughput
from autopeft.params import parameter_report
from autopeft.peft import PeftSpec, peft_from_config
from autopeft.protocol import protocol_of, scoring
from autopeft.tasks import TaskSpec, task_from_config

TRAINER_KEYS = (
    "batch_size",
    "eval_batch_size",
    "lr",
    "lr_peft",
    "lr_fft",
    "weight_decay",
    "warmup_ratio",
    "adam_eps",
    "gradient_clip_val",
    "head_dropout",
    "precision",
    "accelerator",
    "devices",
    "limit_train_batches",
    "limit_eval_batches",
    "progress_bar",
    "deterministic",
    "log_every_n_steps",
    "accumulate_grad_batches",
    "oom_retry",
    "save_weights",
)
FIDELITY_KEYS = ("name", "epochs", "early_stopping_patience")
DATA_KEYS = (
    "max_length",
    "max_train_samples",
    "max_eval_samples",
    "data_seed",
    "cache_dir",
    "num_workers",
    "protocol",
)
LOGGER_KEYS = ("csv", "wandb")
WANDB_KEYS = ("project", "entity", "mode", "tags", "group", "name")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class Setup:
    """Everything needed to train one configuration."""

    task: TaskSpec
    backbone: Backbone
    spec: PeftSpec
    model: AutoPeftModel
    datamodule: TaskDataModule
    params: dict[str, Any]
    lr: float


def _positive_int(value: Any, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer{' or null' if allow_none else ''}")


def validate_run_config(cfg: DictConfig) -> None:
    """Check the trainer, fidelity, data and logger nodes before anything expensive runs."""
    check_known_keys(cfg.trainer, TRAINER_KEYS, "trainer")
    check_known_keys(cfg.fidelity, FIDELITY_KEYS, "fidelity")
    check_known_keys(cfg.data, DATA_KEYS, "data")
    check_known_keys(cfg.logger, LOGGER_KEYS, "logger")
    _positive_int(cfg.trainer.batch_size, "trainer.batch_size")
    _positive_int(cfg.trainer.eval_batch_size, "trainer.eval_batch_size")
    _positive_int(cfg.trainer.accumulate_grad_batches, "trainer.accumulate_grad_batches")
    if not isinstance(cfg.trainer.oom_retry, bool):
        raise ConfigError(f"trainer.oom_retry={cfg.trainer.oom_retry!r} must be true or false")
    from autopeft.export import check_save_weights

    check_save_weights(cfg.trainer.get("save_weights", "peft"))
    _positive_int(cfg.fidelity.epochs, "fidelity.epochs")
    _positive_int(cfg.fidelity.early_stopping_patience, "fidelity.early_stopping_patience", allow_none=True)
    _positive_int(cfg.data.max_length, "data.max_length")
    _positive_int(cfg.data.max_train_samples, "data.max_train_samples", allow_none=True)
    _positive_int(cfg.data.max_eval_samples, "data.max_eval_samples", allow_none=True)
    protocol_of(cfg.data)
    for key in ("lr", "lr_peft", "lr_fft"):
        value = cfg.trainer[key]
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"trainer.{key}={value!r} must be a positive number")
    if cfg.logger.wandb is not None:
        check_known_keys(cfg.logger.wandb, WANDB_KEYS, "logger.wandb")
        if cfg.logger.wandb.mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode={cfg.logger.wandb.mode!r}; allowed: {allowed_list(WANDB_MODES)}")


def build(cfg: DictConfig) -> Setup:
    """Validate ``cfg`` and build the task, backbone, PEFT model and data module."""
    validate_run_config(cfg)
    task = task_from_config(cfg.task)
    backbone = load_backbone(cfg.backbone)
    spec = peft_from_config(cfg.peft, backbone.shape)
    model = AutoPeftModel(backbone, spec, task.type, task.num_labels, cfg.trainer.head_dropout)
    params = parameter_report(model, spec, backbone.shape, backbone.num_params)
    datamodule = TaskDataModule(
        task,
        backbone.tokenizer,
        batch_size=cfg.trainer.batch_size,
        eval_batch_size=cfg.trainer.eval_batch_size,
        max_length=cfg.data.max_length,
        data_seed=cfg.data.data_seed,
        max_train_samples=cfg.data.max_train_samples,
        max_eval_samples=cfg.data.max_eval_samples,
        cache_dir=Path(cfg.data.cache_dir).expanduser(),
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        protocol=protocol_of(cfg.data),
    )
    lr = cfg.trainer.lr or (cfg.trainer.lr_fft if spec.full_finetune else cfg.trainer.lr_peft)
    return Setup(task, backbone, spec, model, datamodule, params, float(lr))


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16-mixed`` on a GPU that supports it, else full ``32-true``."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """CSV always (when ``logger.csv``), plus W&B when ``logger.wandb`` is set (offline by default)."""
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    loggers: list[Any] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.wandb is not None and cfg.logger.wandb.mode != "disabled":
        wandb_cfg = cfg.logger.wandb
        loggers.append(
            WandbLogger(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                group=wandb_cfg.group,
                tags=list(wandb_cfg.tags or []),
                save_dir=str(run_dir),
                offline=wandb_cfg.mode == "offline",
                # Lightning signals offline through $WANDB_MODE, which wandb reads only when it is
                # first set up in a process; passing the mode makes it hold in any process.
                mode=wandb_cfg.mode,
                name=wandb_cfg.get("name") or run_dir.name,
                job_type=str(cfg.get("mode") or "train"),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train one configuration at ``cfg.fidelity`` and evaluate it; retry once after running out of memory.

    The returned record has ``status`` ``ok``, ``diverged`` (non-finite loss) or ``oom``
    (out of GPU memory); a failed run still reports its configuration and parameter counts
    so that a search can record it and go on. With ``trainer.oom_retry`` an out-of-memory run
    is retried once with half the micro-batch and twice the gradient accumulation (the same
    effective batch and optimiser steps); the record then carries ``oom_retry`` with the first
    attempt's reason.

    Args:
        cfg: The composed run config.
        run_dir: Where logs go (CSV, W&B).

    Returns:
        A JSON-ready record: configuration, metrics (``validation``: the best epoch's, on the
        split epochs are selected on; ``test``: the reported score), ``score`` (the task's main
        validation metric), ``protocol`` / ``scoring`` / ``selected_on_reported_split`` (what
        ``test`` is: under ``data.protocol=paper`` the best validation epoch's metrics, validation
        being the official dev split; under ``heldout`` a split the selection never saw),
        parameter counts, timings, seed and device.

    """
    if wants_layer_selection(cfg):  # Adaptable Adapters: stage 1 learns the layers, stage 2 comes back here
        return run_adaptable(cfg, run_dir, stage1=_train_once, stage2=train_and_evaluate)
    record = _train_once(cfg, run_dir)
    micro_batch = cfg.trainer.batch_size // 2
    if record["status"] != "oom" or not cfg.trainer.oom_retry or micro_batch < 1:
        return record
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    retry_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    retry_cfg.trainer.batch_size = micro_batch
    retry_cfg.trainer.accumulate_grad_batches = 2 * cfg.trainer.accumulate_grad_batches
    retry = _train_once(retry_cfg, Path(run_dir) / "oom_retry")
    retry["oom_retry"] = {
        "first_reason": record.get("reason"),
        "micro_batch": micro_batch,
        "accumulate_grad_batches": retry_cfg.trainer.accumulate_grad_batches,
    }
    retry["total_seconds"] += record["total_seconds"]
    return retry


def _train_once(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One training attempt (see :func:`train_and_evaluate`)."""
    started = time.perf_counter()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    setup = build(cfg)
    task, spec = setup.task, setup.spec
    module = PeftLightningModule(
        setup.model,
        task,
        lr=setup.lr,
        weight_decay=cfg.trainer.weight_decay,
        warmup_ratio=cfg.trainer.warmup_ratio,
        adam_eps=cfg.trainer.adam_eps,
    )
    monitor = f"val/{task.main_metric}"
    keep_best = KeepBestTrainable(monitor)
    throughput = TrainThroughput()
    callbacks: list[pl.Callback] = [keep_best, throughput]
    if cfg.fidelity.early_stopping_patience:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=cfg.fidelity.early_stopping_patience)
        )
    precision = resolve_precision(cfg.trainer.precision)
    trainer = pl.Trainer(
        max_epochs=cfg.fidelity.epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        precision=precision,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        accumulate_grad_batches=cfg.trainer.accumulate_grad_batches,
        callbacks=callbacks,
        logger=make_loggers(cfg, run_dir) or False,
        enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        limit_train_batches=cfg.trainer.limit_train_batches,
        limit_val_batches=cfg.trainer.limit_eval_batches,
        limit_test_batches=cfg.trainer.limit_eval_batches,
        deterministic=cfg.trainer.deterministic,
        default_root_dir=str(run_dir),
    )
    protocol = protocol_of(cfg.data)
    scored = scoring(task.benchmark, protocol)
    record: dict[str, Any] = {
        "status": "ok",
        "task": task.name,
        "protocol": protocol,
        "scoring": scored,
        "selected_on_reported_split": scored == "best_dev",
        "backbone": setup.backbone.name,
        "peft": spec.to_dict(),
        "configuration": spec.describe(),
        "fidelity": OmegaConf.to_container(cfg.fidelity, resolve=True),
        "seed": cfg.seed,
        "lr": setup.lr,
        "params": setup.params,
        "precision": precision,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    fit_started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=setup.datamodule)
    except DivergedError as err:
        record.update(status="diverged", reason=str(err))
    except torch.cuda.OutOfMemoryError as err:
        record.update(status="oom", reason=str(err).splitlines()[0])
    record["train_seconds"] = time.perf_counter() - fit_started
    if record["status"] == "ok":
        keep_best.restore(module)
        record.update(switch_report(setup.model))  # layer switches at the best epoch, if any
        if scored == "best_dev":
            # The test split is the validation split (the official dev split): the reported score
            # is the best epoch's dev score as the paper reports it; a test pass would only
            # recompute it.
            test_metrics = dict(keep_best.best_metrics)
        else:
            trainer.test(module, datamodule=setup.datamodule, verbose=False)
            test_metrics = module.last_metrics.get("test", {})
        record["metrics"] = {"validation": keep_best.best_metrics, "test": test_metrics}
        record["score"] = keep_best.best_metrics.get(task.main_metric, math.nan)
        record["main_metric"] = task.main_metric
        record["best_epoch"] = keep_best.best_epoch
        record["epochs_trained"] = trainer.current_epoch
        from autopeft.export import export_run  # writes <run_dir>/export unless off or searching

        record["export"] = export_run(setup.model, cfg, run_dir, record, setup.backbone.tokenizer)
    record["batch_size"] = cfg.trainer.batch_size
    record["accumulate_grad_batches"] = cfg.trainer.accumulate_grad_batches
    record["train_examples"] = setup.datamodule.num_train_examples
    record["samples_per_second"] = throughput.samples_per_second
    record["tokenization_cache_hit"] = setup.datamodule.cache_hit
    record["total_seconds"] = time.perf_counter() - started
    for lg in trainer.loggers:
        lg.log_metrics(
            {"final/score": record.get("score", math.nan), "final/paper_percent": setup.params["paper_percent"]}
        )
        lg.finalize("success" if record["status"] == "ok" else "failed")
        if type(lg).__name__ == "WandbLogger":
            # Lightning leaves the W&B run open; the next training in this process (a retraining's
            # next seed, a pipeline's next stage) would otherwise log into it instead of its own.
            lg.experiment.finish()
    return record
