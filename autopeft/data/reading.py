"""Reading a custom task's rows from local files or a hub dataset (cached per process).

CSV and TSV files name their columns in a header row, or, with ``task.header=false``, in
``task.columns`` (the names of the columns in order); JSON Lines, Parquet and hub datasets name
their own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopeft.errors import ConfigError, allowed_list
from autopeft.tasks.spec import FILE_FORMATS, SPLIT_KEYS

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


SHOW = 5  # offending rows/values quoted in a message


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
        header_row: True when the column names came from the first line of a CSV/TSV file, which
            may be a data row of a file without a header (see :func:`header_looks_like_data`).

    """

    split: str
    where: str
    frame: pd.DataFrame
    line_offset: int = 0
    class_names: tuple[str, ...] | None = None
    header_row: bool = False

    def positions(self, mask: np.ndarray | pd.Series) -> str:
        """Render the first few rows where ``mask`` holds, e.g. ``lines 4, 9 and 2 more``."""
        # The frame's index keeps each row's position in the file, also after rows were dropped.
        rows = self.frame.index.to_numpy()[np.asarray(mask, dtype=bool)]
        noun = "line" if self.line_offset else "row"
        shown = ", ".join(str(int(r) + self.line_offset) for r in rows[:SHOW])
        more = f" and {len(rows) - SHOW} more" if len(rows) > SHOW else ""
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


def _parse(path: Path, fmt: str, header: bool) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        # Every field as a string and only empty fields as missing: text such as "NA" or "None"
        # stays text, and labels are interpreted once, the same way for every format.
        return pd.read_csv(
            path,
            sep="\t" if fmt == "tsv" else ",",
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            header=0 if header else None,
        )
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


def _name_columns(frame: pd.DataFrame, columns: tuple[str, ...] | None, path: Path, key: str) -> pd.DataFrame:
    """A headerless file's rows with ``task.columns`` as their column names."""
    count = frame.shape[1]
    if columns is None:
        example = ",".join(f"col{i + 1}" for i in range(min(count, 4))) + (",..." if count > 4 else "")
        raise ConfigError(
            f"task.header=false needs task.columns: the {key} file {str(path)!r} has {count} column"
            f"{'s' if count != 1 else ''} per row; name them in order, e.g. task.columns=[{example}]"
        )
    if len(columns) != count:
        raise ConfigError(
            f"task.columns names {len(columns)} column{'s' if len(columns) != 1 else ''} "
            f"({allowed_list(columns)}), but the rows of the {key} file {str(path)!r} have {count} fields; "
            "name every column, in order"
        )
    return frame.set_axis(list(columns), axis=1)


def read_file(
    path: Path, fmt: str | None, key: str, header: bool = True, columns: tuple[str, ...] | None = None
) -> tuple[pd.DataFrame, str]:
    """Read one data file as a DataFrame (cached per path, size and modification time).

    Args:
        path: The file.
        fmt: Its format, or None to tell it from the extension.
        key: The ``task.<key>`` that names the file (for messages).
        header: Whether a CSV/TSV file's first line names its columns (``task.header``).
        columns: The column names of a CSV/TSV file without a header row (``task.columns``).

    Raises:
        ConfigError: If the file does not exist, has an unknown extension or cannot be parsed;
            or, without a header row, is not CSV/TSV or has another number of columns than
            ``columns`` names.

    """
    if not path.exists():
        raise ConfigError(f"task.{key}: the file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"task.{key}: {str(path)!r} is not a file")
    fmt = file_format(path, fmt, key)
    if not header and fmt not in ("csv", "tsv"):
        raise ConfigError(
            f"task.header=false is for CSV and TSV files, but the {key} file {str(path)!r} is read as {fmt}, "
            "whose rows name their own columns; set task.header=true (the default)"
        )
    stat = path.stat()
    cache_key = (str(path), fmt, header, stat.st_size, stat.st_mtime_ns)
    if cache_key in _READ_CACHE:
        _READ_CACHE.move_to_end(cache_key)
        frame = _READ_CACHE[cache_key]
    else:
        if stat.st_size == 0:
            raise ConfigError(f"task.{key}: the file {str(path)!r} is empty")
        try:
            frame = _parse(path, fmt, header)
        except Exception as err:  # pandas/pyarrow raise many types for malformed files
            raise ConfigError(
                f"task.{key}: could not parse {str(path)!r} as {fmt} ({_first_line(err)}); "
                "check the file, or set task.format if the extension misleads"
            ) from err
        frame.columns = [str(c) for c in frame.columns]
        _READ_CACHE[cache_key] = frame
        while len(_READ_CACHE) > _READ_CACHE_SIZE:
            _READ_CACHE.popitem(last=False)
    if not header:
        frame = _name_columns(frame, columns, path, key)
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
    header: bool = True,
    names: tuple[str, ...] | None = None,
) -> dict[str, Table]:
    """Read the splits that are given (files, or splits of a hub dataset); carved ones are absent.

    Args:
        splits: ``train``/``validation``/``test`` -> absolute file path or hub split name (or None).
        hub: A ``datasets`` hub name, or None for files.
        subset: The hub dataset's configuration name.
        fmt: A file format, or None to infer each file's from its extension.
        columns: The columns the task needs (hub splits are reduced to these when all are present).
        label: The label column (a hub ``ClassLabel`` there gives the class names).
        header: Whether CSV/TSV files start with a header row (``task.header``).
        names: The column names of CSV/TSV files without one (``task.columns``).

    Raises:
        ConfigError: On ``header=False`` with a hub dataset, and as :func:`read_file` does.

    """
    tables: dict[str, Table] = {}
    if hub is None:
        for split in SPLIT_KEYS:
            if splits.get(split) is None:
                continue
            path = Path(str(splits[split]))
            frame, used = read_file(path, fmt, split, header, names)
            delimited = used in ("csv", "tsv")
            # Users see file lines: a CSV/TSV header is line 1, so its first row is line 2.
            offset = {"csv": 2 if header else 1, "tsv": 2 if header else 1, "json": 1}.get(used, 0)
            if path.suffix.lower() == ".json":
                offset = 0  # possibly one JSON array: rows, not lines
            where = f"{split} file {str(path)!r}"
            tables[split] = Table(split, where, frame, offset, header_row=delimited and header)
        return tables
    if not header:
        raise ConfigError(
            f"task.header=false is for CSV and TSV files; the splits of hub dataset {hub!r} name their own columns"
        )
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
