"""Loading, splitting, tokenising and batching task data.

Pipeline: :func:`load_raw_splits` (files or hub -> train/validation/test with labels
checked) -> :func:`tokenize_splits` (seeded caps, tokenisation, on-disk cache) ->
:class:`TaskDataModule` (dynamic padding, seeded shuffling).

The tokenised cache lives under an explicit ``cache_dir`` and is keyed by everything
that changes its content (see :func:`cache_key`), so a search that trains hundreds of
configurations tokenises each task once. A cache hit never touches the raw data or the
tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

from autopeft.errors import ConfigError, allowed_list
from autopeft.io import sha256_file
from autopeft.protocol import DEFAULT_PROTOCOL, check_protocol, scoring
from autopeft.tasks import SPLIT_KEYS, TaskSpec, resources_dir

# Bump when the tokenised layout changes so stale caches are never reused.
CACHE_FORMAT_VERSION = 1

# Columns of the tokenised datasets that the collators understand.
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
LABELS = "labels"

_Batch = dict[str, list[Any]]


# --------------------------------------------------------------------------- raw data


def local_data_files(spec: TaskSpec) -> dict[str, Path]:
    """Return ``{source split name: jsonl path}`` for a ``local`` task's referenced splits.

    Raises:
        ConfigError: If a referenced file does not exist (the message lists what does).

    """
    folder = resources_dir() / spec.path  # an absolute spec.path overrides the resources dir
    files: dict[str, Path] = {}
    for source_split in dict.fromkeys(s for s in spec.splits.values() if s is not None):
        path = folder / f"{source_split}.jsonl"
        if not path.is_file():
            present = sorted(p.name for p in folder.glob("*.jsonl")) if folder.is_dir() else []
            raise ConfigError(
                f"task {spec.name!r}: data file {path} not found; files in {folder}: {allowed_list(present)}"
            )
        files[source_split] = path
    return files


def _load_source(spec: TaskSpec) -> datasets.DatasetDict:
    if spec.source == "local":
        files = {split: str(path) for split, path in local_data_files(spec).items()}
        return datasets.load_dataset("json", data_files=files)
    try:
        return datasets.load_dataset(spec.path, spec.subset)
    except (ConnectionError, OSError) as err:  # datasets raises ConnectionError when the hub is unreachable
        from autopeft.tasks import TASKS

        standins = [name for name, t in TASKS.items() if t.standin_for == spec.name]
        hint = f"; offline, its stand-in is task={standins[0]}" if standins else ""
        raise ConfigError(
            f"task {spec.name!r} loads {spec.path!r} ({spec.subset}) from the Hugging Face hub, which could "
            f"not be reached ({type(err).__name__}){hint}; offline stand-ins: "
            f"{allowed_list(n for n, t in TASKS.items() if t.source == 'local')}"
        ) from err


def _select_splits(spec: TaskSpec, raw: datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    """Map the spec's source split names onto train/validation/test (validation may be absent)."""
    out: dict[str, datasets.Dataset] = {}
    for key in SPLIT_KEYS:
        source_split = spec.splits[key]
        if source_split is None:
            continue
        if source_split not in raw:
            raise ConfigError(
                f"task {spec.name!r}: task.splits.{key} is {source_split!r} but the data has splits {allowed_list(raw)}"
            )
        out[key] = raw[source_split]
    return out


def _check_columns(spec: TaskSpec, split: str, ds: datasets.Dataset) -> None:
    missing = [c for c in spec.required_columns() if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"task {spec.name!r}: split {split!r} lacks column(s) {allowed_list(missing)}; "
            f"available columns: {allowed_list(ds.column_names)}"
        )


