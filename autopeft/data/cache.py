"""The tokenised-dataset cache: a key of everything that shapes the tokens, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from autopeft.data.encoding import LABELS, make_encoder
from autopeft.data.protocol import DEFAULT_PROTOCOL, check_protocol
from autopeft.data.splits import load_raw_splits, local_data_files
from autopeft.errors import ConfigError
from autopeft.io import sha256_file
from autopeft.tasks.spec import TaskSpec
from autopeft.tasks.synthetic import GENERATOR_VERSION

# Bump when the tokenised layout changes so stale caches are never reused.
CACHE_FORMAT_VERSION = 1


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


@dataclass(frozen=True)
class Tokenisation:
    """What, besides the task and the tokenizer, shapes a task's tokenised splits.

    Args:
        max_length: Truncation length in tokens.
        data_seed: Seed of the validation carve-out and of the capped subsets.
        max_train_samples: Keep a seeded random subset of this many train rows (None = all).
        max_eval_samples: The same for validation and test.
        protocol: ``data.protocol`` (see :func:`~autopeft.data.splits.load_raw_splits`).

    """

    max_length: int = 128
    data_seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    protocol: str = DEFAULT_PROTOCOL


def cache_key(spec: TaskSpec, tokenizer: Any, tokenisation: Tokenisation) -> str:
    """Return the sha256 hex key of a tokenised cache entry.

    It covers the cache format version, the whole TaskSpec, the data itself (file hashes
    for local sources and user files, so an edited file is tokenised afresh; a synthetic
    generator's version; hub path/subset otherwise), the tokenizer, ``max_length``, the caps,
    ``data_seed`` and the ``protocol`` (which changes the splits). Computing it reads neither raw rows nor calls the
    tokenizer.
    """
    if spec.source == "local":
        data = {split: sha256_file(path) for split, path in local_data_files(spec).items()}
    elif spec.source == "files":
        data = {split: sha256_file(_user_file(split, path)) for split, path in spec.splits.items() if path is not None}
    elif spec.source == "synthetic":
        # The options are in the spec; the generator's version stands for the code that draws the rows.
        data = {"generator": spec.path, "version": GENERATOR_VERSION}
    else:
        data = {"path": spec.path, "subset": spec.subset}
    material = {
        "format": CACHE_FORMAT_VERSION,
        "spec": spec.to_dict(),
        "data": data,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": tokenisation.max_length,
        "max_train_samples": tokenisation.max_train_samples,
        "max_eval_samples": tokenisation.max_eval_samples,
        "data_seed": tokenisation.data_seed,
    }
    # Only a non-default protocol enters the material: the held-out entries keep the keys they had
    # before the protocol existed (existing caches stay valid), and the two never share an entry.
    if check_protocol(tokenisation.protocol) != DEFAULT_PROTOCOL:
        material["protocol"] = tokenisation.protocol
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _user_file(split: str, path: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"task.{split}: the file {path!r} does not exist")
    return file


def cap_rows(ds: datasets.Dataset, n: int | None, data_seed: int) -> datasets.Dataset:
    """Take a seeded random subset of ``n`` rows (all rows when ``n`` is None or large)."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise ConfigError(f"sample caps must be positive or null, got {n}")
    return ds.shuffle(seed=data_seed).select(range(n))


def _tokenize(spec: TaskSpec, tokenizer: Any, tokenisation: Tokenisation) -> datasets.DatasetDict:
    data_seed = tokenisation.data_seed
    raw = load_raw_splits(spec, data_seed, tokenisation.protocol)
    eval_cap = tokenisation.max_eval_samples
    caps = {"train": tokenisation.max_train_samples, "validation": eval_cap, "test": eval_cap}
    encode = make_encoder(spec, tokenizer, tokenisation.max_length)
    tokenized = datasets.DatasetDict(
        {
            # Per split, because splits may carry different extra columns (all are dropped).
            key: cap_rows(ds, caps[key], data_seed).map(
                encode, batched=True, remove_columns=ds.column_names, desc=f"tokenising {spec.name}/{key}"
            )
            for key, ds in raw.items()
        }
    )
    if spec.type == "generation":
        return tokenized  # labels are token ids per position (-100 outside the answer), already int64
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
    spec: TaskSpec, tokenizer: Any, tokenisation: Tokenisation, cache_dir: Path
) -> tuple[datasets.DatasetDict, bool]:
    """Tokenise a task's splits, reusing an on-disk cache when possible.

    Args:
        spec: The task.
        tokenizer: A Hugging Face tokenizer.
        tokenisation: Length, caps, data seed and protocol; with the task and the tokenizer, the
            cache key (:func:`cache_key`).
        cache_dir: Directory holding cache entries (one sub-directory per key).

    Returns:
        ``(datasets, cache_hit)``: a DatasetDict with train/validation/test, each with
        ``input_ids``, ``attention_mask``, (``token_type_ids``) and ``labels``.

    """
    key = cache_key(spec, tokenizer, tokenisation)
    cache_dir = Path(cache_dir)
    final = cache_dir / f"{spec.name}-{key[:32]}"
    if final.is_dir():
        return datasets.load_from_disk(str(final)), True
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized = _tokenize(spec, tokenizer, tokenisation)
    _save_atomically(tokenized, final)
    # Reload so hits and misses return identical, memory-mapped datasets.
    return datasets.load_from_disk(str(final)), False
