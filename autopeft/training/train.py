"""Train and evaluate one PEFT configuration: the unit of work of every experiment.

:class:`TrainingJob` is a run config parsed once; :func:`build` turns it into a model, data and
Lightning pieces;
:func:`train_and_evaluate` trains at the configured fidelity, keeps the best validation
epoch, and reports validation (search) and test (reported) metrics with both parameter counts.
Which splits those are is ``data.protocol``'s choice (:mod:`autopeft.data.protocol`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from autopeft.data.cache import Tokenisation
from autopeft.data.datamodule import TaskDataModule
from autopeft.data.protocol import scoring
from autopeft.errors import ConfigError, first_line, shown_value
from autopeft.peft import PeftSpec, peft_from_config
from autopeft.peft.params import parameter_report
from autopeft.settings import TrainerSettings, TrainingSettings, plain, trains_on_this_machine
from autopeft.tasks.registry import task_from_config
from autopeft.tasks.spec import TaskSpec
from autopeft.training.adaptable import run_adaptable, switch_report, wants_layer_selection
from autopeft.training.backbones import (
    Backbone,
    check_quantization_here,
    load_backbone,
    prepare_backbone,
    shape_of,
    validate_backbone_config,
)
from autopeft.training.model import AutoPeftModel, check_generation_backbone
from autopeft.training.module import DivergedError, KeepBestTrainable, PeftLightningModule, TrainThroughput

log = logging.getLogger("autopeft.training")


@dataclass(frozen=True)
class TrainingJob:
    """One configuration to train, parsed once: how, on what task and backbone, with which PEFT.

    Args:
        settings: The checked trainer, fidelity, data and logger settings and the seed.
        task: The task.
        config: The plain run config the job came from, saved in records, exports and W&B.
        origin: Where the configuration came from, when a caller knows more than the config
            says (``mode=retrain``: the search run, its evaluation index, the choice); the
            export records it as its ``provenance``.

    """

    settings: TrainingSettings
    task: TaskSpec
    config: Mapping[str, Any]
    origin: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any], task: TaskSpec | None = None) -> TrainingJob:
        """Check a run config and parse what training needs from it.

        Args:
            cfg: The composed run config.
            task: The task when the caller built it already (a custom task reads its files).

        Raises:
            ConfigError: Naming the first bad key or value.

        """
        config = plain(cfg)
        settings = TrainingSettings.from_config(config)
        if trains_on_this_machine(config):
            # What only Lightning checks (its own view of the machine's accelerators and what
            # precision each supports) fails now, not after the backbone and data are loaded or
            # a search has started writing.
            check_trainer_builds(settings.trainer)
        validate_backbone_config(config["backbone"])
        if trains_on_this_machine(config):
            # A 4-bit base this machine cannot load fails here, not after the data are tokenised.
            check_quantization_here(config["backbone"], settings.trainer.accelerator)
        if task is None:
            task = task_from_config(config["task"])
        if task.type == "generation":
            # Refused before anything loads: the backbone's config alone says whether it is a decoder.
            check_generation_backbone(
                task.name, str(config["backbone"]["name"]), shape_of(config["backbone"]).model_type
            )
        return cls(settings, task, config)

    @property
    def backbone(self) -> Mapping[str, Any]:
        """The checked ``backbone`` node (loaded by :func:`load_backbone`)."""
        return self.config["backbone"]

    @property
    def peft(self) -> Mapping[str, Any]:
        """The ``peft`` node (turned into a :class:`PeftSpec` on the backbone's shape)."""
        return self.config["peft"]

    @property
    def mode(self) -> str:
        """The run's ``mode`` (a search never exports)."""
        return str(self.config.get("mode") or "train")

    def updated(self, changes: Mapping[str, Any]) -> TrainingJob:
        """This job with dotted config keys replaced, e.g. ``{"trainer.batch_size": 16}``.

        The settings are checked again from the changed config, so they and :attr:`config`
        (what records and exports save) always agree.
        """
        config = copy.deepcopy(dict(self.config))
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = copy.deepcopy(value)
        return TrainingJob(TrainingSettings.from_config(config), self.task, config, self.origin)

    def from_origin(self, origin: Mapping[str, Any]) -> TrainingJob:
        """This job with :attr:`origin` set (what its export's ``provenance`` records)."""
        return dataclasses.replace(self, origin=dict(origin))


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


def build(job: TrainingJob) -> Setup:
    """Build the backbone, PEFT model and data module of ``job``."""
    trainer, data = job.settings.trainer, job.settings.data
    backbone = load_backbone(job.backbone)
    spec = peft_from_config(job.peft, backbone.shape)
    prepare_backbone(backbone, spec, gradient_checkpointing=trainer.gradient_checkpointing)
    model = AutoPeftModel(backbone, spec, job.task.type, job.task.num_labels, trainer.head_dropout)
    params = parameter_report(model, spec, backbone.shape, backbone.num_params)
    datamodule = TaskDataModule(
        job.task,
        backbone.tokenizer,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        tokenisation=Tokenisation(
            max_length=data.max_length,
            data_seed=data.data_seed,
            max_train_samples=data.max_train_samples,
            max_eval_samples=data.max_eval_samples,
            protocol=data.protocol,
        ),
        cache_dir=data.cache_path,
        num_workers=data.num_workers,
        seed=job.settings.seed,
    )
    return Setup(job.task, backbone, spec, model, datamodule, params, trainer.learning_rate(spec.full_finetune))


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16-mixed`` on a GPU that supports it, else full ``32-true``."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


#: The ``trainer`` settings that Lightning checks against the machine when a Trainer is built.
_HARDWARE_KEYS = ("accelerator", "devices", "precision")


def make_trainer(settings: TrainerSettings, **kwargs: Any) -> pl.Trainer:
    """``pl.Trainer(**kwargs)``; Lightning refusing the hardware settings is a :class:`ConfigError`.

    Only the construction is guarded: errors while training propagate unchanged.

    Args:
        settings: The trainer settings ``kwargs`` were made from (named in the message).
        **kwargs: The Trainer's arguments.

    Raises:
        ConfigError: ``trainer settings rejected by PyTorch Lightning: <its first line>``, naming
            the accelerator, devices and precision that were passed.

    """
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**kwargs)
    # ImportError: a precision or accelerator whose package is missing (Lightning raises
    # ModuleNotFoundError with a pip hint); TypeError: devices of the wrong form for the accelerator.
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as err:
        first = first_line(err).rstrip(".")
        passed = " ".join(f"trainer.{key}={shown_value(getattr(settings, key))}" for key in _HARDWARE_KEYS)
        raise ConfigError(
            f"trainer settings rejected by PyTorch Lightning: {first}; check {passed}"
            " (e.g. trainer.accelerator=auto trainer.devices=1 trainer.precision=auto)"
        ) from None


