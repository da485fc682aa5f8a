"""What the other libraries' exports share: the folder they produce, the refusal, where LoRA sits.

An export folder can hold, besides AutoPEFT's own files, a folder in the format of another PEFT
library (:mod:`autopeft.export.peft_format`, :mod:`autopeft.export.adapters_format`). Each
format module turns a built :class:`~autopeft.training.model.AutoPeftModel` into a
:class:`LibraryFolder` (file names and bytes) or raises :class:`NotExpressible` naming every part
of the configuration that library has no faithful equivalent for. Neither imports its library:
they write JSON and tensors under the names the library reads, and the tests load them with the
real library to prove the predictions are the same.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from autopeft.peft.families import family_of
from autopeft.peft.inject import backbone_layers
from autopeft.peft.lora import LoRALinear
from autopeft.training.model import AutoPeftModel


class NotExpressible(Exception):
    """The library cannot represent part of the configuration; the message names those parts."""

    def __init__(self, parts: list[str]) -> None:
        super().__init__("; ".join(parts))
        self.parts = list(parts)


@dataclass(frozen=True)
class LibraryFolder:
    """One library's folder inside an export.

    Attributes:
        library: The library's package name (``peft``, ``adapters``), also the name of the
            export's sub-folder it goes to.
        files: File name -> contents.
        details: JSON-ready facts for the manifest and the model card (classes to load with,
            the library version the format was checked against, ...).

    """

    library: str
    files: dict[str, bytes]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoraSite:
    """One LoRA-adapted projection of the backbone (encoder or decoder).

    Attributes:
        layer: Its layer index.
        target: Its key in the family's ``lora_targets`` (:mod:`autopeft.peft.families`:
            ``query``, ``output``, ...).
        path: Its Hugging Face path inside the layer (``attention.self.query``, ``self_attn.q_proj``).
        module: The LoRA module (``lora_a`` (r x in), ``lora_b`` (out x r), ``scaling`` = alpha / r,
            and ``lora_magnitude`` (out,) under DoRA).
        layers_path: The path of the layer list in the base model (``encoder.layer``, ``layers``, ``h``).

    """

    layer: int
    target: str
    path: str
    module: LoRALinear
    layers_path: str = "encoder.layer"

    @property
    def module_path(self) -> str:
        """Its path in the base model: ``encoder.layer.3.attention.self.query``, ``layers.0.self_attn.q_proj``."""
        return f"{self.layers_path}.{self.layer}.{self.path}"

    @property
    def rank(self) -> int:
        """r, read from the trained factor (so a per-layer rank is seen as it is)."""
        return int(self.module.lora_a.shape[0])

    @property
    def alpha(self) -> float:
        """The scaling numerator: scaling x r (LoRA scales its update by alpha / r)."""
        return float(round(self.module.scaling * self.rank, 10))


def lora_sites(model: AutoPeftModel) -> list[LoraSite]:
    """Every LoRA module of ``model``'s backbone, by layer and target, in layer order.

    The path of a module is its Hugging Face path: AutoPEFT's wrappers keep the pretrained
    module as ``.base`` (the serial-adapter block, the prefix attention), which is dropped.
    """
    family = family_of(model.encoder.config.model_type)
    target_of_path = {path: target for target, path in family.lora_targets.items()}
    sites = []
    for index, layer in enumerate(backbone_layers(model.encoder)):
        for name, module in layer.named_modules():
            if isinstance(module, LoRALinear):
                path = ".".join(part for part in name.split(".") if part != "base")
                sites.append(LoraSite(index, target_of_path[path], path, module, family.layers))
    return sites


def cpu_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy (safetensors refuses views; the model may sit on a GPU)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def torch_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """``torch.save`` of a dict of tensors, as bytes (tensors that share storage are stored once)."""
    buffer = io.BytesIO()
    torch.save(dict(tensors), buffer)
    return buffer.getvalue()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``tensors``."""
    from safetensors.torch import save

    return save(dict(tensors))
