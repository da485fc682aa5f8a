"""User tasks (``task=custom``): read the user's files or hub dataset, check them, infer the task.

``conf/task/custom.yaml`` names the data and the columns; :func:`custom_task_spec` reads the
data once, checks everything that could make a run fail later (files, columns, missing text,
labels) and infers what the config leaves open:

* the task type: ``regression`` when every label is a number and some are not whole numbers,
  else ``classification`` (``task.type`` overrides);
* the classes: the distinct training labels, numerically sorted when they are all whole
  numbers, else alphabetically (``task.label_names`` fixes another order; a hub dataset's
  ``ClassLabel`` names keep their order); label id = index in this list;
* the metrics: accuracy, macro-F1 and Matthews correlation for classification, Spearman and
  Pearson correlation for regression; the first is the main one (``task.metrics`` and
  ``task.main_metric`` override).

Every problem is a :class:`~autopeft.errors.ConfigError` raised before any training, naming
the file, the bad value or column, and what is allowed. :func:`custom_raw_splits` then
serves the data module: the same checks, labels mapped to ids, and missing splits carved
from train (seeded by ``data.data_seed``, stratified by class for classification).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.tasks import (
    CUSTOM_TASK,
    FILE_FORMATS,
    MISSING_TEXT_POLICIES,
    SPLIT_KEYS,
    TaskSpec,
    validate_spec,
)

log = logging.getLogger("autopeft.custom")

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
#: File extension -> format (a trailing compression suffix such as ``.gz`` is looked through).
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")
_SHOW = 5  # offending rows/values quoted in a message


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Table:
    """One split's raw rows and where they came from (for messages).

    Attributes:
        split: ``train``, ``validation`` or ``test``.
        where: E.g. ``"train file /data/train.csv"`` or ``"split 'train' of hub dataset 'imdb'"``.
        frame: The rows (never modified in place: frames are shared by the read cache).
        line_offset: Added to a 0-based row position to give the number shown to users
            (the file line for CSV/TSV (header = line 1) and JSON Lines; 0 otherwise).
        class_names: A hub ``ClassLabel`` feature's names (label id = index), else None.

    """

    split: str
    where: str
    frame: pd.DataFrame
    line_offset: int = 0
    class_names: tuple[str, ...] | None = None

    def positions(self, mask: np.ndarray | pd.Series) -> str:
        """Render the first few rows where ``mask`` holds, e.g. ``lines 4, 9 and 2 more``."""
        # The frame's index keeps each row's position in the file, also after rows were dropped.
        rows = self.frame.index.to_numpy()[np.asarray(mask, dtype=bool)]
        noun = "line" if self.line_offset else "row"
        shown = ", ".join(str(int(r) + self.line_offset) for r in rows[:_SHOW])
        more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
        return f"{noun}{'s' if len(rows) > 1 else ''} {shown}{more}"


def resolve_path(value: Any, key: str) -> Path:
    """An absolute path for the file named by ``task.<key>`` (relative to where ``run.py`` started)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"task.{key} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _launch_dir() / path
    return path.resolve()


def _launch_dir() -> Path:
    # Hydra may change the working directory (hydra.job.chdir); user paths are relative to the launch one.
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            return Path(get_original_cwd())
    except (ImportError, ValueError):
        pass
    return Path.cwd()


def file_format(path: Path, fmt: str | None, key: str) -> str:
    """The format of ``path``: ``fmt`` when set, else from its extension."""
    if fmt is not None:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes.pop()
    ext = suffixes[-1] if suffixes else ""
    if ext not in EXTENSIONS:
        raise ConfigError(
            f"task.{key}={str(path)!r}: cannot tell the file format from the extension {ext or '(none)'!r}; "
            f"known extensions: {allowed_list(EXTENSIONS)}, or set task.format to one of {allowed_list(FILE_FORMATS)}"
        )
    return EXTENSIONS[ext]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _parse(path: Path, fmt: str) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        # Every field as a string and only empty fields as missing: text such as "NA" or "None"
        # stays text, and labels are interpreted once, the same way for every format.
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_values=[""])
    if fmt == "json":
        try:
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        except ValueError:
            if path.suffix.lower() != ".json":
                raise
            # A .json file may also be one array of row objects.
            return pd.read_json(path, dtype=False, convert_dates=False)
    return pd.read_parquet(path)


