"""Save a trained configuration and load it back for inference with one call.

An export is a folder with two files:

* ``autopeft.json``: everything needed to rebuild the model and tokenise new inputs the way
  training did: the backbone node, the full task spec, the PEFT spec, the head, ``max_length``,
  label names, the scores it reached, fingerprints of the frozen backbone and the tokenizer,
  and the library versions it was written with.
* ``weights.safetensors``: only the tensors that trained (PEFT modules and head; every
  encoder weight for full fine-tuning). The frozen backbone is rebuilt from its config node,
  which is why the file stays small (a few MB) for PEFT configurations.

Usage::

    from autopeft.export import load_export

    load_export("outputs/train/.../export").predict(["a gripping film", "dull and slow"])

Training writes ``<run dir>/export/`` after the best epoch's weights are restored when
``trainer.save_weights`` is on (the default) and the run is not a search evaluation; see
:func:`export_run`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from autopeft.backbones import load_backbone, load_tokenizer
from autopeft.data import MODEL_COLUMNS, make_collator, make_encoder, tokenizer_fingerprint
from autopeft.errors import ConfigError
from autopeft.io import atomic_write_bytes, atomic_write_json, sha256_file
from autopeft.model import AutoPeftModel
from autopeft.peft import peft_from_config
from autopeft.tasks import TASKS, TaskSpec, task_from_config

#: Bump when the folder layout or a manifest field's meaning changes; loading refuses newer formats.
#: 2 added ``peft.sa_placement`` and ``peft.adapter_init``; version 1 exports were trained with
#: the serial adapter on the raw FFN output, so they load with the ``houlsby`` wiring.
EXPORT_FORMAT_VERSION = 2
#: PEFT fields a version 1 manifest lacks, with the behaviour version 1 had.
_VERSION_1_PEFT = {"sa_placement": "houlsby", "adapter_init": "zero_up"}
EXPORT_FORMAT = "autopeft-export"
MANIFEST_NAME = "autopeft.json"
EXPORT_DIRNAME = "export"

#: Class names of the built-in tasks, index = label id (Hugging Face's names where it has them).
#: Only used while the task keeps its registry labels (same ``num_labels`` and ``label_map``).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "rte": ("entailment", "not_entailment"),
    "mrpc": ("not_equivalent", "equivalent"),
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "qnli": ("entailment", "not_entailment"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "cb": ("entailment", "contradiction", "neutral"),
    "wic": ("False", "True"),
    "boolq": ("False", "True"),
    "snli": ("entailment", "neutral", "contradiction"),
    "snli_binary": ("entailment", "not_entailment"),
    "rotten_tomatoes": ("negative", "positive"),
}

#: One model input: a text, a tuple of text segments (pair tasks; context then choices for
#: multiple choice), or a row mapping the task's source columns to values (templates apply).
Example = str | Sequence[str] | Mapping[str, Any]


class ExportError(ConfigError):
    """An export folder or file is missing, corrupt, of another format version, or does not fit."""


# --------------------------------------------------------------------------- helpers


def default_label_names(task: TaskSpec) -> list[str] | None:
    """The class names of ``task`` (index = label id), or None when it has none we can vouch for.

    A task whose labels were overridden (another ``num_labels`` or ``label_map`` than the
    registry's) gets None: the registry names would then be wrong. A custom task carries its own
    class names (in label-id order).
    """
    if task.type == "classification" and getattr(task, "label_names", None):
        return list(task.label_names)
    if task.type != "classification" or task.name not in LABEL_NAMES:
        return None
    names = LABEL_NAMES[task.name]
    base = TASKS.get(task.name)
    if base is None or len(names) != task.num_labels or base.num_labels != task.num_labels:
        return None
    if dict(base.label_map or {}) != dict(task.label_map or {}):
        return None
    return list(names)


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


def _versions() -> dict[str, str]:
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


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _names(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in list(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# --------------------------------------------------------------------------- saving


def save_export(
    model: AutoPeftModel,
    cfg: DictConfig | Mapping[str, Any],
    path: str | Path,
    *,
    record: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    label_names: Sequence[str] | None = None,
    include_backbone: bool = False,
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

    Returns:
        The export folder.

    Raises:
        ConfigError: If ``model`` does not fit the task of ``cfg``, or ``label_names`` has
            the wrong length.

    """
    path = Path(path)
    task = task_from_config(cfg["task"])
    if model.task_type != task.type:
        raise ConfigError(f"model has a {model.task_type} head but task {task.name!r} is {task.type}")
    names = list(label_names) if label_names is not None else default_label_names(task)
    if names is not None and (task.type != "classification" or len(names) != task.num_labels):
        raise ConfigError(
            f"label_names={names!r} must name each of the {task.num_labels} classes of task {task.name!r}"
        )
    if tokenizer is None:
        tokenizer = load_tokenizer(_plain(cfg["backbone"]))
    params = dict(model.named_parameters())
    saved = {n: p for n, p in params.items() if include_backbone or p.requires_grad}
    # Contiguous CPU copies: safetensors refuses views, and the model may sit on a GPU.
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in saved.items()}
    data, fmt, filename = _serialise(tensors)
    atomic_write_bytes(path / filename, data)
    record = dict(record or {})
    manifest = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "configuration": model.spec.describe(),
        "backbone": _plain(cfg["backbone"]),
        "task": task.to_dict(),
        "peft": model.spec.to_dict(),
        "head": {
            "type": model.task_type,
            "num_labels": task.num_labels,
            "pooling": model.head.pooling,
            "dropout": float(cfg["trainer"]["head_dropout"]),
        },
        "data": {"max_length": int(cfg["data"]["max_length"])},
        "label_names": names,
        "main_metric": task.main_metric,
        "scores": {key: record.get(key) for key in ("score", "metrics", "best_epoch", "epochs_trained", "status")},
        "params": record.get("params"),
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
        "versions": _versions(),
    }
    # The manifest goes last: it names the weights' checksum, so a run killed in between
    # leaves an export that fails loudly instead of one that loads stale weights.
    atomic_write_json(path / MANIFEST_NAME, manifest)
    return path


