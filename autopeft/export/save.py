"""Writing a trained configuration's export folder.

The folder holds AutoPEFT's own files (``autopeft.json``, the weights), a folder per other
library that can express the configuration (``peft/``, ``adapters/``: see
:mod:`autopeft.export.peft_format` and :mod:`autopeft.export.adapters_format`; decoders get the
peft folder only), on request (``merged=True``) the merged weights as a plain transformers
folder (``merged/``, :mod:`autopeft.export.merged_format`), and the model card ``README.md``
(:mod:`autopeft.export.card`). A library that cannot express it gets one log line naming what
it lacks, and the manifest's ``libraries`` records what was written and why not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig

from autopeft.data.cache import tokenizer_fingerprint
from autopeft.errors import ConfigError
from autopeft.export.adapters_format import adapters_folder
from autopeft.export.card import CARD_NAME, model_card
from autopeft.export.format import (
    EXPORT_DIRNAME,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    MANIFEST_NAME,
    frozen_fingerprint,
    library_versions,
)
from autopeft.export.library import LibraryFolder, NotExpressible
from autopeft.export.merged_format import merged_folder
from autopeft.export.peft_format import peft_folder
from autopeft.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from autopeft.settings import plain
from autopeft.tasks.registry import default_label_names, task_from_config
from autopeft.training.backbones import load_tokenizer
from autopeft.training.model import AutoPeftModel

if TYPE_CHECKING:
    from autopeft.tasks.spec import TaskSpec
    from autopeft.training.train import TrainingJob

log = logging.getLogger("autopeft.export")


def _serialise(tensors: dict[str, torch.Tensor]) -> tuple[bytes, str, str]:
    """Tensors -> (file bytes, format, file name); safetensors when installed, else torch.save."""
    try:
        from safetensors.torch import save
    except ImportError:  # safetensors ships with transformers; this is a fallback only
        import io

        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getvalue(), "torch", "weights.pt"
    return save(tensors), "safetensors", "weights.safetensors"


def _previous_libraries(path: Path) -> dict[str, Any]:
    """The ``libraries`` entry of the manifest already in ``path`` (empty when there is none)."""
    try:
        return dict(json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8")).get("libraries") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def _write_libraries(
    path: Path, builders: dict[str, Callable[[], LibraryFolder]], configuration: str
) -> dict[str, dict[str, Any]]:
    """Write each library's folder that can express the model; one log line for each that cannot.

    A folder that an earlier export into ``path`` wrote and this one does not (because it cannot,
    or was not asked to: ``merged``) is removed, so that no folder of another model stays beside
    this one's manifest.

    Returns:
        The manifest's ``libraries``: per library ``written``, and ``folder``, ``files`` and the
        builder's details, or ``reason``.

    """
    previous = _previous_libraries(path)
    out: dict[str, dict[str, Any]] = {}
    for library, build in builders.items():
        try:
            folder = build()
        except NotExpressible as err:
            log.info(
                "export %s: no %s folder: %s cannot express %s of %r; the AutoPEFT export holds all of it",
                path,
                library,
                library,
                err,
                configuration,
            )
            out[library] = {"written": False, "reason": str(err)}
            if (previous.get(library) or {}).get("written") and (path / library).is_dir():
                shutil.rmtree(path / library)
            continue
        for name, data in folder.files.items():
            atomic_write_bytes(path / library / name, data)
        # A file an earlier export left that this folder does not have (the merged folder's files
        # follow the tokenizer) would otherwise be loaded beside this model's.
        for stale in sorted((path / library).rglob("*")):
            if stale.is_file() and stale.relative_to(path / library).as_posix() not in folder.files:
                stale.unlink()
        out[library] = {"written": True, "folder": library, "files": sorted(folder.files), **folder.details}
    for library, entry in previous.items():
        if library not in builders and (entry or {}).get("written") and (path / library).is_dir():
            shutil.rmtree(path / library)
    return out


def _decoder_not_expressible() -> LibraryFolder:
    """The adapters folder of a decoder's export: not written (its format here knows the encoder layout only)."""
    raise NotExpressible(["a decoder backbone (the adapters export is written for BERT/RoBERTa encoders only)"])