_READ_CACHE: OrderedDict[tuple[Any, ...], pd.DataFrame] = OrderedDict()
_READ_CACHE_SIZE = 8


def read_file(path: Path, fmt: str | None, key: str) -> tuple[pd.DataFrame, str]:
    """Read one data file as a DataFrame (cached per path, size and modification time).

    Raises:
        ConfigError: If the file does not exist, has an unknown extension or cannot be parsed.

    """
    if not path.exists():
        raise ConfigError(f"task.{key}: the file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"task.{key}: {str(path)!r} is not a file")
    fmt = file_format(path, fmt, key)
    stat = path.stat()
    cache_key = (str(path), fmt, stat.st_size, stat.st_mtime_ns)
    if cache_key in _READ_CACHE:
        _READ_CACHE.move_to_end(cache_key)
        return _READ_CACHE[cache_key], fmt
    if stat.st_size == 0:
        raise ConfigError(f"task.{key}: the file {str(path)!r} is empty")
    try:
        frame = _parse(path, fmt)
    except Exception as err:  # pandas/pyarrow raise many types for malformed files
        raise ConfigError(
            f"task.{key}: could not parse {str(path)!r} as {fmt} ({_first_line(err)}); "
            "check the file, or set task.format if the extension misleads"
        ) from err
    frame.columns = [str(c) for c in frame.columns]
    _READ_CACHE[cache_key] = frame
    while len(_READ_CACHE) > _READ_CACHE_SIZE:
        _READ_CACHE.popitem(last=False)
    return frame, fmt


_HUB_CACHE: dict[tuple[str, str | None], Any] = {}


def _hub_dataset(hub: str, subset: str | None) -> Any:
    key = (hub, subset)
    if key not in _HUB_CACHE:
        import datasets

        try:
            _HUB_CACHE[key] = datasets.load_dataset(hub, subset)
        except Exception as err:  # offline, unknown name, unknown subset: all one message
            raise ConfigError(
                f"task.hub={hub!r} (task.subset={subset!r}) could not be loaded ({_first_line(err)}); a hub "
                "dataset needs network access to huggingface.co (or the datasets cache); offline, give "
                "files instead: task.train=<file> [task.validation=<file>] [task.test=<file>]"
            ) from err
    return _HUB_CACHE[key]


def load_tables(
    splits: Mapping[str, str | None],
    *,
    hub: str | None,
    subset: str | None,
    fmt: str | None,
    columns: Iterable[str],
    label: str,
) -> dict[str, Table]:
    """Read the splits that are given (files, or splits of a hub dataset); carved ones are absent.

    Args:
        splits: ``train``/``validation``/``test`` -> absolute file path or hub split name (or None).
        hub: A ``datasets`` hub name, or None for files.
        subset: The hub dataset's configuration name.
        fmt: A file format, or None to infer each file's from its extension.
        columns: The columns the task needs (hub splits are reduced to these when all are present).
        label: The label column (a hub ``ClassLabel`` there gives the class names).

    """
    tables: dict[str, Table] = {}
    if hub is None:
        for split in SPLIT_KEYS:
            if splits.get(split) is None:
                continue
            path = Path(str(splits[split]))
            frame, used = read_file(path, fmt, split)
            offset = {"csv": 2, "tsv": 2, "json": 1}.get(used, 0) if path.suffix.lower() != ".json" else 0
            tables[split] = Table(split, f"{split} file {str(path)!r}", frame, offset)
        return tables
    import datasets

    data = _hub_dataset(hub, subset)
    wanted = list(dict.fromkeys(columns))
    for split in SPLIT_KEYS:
        name = splits.get(split)
        if name is None:
            continue
        if name not in data:
            raise ConfigError(
                f"task.{split}={name!r} is not a split of hub dataset {hub!r}; its splits: {allowed_list(data)}"
            )
        ds = data[name]
        where = f"split {name!r} of hub dataset {hub!r}"
        if not set(wanted) <= set(ds.column_names):  # no rows needed: check_columns names what is there
            tables[split] = Table(split, where, pd.DataFrame(columns=ds.column_names))
            continue
        feature = ds.features.get(label)
        names = tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        tables[split] = Table(split, where, ds.select_columns(wanted).to_pandas(), 0, names)
    return tables


# --------------------------------------------------------------------------- checks


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


def _announce(message: str) -> None:
    """Log ``message`` once per process (the task is built several times in one run)."""
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        log.warning(message)


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
        _announce(f"task.missing_text=drop: dropping {what}")
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


def _as_number(value: Any) -> float | None:
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
    number = _as_number(value)
    if number is not None and number.is_integer():
        if class_names is not None and 0 <= number < len(class_names):
            return class_names[int(number)]
        return str(int(number))
    return str(value).strip()


def _quote(values: Iterable[Any]) -> str:
    values = list(values)
    shown = allowed_list(values[:_SHOW])
    return shown + (f" and {len(values) - _SHOW} more" if len(values) > _SHOW else "")


def numeric_labels(table: Table, label: str) -> np.ndarray:
    """The labels as float64; refuses values that are not finite numbers (regression)."""
    raw = table.frame[label]
    numbers = [_as_number(v) for v in raw]
    bad = np.array([n is None for n in numbers], dtype=bool)
    if bad.any():
        values = list(dict.fromkeys(str(v) for v, b in zip(raw, bad, strict=True) if b))
        raise ConfigError(
            f"task.type=regression needs numeric labels, but {_count_rows(bad.sum())} of the {table.where} "
            f"{_have(bad.sum())} "
            f"non-numeric values in column {label!r}: {_quote(values)} ({table.positions(bad)}); "
            "for classes set task.type=classification"
        )
    return np.asarray(numbers, dtype=np.float64)


def class_labels(table: Table, label: str) -> list[str]:
    """The labels as class names (see :func:`canonical_label`)."""
    return [canonical_label(v, table.class_names) for v in table.frame[label]]


def _infer_type(table: Table, label: str) -> str:
    if table.class_names is not None:
        return "classification"
    numbers = [_as_number(v) for v in table.frame[label]]
    if all(n is not None for n in numbers) and any(not n.is_integer() for n in numbers):
        return "regression"
    return "classification"


def _sorted_classes(values: Iterable[str]) -> list[str]:
    distinct = set(values)
    numbers = {v: _as_number(v) for v in distinct}
    if all(n is not None for n in numbers.values()):
        return sorted(distinct, key=lambda v: numbers[v])
    return sorted(distinct)


# --------------------------------------------------------------------------- the spec


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
    _announce_info(
        f"task custom: {classes_note}, text {list(text)}, metrics {list(metrics)} (main {main}); "
        f"rows: {', '.join(f'{k} {len(t.frame)}' for k, t in tables.items())}"
        + (f"; {' and '.join(carved)} carved from train" if carved else "")
    )
    return spec


def _announce_info(message: str) -> None:
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        log.info(message)


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
                f"the {train.where} has label(s) {_quote(unknown)} that task.label_names does not list; "
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
                f"the {table.where} has label(s) {_quote(new)} that never occur in training ({table.positions(mask)})"
                f"{hidden}; training labels: {_quote(_sorted_classes(known))}"
            )
    return names