#: Values of ``trainer.save_weights``: always, never, or only when PEFT weights are the point.
SAVE_WEIGHTS = (True, False, "peft")


def check_save_weights(value: Any) -> bool | str:
    """Validate ``trainer.save_weights`` (checked with the rest of the trainer node, before training).

    Raises:
        ConfigError: Naming the value and the allowed ones.

    """
    if value not in SAVE_WEIGHTS or (value in (0, 1) and not isinstance(value, bool)):
        raise ConfigError(f"trainer.save_weights={value!r}; allowed: true, false, 'peft' (all but full fine-tuning)")
    return value


def export_run(
    model: AutoPeftModel, cfg: DictConfig, run_dir: Path, record: Mapping[str, Any], tokenizer: Any = None
) -> str | None:
    """Write ``<run_dir>/export`` after a training run when ``trainer.save_weights`` asks for it.

    A search (``mode=search``) never writes exports, whatever the switch says: it trains
    hundreds of configurations at low fidelity; retrain the ones worth keeping instead.

    Returns:
        The export folder as a string, or None when nothing was written.

    Raises:
        ConfigError: If ``trainer.save_weights`` is not one of :data:`SAVE_WEIGHTS`.

    """
    switch = check_save_weights(cfg.trainer.get("save_weights", "peft"))
    if not switch or cfg.get("mode") == "search":
        return None
    if switch == "peft" and cfg.peft.get("full_finetune"):
        return None  # a full fine-tuning export is a whole model copy (440 MB for BERT-base) per run
    return str(save_export(model, cfg, Path(run_dir) / EXPORT_DIRNAME, record=record, tokenizer=tokenizer))


# --------------------------------------------------------------------------- loading


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
        raise ExportError(f"{file} lacks the field(s) {_names(missing)}; is it corrupt?")
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
            parts.append(f"missing {len(missing)} tensor(s): {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {_names(unexpected)}")
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
    strictly; the model is returned in eval mode.

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
            peft = {**_VERSION_1_PEFT, **peft}
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


# --------------------------------------------------------------------------- inference


