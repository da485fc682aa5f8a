"""Checking a custom task's rows: columns, missing text, labels (numbers or class names)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from autopeft.data.reading import SHOW, Table
from autopeft.errors import ConfigError, allowed_list, did_you_mean

log = logging.getLogger("autopeft.custom")


def check_columns(tables: Mapping[str, Table], text: tuple[str, ...], label: str) -> None:
    """Every split has the text and label columns; the message lists the columns it does have."""
    for table in tables.values():
        available = list(table.frame.columns)
        for key, names in (("text", text), ("label", (label,))):
            missing = [c for c in names if c not in available]
            if missing:
                hint = did_you_mean(missing[0], available)
                raise ConfigError(
                    f"task.{key}: the {table.where} has no column {allowed_list(missing)}{hint}; "
                    f"available columns: {allowed_list(available)}"
                )


def _blank(series: pd.Series) -> np.ndarray:
    """True where a value is missing (None/NaN) or a string of whitespace only."""
    missing = series.isna().to_numpy()
    strings = series.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    return missing | strings


_ANNOUNCED: set[str] = set()


def announce_once(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` once per process (a pipeline builds the same task for several stages)."""
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        log.log(level, message)


def apply_missing_text(tables: Mapping[str, Table], text: tuple[str, ...], policy: str) -> dict[str, Table]:
    """Refuse, or drop, rows whose text is missing or empty; say how many and where."""
    out: dict[str, Table] = {}
    for split, table in tables.items():
        blank = np.zeros(len(table.frame), dtype=bool)
        per_column = []
        for col in text:
            col_blank = _blank(table.frame[col])
            if col_blank.any():
                per_column.append(f"{int(col_blank.sum())} in {col!r}")
            blank |= col_blank
        count = int(blank.sum())
        if not count:
            out[split] = table
            continue
        what = (
            f"{count} of {len(blank)} rows of the {table.where} {_have(count)} missing or empty text "
            f"({', '.join(per_column)}; {table.positions(blank)})"
        )
        if policy == "refuse":
            raise ConfigError(
                f"task.missing_text=refuse: {what}; fix the file, or set task.missing_text=drop to drop these rows"
            )
        announce_once(f"task.missing_text=drop: dropping {what}")
        out[split] = replace(table, frame=table.frame[~blank])
    return out


def check_labels_present(tables: Mapping[str, Table], label: str) -> None:
    """No row may lack its label."""
    for table in tables.values():
        blank = _blank(table.frame[label])
        if blank.any():
            count = int(blank.sum())
            raise ConfigError(
                f"task.label: {count} of {len(blank)} rows of the {table.where} {_have(count)} no value in "
                f"label column {label!r} ({table.positions(blank)}); remove or label them"
            )


def _have(count: Any) -> str:
    return "has" if int(count) == 1 else "have"


def _count_rows(count: Any) -> str:
    return f"{int(count)} row{'' if int(count) == 1 else 's'}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def as_number(value: Any) -> float | None:
    """The value as a finite float, or None when it is not a number (strings are parsed)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if _is_number(value):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def canonical_label(value: Any, class_names: tuple[str, ...] | None = None) -> str:
    """The class name of a raw label: whole numbers without ``.0``, booleans as ``True``/``False``.

    ``1``, ``1.0`` and ``"1"`` are the same class ``"1"``, so a label column reads the same
    from CSV (strings), JSON (numbers) and Parquet (typed). With ``class_names`` (a hub
    ``ClassLabel``), an integer id becomes its name.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    number = as_number(value)
    if number is not None and number.is_integer():
        if class_names is not None and 0 <= number < len(class_names):
            return class_names[int(number)]
        return str(int(number))
    return str(value).strip()


def quoted(values: Iterable[Any]) -> str:
    """The first few of ``values``, quoted, and how many more there are (for error messages)."""
    values = list(values)
    shown = allowed_list(values[:SHOW])
    return shown + (f" and {len(values) - SHOW} more" if len(values) > SHOW else "")


def numeric_labels(table: Table, label: str) -> np.ndarray:
    """The labels as float64; refuses values that are not finite numbers (regression)."""
    raw = table.frame[label]
    numbers = [as_number(v) for v in raw]
    bad = np.array([n is None for n in numbers], dtype=bool)
    if bad.any():
        values = list(dict.fromkeys(str(v) for v, b in zip(raw, bad, strict=True) if b))
        raise ConfigError(
            f"task.type=regression needs numeric labels, but {_count_rows(bad.sum())} of the {table.where} "
            f"{_have(bad.sum())} "
            f"non-numeric values in column {label!r}: {quoted(values)} ({table.positions(bad)}); "
            "for classes set task.type=classification"
        )
    return np.asarray(numbers, dtype=np.float64)


def class_labels(table: Table, label: str) -> list[str]:
    """The labels as class names (see :func:`canonical_label`)."""
    return [canonical_label(v, table.class_names) for v in table.frame[label]]
