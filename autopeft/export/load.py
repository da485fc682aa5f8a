"""Reading an export folder back into a model, checking it against its backbone."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from autopeft.data.cache import tokenizer_fingerprint
from autopeft.export.format import (
    EXPORT_DIRNAME,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    MANIFEST_NAME,
    VERSION_1_PEFT,
    ExportError,
    frozen_fingerprint,
    quoted_names,
)
from autopeft.export.predictor import Predictor
from autopeft.io import sha256_file
from autopeft.peft import peft_from_config
from autopeft.tasks.registry import task_from_config
from autopeft.tasks.spec import TaskSpec
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel


def _deserialise(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if fmt == "torch":
            tensors = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(tensors, dict):
                raise ValueError(f"expected a dict of tensors, got {type(tensors).__name__}")
            return tensors
    except Exception as err:
        raise ExportError(
            f"weights file {path} could not be read ({type(err).__name__}: {err}); is it corrupt?"
        ) from err
    raise ExportError(f"weights file {path}: unknown format {fmt!r}; allowed: 'safetensors', 'torch'")


def _manifest_path(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in (path / MANIFEST_NAME, path / EXPORT_DIRNAME / MANIFEST_NAME):
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"no export at {path}: expected {path / MANIFEST_NAME} (an export folder) or "
        f"{path / EXPORT_DIRNAME / MANIFEST_NAME} (a run directory trained with trainer.save_weights=true)"
    )


def read_manifest(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read and check an export's ``autopeft.json``.

    Args:
        path: The export folder, its ``autopeft.json``, or the run directory holding ``export/``.

    Returns:
        ``(manifest, manifest path)``.

    Raises:
        ExportError: If the file is missing, not JSON, not an export, or of a newer format.

    """
    file = _manifest_path(Path(path).expanduser())
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{file} is not a readable export manifest ({type(err).__name__}: {err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{file} is not an AutoPEFT export (format field is not {EXPORT_FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= EXPORT_FORMAT_VERSION:
        raise ExportError(
            f"{file} has export format_version={version!r}; this autopeft reads versions 1..{EXPORT_FORMAT_VERSION} "
            f"(it was written by autopeft {manifest.get('versions', {}).get('autopeft', '?')})"
        )
    missing = [
        k for k in ("backbone", "task", "peft", "head", "data", "seed", "weights", "fingerprints") if k not in manifest
    ]
    if missing:
        raise ExportError(f"{file} lacks the field(s) {quoted_names(missing)}; is it corrupt?")
    return manifest, file


def _task_of(manifest: Mapping[str, Any]) -> TaskSpec:
    node = dict(manifest["task"])
    if node.get("label_map") is not None:  # JSON object keys are strings; the spec maps ints
        node["label_map"] = {int(k): v for k, v in node["label_map"].items()}
    return task_from_config(node)


def _load_weights(model: AutoPeftModel, tensors: Mapping[str, torch.Tensor], file: Path, everything: bool) -> None:
    """Copy ``tensors`` into ``model``, refusing any missing, unexpected or misshapen key."""
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if everything or p.requires_grad}
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {quoted_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {quoted_names(unexpected)}")
        raise ExportError(f"weights file {file} does not fit the model its manifest describes: {'; '.join(parts)}")
    for name in sorted(expected):
        if tuple(tensors[name].shape) != tuple(params[name].shape):
            raise ExportError(
                f"weights file {file}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                f"the model expects {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name in expected:
            params[name].copy_(tensors[name])


def load_export(path: str | Path, *, device: str | torch.device = "cpu", verify_backbone: bool = True) -> Predictor:
    """Rebuild an exported model for inference: ``load_export(path).predict([...])``.

    The backbone is rebuilt from the saved backbone node (offline backbones load offline),
    the PEFT modules are injected as the saved spec says, and the saved weights are loaded
    strictly; the model is returned in eval mode. A generation model's LM head is rebuilt as
    training built it (tied, seeded or the checkpoint's; saved only when it trained) and is
    checked with the rest of the frozen backbone; its ``predict`` writes answers
    (:class:`~autopeft.export.predictor.Predictor`).

    Args:
        path: The export folder, its ``autopeft.json``, or a run directory holding ``export/``.
        device: Where the model runs.
        verify_backbone: Check that the rebuilt frozen backbone and the tokenizer are
            bit-identical to those training used (the fingerprints in the manifest).

    Raises:
        ExportError: Naming the file, when the manifest or weights are missing, corrupt, of
            another format version, do not fit the rebuilt model (missing or unexpected
            tensors, other shapes), or the backbone or tokenizer differ from training's.

    """
    manifest, file = read_manifest(path)
    folder = file.parent
    weights = manifest["weights"]
    weights_file = folder / str(weights.get("file", ""))
    if not weights_file.is_file():
        raise ExportError(f"{file} names the weights file {weights_file}, which does not exist")
    if weights.get("sha256") and sha256_file(weights_file) != weights["sha256"]:
        raise ExportError(
            f"weights file {weights_file} does not match the checksum in {file.name}: it is corrupt, "
            "truncated or from another export"
        )
    try:
        task = _task_of(manifest)
        # Random-weight backbones are rebuilt exactly as training built them, from the run's
        # seed; forking the RNG keeps the caller's random state untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(manifest["seed"]))
            backbone = load_backbone(manifest["backbone"])
        peft = dict(manifest["peft"])
        if manifest["format_version"] == 1:
            peft = {**VERSION_1_PEFT, **peft}
        spec = peft_from_config(peft, backbone.shape)
        head = manifest["head"]
        model = AutoPeftModel(backbone, spec, task.type, task.num_labels, float(head.get("dropout", 0.1)))
    except ExportError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # ConfigError is a ValueError
        raise ExportError(f"{file}: cannot rebuild the exported model: {err}") from err
    dtype = getattr(torch, str(manifest.get("dtype", "float32")), None)
    if isinstance(dtype, torch.dtype) and dtype != torch.float32:
        model.to(dtype)  # trained in true half precision: its frozen weights were cast too
    everything = bool(weights.get("includes_backbone"))
    if verify_backbone and not everything:
        expected = manifest["fingerprints"].get("frozen_backbone")
        if expected and frozen_fingerprint(model) != expected:
            raise ExportError(
                f"{file}: the backbone rebuilt from its node ({manifest['backbone'].get('name')!r}) differs from the "
                "one the weights were trained on (another checkpoint revision, or a random-weight backbone that "
                "its seed does not reproduce); re-export with include_backbone=True, or pass "
                "verify_backbone=False to load anyway"
            )
    tokenizer = backbone.tokenizer
    if verify_backbone:
        expected = manifest["fingerprints"].get("tokenizer")
        if expected and tokenizer_fingerprint(tokenizer) != expected:
            raise ExportError(
                f"{file}: the tokenizer of backbone {manifest['backbone'].get('name')!r} differs from "
                "the one training used; predictions would not be comparable"
            )
    _load_weights(model, _deserialise(weights_file, str(weights.get("format"))), weights_file, everything)
    model.eval().to(device)
    return Predictor(model, task, tokenizer, int(manifest["data"]["max_length"]), manifest.get("label_names"), manifest)
