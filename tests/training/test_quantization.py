"""``backbone.quantization``: the refusals, one line each, on a machine without CUDA or bitsandbytes.

The real 4-bit load needs a CUDA GPU and bitsandbytes, which these tests do not have: they
check every refusal and that, where both are present, ``from_pretrained`` is asked for NF4
weights with bfloat16 compute on the GPU, with that call replaced by an unquantized load.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModel, LlamaConfig, LlamaModel

import autopeft.training.backbones as backbones
from autopeft.errors import ConfigError
from autopeft.peft import peft_from_config
from autopeft.training.backbones import check_quantization_here, load_backbone, prepare_backbone
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer
from autopeft.training.train import TrainingJob

NO_CUDA = (
    "backbone.quantization='4bit' needs a CUDA GPU (bitsandbytes' 4-bit kernels), but this machine has none "
    "(torch.cuda.is_available() is False); use backbone.quantization=none here"
)
NO_BNB = (
    "backbone.quantization='4bit' needs the bitsandbytes package, which is not installed: "
    "pip install bitsandbytes (or use backbone.quantization=none)"
)


@pytest.fixture
def llama_folder(tmp_path: Path) -> Path:
    """A tiny llama saved as a user's own checkpoint folder (a pretrained source: ``backbone=custom``)."""
    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    config.vocab_size = 512
    folder = tmp_path / "llama"
    LlamaModel(config).save_pretrained(folder)
    standin_bpe_tokenizer().save_pretrained(folder)
    return folder


def _custom(compose_cfg: Callable[..., DictConfig], folder: Path, *overrides: str) -> DictConfig:
    return compose_cfg("backbone=custom", f"backbone.name_or_path={folder}", "backbone.quantization=4bit", *overrides)


