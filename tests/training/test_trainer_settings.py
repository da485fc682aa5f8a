"""``trainer.*``: every key checked with one line naming it, and Lightning's refusals as a ConfigError.

Nothing here trains: the settings are parsed from the real composed config, and the only
Trainers built are the cheap throwaway ones of :func:`check_trainer_builds`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

import autopeft.settings as settings_module
from autopeft.errors import ConfigError
from autopeft.settings import (
    TrainerSettings,
    TrainingSettings,
    available_accelerators,
    plain,
    trainer_precisions,
    trains_on_this_machine,
)
from autopeft.training.train import TrainingJob, check_trainer_builds, make_trainer


@pytest.fixture
def trainer_node(compose_cfg: Callable[..., DictConfig]) -> dict[str, Any]:
    """The real ``trainer`` node: conf/trainer/default.yaml (the paper's settings), as a plain dict."""
    return plain(compose_cfg("experiment=none").trainer)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as the checks see it, has neither CUDA nor Apple MPS (whatever it really has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(settings_module, "_mps_available", lambda: False)


@pytest.fixture
def cuda_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as the checks see it, has one CUDA GPU and no MPS."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(settings_module, "_mps_available", lambda: False)


def _parse(node: dict[str, Any], **changes: Any) -> TrainerSettings:
    return TrainerSettings.from_config({**node, **changes})


def test_the_default_trainer_node_parses(trainer_node: dict[str, Any]) -> None:
    settings = TrainerSettings.from_config(trainer_node)
    assert settings.precision == "auto" and settings.accelerator == "auto" and settings.devices == 1
    assert settings.lr is None and settings.learning_rate(full_finetune=False) == settings.lr_peft
    assert settings.learning_rate(full_finetune=True) == settings.lr_fft


@pytest.mark.parametrize("experiment", ["none", "demo"])
def test_every_shipped_experiment_trainer_node_parses(compose_cfg: Callable[..., DictConfig], experiment: str) -> None:
    TrainingSettings.from_config(compose_cfg(f"experiment={experiment}"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # Integers >= 1; booleans are not integers.
        ("batch_size", 0, "trainer.batch_size=0 must be a positive integer (>= 1)"),
        ("batch_size", True, "trainer.batch_size=true must be a positive integer (>= 1)"),
        ("batch_size", 8.5, "trainer.batch_size=8.5 must be a positive integer"),
        ("eval_batch_size", -1, "trainer.eval_batch_size=-1 must be a positive integer"),
        ("accumulate_grad_batches", 0, "trainer.accumulate_grad_batches=0 must be a positive integer"),
        ("log_every_n_steps", 0, "trainer.log_every_n_steps=0 must be a positive integer"),
        ("log_every_n_steps", "often", "trainer.log_every_n_steps='often' must be a positive integer"),
        # Positive learning rates; lr may be null.
        ("lr", -1, "trainer.lr=-1 must be a positive number or null"),
        ("lr", 0, "trainer.lr=0 must be a positive number or null"),
        ("lr", True, "trainer.lr=true must be a positive number"),
        ("lr", math.inf, "trainer.lr=inf must be a positive number"),
        ("lr", "fast", "trainer.lr='fast' must be a positive number"),
        ("lr_peft", 0.0, "trainer.lr_peft=0.0 must be a positive number"),
        ("lr_peft", None, "trainer.lr_peft=null: with trainer.lr=null, PEFT configurations train at trainer.lr_peft"),
        ("lr_fft", -2e-5, "trainer.lr_fft=-2e-05 must be a positive number"),
        ("lr_fft", None, "trainer.lr_fft=null: with trainer.lr=null, full fine-tuning trains at trainer.lr_fft"),
        # Ranges.
        ("weight_decay", -0.5, "trainer.weight_decay=-0.5 must be a number >= 0"),
        ("weight_decay", math.nan, "trainer.weight_decay=nan must be a number >= 0"),
        ("warmup_ratio", -1, "trainer.warmup_ratio=-1 must be a number in [0, 1)"),
        ("warmup_ratio", 1.0, "trainer.warmup_ratio=1.0 must be a number in [0, 1)"),
        ("adam_eps", 0, "trainer.adam_eps=0 must be a positive number"),
        ("gradient_clip_val", -1, "trainer.gradient_clip_val=-1 must be a number >= 0 or null (no clipping)"),
        ("gradient_clip_val", "max", "trainer.gradient_clip_val='max' must be a number >= 0 or null"),
        ("head_dropout", 1.5, "trainer.head_dropout=1.5 must be a number in [0, 1)"),
        ("head_dropout", 1, "trainer.head_dropout=1 must be a number in [0, 1)"),
        ("head_dropout", -0.1, "trainer.head_dropout=-0.1 must be a number in [0, 1)"),
        # Precision: Lightning's values (plus auto), with the one probably meant.
        ("precision", "fp64", "trainer.precision='fp64' is not a precision (did you mean '64-true'?); allowed: 'auto'"),
        ("precision", "16mixed", "trainer.precision='16mixed' is not a precision (did you mean '16-mixed'?)"),
        ("precision", "fp16", "(did you mean '16-mixed'?)"),
        ("precision", 8, "trainer.precision=8 is not a precision; allowed: 'auto', "),
        ("precision", "transformer-engine", "trainer.precision='transformer-engine' is not a precision"),
        # Accelerator names (what exists on this machine: see the tests below).
        ("accelerator", "gpus", "trainer.accelerator='gpus' is not an accelerator (did you mean 'gpu'?)"),
        ("accelerator", "tpu", "trainer.accelerator='tpu' is not an accelerator"),
        ("accelerator", None, "trainer.accelerator=null is not an accelerator"),
        # One device per configuration.
        ("devices", 0, "trainer.devices=0: each configuration trains on one device; allowed: 1"),
        ("devices", 2, "trainer.devices=2: each configuration trains on one device"),
        ("devices", "auto", "trainer.devices='auto': each configuration trains on one device"),
        ("devices", [0, 1], "trainer.devices=[0, 1]: each configuration trains on one device"),
        ("devices", True, "trainer.devices=true: each configuration trains on one device"),
        # Limits: null, batches >= 1, or a fraction in (0, 1].
        ("limit_train_batches", 0, "trainer.limit_train_batches=0 must be null (the whole split), an integer >= 1"),
        ("limit_train_batches", 0.0, "trainer.limit_train_batches=0.0 must be null"),
        ("limit_eval_batches", 1.5, "trainer.limit_eval_batches=1.5 must be null"),
        ("limit_eval_batches", -3, "or a fraction in (0, 1]"),
        ("limit_eval_batches", True, "trainer.limit_eval_batches=true must be null"),
        # Real booleans.
        ("progress_bar", "yes", "trainer.progress_bar='yes' must be true or false"),
        ("deterministic", 1, "trainer.deterministic=1 must be true or false"),
        ("oom_retry", None, "trainer.oom_retry=null must be true or false"),
        ("save_weights", "yes", "trainer.save_weights='yes'; allowed: true, false, 'peft'"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(
    trainer_node: dict[str, Any], key: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _parse(trainer_node, **{key: value})


@pytest.mark.parametrize(
    "changes",
    [
        {"warmup_ratio": 0, "head_dropout": 0, "weight_decay": 0, "gradient_clip_val": None},
        {"warmup_ratio": 0.06, "head_dropout": 0.99, "gradient_clip_val": 0},
        {"limit_train_batches": 3, "limit_eval_batches": 1.0},
        {"limit_train_batches": 0.25, "limit_eval_batches": None},
        {"lr": 4e-4, "lr_peft": None, "lr_fft": None},  # with lr set, the per-kind rates are unused
        {"lr": 1, "lr_peft": 1, "lr_fft": 1},  # integers are numbers
        {"precision": "bf16-mixed", "accelerator": "cpu"},
        # 16-mixed is accepted where a GPU trains (tests/training/test_precision.py), refused on a CPU.
        {"precision": "16-true", "deterministic": True, "progress_bar": False, "oom_retry": False},
        {"precision": "64-true", "save_weights": True},
    ],
)
def test_values_at_the_edges_are_accepted(trainer_node: dict[str, Any], changes: dict[str, Any]) -> None:
    settings = _parse(trainer_node, **changes)
    for key, value in changes.items():
        assert getattr(settings, key) == value


def test_precisions_are_lightnings_own_plus_auto(trainer_node: dict[str, Any]) -> None:
    allowed = trainer_precisions()
    assert allowed[0] == "auto"
    assert {"32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16"} <= set(allowed)
    assert not [p for p in allowed if p.startswith("transformer-engine")]
    # Hydra reads trainer.precision=32 as an int; it means Lightning's '32'.
    assert _parse(trainer_node, precision=32).precision == "32"


def test_gpu_is_refused_on_a_machine_without_one_saying_what_it_has(trainer_node: dict[str, Any], no_gpu: None) -> None:
    assert available_accelerators() == ("auto", "cpu")
    for name, needs in [("gpu", "a CUDA or Apple MPS GPU"), ("cuda", "a CUDA GPU"), ("mps", "Apple's MPS GPU")]:
        with pytest.raises(ConfigError) as err:
            _parse(trainer_node, accelerator=name)
        assert str(err.value) == (
            f"trainer.accelerator={name!r} needs {needs}, but this machine has no GPU "
            "(torch.cuda.is_available() is False); allowed on this machine: 'auto', 'cpu'"
        )
    assert _parse(trainer_node, accelerator="cpu").accelerator == "cpu"


def test_gpu_is_accepted_where_cuda_is_available(trainer_node: dict[str, Any], cuda_gpu: None) -> None:
    assert available_accelerators() == ("auto", "cpu", "gpu", "cuda")
    assert _parse(trainer_node, accelerator="gpu").accelerator == "gpu"
    assert _parse(trainer_node, accelerator="cuda").accelerator == "cuda"
    with pytest.raises(ConfigError, match=r"'mps' needs Apple's MPS GPU, but this machine has 1 CUDA GPU\(s\)"):
        _parse(trainer_node, accelerator="mps")


def test_a_search_on_cluster_jobs_does_not_ask_this_machine_for_a_gpu(
    compose_cfg: Callable[..., DictConfig], no_gpu: None
) -> None:
    # The submitting machine may have no GPU where the submitit jobs run on GPU nodes.
    local = compose_cfg("trainer.accelerator=gpu")
    cluster = compose_cfg("trainer.accelerator=gpu", "search.parallel.executor=submitit")
    assert trains_on_this_machine(local) and not trains_on_this_machine(cluster)
    with pytest.raises(ConfigError, match="needs a CUDA or Apple MPS GPU"):
        TrainingSettings.from_config(local)
    assert TrainingSettings.from_config(cluster).trainer.accelerator == "gpu"
    with pytest.raises(ConfigError, match=r"allowed: 'auto', 'cpu', 'gpu', 'cuda', 'mps'$"):  # names still checked
        TrainerSettings.from_config({**plain(cluster.trainer), "accelerator": "gpus"}, on_this_machine=False)


def test_a_trainer_lightning_refuses_is_one_config_error_naming_the_settings(
    trainer_node: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(**kwargs: Any) -> None:
        raise MisconfigurationException("No supported gpu backend found!\nmore detail")

    monkeypatch.setattr(pl, "Trainer", refuse)
    settings = _parse(trainer_node, precision="bf16-mixed")
    with pytest.raises(ConfigError) as err:
        make_trainer(settings, accelerator="auto")
    assert str(err.value).startswith(
        "trainer settings rejected by PyTorch Lightning: No supported gpu backend found!; check "
        "trainer.accelerator='auto' trainer.devices=1 trainer.precision='bf16-mixed'"
    )
    assert "\n" not in str(err.value)


def test_errors_after_the_trainer_is_built_are_not_relabelled(
    trainer_node: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = make_trainer(_parse(trainer_node), logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(trainer, pl.Trainer)
    with pytest.raises(Exception) as err:  # Lightning's own error, whatever it is
        trainer.fit(object())  # type: ignore[arg-type]
    assert not isinstance(err.value, ConfigError)


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="needs a machine where Lightning finds no CUDA GPU")
def test_lightning_refusing_the_machine_fails_when_the_job_is_parsed(
    tiny_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch says CUDA is there (so the settings pass), Lightning's own device count says it is not.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(
        ConfigError, match=r"^trainer settings rejected by PyTorch Lightning: .*trainer\.accelerator='cuda'"
    ):
        TrainingJob.from_config(tiny_cfg("mode=train", "trainer.accelerator=cuda"))


def test_the_early_trainer_check_is_silent_and_leaves_torch_as_it_was(
    trainer_node: dict[str, Any], capsys: pytest.CaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    deterministic = torch.are_deterministic_algorithms_enabled()
    check_trainer_builds(_parse(trainer_node, precision="bf16-mixed", deterministic=not deterministic))
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert not [str(w.message) for w in recwarn]
    captured = capsys.readouterr()
    assert "GPU available" not in captured.out + captured.err