def _normalise_labels(spec: TaskSpec, ds: datasets.Dataset) -> datasets.Dataset:
    """Cast labels to plain numbers and apply ``label_map``.

    Hub labels are ``ClassLabel`` features whose names would no longer fit after a
    label_map, so they become plain int64 first (float32 for regression).
    """
    col = spec.label_column
    dtype = "float32" if spec.type == "regression" else "int64"
    if ds.features[col] != datasets.Value(dtype):
        ds = ds.cast_column(col, datasets.Value(dtype))
    if spec.label_map is not None:
        mapping = dict(spec.label_map)
        unknown = sorted(set(ds.unique(col)) - set(mapping))
        if unknown:
            raise ConfigError(f"task {spec.name!r}: labels {unknown} have no entry in task.label_map {mapping}")
        ds = ds.map(lambda batch: {col: [mapping[v] for v in batch[col]]}, batched=True)
    return ds


def _check_labels(spec: TaskSpec, split: str, ds: datasets.Dataset) -> None:
    if len(ds) == 0:
        raise ConfigError(f"task {spec.name!r}: split {split!r} is empty")
    values = ds.unique(spec.label_column)  # distinct values suffice for range checks
    if spec.type == "regression":
        if any(v is None or v != v for v in values):  # v != v catches NaN
            raise ConfigError(f"task {spec.name!r}: split {split!r} has missing/NaN labels")
        return
    if None in values:
        raise ConfigError(f"task {spec.name!r}: split {split!r} has missing labels")
    low, high = min(values), max(values)
    if low < 0 or high >= spec.num_labels:
        raise ConfigError(
            f"task {spec.name!r}: split {split!r} has labels in [{low}, {high}] but num_labels is "
            f"{spec.num_labels}, so labels must lie in [0, {spec.num_labels - 1}] (hidden test labels are -1)"
        )


def _carve_validation(spec: TaskSpec, train: datasets.Dataset, data_seed: int) -> datasets.DatasetDict:
    """Split ``dev_fraction`` of train off as validation, stratified for discrete labels."""
    col = spec.label_column
    stratify = spec.type != "regression"  # COPA's choice indices are discrete too
    if stratify:
        # train_test_split only stratifies on a ClassLabel column.
        train = train.cast_column(col, datasets.ClassLabel(num_classes=spec.num_labels))
    parts = train.train_test_split(
        test_size=spec.dev_fraction, seed=data_seed, stratify_by_column=col if stratify else None
    )
    if stratify:
        parts = parts.cast_column(col, datasets.Value("int64"))
    return datasets.DatasetDict({"train": parts["train"], "validation": parts["test"]})


def load_raw_splits(spec: TaskSpec, data_seed: int, protocol: str = DEFAULT_PROTOCOL) -> datasets.DatasetDict:
    """Load a task's raw data as train/validation/test with checked, mapped labels.

    Args:
        spec: The task. ``local`` sources read ``<path>/<split>.jsonl``; ``hub`` sources call
            ``datasets.load_dataset(spec.path, spec.subset)``; custom tasks (user files or hub
            datasets) are read by :func:`autopeft.custom_data.custom_raw_splits`.
        data_seed: Seed of the validation carve-out (used when ``splits.validation`` is None;
            for custom tasks also of a test carve-out).
        protocol: ``data.protocol`` (see :mod:`autopeft.protocol`). ``heldout``: the splits
            above. ``paper`` (SuperGLUE aside, which keeps ``heldout``'s splits): train is the
            whole source train split (nothing carved for validation) and validation is the test
            split itself, the official dev split of GLUE.

    Returns:
        A DatasetDict with keys ``train``, ``validation``, ``test``.

    Raises:
        ConfigError: If splits, columns or labels do not fit the spec, or on an unknown protocol.

    """
    select_on_test = scoring(spec.benchmark, protocol) == "best_dev"
    if spec.benchmark == "custom":
        from autopeft.custom_data import custom_raw_splits

        raw = custom_raw_splits(spec, data_seed, carve_validation=not select_on_test)
        if select_on_test:
            raw["validation"] = raw["test"]
        for key, ds in raw.items():
            _check_labels(spec, key, ds)
        return datasets.DatasetDict({key: raw[key] for key in SPLIT_KEYS})
    # Under ``paper`` the task's own validation split (stand-ins have one) is not read: the test
    # split takes the dev role, and a separate validation file would be a third, unreported split.
    source = dataclasses.replace(spec, splits={**spec.splits, "validation": None}) if select_on_test else spec
    splits = _select_splits(source, _load_source(source))
    for key, ds in list(splits.items()):
        _check_columns(spec, key, ds)
        splits[key] = _normalise_labels(spec, ds)
        _check_labels(spec, key, splits[key])
    if select_on_test:
        splits["validation"] = splits["test"]
    elif "validation" not in splits:
        splits.update(_carve_validation(spec, splits["train"], data_seed))
    return datasets.DatasetDict({key: splits[key] for key in SPLIT_KEYS})


