"""``trainer.precision`` and ``trainer.gradient_checkpointing``: checked early, trained with, same gradients.

The settings are composed from the real configs; the training runs are tiny CPU runs (bf16
autocast works on a CPU, float16 autocast does not and is refused).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

import autopeft.settings as settings_module
from autopeft.errors import ConfigError
from autopeft.peft import peft_from_config
from autopeft.peft.lora import LoRALinear
from autopeft.settings import TrainerSettings, plain
from autopeft.training.backbones import load_backbone, prepare_backbone
from autopeft.training.model import AutoPeftModel
from autopeft.training.train import TrainingJob, build, train_and_evaluate

CPU_FP16 = (
    "trainer.precision={value!r} (float16 autocast) needs a GPU, but training runs on the CPU ({where}); "
    "torch's CPU autocast supports bfloat16 only: use trainer.precision=bf16-mixed (or bf16-true, 32-true, auto)"
)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine, as the checks see it, has neither CUDA nor Apple MPS (whatever it really has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(settings_module, "_mps_available", lambda: False)


def _trainer(compose_cfg: Callable[..., DictConfig], *overrides: str, on_this_machine: bool = True) -> TrainerSettings:
    return TrainerSettings.from_config(plain(compose_cfg(*overrides).trainer), on_this_machine=on_this_machine)


def test_the_defaults_and_the_precisions_that_run_on_a_cpu(
    compose_cfg: Callable[..., DictConfig], no_gpu: None
) -> None:
    default = _trainer(compose_cfg)
    assert default.precision == "auto" and default.gradient_checkpointing is False
    for precision in ("32-true", "bf16-mixed", "bf16-true", "auto"):
        settings = _trainer(compose_cfg, f"trainer.precision={precision}", "trainer.gradient_checkpointing=true")
        assert settings.precision == precision and settings.gradient_checkpointing is True


@pytest.mark.parametrize("value", ["16-mixed", "16"])
@pytest.mark.parametrize(
    ("accelerator", "where"),
    [("cpu", "trainer.accelerator='cpu'"), ("auto", "trainer.accelerator='auto' on a machine without a GPU")],
)
def test_float16_mixed_precision_on_a_cpu_is_one_line(
    compose_cfg: Callable[..., DictConfig], no_gpu: None, value: str, accelerator: str, where: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _trainer(compose_cfg, f"trainer.precision={value}", f"trainer.accelerator={accelerator}")
    assert str(err.value) == CPU_FP16.format(value=value, where=where)


def test_float16_mixed_precision_is_refused_when_the_job_is_parsed(tiny_cfg: Callable[..., DictConfig]) -> None:
    # Before any backbone or data is loaded (the real machine: whatever it has, accelerator=cpu is the CPU).
    with pytest.raises(ConfigError, match=r"^trainer\.precision='16-mixed' \(float16 autocast\) needs a GPU"):
        TrainingJob.from_config(tiny_cfg("mode=train", "trainer.precision=16-mixed", "trainer.accelerator=cpu"))


def test_float16_mixed_precision_is_accepted_where_a_gpu_trains(
    compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch, no_gpu: None
) -> None:
    # Cluster jobs (not this machine) with accelerator=auto: their GPUs are not known here.
    assert _trainer(compose_cfg, "trainer.precision=16-mixed", on_this_machine=False).precision == "16-mixed"
    with pytest.raises(ConfigError, match="needs a GPU"):  # ... but accelerator=cpu is a CPU anywhere
        _trainer(compose_cfg, "trainer.precision=16-mixed", "trainer.accelerator=cpu", on_this_machine=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for accelerator in ("auto", "gpu", "cuda"):
        settings = _trainer(compose_cfg, "trainer.precision=16-mixed", f"trainer.accelerator={accelerator}")
        assert settings.precision == "16-mixed"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "trainer.gradient_checkpointing='yes' must be true or false"),
        ("1", "trainer.gradient_checkpointing=1 must be true or false"),
        ("null", "trainer.gradient_checkpointing=null must be true or false"),
    ],
)
def test_a_bad_gradient_checkpointing_value_is_one_line(
    compose_cfg: Callable[..., DictConfig], value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _trainer(compose_cfg, f"trainer.gradient_checkpointing={value}")
    assert str(err.value) == message


def test_a_trainer_node_saved_before_the_setting_existed_trains_without_it(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    node = plain(compose_cfg().trainer)
    del node["gradient_checkpointing"]
    assert TrainerSettings.from_config(node).gradient_checkpointing is False


def _lora_llama(compose_cfg: Callable[..., DictConfig], checkpointing: bool) -> tuple[AutoPeftModel, Any]:
    """A tiny llama with LoRA (dropout on) whose B matrices are non-zero, so every LoRA tensor gets a gradient.

    Built as :func:`autopeft.training.train.build` builds it: the backbone prepared, then the PEFT inserted.
    """
    cfg = compose_cfg("backbone=tiny_llama", "peft=lora", "peft.lora_dropout=0.1")
    torch.manual_seed(0)
    backbone = load_backbone(cfg.backbone)
    spec = peft_from_config(cfg.peft, backbone.shape)
    prepare_backbone(backbone, spec, gradient_checkpointing=checkpointing)
    model = AutoPeftModel(backbone, spec, "classification", 3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_b"):
                param.normal_(std=0.1)
    return model, backbone


def _gradients_and_calls(model: AutoPeftModel) -> tuple[dict[str, torch.Tensor], int]:
    """Trainable gradients of two training steps' losses, and how often the first LoRA projection ran."""
    lora = next(m for m in model.modules() if isinstance(m, LoRALinear))
    calls = []
    hook = lora.register_forward_hook(lambda *_: calls.append(1))
    model.train()
    torch.manual_seed(1)  # the same dropout masks for both runs
    ids = torch.randint(3, 500, (4, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(ids, mask), labels).backward()
    hook.remove()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return grads, len(calls)


def test_gradient_checkpointing_gives_a_lora_llama_the_same_gradients(compose_cfg: Callable[..., DictConfig]) -> None:
    plain_model, plain_backbone = _lora_llama(compose_cfg, checkpointing=False)
    checkpointed, backbone = _lora_llama(compose_cfg, checkpointing=True)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain_backbone.model.modules())
    assert all(layer.gradient_checkpointing for layer in backbone.model.layers)
    expected, plain_calls = _gradients_and_calls(plain_model)
    got, checkpointed_calls = _gradients_and_calls(checkpointed)
    # Checkpointing is really on: each layer ran again in the backward pass (a forward per step, twice).
    assert (plain_calls, checkpointed_calls) == (2, 4)
    # The frozen base gets no gradient; every LoRA tensor and the head get one, equal to the plain run's.
    assert set(got) == set(expected) and sum(name.endswith(("lora_a", "lora_b")) for name in got) == 2 * 2 * 2
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(got[name], grad, rtol=1e-6, atol=1e-7, msg=name)
    # Evaluation (no gradients) runs each layer once, as without checkpointing, to the same outputs.
    ids, mask = torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(checkpointed.eval()(ids, mask), plain_model.eval()(ids, mask))