def check_trainer_builds(settings: TrainerSettings) -> None:
    """Build a throwaway Trainer from the hardware settings, so that Lightning refuses them early.

    Deterministic mode, loggers and callbacks are left out: the first would set a process-wide
    torch flag, the others write files. ``auto`` precision is probed as ``32-true`` because
    resolving it asks the GPU for bf16 support, which would create a CUDA context in a search's
    main process; either value it resolves to is one Lightning accepts on that GPU.

    Raises:
        ConfigError: See :func:`make_trainer`.

    """
    precision = "32-true" if settings.precision == "auto" else settings.precision
    # Lightning's notes ("GPU available: ...") come once, from the Trainer that trains, not from
    # this one too.
    notes = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = notes.level
    notes.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_trainer(
                settings,
                accelerator=settings.accelerator,
                devices=settings.devices,
                precision=precision,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    finally:
        notes.setLevel(level)


def make_loggers(job: TrainingJob, run_dir: Path) -> list[Any]:
    """CSV always (when ``logger.csv``), plus W&B when ``logger.wandb`` is set (offline by default)."""
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    logger = job.settings.logger
    loggers: list[Any] = []
    if logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if logger.wandb is not None and logger.wandb.mode != "disabled":
        wandb = logger.wandb
        loggers.append(
            WandbLogger(
                project=wandb.project,
                entity=wandb.entity,
                group=wandb.group,
                tags=list(wandb.tags),
                save_dir=str(run_dir),
                offline=wandb.mode == "offline",
                # Lightning signals offline through $WANDB_MODE, which wandb reads only when it is
                # first set up in a process; passing the mode makes it hold in any process.
                mode=wandb.mode,
                name=wandb.name or run_dir.name,
                job_type=job.mode,
                config=dict(job.config),
            )
        )
    return loggers


def train_and_evaluate(job: TrainingJob, run_dir: Path) -> dict[str, Any]:
    """Train one configuration at its fidelity and evaluate it; retry once after running out of memory.

    The returned record has ``status`` ``ok``, ``diverged`` (non-finite loss) or ``oom``
    (out of GPU memory); a failed run still reports its configuration and parameter counts
    so that a search can record it and go on. With ``trainer.oom_retry`` an out-of-memory run
    is retried once with half the micro-batch and twice the gradient accumulation (the same
    effective batch and optimiser steps); the record then carries ``oom_retry`` with the first
    attempt's reason.

    Args:
        job: What to train (:meth:`TrainingJob.from_config` of a run config).
        run_dir: Where logs go (CSV, W&B).

    Returns:
        A JSON-ready record: configuration, metrics (``validation``: the best epoch's, on the
        split epochs are selected on; ``test``: the reported score), ``score`` (the task's main
        validation metric), ``protocol`` / ``scoring`` / ``selected_on_reported_split`` (what
        ``test`` is: under ``data.protocol=paper`` the best validation epoch's metrics, validation
        being the official dev split; under ``heldout`` a split the selection never saw),
        parameter counts, timings, seed and device.

    """
    if wants_layer_selection(job.peft):  # Adaptable Adapters: stage 1 learns the layers, stage 2 comes back here
        return run_adaptable(job, run_dir, stage1=_train_once, stage2=train_and_evaluate)
    record = _train_once(job, run_dir)
    trainer = job.settings.trainer
    micro_batch = trainer.batch_size // 2
    if record["status"] != "oom" or not trainer.oom_retry or micro_batch < 1:
        return record
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    accumulate = 2 * trainer.accumulate_grad_batches
    retry_job = job.updated({"trainer.batch_size": micro_batch, "trainer.accumulate_grad_batches": accumulate})
    retry = _train_once(retry_job, Path(run_dir) / "oom_retry")
    retry["oom_retry"] = {
        "first_reason": record.get("reason"),
        "micro_batch": micro_batch,
        "accumulate_grad_batches": accumulate,
    }
    retry["total_seconds"] += record["total_seconds"]
    return retry


def _train_once(job: TrainingJob, run_dir: Path) -> dict[str, Any]:
    """One training attempt (see :func:`train_and_evaluate`)."""
    started = time.perf_counter()
    trainer_settings, fidelity, protocol = job.settings.trainer, job.settings.fidelity, job.settings.data.protocol
    pl.seed_everything(job.settings.seed, workers=True, verbose=False)
    setup = build(job)
    task, spec = setup.task, setup.spec
    module = PeftLightningModule(
        setup.model,
        task,
        lr=setup.lr,
        weight_decay=trainer_settings.weight_decay,
        warmup_ratio=trainer_settings.warmup_ratio,
        adam_eps=trainer_settings.adam_eps,
        tokenizer=setup.backbone.tokenizer,
    )
    monitor = f"val/{task.main_metric}"
    keep_best = KeepBestTrainable(monitor)
    throughput = TrainThroughput()
    callbacks: list[pl.Callback] = [keep_best, throughput]
    if fidelity.early_stopping_patience:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=fidelity.early_stopping_patience)
        )
    precision = resolve_precision(trainer_settings.precision)
    trainer = make_trainer(
        trainer_settings,
        max_epochs=fidelity.epochs,
        accelerator=trainer_settings.accelerator,
        devices=trainer_settings.devices,
        precision=precision,
        gradient_clip_val=trainer_settings.gradient_clip_val,
        accumulate_grad_batches=trainer_settings.accumulate_grad_batches,
        callbacks=callbacks,
        logger=make_loggers(job, run_dir) or False,
        enable_checkpointing=False,
        enable_progress_bar=trainer_settings.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=trainer_settings.log_every_n_steps,
        limit_train_batches=trainer_settings.limit_train_batches,
        limit_val_batches=trainer_settings.limit_eval_batches,
        limit_test_batches=trainer_settings.limit_eval_batches,
        deterministic=trainer_settings.deterministic,
        default_root_dir=str(run_dir),
    )
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
        "fidelity": dataclasses.asdict(fidelity),
        "seed": job.settings.seed,
        "lr": setup.lr,
        "params": setup.params,
        "precision": precision,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    fit_started = time.perf_counter()
    try:
        if any(p.requires_grad for p in setup.model.parameters()):
            trainer.fit(module, datamodule=setup.datamodule)
        else:
            # Nothing trains (a generation task's frozen LM head with no PEFT module, e.g. the
            # empty configuration of a search): the frozen model is scored as it is, where an
            # optimiser over no parameters would fail.
            log.info("nothing to train in %s: scoring the frozen model", spec.describe())
            trainer.validate(module, datamodule=setup.datamodule, verbose=False)
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
        from autopeft.export.save import export_run

        record["export"] = export_run(setup.model, job, run_dir, record, setup.backbone.tokenizer)
    record["batch_size"] = trainer_settings.batch_size
    record["accumulate_grad_batches"] = trainer_settings.accumulate_grad_batches
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