# --------------------------------------------------------------------------- encoding


def _segments(spec: TaskSpec, batch: _Batch) -> list[list[str]]:
    """Return one list of strings per text segment (text_a[, text_b]) for a batch."""
    n = len(batch[spec.label_column])
    if spec.text_template is None:
        return [[str(v) for v in batch[col]] for col in spec.text_columns]
    rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
    return [[template.format(**row) for row in rows] for template in spec.text_template]


def make_encoder(spec: TaskSpec, tokenizer: Any, max_length: int) -> Callable[[_Batch], _Batch]:
    """Return a batched ``datasets.map`` function turning raw rows into model inputs.

    Classification/regression rows become ``input_ids`` etc. of one (pair) sequence;
    multiple-choice rows become per-choice lists: ``input_ids[i]`` is a list of
    ``num_labels`` token lists, one per (context, choice) pair. Truncation only; padding
    is done per batch by the collator.
    """
    label_dtype = float if spec.type == "regression" else int

    def encode(batch: _Batch) -> _Batch:
        segments = _segments(spec, batch)
        labels = [label_dtype(v) for v in batch[spec.label_column]]
        if spec.type != "multiple_choice":
            enc = tokenizer(*segments, truncation=True, max_length=max_length)
            out = {k: enc[k] for k in MODEL_COLUMNS if k in enc}
            return {**out, LABELS: labels}
        contexts, k = segments[0], len(spec.choice_columns)
        flat_a = [ctx for ctx in contexts for _ in range(k)]
        flat_b = [str(batch[col][i]) for i in range(len(contexts)) for col in spec.choice_columns]
        enc = tokenizer(flat_a, flat_b, truncation=True, max_length=max_length)
        # Regroup the flat (example x choice) encodings into one list of k choices per example.
        out = {key: [enc[key][i : i + k] for i in range(0, len(flat_a), k)] for key in MODEL_COLUMNS if key in enc}
        return {**out, LABELS: labels}

    return encode


