"""The export folder's format: its names and version, the frozen-backbone fingerprint, the export error."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence

import torch

from autopeft.errors import ConfigError

#: Bump when the folder layout or a manifest field's meaning changes; loading refuses newer formats.
#: 2 added ``peft.sa_placement`` and ``peft.adapter_init``; version 1 exports were trained with
#: the serial adapter on the raw FFN output, so they load with the ``houlsby`` wiring.
#: Fields and files added since without a bump, because no loader reads them and none changed
#: meaning: the manifest's ``libraries`` (the other libraries' folders written, or why not),
#: ``provenance`` and ``scores.protocol``/``scoring``, and the folders ``peft/``, ``adapters/``
#: and the model card ``README.md``; a version 2 export without them loads as before.
EXPORT_FORMAT_VERSION = 2


#: PEFT fields a version 1 manifest lacks, with the behaviour version 1 had.
VERSION_1_PEFT = {"sa_placement": "houlsby", "adapter_init": "zero_up"}


EXPORT_FORMAT = "autopeft-export"


MANIFEST_NAME = "autopeft.json"


EXPORT_DIRNAME = "export"


class ExportError(ConfigError):
    """An export folder or file is missing, corrupt, of another format version, or does not fit."""


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every frozen parameter of ``model``.

    The export does not store frozen weights; this fingerprint proves on loading that the
    rebuilt backbone is bit-identical to the one the weights were trained on.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The versions of AutoPEFT and the libraries an export depends on (recorded in its manifest)."""
    import transformers

    from autopeft import __version__

    versions = {
        "autopeft": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import safetensors

        versions["safetensors"] = safetensors.__version__
    except ImportError:
        pass
    return versions


def quoted_names(keys: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``keys``, quoted, and how many more there are (for error messages)."""
    shown = ", ".join(repr(k) for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
