"""A task from the user's own files: its type, classes, columns and metrics, inferred and checked."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autopeft.data.reading import Table, load_tables, resolve_path
from autopeft.data.rows import (
    announce_once,
    apply_missing_text,
    as_number,
    canonical_label,
    check_columns,
    check_labels_present,
    class_labels,
    numeric_labels,
    quoted,
)
from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.tasks.spec import CUSTOM_TASK, FILE_FORMATS, MISSING_TEXT_POLICIES, SPLIT_KEYS, TaskSpec, validate_spec

#: The keys of ``conf/task/custom.yaml``, with their defaults.
CUSTOM_DEFAULTS: dict[str, Any] = {
    "name": CUSTOM_TASK,
    "train": None,
    "validation": None,
    "test": None,
    "hub": None,
    "subset": None,
    "format": "auto",
    "text": None,
    "label": "label",
    "type": "auto",
    "label_names": None,
    "metrics": "auto",
    "main_metric": "auto",
    "missing_text": "refuse",
    "dev_fraction": 0.1,
    "test_fraction": 0.1,
    "description": None,
}


CUSTOM_TYPES = ("auto", "classification", "regression")


DEFAULT_METRICS = {"classification": ("accuracy", "macro_f1", "matthews"), "regression": ("spearman", "pearson")}


def _infer_type(table: Table, label: str) -> str:
    if table.class_names is not None:
        return "classification"
    numbers = [as_number(v) for v in table.frame[label]]
    if all(n is not None for n in numbers) and any(not n.is_integer() for n in numbers):
        return "regression"
    return "classification"


def _sorted_classes(values: Iterable[str]) -> list[str]:
    distinct = set(values)
    numbers = {v: as_number(v) for v in distinct}
    if all(n is not None for n in numbers.values()):
        return sorted(distinct, key=lambda v: numbers[v])
    return sorted(distinct)


def _text_columns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, (list, tuple))
        or not 1 <= len(value) <= 2
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ConfigError(
            f"task.text={value!r} must name one text column, or two for sentence pairs, "
            "e.g. task.text=sentence or task.text=[premise,hypothesis]"
        )
    return tuple(value)


def _choice(cfg: Mapping[str, Any], key: str, options: Iterable[str]) -> str:
    options = tuple(options)
    value = cfg[key]
    if value not in options:
        extra = " (multiple choice needs a built-in task such as copa)" if value == "multiple_choice" else ""
        raise ConfigError(
            f"task.{key}={value!r}{did_you_mean(str(value), options)}{extra}; allowed: {allowed_list(options)}"
        )
    return value


def _splits(cfg: Mapping[str, Any]) -> dict[str, str | None]:
    if cfg["hub"] is not None:
        if not isinstance(cfg["hub"], str) or not cfg["hub"]:
            raise ConfigError(f"task.hub must be a hub dataset name, got {cfg['hub']!r}")
        names = {key: cfg[key] for key in SPLIT_KEYS}
        names["train"] = names["train"] or "train"
        for key, name in names.items():
            if name is not None and not isinstance(name, str):
                raise ConfigError(f"task.{key} must name a split of hub dataset {cfg['hub']!r}, got {name!r}")
        return names
    if cfg["train"] is None:
        raise ConfigError(
            "task=custom needs its training data: task.train=<file> (CSV, TSV, JSON Lines or Parquet) or "
            "task.hub=<datasets hub name>; see docs/custom_tasks.md"
        )
    return {key: None if cfg[key] is None else str(resolve_path(cfg[key], key)) for key in SPLIT_KEYS}


def custom_task_spec(node: Mapping[str, Any]) -> TaskSpec:
    """Build the :class:`TaskSpec` of a user task from its config node, reading and checking its data.

    Args:
        node: The ``task`` node: keys of :data:`CUSTOM_DEFAULTS` (missing ones take the defaults).

    Raises:
        ConfigError: On an unknown key or value, a missing or unparsable file, an unknown
            column, missing text (with ``missing_text=refuse``), empty or single-class training
            data, validation/test labels that training lacks, or non-numeric regression labels.

    """
    check_known_keys(node, CUSTOM_DEFAULTS, "task")
    cfg = {**CUSTOM_DEFAULTS, **node}
    kind = _choice(cfg, "type", CUSTOM_TYPES)
    policy = _choice(cfg, "missing_text", MISSING_TEXT_POLICIES)
    fmt = _choice(cfg, "format", ("auto", *FILE_FORMATS))
    fmt = None if fmt == "auto" else fmt
    label = cfg["label"]
    if not isinstance(label, str) or not label:
        raise ConfigError(f"task.label must name the label column, got {label!r}")
    splits = _splits(cfg)
    if cfg["text"] is None:
        train_only = {"train": splits["train"]}
        tables = load_tables(train_only, hub=cfg["hub"], subset=cfg["subset"], fmt=fmt, columns=(), label=label)
        columns = list(tables["train"].frame.columns)
        raise ConfigError(
            "task.text is not set: name the text column, or two for sentence pairs "
            f"(task.text=[first,second]); available columns: {allowed_list(columns)}"
        )
    text = _text_columns(cfg["text"])
    if label in text:
        raise ConfigError(f"task.label={label!r} is also a text column (task.text={list(text)!r})")
    # Fractions are checked before reading so a typo fails fast; validate_spec checks them again.
    for key in ("dev_fraction", "test_fraction"):
        frac = cfg[key]
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ConfigError(f"task.{key} must be a number strictly between 0 and 1, got {frac!r}")

    tables = load_tables(splits, hub=cfg["hub"], subset=cfg["subset"], fmt=fmt, columns=[*text, label], label=label)
    train = tables["train"]
    check_columns(tables, text, label)
    if train.frame.empty:
        raise ConfigError(f"the {train.where} has no rows")
    tables = apply_missing_text(tables, text, policy)
    train = tables["train"]
    if train.frame.empty:
        raise ConfigError(f"the {train.where} has no rows left after dropping rows with missing text")
    check_labels_present(tables, label)
    if kind == "auto":
        kind = _infer_type(train, label)

    names: tuple[str, ...] | None = None
    if kind == "regression":
        if cfg["label_names"] is not None:
            raise ConfigError("task.label_names is only for classification; this task is a regression task")
        values = {split: numeric_labels(t, label) for split, t in tables.items()}
        if np.ptp(values["train"]) == 0:
            raise ConfigError(
                f"every label of the {train.where} is {values['train'][0]:g}: there is nothing to regress on"
            )
        num_labels = 1
        classes_note = f"regression on {label!r}"
    else:
        names = _class_names(cfg, tables, label)
        num_labels = len(names)
        classes_note = f"classification, {num_labels} classes {list(names)}"

    metrics = cfg["metrics"]
    metrics = DEFAULT_METRICS[kind] if metrics == "auto" else (metrics,) if isinstance(metrics, str) else metrics
    metrics = tuple(metrics) if isinstance(metrics, (list, tuple)) else metrics
    main = metrics[0] if cfg["main_metric"] == "auto" and metrics else cfg["main_metric"]
    source = "hub" if cfg["hub"] is not None else "files"
    description = cfg["description"] or (
        f"User task from {cfg['hub'] if source == 'hub' else Path(str(splits['train'])).name}: {classes_note}."
    )
    spec = TaskSpec(
        name=CUSTOM_TASK,
        benchmark="custom",
        description=description,
        source=source,
        path=cfg["hub"] if source == "hub" else str(splits["train"]),
        subset=cfg["subset"],
        text_columns=text,
        label_column=label,
        type=kind,
        num_labels=num_labels,
        metrics=metrics,
        main_metric=main,
        splits=splits,
        dev_fraction=cfg["dev_fraction"],
        test_fraction=cfg["test_fraction"],
        label_names=names,
        missing_text=policy,
        file_format=fmt,
    )
    validate_spec(spec)
    carved = [key for key in ("validation", "test") if splits[key] is None]
    announce_once(
        f"task custom: {classes_note}, text {list(text)}, metrics {list(metrics)} (main {main}); "
        f"rows: {', '.join(f'{k} {len(t.frame)}' for k, t in tables.items())}"
        + (f"; {' and '.join(carved)} carved from train" if carved else ""),
        logging.INFO,
    )
    return spec


def _class_names(cfg: Mapping[str, Any], tables: Mapping[str, Table], label: str) -> tuple[str, ...]:
    """The classes in label-id order, after checking train has two and the other splits no new ones."""
    train = tables["train"]
    seen = class_labels(train, label)
    distinct = list(dict.fromkeys(seen))
    if len(distinct) < 2:
        raise ConfigError(
            f"the {train.where} has a single class {distinct[0]!r} in column {label!r} ({len(seen)} rows): "
            "a classifier needs at least two classes (for numeric targets set task.type=regression)"
        )
    given = cfg["label_names"]
    if given is not None:
        if isinstance(given, str) or not isinstance(given, (list, tuple)):
            raise ConfigError(f"task.label_names must be a list of class names, got {given!r}")
        names = tuple(canonical_label(v) for v in given)
        unknown = [v for v in distinct if v not in names]
        if unknown:
            raise ConfigError(
                f"the {train.where} has label(s) {quoted(unknown)} that task.label_names does not list; "
                f"task.label_names: {allowed_list(names)}"
            )
    elif train.class_names is not None:
        names = train.class_names
    else:
        names = tuple(_sorted_classes(distinct))
    known = set(distinct)
    for split, table in tables.items():
        if split == "train":
            continue
        values = class_labels(table, label)
        new = [v for v in dict.fromkeys(values) if v not in known]
        if new:
            mask = np.array([v not in known for v in values], dtype=bool)
            hidden = " (-1 often marks a hidden test label)" if "-1" in new else ""
            raise ConfigError(
                f"the {table.where} has label(s) {quoted(new)} that never occur in training ({table.positions(mask)})"
                f"{hidden}; training labels: {quoted(_sorted_classes(known))}"
            )
    return names
