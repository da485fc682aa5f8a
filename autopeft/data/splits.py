"""A task's raw splits (hub, local stand-in, synthetic or user files), checked and labelled, under a protocol."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets

from autopeft.data.protocol import DEFAULT_PROTOCOL, scoring
from autopeft.errors import ConfigError, allowed_list
from autopeft.tasks.registry import resources_dir
from autopeft.tasks.spec import SPLIT_KEYS, TaskSpec


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
    if spec.source == "synthetic":
        from autopeft.tasks.synthetic import synthetic_rows

        rows = synthetic_rows(spec.name, spec.path, spec.synthetic)
        return datasets.DatasetDict({split: datasets.Dataset.from_list(r) for split, r in rows.items()})
    if spec.source == "local":
        files = {split: str(path) for split, path in local_data_files(spec).items()}
        return datasets.load_dataset("json", data_files=files)
    try:
        return datasets.load_dataset(spec.path, spec.subset)
    except (ConnectionError, OSError) as err:  # datasets raises ConnectionError when the hub is unreachable
        from autopeft.tasks.registry import TASKS

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
    if spec.type == "generation":
        return ds  # answers are text; _check_labels checks them
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
    if spec.type == "generation":
        if any(not isinstance(v, str) for v in values):
            bad = next(v for v in values if not isinstance(v, str))
            raise ConfigError(
                f"task {spec.name!r}: split {split!r} has answer {bad!r} in column {spec.label_column!r}; "
                "a generation task's answers are text"
            )
        return
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
    stratify = spec.type not in ("regression", "generation")  # COPA's choice indices are discrete too
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
            datasets) are read by :func:`autopeft.data.carving.custom_raw_splits`.
        data_seed: Seed of the validation carve-out (used when ``splits.validation`` is None;
            for custom tasks also of a test carve-out).
        protocol: ``data.protocol`` (see :mod:`autopeft.data.protocol`). ``heldout``: the splits
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
        from autopeft.data.carving import custom_raw_splits

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
