"""Checking a custom task's rows: columns, missing text, excluded and missing labels, numbers, classes or answers."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from autopeft.data.reading import SHOW, Table
from autopeft.errors import ConfigError, allowed_list, did_you_mean
from autopeft.tasks.metrics import normalise_answer

log = logging.getLogger("autopeft.custom")


def check_columns(tables: Mapping[str, Table], text: tuple[str, ...], label: str) -> None:
    """Every split has the text and label columns; the message lists the columns it does have.

    When a CSV/TSV file's header row looks like data (:func:`header_looks_like_data`), the
    message says so and names the settings for a file without a header row.
    """
    for table in tables.values():
        available = list(table.frame.columns)
        for key, names in (("text", text), ("label", (label,))):
            missing = [c for c in names if c not in available]
            if missing:
                hint = did_you_mean(missing[0], available)
                raise ConfigError(
                    f"task.{key}: the {table.where} has no column {allowed_list(missing)}{hint}; "
                    f"available columns: {allowed_list(available)}{headerless_hint(table)}"
                )


#: A column name pandas made unique by appending ``.<n>`` (the header repeats a name).
_MANGLED = re.compile(r"^(?P<base>.*)\.\d+$")


def header_looks_like_data(table: Table) -> str | None:
    """Why the first line of ``table``'s file reads like a data row rather than column names, or None.

    Two signs, either enough: a column name is a number (``0.5``, ``3``), or a column name also
    occurs as a value in its own column (``positive`` heading a column of ``positive``/``negative``).
    Only CSV/TSV files read with a header row are judged.
    """
    if not table.header_row:
        return None
    names = [str(c) for c in table.frame.columns]
    # A repeated first-line value was renamed by pandas (0, 0 -> '0', '0.1'): judge what the line says.
    said = [m["base"] if (m := _MANGLED.match(n)) and m["base"] in names else n for n in names]
    numbers = [n for n in dict.fromkeys(said) if as_number(n) is not None]
    if numbers:
        return f"{'its column names' if len(numbers) > 1 else 'its column name'} {quoted(numbers)} " + (
            "are numbers" if len(numbers) > 1 else "is a number"
        )
    for name in names:
        values = {str(v).strip() for v in table.frame[name].dropna()}
        mangled = _MANGLED.match(name)
        candidates = [name, mangled["base"]] if mangled and mangled["base"] in names else [name]
        for candidate in candidates:
            if candidate.strip() in values:
                return f"its column name {candidate!r} also occurs as a value in that column"
    return None


def headerless_hint(table: Table) -> str:
    """``; the first line ... task.header=false task.columns=[...]`` when the header looks like data, else ``""``."""
    reason = header_looks_like_data(table)
    if reason is None:
        return ""
    count = len(table.frame.columns)
    return (
        f"; the first line looks like data, not a header ({reason}): for a file without a header row set "
        f"task.header=false task.columns=[...] (a name for each of its {count} columns, in order)"
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


def exclusion_values(value: Any) -> tuple[str, ...]:
    """``task.exclude_labels`` as class names (:func:`canonical_label`); ``""`` stands for a missing label.

    Raises:
        ConfigError: Unless ``value`` is null, one label value or a list of them.

    """
    if value is None:
        return ()
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not all(v is None or isinstance(v, str | int | float) for v in values):
        raise ConfigError(
            f"task.exclude_labels={value!r} must be a list of label values whose rows are dropped, "
            "e.g. task.exclude_labels=['-',''] ('' drops rows without a label)"
        )
    return tuple(dict.fromkeys("" if v is None else canonical_label(v) for v in values))


def apply_exclude_labels(tables: Mapping[str, Table], label: str, excluded: tuple[str, ...]) -> dict[str, Table]:
    """Drop the rows whose label is one of ``excluded`` (``""``: rows without a label); log how many.

    Values that mean "no gold label" (SNLI's ``-``, ``unknown``) would otherwise become a class
    of their own, or, empty, stop the run (:func:`check_labels_present`).
    """
    if not excluded:
        return dict(tables)
    out: dict[str, Table] = {}
    occurred: set[str] = set()
    for split, table in tables.items():
        raw = table.frame[label]
        blank = _blank(raw)
        names = np.array(
            ["" if b else canonical_label(v, table.class_names) for v, b in zip(raw, blank, strict=True)], dtype=object
        )
        drop = np.isin(names, list(excluded))
        count = int(drop.sum())
        if not count:
            out[split] = table
            continue
        per_value = Counter(names[drop])
        occurred |= set(per_value)
        shown = ", ".join(f"{v!r}: {n}" for v, n in sorted(per_value.items(), key=lambda kv: (-kv[1], kv[0])))
        announce_once(
            f"task.exclude_labels: dropping {count} of {len(names)} rows of the {table.where} "
            f"(label {shown}; {table.positions(drop)})"
        )
        out[split] = replace(table, frame=table.frame[~drop])
    unused = [v for v in excluded if v not in occurred]
    if unused:
        announce_once(f"task.exclude_labels: no row has the label(s) {quoted(unused)}; nothing dropped for them")
    return out


def class_counts(names: Iterable[str], labels: Iterable[str]) -> str:
    """``{'neg': 480, 'pos': 520} (train rows)``: each class in ``names`` order with its count in ``labels``."""
    counts = Counter(labels)
    return "{" + ", ".join(f"{name!r}: {counts.get(name, 0)}" for name in names) + "} (train rows)"


def check_labels_present(tables: Mapping[str, Table], label: str, excluded: tuple[str, ...] = ()) -> None:
    """No row may lack its label; the message names the ``task.exclude_labels`` that would drop them."""
    suggestion = ",".join(repr(v) for v in (*excluded, ""))  # as typed on the command line
    for table in tables.values():
        blank = _blank(table.frame[label])
        if blank.any():
            count = int(blank.sum())
            raise ConfigError(
                f"task.label: {count} of {len(blank)} rows of the {table.where} {_have(count)} no value in "
                f"label column {label!r} ({table.positions(blank)}); remove or label them, or drop them with "
                f"task.exclude_labels=[{suggestion}]"
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


def answer_texts(table: Table, label: str) -> list[str]:
    """A generation task's answers as text: strings as they are, numbers as :func:`canonical_label` writes them.

    Strings keep their spacing (an answer's leading space is part of how it follows the prompt);
    a number read from JSON or Parquet (``3``, ``3.0``) becomes ``"3"``, as a CSV file spells it.
    """
    return [v if isinstance(v, str) else canonical_label(v) for v in table.frame[label]]


def _choice_cell(value: Any) -> list[str] | None:
    """One cell of a column of answer lists as a list of strings, or None when it is not one.

    JSON Lines and Parquet hold real lists (Parquet as arrays); a CSV cell holds the list as JSON
    text, e.g. ``["cat", "dog"]``.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        return None
    return [v if isinstance(v, str) else canonical_label(v) for v in value]


def choice_lists(table: Table, columns: tuple[str, ...]) -> list[list[str]]:
    """Each row's candidate answers: from one column of lists, or one column per candidate.

    Raises:
        ConfigError: When a list cell is not a list of at least two answers (naming the rows), or
            a candidate column has an empty cell.

    """
    if len(columns) > 1:
        blank = np.zeros(len(table.frame), dtype=bool)
        for col in columns:
            blank |= _blank(table.frame[col])
        if blank.any():
            raise ConfigError(
                f"task.choices: {_count_rows(blank.sum())} of the {table.where} {_have(blank.sum())} an empty "
                f"candidate answer in columns {allowed_list(columns)} ({table.positions(blank)})"
            )
        return [list(row) for row in zip(*(answer_texts(table, c) for c in columns), strict=True)]
    lists = [_choice_cell(v) for v in table.frame[columns[0]]]
    bad = np.array([cell is None or len(cell) < 2 for cell in lists], dtype=bool)
    if bad.any():
        raise ConfigError(
            f"task.choices: {_count_rows(bad.sum())} of the {table.where} {_have(bad.sum())} no list of at least "
            f"two candidate answers in column {columns[0]!r} ({table.positions(bad)}); a cell holds a list, in a "
            'CSV file as JSON text such as ["cat", "dog"], or name one column per candidate: task.choices=[a,b,c]'
        )
    return [cell for cell in lists if cell is not None]


def check_answers_in_choices(table: Table, answers: list[str], choices: list[list[str]]) -> None:
    """Every row's answer is one of its candidates (compared without surrounding whitespace).

    Raises:
        ConfigError: Naming the rows whose answer is not among their choices, and the first one.

    """
    missing = np.array(
        [
            normalise_answer(a) not in {normalise_answer(c) for c in cands}
            for a, cands in zip(answers, choices, strict=True)
        ],
        dtype=bool,
    )
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise ConfigError(
            f"task.choices: in {_count_rows(missing.sum())} of the {table.where} the answer is not one of the "
            f"row's choices ({table.positions(missing)}; the first: {answers[first]!r} not in {choices[first]!r}); "
            "a multiple-choice generation task scores the gold answer against its candidates"
        )