# --------------------------------------------------------------------------- data for training


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


def custom_raw_splits(spec: TaskSpec, data_seed: int, carve_validation: bool = True) -> Any:
    """The raw ``train``/``validation``/``test`` datasets of a resolved custom task.

    Rows with missing text are refused or dropped as ``spec.missing_text`` says; labels
    become ids (``spec.label_names`` order) or float32 values; a split the spec leaves None
    is carved from train: first test, then validation from what is left, seeded by
    ``data_seed`` and stratified by class for classification.

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
    )
    check_columns(tables, spec.text_columns, spec.label_column)
    tables = apply_missing_text(tables, spec.text_columns, spec.missing_text)
    check_labels_present(tables, spec.label_column)
    index = {name: i for i, name in enumerate(spec.label_names or ())}
    frames: dict[str, pd.DataFrame] = {}
    for split, table in tables.items():
        if spec.type == "regression":
            labels: np.ndarray = numeric_labels(table, spec.label_column).astype(np.float32)
        else:
            values = class_labels(table, spec.label_column)
            unknown = [v for v in dict.fromkeys(values) if v not in index]
            if unknown:
                raise ConfigError(
                    f"the {table.where} has label(s) {_quote(unknown)} that the task's classes do not include; "
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


__all__ = [
    "CUSTOM_DEFAULTS",
    "DEFAULT_METRICS",
    "Table",
    "canonical_label",
    "carve",
    "custom_raw_splits",
    "custom_task_spec",
    "load_tables",
    "read_file",
]