class BatchCollator:
    """Pad a list of tokenised rows into a batch dict of tensors (dynamic padding).

    Multiple-choice batches have inputs of shape (B, num_choices, T) and int64 labels;
    others (B, T), with int64 (classification) or float32 (regression) labels. A class
    rather than a closure so DataLoader workers started with ``spawn`` can pickle it.
    """

    def __init__(self, spec: TaskSpec, tokenizer: Any) -> None:
        if spec.type == "multiple_choice":
            self.inner = DataCollatorForMultipleChoice(tokenizer=tokenizer)
        else:
            self.inner = DataCollatorWithPadding(tokenizer=tokenizer)
        self.label_dtype = torch.float32 if spec.type == "regression" else torch.int64

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``features`` (rows of a tokenised split) into a padded batch."""
        batch = dict(self.inner(features))
        batch[LABELS] = batch[LABELS].to(self.label_dtype)  # the MC collator always emits int64
        return batch


def make_collator(spec: TaskSpec, tokenizer: Any) -> BatchCollator:
    """Return the collate function for ``spec`` (see :class:`BatchCollator`)."""
    return BatchCollator(spec, tokenizer)


# --------------------------------------------------------------------------- caching


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identify a tokenizer by class name and a hash of its full definition.

    Fast tokenizers serialise their whole pipeline; the ``truncation``/``padding`` entries
    are dropped because calling the tokenizer mutates them, which would otherwise change
    the fingerprint between the first and second run in the same process.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        definition.pop("truncation", None)
        definition.pop("padding", None)
        payload = json.dumps(definition, sort_keys=True)
    else:
        payload = json.dumps(sorted(tokenizer.get_vocab().items()))
    return f"{type(tokenizer).__name__}:{hashlib.sha256(payload.encode()).hexdigest()}"


def cache_key(
    spec: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    data_seed: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    protocol: str = DEFAULT_PROTOCOL,
) -> str:
    """Return the sha256 hex key of a tokenised cache entry.

    It covers the cache format version, the whole TaskSpec, the data itself (file hashes
    for local sources and user files, so an edited file is tokenised afresh; hub
    path/subset otherwise), the tokenizer, ``max_length``, the caps, ``data_seed`` and the
    ``protocol`` (which changes the splits). Computing it reads neither raw rows nor calls the
    tokenizer.
    """
    if spec.source == "local":
        data = {split: sha256_file(path) for split, path in local_data_files(spec).items()}
    elif spec.source == "files":
        data = {split: sha256_file(_user_file(split, path)) for split, path in spec.splits.items() if path is not None}
    else:
        data = {"path": spec.path, "subset": spec.subset}
    material = {
        "format": CACHE_FORMAT_VERSION,
        "spec": spec.to_dict(),
        "data": data,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "max_train_samples": max_train_samples,
        "max_eval_samples": max_eval_samples,
        "data_seed": data_seed,
    }
    # Only a non-default protocol enters the material: the held-out entries keep the keys they had
    # before the protocol existed (existing caches stay valid), and the two never share an entry.
    if check_protocol(protocol) != DEFAULT_PROTOCOL:
        material["protocol"] = protocol
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _user_file(split: str, path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"task.{split}: the file {path!r} does not exist")
    return file


def _cap(ds: datasets.Dataset, n: int | None, data_seed: int) -> datasets.Dataset:
    """Take a seeded random subset of ``n`` rows (all rows when ``n`` is None or large)."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise ConfigError(f"sample caps must be positive or null, got {n}")
    return ds.shuffle(seed=data_seed).select(range(n))


def _tokenize(
    spec: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    data_seed: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    protocol: str,
) -> datasets.DatasetDict:
    raw = load_raw_splits(spec, data_seed, protocol)
    caps = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
    encode = make_encoder(spec, tokenizer, max_length)
    tokenized = datasets.DatasetDict(
        {
            # Per split, because splits may carry different extra columns (all are dropped).
            key: _cap(ds, caps[key], data_seed).map(
                encode, batched=True, remove_columns=ds.column_names, desc=f"tokenising {spec.name}/{key}"
            )
            for key, ds in raw.items()
        }
    )
    dtype = "float32" if spec.type == "regression" else "int64"
    return tokenized.cast_column(LABELS, datasets.Value(dtype))