def _bitsandbytes(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    """Make ``bitsandbytes`` look installed or not, whatever this machine has."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name == "bitsandbytes":
            return importlib.machinery.ModuleSpec("bitsandbytes", None) if installed else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_every_shipped_backbone_is_unquantized_by_default(compose_cfg: Callable[..., DictConfig]) -> None:
    files = sorted((Path(__file__).resolve().parents[2] / "conf" / "backbone").glob("*.yaml"))
    nodes = {path.stem: OmegaConf.load(path) for path in files}
    assert len(nodes) > 30
    # Each file says it, or extends one that does (composed, as Hydra merges its defaults list).
    inherited = sorted(name for name, node in nodes.items() if "quantization" not in node)
    assert inherited and all("defaults" in nodes[name] for name in inherited)
    values = {node.quantization for node in nodes.values() if "quantization" in node}
    values |= {compose_cfg(f"backbone={name}").backbone.quantization for name in inherited}
    assert values == {"none"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8bit", "backbone.quantization='8bit'; allowed: 'none', '4bit' (4bit: the pretrained weights as 4-bit NF4"),
        ("true", "backbone.quantization=true; allowed: 'none', '4bit'"),
        ("nf4", "backbone.quantization='nf4'; allowed: 'none', '4bit'"),
    ],
)
def test_an_unknown_quantization_is_one_line_when_the_job_is_parsed(
    tiny_cfg: Callable[..., DictConfig], value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        TrainingJob.from_config(tiny_cfg("backbone=tiny_llama", f"backbone.quantization={value}"))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("backbone", ["tiny_llama", "qwen2_5_0_5b_arch", "tiny_bert"])
def test_random_weights_cannot_be_quantized(tiny_cfg: Callable[..., DictConfig], backbone: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainingJob.from_config(tiny_cfg(f"backbone={backbone}", "backbone.quantization=4bit"))
    assert str(err.value) == (
        f"backbone.quantization='4bit' quantizes pretrained weights, but backbone {backbone!r} has random weights "
        "(source: random); use a hub or folder backbone (e.g. backbone=qwen2_5_0_5b, or backbone=custom "
        "backbone.name_or_path=<folder>) or backbone.quantization=none"
    )


def test_without_cuda_a_4bit_backbone_is_refused_before_anything_is_loaded(
    compose_cfg: Callable[..., DictConfig], llama_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loads: list[str] = []
    monkeypatch.setattr(backbones, "_checked_model_config", lambda cfg: loads.append("config"))
    with pytest.raises(ConfigError) as err:
        load_backbone(_custom(compose_cfg, llama_folder).backbone)
    assert str(err.value) == NO_CUDA and not loads
    # A hub backbone: refused for the machine, not sent to the (offline) hub first.
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_backbone(compose_cfg("backbone=qwen2_5_0_5b", "backbone.quantization=4bit").backbone)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        check_quantization_here(_custom(compose_cfg, llama_folder).backbone, "auto")


def test_without_bitsandbytes_a_4bit_backbone_is_refused(
    compose_cfg: Callable[..., DictConfig], llama_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _bitsandbytes(monkeypatch, installed=False)
    with pytest.raises(ConfigError) as err:
        load_backbone(_custom(compose_cfg, llama_folder).backbone)
    assert str(err.value) == NO_BNB


@pytest.mark.parametrize("accelerator", ["cpu", "mps"])
def test_a_4bit_backbone_on_a_non_cuda_accelerator_is_refused(
    compose_cfg: Callable[..., DictConfig], llama_folder: Path, accelerator: str
) -> None:
    with pytest.raises(ConfigError) as err:
        check_quantization_here(_custom(compose_cfg, llama_folder).backbone, accelerator)
    assert str(err.value) == (
        f"backbone.quantization='4bit' trains on a CUDA GPU, but trainer.accelerator={accelerator!r}; "
        "use trainer.accelerator=auto (or gpu, cuda) or backbone.quantization=none"
    )
    # Unquantized, any accelerator is the trainer settings' business.
    check_quantization_here(compose_cfg("backbone=tiny_llama").backbone, accelerator)


def test_with_cuda_and_bitsandbytes_the_weights_are_asked_for_as_nf4_with_bf16_compute(
    compose_cfg: Callable[..., DictConfig], llama_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    _bitsandbytes(monkeypatch, installed=True)
    calls: list[dict[str, Any]] = []
    real_load = AutoModel.from_pretrained

    def from_pretrained(location: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        # bitsandbytes would pack two 4-bit weights per byte; half of each Linear's count is what it reports.
        model = real_load(location)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight = torch.nn.Parameter(module.weight.flatten()[: module.weight.numel() // 2])
        return model

    monkeypatch.setattr(backbones.AutoModel, "from_pretrained", from_pretrained)
    backbone = load_backbone(_custom(compose_cfg, llama_folder).backbone)
    (kwargs,) = calls
    quantization = kwargs["quantization_config"]
    assert quantization.load_in_4bit and not quantization.load_in_8bit
    assert quantization.bnb_4bit_quant_type == "nf4" and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}
    # The "% of parameters" denominator is the model's real count, not the packed storage's.
    assert backbone.num_params == sum(p.numel() for p in LlamaModel.from_pretrained(llama_folder).parameters())
    assert backbone.num_params > sum(p.numel() for p in backbone.model.parameters())


@pytest.mark.parametrize(
    ("peft", "refused"),
    [(["peft=fft"], "full fine-tuning"), (["peft=lora", "peft.use_dora=true"], "DoRA")],
)
def test_a_4bit_base_refuses_what_would_train_or_read_its_packed_weights(
    compose_cfg: Callable[..., DictConfig], peft: list[str], refused: str
) -> None:
    cfg = compose_cfg("backbone=tiny_llama", *peft)
    loaded = load_backbone(cfg.backbone)
    quantized = dataclasses.replace(loaded, quantized=True)  # as a 4-bit load marks it
    spec = peft_from_config(cfg.peft, loaded.shape)
    prepare_backbone(loaded, spec, gradient_checkpointing=False)  # unquantized: accepted
    with pytest.raises(ConfigError) as err:
        prepare_backbone(quantized, spec, gradient_checkpointing=False)
    assert str(err.value).startswith(f"backbone.quantization='4bit' cannot train {refused}: its weights are stored")
    assert "use backbone.quantization=none for this configuration" in str(err.value)
    lora = compose_cfg("backbone=tiny_llama", "peft=lora").peft
    prepare_backbone(quantized, peft_from_config(lora, loaded.shape), gradient_checkpointing=True)
