"""Typed settings of the run config, checked once at the top and passed down.

Each config group that is plain settings (``trainer``, ``fidelity``, ``data``, ``logger``) and the
top-level values (``mode``, ``resume``, ``seed``, ``output_root``: :class:`RunSettings`) have a
frozen dataclass here whose fields are the keys: an unknown key or a bad value fails with one
line naming it and what is allowed, before anything is trained or written. The other groups have
their own typed objects next to the code that uses them:
``task`` -> :class:`~autopeft.tasks.spec.TaskSpec`, ``peft`` -> :class:`~autopeft.peft.config.PeftSpec`,
``space`` -> :class:`~autopeft.space.SearchSpace`, ``search`` -> :class:`~autopeft.bo.settings.SearchSettings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autopeft.data.protocol import DEFAULT_PROTOCOL, check_protocol
from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean, shown_value

#: ``trainer.save_weights``: export every run (True), none (False), or all but full fine-tuning.
SAVE_WEIGHTS = (True, False, "peft")
WANDB_MODES = ("offline", "online", "disabled")
#: Keys a config saved by an older version may lack, and what such a run used.
_OLDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "trainer": {"save_weights": "peft"},
    "data": {"protocol": DEFAULT_PROTOCOL},
}


def plain(node: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """A config node as a plain, resolved dict (empty for None)."""
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)


def _values(cls: type, node: Mapping[str, Any] | DictConfig | None, where: str) -> dict[str, Any]:
    """The keys of ``node`` checked against the fields of ``cls``; missing ones are an error."""
    values = {**_OLDER_DEFAULTS.get(where, {}), **plain(node)}
    names = [f.name for f in dataclasses.fields(cls)]
    check_known_keys(values, names, where)
    missing = [name for name in names if name not in values]
    if missing:
        raise ConfigError(f"the {where} node lacks {allowed_list(missing)}; it needs {allowed_list(names)}")
    return values


def check_positive_int(value: Any, key: str, allow_none: bool = False) -> int | None:
    """``value`` if it is a positive integer (or None, when allowed).

    Raises:
        ConfigError: Naming ``key`` and the value.

    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a positive integer{' or null' if allow_none else ''}")
    return value


def check_save_weights(value: Any) -> bool | str:
    """Validate ``trainer.save_weights``.

    Raises:
        ConfigError: Naming the value and the allowed ones.

    """
    if value not in SAVE_WEIGHTS or (value in (0, 1) and not isinstance(value, bool)):
        raise ConfigError(f"trainer.save_weights={value!r}; allowed: true, false, 'peft' (all but full fine-tuning)")
    return value


@dataclass(frozen=True)
class TrainerSettings:
    """``conf/trainer``: optimisation and hardware settings of every training run (see its YAML)."""

    batch_size: int
    eval_batch_size: int
    lr: float | None
    lr_peft: float | None
    lr_fft: float | None
    weight_decay: float
    warmup_ratio: float
    adam_eps: float
    gradient_clip_val: float | None
    head_dropout: float
    precision: str
    accelerator: str
    devices: Any
    limit_train_batches: int | float | None
    limit_eval_batches: int | float | None
    progress_bar: bool
    deterministic: bool
    log_every_n_steps: int
    accumulate_grad_batches: int
    oom_retry: bool
    save_weights: bool | str

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> TrainerSettings:
        """Check the ``trainer`` node.

        Raises:
            ConfigError: On an unknown key or a bad value, naming it.

        """
        values = _values(cls, node, "trainer")
        for key in ("batch_size", "eval_batch_size", "accumulate_grad_batches"):
            check_positive_int(values[key], f"trainer.{key}")
        if not isinstance(values["oom_retry"], bool):
            raise ConfigError(f"trainer.oom_retry={values['oom_retry']!r} must be true or false")
        check_save_weights(values["save_weights"])
        for key in ("lr", "lr_peft", "lr_fft"):
            value = values[key]
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            ):
                raise ConfigError(f"trainer.{key}={value!r} must be a positive number")
        return cls(**values)

    def learning_rate(self, full_finetune: bool) -> float:
        """``lr`` when set, else the paper's rate for PEFT (``lr_peft``) or full fine-tuning (``lr_fft``)."""
        return float(self.lr or (self.lr_fft if full_finetune else self.lr_peft))


