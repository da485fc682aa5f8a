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
import math
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
    "trainer": {"save_weights": "peft", "gradient_checkpointing": False, "save_merged": False},
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


#: ``trainer.accelerator`` names AutoPEFT trains on (``gpu``: CUDA, or Apple's MPS on a Mac, as Lightning picks).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: Common spellings of a precision that are not Lightning's, and the value they mean.
_PRECISION_SPELLINGS = {
    "fp64": "64-true",
    "float64": "64-true",
    "double": "64-true",
    "fp32": "32-true",
    "float32": "32-true",
    "float": "32-true",
    "full": "32-true",
    "fp16": "16-mixed",
    "float16": "16-mixed",
    "half": "16-mixed",
    "amp": "16-mixed",
    "mixed": "16-mixed",
    "bfloat16": "bf16-mixed",
}
#: Used only if Lightning's own list cannot be imported (a Lightning version that moved it).
_FALLBACK_PRECISIONS = (
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)


def trainer_precisions() -> tuple[str, ...]:
    """``trainer.precision`` values: ``auto`` (ours) and the string precisions Lightning's Trainer accepts.

    Taken from Lightning's own type (``lightning_fabric.connector``) so that the check follows
    the installed version; its ``transformer-engine`` precisions are left out: they need NVIDIA's
    Transformer Engine package and FP8 hardware, and swap the model's layers for its own.
    """
    try:
        from typing import get_args

        from lightning_fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

        lightning = (*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS))
    except ImportError:  # pragma: no cover - another Lightning layout
        lightning = _FALLBACK_PRECISIONS
    return ("auto", *(p for p in lightning if not p.startswith("transformer-engine")))


def check_precision(value: Any) -> str:
    """``trainer.precision``: ``auto`` or a precision Lightning accepts (an int ``32`` becomes ``'32'``).

    Raises:
        ConfigError: Naming the value, the precision it probably means and every allowed one.

    """
    allowed = trainer_precisions()
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in allowed:
        return str(value)  # Hydra reads trainer.precision=32 as an int; Lightning takes '32' the same
    if isinstance(value, str) and value in allowed:
        return value
    hint = ""
    if isinstance(value, str):
        meant = _PRECISION_SPELLINGS.get(value.strip().lower())
        hint = f" (did you mean {meant!r}?)" if meant else did_you_mean(value, allowed)
    raise ConfigError(
        f"trainer.precision={shown_value(value)} is not a precision{hint}; allowed: {allowed_list(allowed)} "
        "(auto: bf16-mixed on a GPU with bf16 support, else 32-true)"
    )


#: Precisions whose autocast runs in float16 (``16`` is Lightning's alias of ``16-mixed``).
_FLOAT16_MIXED = ("16-mixed", "16")


def check_precision_on_device(precision: str, accelerator: str, on_this_machine: bool = True) -> None:
    """Refuse float16 mixed precision where training runs on the CPU.

    torch's CPU autocast computes in bfloat16 only; Lightning would quietly train a ``16-mixed``
    run in ``bf16-mixed`` instead, so the run would record a precision it did not use. The CPU
    is where it trains with ``accelerator=cpu``, or with ``auto`` on a machine without a GPU
    (known only when the training runs on this machine).

    Raises:
        ConfigError: Naming the precision, why it cannot run and the precisions that can.

    """
    if precision not in _FLOAT16_MIXED:
        return
    if accelerator == "cpu":
        where = "trainer.accelerator='cpu'"
    elif accelerator == "auto" and on_this_machine and available_accelerators() == ("auto", "cpu"):
        where = "trainer.accelerator='auto' on a machine without a GPU"
    else:
        return
    raise ConfigError(
        f"trainer.precision={precision!r} (float16 autocast) needs a GPU, but training runs on the CPU ({where}); "
        "torch's CPU autocast supports bfloat16 only: use trainer.precision=bf16-mixed (or bf16-true, 32-true, auto)"
    )


