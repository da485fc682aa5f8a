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

from autopeft.peft.families import ENCODER_LORA_TARGETS
from autopeft.peft.inject import encoder_layers
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
    """One LoRA-adapted projection of the encoder.

    Attributes:
        layer: Its layer index.
        target: Its :data:`~autopeft.peft.families.ENCODER_LORA_TARGETS` key (``query``, ``output``, ...).
        path: Its Hugging Face path inside the layer (``attention.self.query``).
        module: The LoRA module (``lora_a`` (r x in), ``lora_b`` (out x r), ``scaling`` = alpha / r).

    """

    layer: int
    target: str
    path: str
    module: LoRALinear

    @property
    def rank(self) -> int:
        """r, read from the trained factor (so a per-layer rank is seen as it is)."""
        return int(self.module.lora_a.shape[0])

    @property
    def alpha(self) -> float:
        """The scaling numerator: scaling x r (LoRA scales its update by alpha / r)."""
        return float(round(self.module.scaling * self.rank, 10))


#: Hugging Face path inside a layer -> LoRA target name.
_TARGET_OF_PATH = {path: target for target, path in ENCODER_LORA_TARGETS.items()}


def lora_sites(model: AutoPeftModel) -> list[LoraSite]:
    """Every LoRA module of ``model``'s encoder, by layer and target, in layer order.

    The path of a module is its Hugging Face path: AutoPEFT's wrappers keep the pretrained
    module as ``.base`` (the serial-adapter block, the prefix attention), which is dropped.
    """
    sites = []
    for index, layer in enumerate(encoder_layers(model.encoder)):
        for name, module in layer.named_modules():
            if isinstance(module, LoRALinear):
                path = ".".join(part for part in name.split(".") if part != "base")
                sites.append(LoraSite(index, _TARGET_OF_PATH[path], path, module))
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