@dataclass(frozen=True)
class FidelitySettings:
    """``conf/fidelity``: how long each training runs (the search's low fidelity, or full)."""

    name: str
    epochs: int
    early_stopping_patience: int | None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> FidelitySettings:
        """Check the ``fidelity`` node.

        Raises:
            ConfigError: On an unknown key or a bad value, naming it.

        """
        values = _values(cls, node, "fidelity")
        check_positive_int(values["epochs"], "fidelity.epochs")
        check_positive_int(values["early_stopping_patience"], "fidelity.early_stopping_patience", allow_none=True)
        return cls(**values)


@dataclass(frozen=True)
class DataSettings:
    """``conf/data``: input length, subsets, data seed, split protocol and the token cache."""

    max_length: int
    max_train_samples: int | None
    max_eval_samples: int | None
    data_seed: int
    cache_dir: str
    num_workers: int
    protocol: str

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> DataSettings:
        """Check the ``data`` node (a saved config without ``protocol`` ran the held-out protocol).

        Raises:
            ConfigError: On an unknown key or a bad value, naming it.

        """
        values = _values(cls, node, "data")
        if values["protocol"] is None:
            values["protocol"] = DEFAULT_PROTOCOL
        check_positive_int(values["max_length"], "data.max_length")
        check_positive_int(values["max_train_samples"], "data.max_train_samples", allow_none=True)
        check_positive_int(values["max_eval_samples"], "data.max_eval_samples", allow_none=True)
        values["protocol"] = check_protocol(values["protocol"])
        return cls(**values)

    @property
    def cache_path(self) -> Path:
        """The token cache's folder, ``~`` expanded."""
        return Path(self.cache_dir).expanduser()


@dataclass(frozen=True)
class WandbSettings:
    """``logger.wandb``: the Weights & Biases run (offline by default)."""

    project: str
    entity: str | None
    mode: str
    tags: tuple[str, ...]
    group: str | None
    name: str | None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> WandbSettings:
        """Check the ``logger.wandb`` node.

        Raises:
            ConfigError: On an unknown key or a mode other than offline, online, disabled.

        """
        values = _values(cls, node, "logger.wandb")
        if values["mode"] not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode={values['mode']!r}; allowed: {allowed_list(WANDB_MODES)}")
        values["tags"] = tuple(values["tags"] or ())
        return cls(**values)


@dataclass(frozen=True)
class LoggerSettings:
    """``conf/logger``: metrics to CSV, and to W&B when ``wandb`` is set."""

    csv: bool
    wandb: WandbSettings | None

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> LoggerSettings:
        """Check the ``logger`` node.

        Raises:
            ConfigError: On an unknown key or a bad value, naming it.

        """
        values = _values(cls, node, "logger")
        wandb = values["wandb"]
        return cls(csv=bool(values["csv"]), wandb=None if wandb is None else WandbSettings.from_config(wandb))


@dataclass(frozen=True)
class TrainingSettings:
    """Everything about *how* a configuration is trained: trainer, fidelity, data, logger, seed."""

    trainer: TrainerSettings
    fidelity: FidelitySettings
    data: DataSettings
    logger: LoggerSettings
    seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> TrainingSettings:
        """Check the trainer, fidelity, data and logger nodes and the seed of a run config.

        Raises:
            ConfigError: Naming the first bad key or value.

        """
        return cls(
            trainer=TrainerSettings.from_config(cfg["trainer"]),
            fidelity=FidelitySettings.from_config(cfg["fidelity"]),
            data=DataSettings.from_config(cfg["data"]),
            logger=LoggerSettings.from_config(cfg["logger"]),
            seed=check_seed(cfg.get("seed", 0)),
        )


#: The config groups of ``conf/run.yaml`` (its defaults list): the top-level keys that are nodes.
CONFIG_GROUPS = (
    "backbone",
    "task",
    "peft",
    "space",
    "fidelity",
    "search",
    "retrain",
    "report",
    "pipeline",
    "trainer",
    "data",
    "logger",
)
#: The top-level keys that are values (:class:`RunSettings`' fields).
TOP_LEVEL_VALUES = ("mode", "resume", "seed", "output_root")
#: Set by callers that run a mode outside Hydra (tests, tools): the run directory to use.
INTERNAL_KEYS = ("run_dir",)