def _save_atomically(dataset: datasets.DatasetDict, final: Path) -> None:
    """Write to a temp dir then rename, so a killed run never leaves a half-written cache."""
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        dataset.save_to_disk(str(tmp))
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # a concurrent run winning the race is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_splits(
    spec: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    data_seed: int,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    cache_dir: Path,
    protocol: str = DEFAULT_PROTOCOL,
) -> tuple[datasets.DatasetDict, bool]:
    """Tokenise a task's splits, reusing an on-disk cache when possible.

    Args:
        spec: The task.
        tokenizer: A Hugging Face tokenizer.
        max_length: Truncation length in tokens.
        data_seed: Seed of the validation carve-out and of the capped subsets.
        max_train_samples: Keep a seeded random subset of this many train rows (None = all).
        max_eval_samples: The same for validation and test.
        cache_dir: Directory holding cache entries (one sub-directory per key).
        protocol: ``data.protocol`` (see :func:`load_raw_splits`); part of the cache key.

    Returns:
        ``(datasets, cache_hit)``: a DatasetDict with train/validation/test, each with
        ``input_ids``, ``attention_mask``, (``token_type_ids``) and ``labels``.

    """
    key = cache_key(
        spec,
        tokenizer,
        max_length=max_length,
        data_seed=data_seed,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        protocol=protocol,
    )
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{spec.name}-{key[:32]}"
    if final.is_dir():
        return datasets.load_from_disk(str(final)), True
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized = _tokenize(
        spec,
        tokenizer,
        max_length=max_length,
        data_seed=data_seed,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        protocol=protocol,
    )
    _save_atomically(tokenized, final)
    # Reload so hits and misses return identical, memory-mapped datasets.
    return datasets.load_from_disk(str(final)), False


# --------------------------------------------------------------------------- lightning


class TaskDataModule(pl.LightningDataModule):
    """Lightning data module for one task: cached tokenisation, dynamic padding.

    Args:
        spec: The task.
        tokenizer: A Hugging Face tokenizer (also used for padding).
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size.
        max_length: Truncation length in tokens.
        data_seed: Seed of the validation carve-out and capped subsets.
        max_train_samples: Optional cap on training rows.
        max_eval_samples: Optional cap on validation and test rows.
        cache_dir: Tokenised cache directory.
        num_workers: DataLoader workers.
        seed: Seed of the training shuffle order.
        protocol: ``data.protocol``: which splits are validation and test (:func:`load_raw_splits`).

    """

    def __init__(
        self,
        spec: TaskSpec,
        tokenizer: Any,
        *,
        batch_size: int,
        eval_batch_size: int,
        max_length: int = 128,
        data_seed: int = 0,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        cache_dir: Path,
        num_workers: int = 0,
        seed: int = 0,
        protocol: str = DEFAULT_PROTOCOL,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_length = max_length
        self.data_seed = data_seed
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.cache_dir = Path(cache_dir)
        self.num_workers = num_workers
        self.seed = seed
        self.protocol = check_protocol(protocol)
        self.cache_hit: bool | None = None
        self.datasets: datasets.DatasetDict | None = None
        self.collate_fn = make_collator(spec, tokenizer)

    def setup(self, stage: str | None = None) -> None:
        """Tokenise (or load from cache) once; later calls are no-ops."""
        if self.datasets is not None:
            return
        self.datasets, self.cache_hit = tokenize_splits(
            self.spec,
            self.tokenizer,
            max_length=self.max_length,
            data_seed=self.data_seed,
            max_train_samples=self.max_train_samples,
            max_eval_samples=self.max_eval_samples,
            cache_dir=self.cache_dir,
            protocol=self.protocol,
        )

    def _split(self, name: str) -> datasets.Dataset:
        self.setup()
        assert self.datasets is not None
        return self.datasets[name]

    @property
    def num_train_examples(self) -> int:
        """Number of training rows after capping (runs :meth:`setup` if needed)."""
        return len(self._split("train"))

    def _loader(self, name: str, batch_size: int, shuffle: bool) -> DataLoader:
        # A dedicated seeded generator makes the shuffle order depend on ``seed`` only.
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self._split(name),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Return shuffled training batches (order fixed by ``seed``)."""
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Return validation batches in dataset order."""
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Return test batches in dataset order."""
        return self._loader("test", self.eval_batch_size, shuffle=False)


__all__ = [
    "CACHE_FORMAT_VERSION",
    "BatchCollator",
    "TaskDataModule",
    "cache_key",
    "load_raw_splits",
    "local_data_files",
    "make_collator",
    "make_encoder",
    "tokenize_splits",
    "tokenizer_fingerprint",
]
