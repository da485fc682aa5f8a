"""A task from the user's own files: its name, type, classes, columns and metrics, inferred and checked.

A custom task's identity is its ``task.name``: it names run directories and W&B runs, and keeps
report tables and plots of different datasets apart. By default it is derived from the data
(:func:`derived_task_name`: the training file's stem, or its folder's name for a file called
``train.csv`` and the like, or the hub dataset's name and subset).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autopeft.data.reading import _COMPRESSION, EXTENSIONS, Table, load_tables, resolve_path
from autopeft.data.rows import (
    announce_once,
    answer_texts,
    apply_exclude_labels,
    apply_missing_text,
    as_number,
    canonical_label,
    check_answers_in_choices,
    check_columns,
    check_labels_present,
    choice_lists,
    class_counts,
    class_labels,
    exclusion_values,
    headerless_hint,
    numeric_labels,
    quoted,
)
from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.tasks.spec import (
    CUSTOM_TASK,
    FILE_FORMATS,
    MISSING_TEXT_POLICIES,
    SPLIT_KEYS,
    TaskSpec,
    validate_spec,
)

#: The keys of ``conf/task/custom.yaml``, with their defaults (``name``: derived from the data).
CUSTOM_DEFAULTS: dict[str, Any] = {
    "name": None,
    "train": None,
    "validation": None,
    "test": None,
    "hub": None,
    "subset": None,
    "format": "auto",
    "header": True,
    "columns": None,
    "text": None,
    "label": None,
    "type": "auto",
    "label_names": None,
    "exclude_labels": None,
    "metrics": "auto",
    "main_metric": "auto",
    "missing_text": "refuse",
    "dev_fraction": 0.1,
    "test_fraction": 0.1,
    "description": None,
    "choices": None,
    "max_answer_tokens": 32,
}


CUSTOM_TYPES = ("auto", "classification", "regression", "generation")


#: The default label column of each kind of task (``task.label: null``).
DEFAULT_LABEL = {"generation": "answer"}


#: The default prompt column of a generation task (``task.text: null``).
DEFAULT_PROMPT = "prompt"


#: A task name: it becomes part of run directory names, report columns and W&B names.
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


#: File stems that say which split a file is, not which data: the folder names the data instead.
GENERIC_STEMS = frozenset({"train", "training", "trn", "data", "dataset", "all", "full"})


def _file_stem(path: Path) -> str:
    """``reviews`` of ``reviews.csv.gz``: the name without a compression suffix and a data extension."""
    name = path.name
    for suffix in (_COMPRESSION, tuple(EXTENSIONS)):
        for ext in suffix:
            if name.lower().endswith(ext) and len(name) > len(ext):
                name = name[: -len(ext)]
                break
    return name


def derived_task_name(train: Any = None, hub: Any = None, subset: Any = None, builtin: Collection[str] = ()) -> str:
    """A custom task's default name, from where its data come from (no file is read).

    ``docs/examples/reviews/train.jsonl`` -> ``reviews`` (a generic stem such as ``train`` gives
    way to the folder's name), ``data/scores.parquet`` -> ``scores``, hub ``nyu-mll/glue`` subset
    ``rte`` -> ``glue_rte``. Characters a run directory name should not hold become ``_``; a
    name that is a built-in task's gets ``_custom`` appended, so the two stay apart in reports;
    without any data the name is ``custom``.

    Args:
        train: ``task.train`` (a file path), or None.
        hub: ``task.hub`` (a dataset id), or None.
        subset: ``task.subset``, or None.
        builtin: The built-in task names a derived name must not take.

    """
    if isinstance(hub, str) and hub.strip():
        name = hub.strip().rstrip("/").rsplit("/", 1)[-1]
        if isinstance(subset, str) and subset.strip():
            name = f"{name}_{subset.strip()}"
    elif isinstance(train, str) and train.strip():
        path = Path(train.strip())
        name = _file_stem(path)
        folder = path.parent.name
        if name.lower() in GENERIC_STEMS and folder not in ("", ".", ".."):
            name = folder
    else:
        return CUSTOM_TASK
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._+-")[:64] or CUSTOM_TASK
    return f"{name}_custom" if name in builtin else name


def _task_name(cfg: Mapping[str, Any], builtin: Collection[str]) -> str:
    """``task.name`` when given (checked), else :func:`derived_task_name` of the data."""
    name = cfg["name"]
    if name is None:
        return derived_task_name(cfg["train"], cfg["hub"], cfg["subset"], builtin)
    if not isinstance(name, str) or not TASK_NAME.match(name):
        raise ConfigError(
            f"task.name={name!r} must be a short name of letters, digits, '_', '-', '.' or '+' (it names run "
            "directories, report columns and plot panels), e.g. task.name=my_reviews; null: derived from the data"
        )
    if name in builtin:
        raise ConfigError(
            f"task.name={name!r} is the name of a built-in task; a custom task needs a name of its own, so reports "
            f"keep the two apart, e.g. task.name={name}_custom"
        )
    return name


def _header(cfg: Mapping[str, Any]) -> tuple[bool, tuple[str, ...] | None]:
    """``task.header`` and ``task.columns``, checked against each other."""
    header, columns = cfg["header"], cfg["columns"]
    if not isinstance(header, bool):
        raise ConfigError(
            f"task.header={header!r} must be true (the first line of a CSV/TSV file names its columns) or false "
            "(the file has no header row: name its columns with task.columns=[...])"
        )
    if columns is None:
        return header, None
    if header:
        raise ConfigError(
            f"task.columns={columns!r} names the columns of a file without a header row: set task.header=false "
            "with it (with a header row, task.text and task.label name its columns)"
        )
    if isinstance(columns, str) or not isinstance(columns, list | tuple) or not columns:
        raise ConfigError(f"task.columns must be a list of column names, in order, got {columns!r}")
    if not all(isinstance(c, str) and c.strip() for c in columns):
        raise ConfigError(f"task.columns={list(columns)!r} must name every column with a non-empty string")
    twice = [c for c in dict.fromkeys(columns) if list(columns).count(c) > 1]
    if twice:
        raise ConfigError(f"task.columns={list(columns)!r} names {quoted(twice)} twice; each column needs its own name")
    return header, tuple(columns)


DEFAULT_METRICS = {
    "classification": ("accuracy", "macro_f1", "matthews"),
    "regression": ("spearman", "pearson"),
    "generation": ("exact_match",),
}


#: A generation task's metrics when it lists candidate answers.
CHOICE_METRICS = ("choice_accuracy", "exact_match")


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
        extra = (
            " (multiple choice needs a built-in task such as copa, or task.type=generation with task.choices)"
            if value == "multiple_choice"
            else ""
        )
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


def custom_task_spec(node: Mapping[str, Any], builtin: Collection[str] = ()) -> TaskSpec:
    """Build the :class:`TaskSpec` of a user task from its config node, reading and checking its data.

    Args:
        node: The ``task`` node: keys of :data:`CUSTOM_DEFAULTS` (missing ones take the defaults).
        builtin: The built-in task names (a user task's name must differ from them).

    Raises:
        ConfigError: On an unknown key or value, a bad ``task.name``, a missing or unparsable
            file, a headerless file without ``task.columns`` (or one that does not fit), an
            unknown column (saying so when a header row looks like data), missing text (with
            ``missing_text=refuse``), empty or single-class training data, validation/test labels
            that training lacks, or non-numeric regression labels; for generation tasks
            (``task.type=generation``: a prompt column, ``prompt`` by default, and an answer
            column, ``answer`` by default) also on missing answers, a second text column, and
            candidate answers (``task.choices``) that are not lists or lack the gold answer.

    """
    check_known_keys(node, CUSTOM_DEFAULTS, "task")
    cfg = {**CUSTOM_DEFAULTS, **node}
    name = _task_name(cfg, builtin)
    kind = _choice(cfg, "type", CUSTOM_TYPES)
    policy = _choice(cfg, "missing_text", MISSING_TEXT_POLICIES)
    fmt = _choice(cfg, "format", ("auto", *FILE_FORMATS))
    fmt = None if fmt == "auto" else fmt
    header, names_given = _header(cfg)
    excluded = exclusion_values(cfg["exclude_labels"])
    label = cfg["label"] if cfg["label"] is not None else DEFAULT_LABEL.get(kind, "label")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"task.label must name the label column, got {label!r}")
    if cfg["choices"] is not None and kind != "generation":
        raise ConfigError(
            f"task.choices={cfg['choices']!r} names the candidate answers of a generation task; set "
            f"task.type=generation with it (this task's type is {kind!r})"
        )
    if cfg["text"] is None and kind == "generation":
        cfg["text"] = DEFAULT_PROMPT
    splits = _splits(cfg)
    read = {"hub": cfg["hub"], "subset": cfg["subset"], "fmt": fmt, "label": label, "header": header}
    if cfg["text"] is None:
        train_only = {"train": splits["train"]}
        tables = load_tables(train_only, columns=(), names=names_given, **read)
        columns = list(tables["train"].frame.columns)
        raise ConfigError(
            "task.text is not set: name the text column, or two for sentence pairs "
            f"(task.text=[first,second]); available columns: {allowed_list(columns)}"
            f"{headerless_hint(tables['train'])}"
        )
    text = _text_columns(cfg["text"])
    if label in text:
        raise ConfigError(f"task.label={label!r} is also a text column (task.text={list(text)!r})")
    if kind == "generation" and len(text) != 1:
        raise ConfigError(
            f"task.text={list(text)!r} names {len(text)} columns; a generation task has one prompt column "
            "(e.g. task.text=prompt)"
        )
    choices = _choice_columns(cfg["choices"], text, label)
    # Fractions are checked before reading so a typo fails fast; validate_spec checks them again.
    for key in ("dev_fraction", "test_fraction"):
        frac = cfg[key]
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ConfigError(f"task.{key} must be a number strictly between 0 and 1, got {frac!r}")

    tables = load_tables(splits, columns=[*text, label, *choices], names=names_given, **read)
    train = tables["train"]
    check_columns(tables, text, label)
    check_choice_columns(tables, choices)
    if train.frame.empty:
        raise ConfigError(f"the {train.where} has no rows")
    tables = apply_missing_text(tables, text, policy)
    train = tables["train"]
    if train.frame.empty:
        raise ConfigError(f"the {train.where} has no rows left after dropping rows with missing text")
    tables = apply_exclude_labels(tables, label, excluded)
    train = tables["train"]
    if train.frame.empty:
        raise ConfigError(
            f"the {train.where} has no rows left after dropping the labels task.exclude_labels lists "
            f"({quoted(excluded)})"
        )
    check_labels_present(tables, label, excluded)
    if kind == "generation":
        return _generation_spec(cfg, name, splits, tables, text, label, choices, names_given, excluded)
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
        classes_note = counts_note = f"regression on {label!r}"
    else:
        names = _class_names(cfg, tables, label, excluded)
        num_labels = len(names)
        classes_note = f"classification, {num_labels} classes {list(names)}"
        # Each class's training rows, in label-id order: a stray class ('-', 'unknown') shows at once.
        counts_note = f"classification, {num_labels} classes {class_counts(names, class_labels(train, label))}"

    metrics = cfg["metrics"]
    metrics = DEFAULT_METRICS[kind] if metrics == "auto" else (metrics,) if isinstance(metrics, str) else metrics
    metrics = tuple(metrics) if isinstance(metrics, (list, tuple)) else metrics
    main = metrics[0] if cfg["main_metric"] == "auto" and metrics else cfg["main_metric"]
    source = "hub" if cfg["hub"] is not None else "files"
    description = cfg["description"] or (
        f"User task from {cfg['hub'] if source == 'hub' else Path(str(splits['train'])).name}: {classes_note}."
    )
    spec = TaskSpec(
        name=name,
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
        header=header,
        columns=names_given,
        exclude_labels=excluded,
    )
    validate_spec(spec)
    announce_once(
        f"task {name}: {counts_note}, text {list(text)}, metrics {list(metrics)} (main {main}); "
        + _rows_note(tables, splits),
        logging.INFO,
    )
    return spec


def _rows_note(tables: Mapping[str, Table], splits: Mapping[str, str | None]) -> str:
    """``rows: train 400, validation 50, test 50; validation and test carved from train`` for the task's log line."""
    carved = [key for key in ("validation", "test") if splits[key] is None]
    rows = f"rows: {', '.join(f'{k} {len(t.frame)}' for k, t in tables.items())}"
    return rows + (f"; {' and '.join(carved)} carved from train" if carved else "")


def _choice_columns(value: Any, text: tuple[str, ...], label: str) -> tuple[str, ...]:
    """``task.choices`` as a tuple of column names: one column of lists, or one column per candidate."""
    if value is None:
        return ()
    columns = [value] if isinstance(value, str) else value
    if not isinstance(columns, list | tuple) or not columns or not all(isinstance(c, str) and c for c in columns):
        raise ConfigError(
            f"task.choices={value!r} must name the column of candidate-answer lists (task.choices=choices) or one "
            "column per candidate (task.choices=[a,b,c])"
        )
    taken = [c for c in columns if c in text or c == label]
    if taken:
        raise ConfigError(
            f"task.choices={list(columns)!r} names {quoted(taken)}, the prompt or answer column; the candidates "
            "need columns of their own"
        )
    return tuple(columns)


def check_choice_columns(tables: Mapping[str, Table], choices: tuple[str, ...]) -> None:
    """Every split has the candidate-answer columns; the message lists the columns it does have."""
    for table in tables.values():
        available = list(table.frame.columns)
        missing = [c for c in choices if c not in available]
        if missing:
            raise ConfigError(
                f"task.choices: the {table.where} has no column {allowed_list(missing)}"
                f"{did_you_mean(missing[0], available)}; available columns: {allowed_list(available)}"
            )


def _generation_spec(
    cfg: Mapping[str, Any],
    name: str,
    splits: Mapping[str, str | None],
    tables: Mapping[str, Table],
    text: tuple[str, ...],
    label: str,
    choices: tuple[str, ...],
    names_given: tuple[str, ...] | None,
    excluded: tuple[str, ...],
) -> TaskSpec:
    """The spec of a generation task whose rows were read and cleaned (see :func:`custom_task_spec`)."""
    if cfg["label_names"] is not None:
        raise ConfigError("task.label_names is only for classification; this task is a generation task")
    if choices:
        for table in tables.values():
            check_answers_in_choices(table, answer_texts(table, label), choice_lists(table, choices))
    metrics = cfg["metrics"]
    default = CHOICE_METRICS if choices else DEFAULT_METRICS["generation"]
    metrics = default if metrics == "auto" else (metrics,) if isinstance(metrics, str) else metrics
    metrics = tuple(metrics) if isinstance(metrics, (list, tuple)) else metrics
    main = metrics[0] if cfg["main_metric"] == "auto" and metrics else cfg["main_metric"]
    source = "hub" if cfg["hub"] is not None else "files"
    where = cfg["hub"] if source == "hub" else Path(str(splits["train"])).name
    choices_note = f", candidates {list(choices)}" if choices else ""
    spec = TaskSpec(
        name=name,
        benchmark="custom",
        description=cfg["description"]
        or f"User task from {where}: generation, prompt {text[0]!r} -> answer {label!r}{choices_note}.",
        source=source,
        path=cfg["hub"] if source == "hub" else str(splits["train"]),
        subset=cfg["subset"],
        text_columns=text,
        label_column=label,
        type="generation",
        num_labels=1,
        metrics=metrics,
        main_metric=main,
        splits=dict(splits),
        choice_columns=choices,
        dev_fraction=cfg["dev_fraction"],
        test_fraction=cfg["test_fraction"],
        missing_text=cfg["missing_text"],
        file_format=None if cfg["format"] == "auto" else cfg["format"],
        header=cfg["header"],
        columns=names_given,
        exclude_labels=excluded,
        max_answer_tokens=cfg["max_answer_tokens"],
    )
    validate_spec(spec)
    announce_once(
        f"task {name}: generation, prompt {text[0]!r} -> answer {label!r}{choices_note}, metrics {list(metrics)} "
        f"(main {main}); " + _rows_note(tables, splits),
        logging.INFO,
    )
    return spec


def _class_names(
    cfg: Mapping[str, Any], tables: Mapping[str, Table], label: str, excluded: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The classes in label-id order, after checking train has two and the other splits no new ones.

    A hub ``ClassLabel``'s names keep their order, less the ones ``excluded`` drops.
    """
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
        dropped = [v for v in names if v in excluded]
        if dropped:
            raise ConfigError(
                f"task.label_names lists {quoted(dropped)}, which task.exclude_labels drops; list only the classes "
                "to train on"
            )
        unknown = [v for v in distinct if v not in names]
        if unknown:
            raise ConfigError(
                f"the {train.where} has label(s) {quoted(unknown)} that task.label_names does not list; "
                f"task.label_names: {allowed_list(names)}"
            )
    elif train.class_names is not None:
        names = tuple(v for v in train.class_names if v not in excluded)
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