def save_export(
    model: AutoPeftModel,
    cfg: DictConfig | Mapping[str, Any],
    path: str | Path,
    *,
    record: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    label_names: Sequence[str] | None = None,
    include_backbone: bool = False,
    task: TaskSpec | None = None,
    origin: Mapping[str, Any] | None = None,
    merged: bool = False,
) -> Path:
    """Write ``model`` and what rebuilding it needs into the export folder ``path``.

    Args:
        model: The trained model (its current weights are saved: restore the best epoch first).
        cfg: The run config it was built from (``backbone``, ``task``, ``data.max_length``,
            ``trainer.head_dropout`` and ``seed`` are read).
        path: The export folder (created; files in it are replaced atomically).
        record: The training record, for the scores (``score``, ``metrics``, ...) it reached.
        tokenizer: The tokenizer training used (loaded from ``cfg.backbone`` when None).
        label_names: Class names by label id; default: :func:`default_label_names`.
        include_backbone: Also store the frozen backbone weights. Needed only when the backbone
            cannot be rebuilt from its config node (e.g. a random-weight backbone built
            without the run's seed); the file then holds the whole model.
        task: The task of ``cfg`` when the caller built it already.
        origin: Where the configuration came from (:attr:`TrainingJob.origin`); stored, after
            the run's ``mode``, as the manifest's ``provenance``.
        merged: Also write ``merged/``: the task model with LoRA/DoRA folded into the backbone
            weights, a plain transformers folder (:mod:`autopeft.export.merged_format`); a
            configuration it cannot hold gets a log line and a manifest reason instead.

    Returns:
        The export folder.

    Raises:
        ConfigError: If ``model`` does not fit the task of ``cfg``, or ``label_names`` has
            the wrong length.

    """
    path = Path(path)
    task = task_from_config(cfg["task"]) if task is None else task
    if model.task_type != task.type:
        raise ConfigError(f"model has a {model.task_type} head but task {task.name!r} is {task.type}")
    names = list(label_names) if label_names is not None else default_label_names(task)
    if names is not None and (task.type != "classification" or len(names) != task.num_labels):
        raise ConfigError(
            f"label_names={names!r} must name each of the {task.num_labels} classes of task {task.name!r}"
        )
    if tokenizer is None:
        tokenizer = load_tokenizer(plain(cfg["backbone"]))
    params = dict(model.named_parameters())
    saved = {n: p for n, p in params.items() if include_backbone or p.requires_grad}
    # Contiguous CPU copies: safetensors refuses views, and the model may sit on a GPU.
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in saved.items()}
    data, fmt, filename = _serialise(tensors)
    atomic_write_bytes(path / filename, data)
    record = dict(record or {})
    backbone = plain(cfg["backbone"])
    head_dropout = float(cfg["trainer"]["head_dropout"])
    builders: dict[str, Callable[[], LibraryFolder]] = {
        "peft": lambda: peft_folder(model, task, backbone, tokenizer),
        # The adapters format knows the encoder layout only.
        "adapters": _decoder_not_expressible
        if model.decoder
        else lambda: adapters_folder(model, task, names, head_dropout),
    }
    if merged:
        builders["merged"] = lambda: merged_folder(model, task, tokenizer, names)
    libraries = _write_libraries(path, builders, model.spec.describe())
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "configuration": model.spec.describe(),
        "backbone": backbone,
        "task": task.to_dict(),
        "peft": model.spec.to_dict(),
        "head": {
            "type": model.task_type,
            "num_labels": task.num_labels,
            "pooling": model.head.pooling,
            "dropout": head_dropout,
        },
        "data": {"max_length": int(cfg["data"]["max_length"])},
        "label_names": names,
        "main_metric": task.main_metric,
        "scores": {
            key: record.get(key)
            for key in (
                "score",
                "metrics",
                "best_epoch",
                "epochs_trained",
                "status",
                "protocol",
                "scoring",
                "selected_on_reported_split",
            )
        },
        "params": record.get("params"),
        "provenance": {"mode": str(cfg.get("mode") or "train"), **(origin or {})},
        # A random-weight backbone is rebuilt with the seed its run was built with.
        "seed": int(cfg["seed"]),
        "dtype": str(next(iter(params.values())).dtype).removeprefix("torch."),
        "weights": {
            "file": filename,
            "format": fmt,
            "sha256": hashlib.sha256(data).hexdigest(),
            "tensors": len(tensors),
            "numel": sum(t.numel() for t in tensors.values()),
            "includes_backbone": include_backbone,
        },
        "fingerprints": {"frozen_backbone": frozen_fingerprint(model), "tokenizer": tokenizer_fingerprint(tokenizer)},
        "versions": library_versions(),
        "libraries": libraries,
    }
    atomic_write_text(path / CARD_NAME, model_card(manifest))
    # The manifest goes last: it names the weights' checksum, so a run killed in between
    # leaves an export that fails loudly instead of one that loads stale weights.
    atomic_write_json(path / MANIFEST_NAME, manifest)
    return path


#: Values of ``trainer.save_weights``: always, never, or only when PEFT weights are the point.
def export_run(
    model: AutoPeftModel, job: TrainingJob, run_dir: Path, record: Mapping[str, Any], tokenizer: Any = None
) -> str | None:
    """Write ``<run_dir>/export`` after a training run when ``trainer.save_weights`` asks for it.

    A search (``mode=search``) never writes exports, whatever the switch says: it trains
    hundreds of configurations at low fidelity; retrain the ones worth keeping instead.

    Returns:
        The export folder as a string, or None when nothing was written.

    """
    switch = job.settings.trainer.save_weights
    if not switch or job.mode == "search":
        return None
    if switch == "peft" and job.peft.get("full_finetune"):
        return None  # a full fine-tuning export is a whole model copy (440 MB for BERT-base) per run
    folder = Path(run_dir) / EXPORT_DIRNAME
    return str(
        save_export(
            model,
            job.config,
            folder,
            record=record,
            tokenizer=tokenizer,
            task=job.task,
            origin=job.origin,
            merged=job.settings.trainer.save_merged,
        )
    )
