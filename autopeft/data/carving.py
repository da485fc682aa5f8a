"""Carving validation (and test) rows out of a task's training split: one seeded, stratified policy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopeft.data.reading import load_tables
from autopeft.data.rows import (
    answer_texts,
    apply_exclude_labels,
    apply_missing_text,
    check_answers_in_choices,
    check_columns,
    check_labels_present,
    choice_lists,
    class_labels,
    numeric_labels,
    quoted,
)
from autopeft.errors import ConfigError, allowed_list
from autopeft.tasks.spec import SPLIT_KEYS, TaskSpec


def carve(labels: np.ndarray | None, n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices (sorted) of a ``fraction`` of ``n`` rows, stratified by ``labels`` when given.

    Each class gives ``round(fraction * its size)`` rows but keeps at least one in train, so
    every class stays trainable; at least one row is taken overall.
    """
    if labels is None:
        take = rng.permutation(n)[: max(1, round(fraction * n))]
        return np.sort(take)
    picked: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        k = min(round(fraction * len(members)), len(members) - 1)
        picked.append(members[:k])
    take = np.concatenate(picked) if picked else np.array([], dtype=np.int64)
    if len(take) == 0:  # tiny data: take one row of the largest class
        counts = {int(c): int((labels == c).sum()) for c in np.unique(labels)}
        largest = max(counts, key=lambda c: (counts[c], -c))
        take = rng.permutation(np.flatnonzero(labels == largest))[:1]
    return np.sort(take)


def _generation_frame(spec: TaskSpec, table: Any) -> pd.DataFrame:
    """A generation task's rows: prompt text, answer text and, with choices, each row's candidates.

    Several candidate columns become one column of lists (under the first one's name), the form
    the encoder reads whichever way the file held them.
    """
    frame = pd.DataFrame({col: table.frame[col].map(str).to_numpy() for col in spec.text_columns})
    answers = answer_texts(table, spec.label_column)
    frame[spec.label_column] = answers
    if spec.choice_columns:
        choices = choice_lists(table, spec.choice_columns)
        check_answers_in_choices(table, answers, choices)
        frame[spec.choice_columns[0]] = choices
    return frame


def custom_raw_splits(spec: TaskSpec, data_seed: int, carve_validation: bool = True) -> Any:
    """The raw ``train``/``validation``/``test`` datasets of a resolved custom task.

    Rows with missing text are refused or dropped as ``spec.missing_text`` says, and rows
    whose label ``spec.exclude_labels`` lists are dropped; labels become ids
    (``spec.label_names`` order) or float32 values, a generation task's answers stay text (its
    candidate answers, if any, become one column of lists named after the first choice column);
    a split the spec leaves None is carved from train: first test, then validation from what is
    left, seeded by ``data_seed`` and stratified by class for classification.

    Args:
        spec: The resolved custom task.
        data_seed: Seed of the carve-outs.
        carve_validation: False under ``data.protocol=paper``: no validation is carved (nor a
            validation file read), so train keeps those rows; the caller uses test as validation.

    Returns:
        A ``datasets.DatasetDict`` with the text columns and the label column (no ``validation``
        when ``carve_validation`` is False).

    """
    import datasets

    hub = spec.path if spec.source == "hub" else None
    wanted = spec.splits if carve_validation else {k: v for k, v in spec.splits.items() if k != "validation"}
    tables = load_tables(
        wanted,
        hub=hub,
        subset=spec.subset,
        fmt=spec.file_format,
        columns=spec.required_columns(),
        label=spec.label_column,
        header=spec.header,
        names=spec.columns,
    )
    check_columns(tables, spec.text_columns, spec.label_column)
    tables = apply_missing_text(tables, spec.text_columns, spec.missing_text)
    tables = apply_exclude_labels(tables, spec.label_column, spec.exclude_labels)
    check_labels_present(tables, spec.label_column, spec.exclude_labels)
    index = {name: i for i, name in enumerate(spec.label_names or ())}
    frames: dict[str, pd.DataFrame] = {}
    for split, table in tables.items():
        if spec.type == "generation":
            frames[split] = _generation_frame(spec, table)
            continue
        if spec.type == "regression":
            labels: np.ndarray = numeric_labels(table, spec.label_column).astype(np.float32)
        else:
            values = class_labels(table, spec.label_column)
            unknown = [v for v in dict.fromkeys(values) if v not in index]
            if unknown:
                raise ConfigError(
                    f"the {table.where} has label(s) {quoted(unknown)} that the task's classes do not include; "
                    f"classes: {allowed_list(index)}"
                )
            labels = np.asarray([index[v] for v in values], dtype=np.int64)
        frame = pd.DataFrame({col: table.frame[col].map(str).to_numpy() for col in spec.text_columns})
        frame[spec.label_column] = labels
        frames[split] = frame
    # Separate seeded streams: carving test does not shift which rows become validation.
    streams = {"test": np.random.default_rng([data_seed, 1]), "validation": np.random.default_rng([data_seed, 2])}
    total = len(frames["train"])
    for split, fraction in (("test", spec.test_fraction), ("validation", spec.dev_fraction)):
        if split in frames or (split == "validation" and not carve_validation):
            continue
        train = frames["train"]
        stratify = train[spec.label_column].to_numpy() if spec.type == "classification" else None
        # A fraction of the file's train rows, also when test was carved first.
        take = carve(stratify, len(train), min(fraction * total / len(train), 0.9), streams[split])
        if len(take) >= len(train):
            raise ConfigError(f"the {tables['train'].where} has too few rows to carve a {split} split from it")
        mask = np.zeros(len(train), dtype=bool)
        mask[take] = True
        frames[split] = train[mask].reset_index(drop=True)
        frames["train"] = train[~mask].reset_index(drop=True)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_pandas(frames[split], preserve_index=False)
            for split in SPLIT_KEYS
            if split in frames
        }
    )