def available_accelerators() -> tuple[str, ...]:
    """The ``trainer.accelerator`` values this machine can train on: ``auto``, ``cpu`` and its GPUs."""
    import torch

    names = ["auto", "cpu"]
    cuda = torch.cuda.is_available()
    mps = _mps_available()
    if cuda or mps:
        names.append("gpu")
    if cuda:
        names.append("cuda")
    if mps:
        names.append("mps")
    return tuple(names)


def _mps_available() -> bool:
    """Whether Apple's MPS backend can be used (False on builds without it)."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _machine_has() -> str:
    """What this machine offers for training, for an error message."""
    import torch

    if torch.cuda.is_available():
        return f"this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    if _mps_available():
        return "this machine has an Apple MPS GPU and no CUDA GPU"
    return "this machine has no GPU (torch.cuda.is_available() is False)"


def check_accelerator(value: Any, on_this_machine: bool = True) -> str:
    """``trainer.accelerator``: a known name, and (``on_this_machine``) one this machine has.

    Args:
        value: The configured accelerator.
        on_this_machine: Whether training runs here; False when it runs on other machines
            (a search whose evaluations are submitit jobs), where only the name is checked.

    Raises:
        ConfigError: Naming the value, what this machine has and the accelerators allowed here.

    """
    if not isinstance(value, str) or value not in ACCELERATORS:
        hint = did_you_mean(value, ACCELERATORS) if isinstance(value, str) else ""
        raise ConfigError(
            f"trainer.accelerator={shown_value(value)} is not an accelerator{hint}; "
            f"allowed: {allowed_list(ACCELERATORS)}"
            + (f" (on this machine: {allowed_list(available_accelerators())})" if on_this_machine else "")
        )
    if on_this_machine:
        here = available_accelerators()
        if value not in here:
            needs = {"gpu": "a CUDA or Apple MPS GPU", "cuda": "a CUDA GPU", "mps": "Apple's MPS GPU"}[value]
            raise ConfigError(
                f"trainer.accelerator={value!r} needs {needs}, but {_machine_has()}; "
                f"allowed on this machine: {allowed_list(here)}"
            )
    return value


def _is_number(value: Any) -> bool:
    """A finite int or float; booleans are not numbers here (``true`` is not a learning rate)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(
    value: Any, key: str, low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = True
) -> float:
    """``value`` if it is a finite number in the range, else a :class:`ConfigError` naming ``key``.

    The range is ``[low, high)`` by default (``low_open``/``high_open`` choose the ends); no ``high``
    means no upper bound.
    """
    if _is_number(value):
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if above and below:
            return value
    if high is None:
        allowed = f"> {low:g}" if low_open else f">= {low:g}"
        what = "a positive number" if (low == 0 and low_open) else f"a number {allowed}"
    else:
        what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ConfigError(f"trainer.{key}={shown_value(value)} must be {what}")


def _check_int(value: Any, key: str) -> int:
    """An integer >= 1 (booleans refused: ``trainer.batch_size=true`` is a mistake, not 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"trainer.{key}={shown_value(value)} must be a positive integer (>= 1)")
    return value


def _check_bool(value: Any, key: str) -> bool:
    """A real boolean: ``progress_bar=1`` or ``'yes'`` would be silently truthy otherwise."""
    if not isinstance(value, bool):
        raise ConfigError(f"trainer.{key}={shown_value(value)} must be true or false")
    return value


def _check_limit(value: Any, key: str) -> int | float | None:
    """``limit_*_batches``: null (the whole split), a number of batches >= 1, or a fraction in (0, 1].

    Lightning would also take 0 (skip the loop), which leaves no metrics to select or report on.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return value
    raise ConfigError(
        f"trainer.{key}={shown_value(value)} must be null (the whole split), "
        "an integer >= 1 (batches) or a fraction in (0, 1]"
    )