def check_top_level_keys(keys: Any) -> None:
    """Fail on a top-level key that is neither a value nor a config group (``+sed=1``, ``+mod=train``).

    Raises:
        ConfigError: Naming the key, the closest known one and the allowed ones.

    """
    known = (*TOP_LEVEL_VALUES, *CONFIG_GROUPS)
    for key in keys:
        if key not in known and key not in INTERNAL_KEYS and key != "hydra":
            raise ConfigError(
                f"unknown top-level key {key!r}{did_you_mean(str(key), known)}; allowed top-level keys: "
                f"{allowed_list(TOP_LEVEL_VALUES)} and the config groups {allowed_list(CONFIG_GROUPS)}"
            )


def check_mode(value: Any, modes: Collection[str]) -> str:
    """The run's ``mode``: one of ``modes``.

    Raises:
        ConfigError: Naming the value, the closest mode and every allowed one.

    """
    if not isinstance(value, str) or value not in modes:
        hint = did_you_mean(value, modes) if isinstance(value, str) else ""
        raise ConfigError(f"mode={shown_value(value)} is not a mode{hint}; allowed: {allowed_list(modes)}")
    return value


def check_resume(value: Any) -> Path | None:
    """``resume``: null (a new run) or the existing run directory of a search or pipeline.

    Raises:
        ConfigError: On a value that is not a path (``resume=true``, ``resume=3``), an empty one,
            a path that does not exist or a file.

    """
    if value is None:
        return None
    what = (
        "resume=<run dir> continues the search or pipeline in that run directory; "
        "resume=null (the default) starts a new run"
    )
    if not isinstance(value, str):
        raise ConfigError(f"resume={shown_value(value)} is not a run directory: {what}")
    if not value.strip():
        raise ConfigError(f"resume={value!r} is empty: {what}")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"resume={value!r} does not exist; give the run directory of a search or pipeline to resume")
    if not path.is_dir():
        raise ConfigError(f"resume={value!r} is a file, not a run directory: {what}")
    return path


def check_output_root(value: Any) -> Path:
    """``output_root``: a folder (or one that can be created) below which every run gets its directory.

    Raises:
        ConfigError: On null, an empty value, or a path that names an existing file.

    """
    allowed = "run output needs one: output_root=<dir> (default: outputs, or $AUTOPEFT_OUTPUT_ROOT)"
    if isinstance(value, bool) or not isinstance(value, str | int | float) or not str(value).strip():
        # An empty root puts run directories at the top of the file system (/<mode>/...).
        raise ConfigError(f"output_root={shown_value(value)} names no folder; {allowed}")
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output_root={str(value)!r} is a file, not a folder; {allowed}")
    return path


@dataclass(frozen=True)
class RunSettings:
    """The top-level values of ``conf/run.yaml``: what to do, what to continue, the seed, where to write.

    Attributes:
        mode: One of the dispatcher's modes.
        resume: The run directory to continue, or None for a new run.
        seed: The run's seed (>= 0).
        output_root: The folder below which runs get their directories.

    """

    mode: str
    resume: Path | None
    seed: int
    output_root: Path

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig, modes: Collection[str]) -> RunSettings:
        """Check the top-level keys and values of a run config.

        Args:
            cfg: The composed run config.
            modes: The allowed modes.

        Raises:
            ConfigError: Naming the first unknown key or bad value and the allowed ones.

        """
        check_top_level_keys(list(cfg.keys()))
        return cls(
            mode=check_mode(cfg.get("mode"), modes),
            seed=check_seed(cfg.get("seed")),
            resume=check_resume(cfg.get("resume")),
            output_root=check_output_root(cfg.get("output_root")),
        )


def check_seed(value: Any) -> int:
    """The run's ``seed``: an integer >= 0.

    Raises:
        ConfigError: Naming the value (``seed=abc``, ``seed=1.5``, ``seed=-1``).

    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"seed={shown_value(value)} must be an integer >= 0, e.g. seed=0 (a multirun grid: -m seed=0,1,2)"
        )
    return value


@dataclass(frozen=True)
class ReportSettings:
    """``conf/report``: the run directories (or folders holding them) a report is built from."""

    runs: tuple[str, ...]

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig) -> ReportSettings:
        """Check the ``report`` node (``runs`` may be one path or a list of them).

        Raises:
            ConfigError: On an unknown key, or ``runs`` that is not a path or a list of paths.

        """
        runs = _values(cls, node, "report")["runs"]
        if isinstance(runs, str):
            runs = [runs]
        if not isinstance(runs, list) or not all(isinstance(run, str) for run in runs):
            raise ConfigError(f"report.runs={runs!r} must be a run directory or a list of them")
        return cls(runs=tuple(runs))