def test_gradient_checkpointing_gives_an_encoder_with_serial_adapters_the_same_gradients(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        cfg = compose_cfg("backbone=tiny_bert", "peft=sa", "peft.sa_size=8", "peft.adapter_dropout=0.1")
        torch.manual_seed(0)
        backbone = load_backbone(cfg.backbone)
        spec = peft_from_config(cfg.peft, backbone.shape)
        prepare_backbone(backbone, spec, gradient_checkpointing=checkpointing)
        model = AutoPeftModel(backbone, spec, "classification", 2)
        torch.manual_seed(1)
        ids = torch.randint(1000, 2000, (3, 9))
        torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([0, 1, 1])).backward()
        return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}

    expected, got = gradients(False), gradients(True)
    assert set(got) == set(expected) and any(".serial." in name for name in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    ("peft", "refused"),
    [
        (["peft=prefix"], "prefix-tuning (peft.prefix_len > 0)"),
        (
            ["peft=unipelt", "peft.sa_size=8", "peft.prefix_bottleneck=16"],
            "prefix-tuning (peft.prefix_len > 0) and UniPELT",
        ),
        (["peft=lora", "peft.gated=true"], "UniPELT gates (peft.gated)"),
    ],
)
def test_modules_that_cannot_be_recomputed_are_refused_in_one_line(
    tiny_cfg: Callable[..., DictConfig], peft: list[str], refused: str
) -> None:
    job = TrainingJob.from_config(tiny_cfg(*peft, "trainer.gradient_checkpointing=true"))
    with pytest.raises(ConfigError) as err:
        build(job)
    message = str(err.value)
    assert message.startswith(f"trainer.gradient_checkpointing=true cannot recompute {refused}")
    assert "set trainer.gradient_checkpointing=false" in message and "\n" not in message


def test_bf16_mixed_training_of_a_tiny_llama_with_checkpointing_on_a_cpu(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg(
        "backbone=tiny_llama",
        "peft=lora",
        "task=snli_binary",
        "trainer.precision=bf16-mixed",
        "trainer.accelerator=cpu",
        "trainer.gradient_checkpointing=true",
        "trainer.save_weights=false",
    )
    job = TrainingJob.from_config(cfg)
    assert all(layer.gradient_checkpointing for layer in build(job).backbone.model.layers)
    record = train_and_evaluate(job, tmp_path)
    assert record["status"] == "ok" and record["precision"] == "bf16-mixed"
    assert math.isfinite(record["score"]) and 0.0 <= record["score"] <= 1.0
    assert all(math.isfinite(v) for v in record["metrics"]["test"].values())