def _check_devices(value: Any) -> int:
    """``trainer.devices``: 1. Each configuration trains in one process on one device.

    More (``2``, ``auto`` on a multi-GPU machine, ``[0, 1]``) would make Lightning start DDP, which
    relaunches ``run.py`` in child processes; a run's records, best-epoch restore and export are
    single-process. A search uses several GPUs by running evaluations side by side instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value == 1:
        return value
    raise ConfigError(
        f"trainer.devices={shown_value(value)}: each configuration trains on one device; allowed: 1 "
        "(several GPUs: search.parallel.workers runs evaluations side by side; one GPU: CUDA_VISIBLE_DEVICES=<index>)"
    )


def _check_learning_rates(values: Mapping[str, Any]) -> None:
    """``lr``, ``lr_peft`` and ``lr_fft``: positive numbers; ``lr`` may be null, then the other two are used."""
    for key in ("lr", "lr_peft", "lr_fft"):
        value = values[key]
        if value is None:
            if key == "lr" or values["lr"] is not None:
                continue  # lr=null picks lr_peft / lr_fft; with lr set, those two are unused
            kind = "PEFT configurations train" if key == "lr_peft" else "full fine-tuning trains"
            raise ConfigError(
                f"trainer.{key}=null: with trainer.lr=null, {kind} at trainer.{key}; "
                f"set it to a positive number or set trainer.lr"
            )
        if not (_is_number(value) and value > 0):
            null = " or null (null: lr_peft for PEFT, lr_fft for full fine-tuning)" if key == "lr" else ""
            raise ConfigError(f"trainer.{key}={shown_value(value)} must be a positive number{null}")


def trains_on_this_machine(cfg: Mapping[str, Any] | DictConfig) -> bool:
    """Whether the run config's trainings run in this process's machine.

    A search whose evaluations are submitit jobs (``search.parallel.executor=submitit``) trains on
    the cluster's nodes, which may have GPUs where the submitting machine has none.
    """
    search = cfg.get("search")  # a DictConfig node is a Mapping too
    parallel = search.get("parallel") if isinstance(search, Mapping) else None
    return not (isinstance(parallel, Mapping) and parallel.get("executor") == "submitit")


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
    gradient_checkpointing: bool
    log_every_n_steps: int
    accumulate_grad_batches: int
    oom_retry: bool
    save_weights: bool | str
    save_merged: bool

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | DictConfig, *, on_this_machine: bool = True) -> TrainerSettings:
        """Check every key of the ``trainer`` node, before anything is built, written or trained.

        Args:
            node: The ``trainer`` node.
            on_this_machine: Whether the trainings run on this machine: then ``accelerator``
                must be one it has (False: a search whose evaluations run as cluster jobs).

        Raises:
            ConfigError: On an unknown key or a bad value, naming it and what is allowed.

        """
        values = _values(cls, node, "trainer")
        for key in ("batch_size", "eval_batch_size", "accumulate_grad_batches", "log_every_n_steps"):
            _check_int(values[key], key)
        _check_learning_rates(values)
        _check_range(values["weight_decay"], "weight_decay", 0)
        # A ratio of 1 would warm up for the whole run and never decay.
        _check_range(values["warmup_ratio"], "warmup_ratio", 0, 1)
        _check_range(values["adam_eps"], "adam_eps", 0, low_open=True)
        if values["gradient_clip_val"] is not None:
            try:
                _check_range(values["gradient_clip_val"], "gradient_clip_val", 0)
            except ConfigError as err:
                raise ConfigError(f"{err} or null (no clipping)") from None
        # Dropout 1 zeroes every feature the head sees.
        _check_range(values["head_dropout"], "head_dropout", 0, 1)
        values["precision"] = check_precision(values["precision"])
        check_accelerator(values["accelerator"], on_this_machine)
        check_precision_on_device(values["precision"], values["accelerator"], on_this_machine)
        _check_devices(values["devices"])
        for key in ("limit_train_batches", "limit_eval_batches"):
            _check_limit(values[key], key)
        for key in ("progress_bar", "deterministic", "gradient_checkpointing", "oom_retry", "save_merged"):
            _check_bool(values[key], key)
        check_save_weights(values["save_weights"])
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
            trainer=TrainerSettings.from_config(cfg["trainer"], on_this_machine=trains_on_this_machine(cfg)),
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