class Predictor:
    """A trained model with the tokenisation training used, ready for new inputs.

    Inputs (a list, one entry per example):

    * a string, for single-sentence tasks;
    * a tuple ``(text_a, text_b)`` for sentence-pair tasks; for multiple choice
      ``(context, choice_1, ..., choice_k)``. Tuples are the final text segments (no template
      is applied);
    * a mapping of the task's source columns, e.g. ``{"premise": ..., "question": "cause",
      "choice1": ..., "choice2": ...}`` for COPA: the task's ``text_template`` applies, as in
      training.

    Args:
        model: The model, in eval mode.
        task: Its task.
        tokenizer: The backbone's tokenizer.
        max_length: Truncation length used in training.
        label_names: Class names by label id, or None (labels are ids).
        manifest: The export manifest it was loaded from (scores, versions, ...).

    """

    def __init__(
        self,
        model: AutoPeftModel,
        task: TaskSpec,
        tokenizer: Any,
        max_length: int,
        label_names: Sequence[str] | None = None,
        manifest: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.label_names = list(label_names) if label_names else None
        self.manifest = dict(manifest or {})
        self._collate = make_collator(task, tokenizer)
        self._encode_rows = make_encoder(task, tokenizer, max_length)
        # Tuples are final segments: the same encoder with plain columns and no template.
        n_text = len(task.text_columns)
        self._segment_task = replace(
            task,
            text_columns=tuple(f"text_{i}" for i in range(n_text)),
            choice_columns=tuple(f"choice_{i}" for i in range(len(task.choice_columns))),
            text_template=None,
        )
        self._encode_segments = make_encoder(self._segment_task, tokenizer, max_length)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def _batch_of(self, spec: TaskSpec, rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
        columns = [c for c in spec.required_columns() if c != spec.label_column]
        batch = {c: [row[c] for row in rows] for c in columns}
        batch[spec.label_column] = [0] * len(rows)  # the encoder reads labels; these are never used
        return batch

    def _row_of(self, index: int, example: Any) -> tuple[bool, dict[str, Any]]:
        """``(is_source_row, row)`` for one input; raises ValueError on a shape that does not fit."""
        task = self.task
        if isinstance(example, Mapping):
            missing = [c for c in task.required_columns() if c != task.label_column and c not in example]
            if missing:
                raise ValueError(f"input {index} lacks column(s) {_names(missing)} of task {task.name!r}")
            return True, dict(example)
        segments = (example,) if isinstance(example, str) else tuple(example) if isinstance(example, Sequence) else ()
        spec = self._segment_task
        width = len(spec.text_columns) + len(spec.choice_columns)
        if len(segments) != width or not all(isinstance(s, str) for s in segments):
            if task.type == "multiple_choice":
                shape = f"(context, {', '.join(f'choice_{i + 1}' for i in range(len(task.choice_columns)))})"
            else:
                shape = "a string" if width == 1 else "a (text_a, text_b) pair of strings"
            raise ValueError(
                f"input {index} is {example!r}; task {task.name!r} takes {shape} or a mapping of its columns "
                f"{_names([c for c in task.required_columns() if c != task.label_column], 10)}"
            )
        return False, dict(zip((*spec.text_columns, *spec.choice_columns), segments, strict=True))

    def encode(self, inputs: Sequence[Example]) -> list[dict[str, Any]]:
        """Tokenise ``inputs`` exactly as training did (same encoder, template and ``max_length``).

        Returns:
            One unpadded feature dict per input (``input_ids``, ``attention_mask``, ...).

        Raises:
            TypeError: If ``inputs`` is a single string or mapping instead of a list.
            ValueError: If an input does not fit the task (wrong number of segments, missing columns).

        """
        if isinstance(inputs, (str, Mapping)):
            raise TypeError("pass a list of inputs, e.g. predict(['a sentence']), not a single input")
        kinds = [self._row_of(i, example) for i, example in enumerate(inputs)]
        features: list[dict[str, Any] | None] = [None] * len(kinds)
        for source, spec, encode in (
            (True, self.task, self._encode_rows),
            (False, self._segment_task, self._encode_segments),
        ):
            indices = [i for i, (is_source, _) in enumerate(kinds) if is_source is source]
            if not indices:
                continue
            encoded = encode(self._batch_of(spec, [kinds[i][1] for i in indices]))
            for j, i in enumerate(indices):
                features[i] = {k: encoded[k][j] for k in MODEL_COLUMNS if k in encoded}
        return [f for f in features if f is not None]

    def _batches(self, inputs: Sequence[Example], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        features = self.encode(inputs)
        for start in range(0, len(features), batch_size):
            chunk = [{**f, "labels": 0} for f in features[start : start + batch_size]]
            batch = self._collate(chunk)  # the training collator: the same dynamic padding
            batch.pop("labels")
            yield {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def scores(self, inputs: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """Raw model outputs on CPU, float32.

        Returns:
            Logits (N, num_labels) for classification, values (N,) for regression, choice
            scores (N, num_choices) for multiple choice.

        """
        self.model.eval()
        outputs = [self.model(**batch).float().cpu() for batch in self._batches(inputs, batch_size)]
        if outputs:
            return torch.cat(outputs)
        shape = (0,) if self.task.type == "regression" else (0, self.task.num_labels)
        return torch.empty(shape)

    def predict_proba(self, inputs: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """Class (or choice) probabilities (N, C): the softmax of :meth:`scores`.

        Raises:
            ValueError: For regression tasks, which have values, not probabilities.

        """
        if self.task.type == "regression":
            raise ValueError(f"task {self.task.name!r} is a regression task: use predict() or scores() for values")
        return torch.softmax(self.scores(inputs, batch_size), dim=-1)

    def predict(self, inputs: Sequence[Example], batch_size: int = 32) -> list[Any]:
        """Predictions for ``inputs``, one per input.

        Label names for classification (label ids when the task has no names), values for
        regression, the chosen choice's index (0-based) for multiple choice.

        Args:
            inputs: A list of inputs (see the class docstring).
            batch_size: Inputs per forward pass.

        """
        out = self.scores(inputs, batch_size)
        if self.task.type == "regression":
            return out.tolist()
        ids = out.argmax(dim=-1).tolist()
        if self.task.type == "classification" and self.label_names:
            return [self.label_names[i] for i in ids]
        return ids


__all__ = [
    "EXPORT_FORMAT_VERSION",
    "LABEL_NAMES",
    "ExportError",
    "Predictor",
    "default_label_names",
    "export_run",
    "frozen_fingerprint",
    "load_export",
    "read_manifest",
    "save_export",
]
