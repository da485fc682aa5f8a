"""What a task is: :class:`TaskSpec`, the facts every task declares, and their checks.

A :class:`TaskSpec` says where a task's data lives, which columns form the model input,
what kind of head it needs and how it is scored. Everything is declarative (column names
and format strings, no per-task Python code), so a spec can be hashed into a cache key,
overridden from a Hydra config and validated up front.

Split policy. GLUE and SuperGLUE hide their test labels, so, like the AutoPEFT paper, the
official validation split serves as our *test* split and a ``dev_fraction`` (10%) of the
official training split is carved off as our *validation* split (the one a search ranks
configurations on). The offline stand-ins ship all three splits as files. That is the
``data.protocol=heldout`` policy; ``data.protocol=paper`` trains on the whole train split and
validates on the split above called test, the official dev split (SuperGLUE aside, whose split
the paper's Table 3 states as the held-out one): see :mod:`autopeft.data.protocol`.

Input construction. A row becomes one or two text segments (``text_a``/``text_b``):
segment ``i`` is the value of ``text_columns[i]``, or, when ``text_template`` is set,
``text_template[i].format(**row)``. For multiple choice, the single segment is the
*context* and each of ``choice_columns`` is paired with it as ``text_b``.

Generation. A ``generation`` task's single segment is the *prompt* and its label column the
gold *answer* text; a decoder learns to continue the prompt with the answer (causal-LM loss on
the answer tokens only) and is scored on its greedy decoding (``exact_match``), at most
``max_answer_tokens`` tokens long. Its ``choice_columns``, when set, list candidate answers: one
column holding a list of them per row, or one column per candidate; ``choice_accuracy`` then
scores the choice of highest summed answer log-likelihood. ``num_labels`` is 1 (one text out).

Synthetic tasks. ``source: synthetic`` draws the rows from a seeded generator
(:mod:`autopeft.tasks.synthetic`, named by ``path``, with the options ``synthetic``) instead of
reading files: the offline stand-in for generation tasks ships no data.

User tasks. ``task=custom`` (``conf/task/custom.yaml``) builds a spec at run time from the
user's own files or hub dataset (see :mod:`autopeft.tasks.custom` and ``docs/custom_tasks.md``):
its type, labels and metrics are inferred from the data, and its data are checked before
anything trains. The resolved spec (``benchmark="custom"``) is stored in exports and rebuilt
from its fields alone, without the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import ConfigError, allowed_list, did_you_mean
from autopeft.tasks.metrics import METRICS, metric_kind
from autopeft.tasks.synthetic import check_options

BENCHMARKS = ("glue", "superglue", "standin", "synthetic", "custom")


SOURCES = ("hub", "local", "files", "synthetic")


TASK_TYPES = ("classification", "regression", "multiple_choice", "generation")


SPLIT_KEYS = ("train", "validation", "test")


MISSING_TEXT_POLICIES = ("refuse", "drop")


FILE_FORMATS = ("csv", "tsv", "json", "parquet")


#: The config name of user tasks built at run time (``conf/task/custom.yaml``), and the name of
#: one whose data name nothing else.
CUSTOM_TASK = "custom"


#: Keys only a user task's config node has (``conf/task/custom.yaml``): they mark a node to build
#: from its data, whatever its ``name``.
CUSTOM_DATA_KEYS = (
    "train",
    "validation",
    "test",
    "hub",
    "format",
    "header",
    "columns",
    "text",
    "label",
    "exclude_labels",
)


GLUE_PATH = "nyu-mll/glue"


SUPERGLUE_PATH = "aps/super_glue"


@dataclass(frozen=True)
class TaskSpec:
    """Everything AutoPEFT needs to know about one task.

    Attributes:
        name: Registry name, e.g. ``"rte"``.
        benchmark: ``"glue"``, ``"superglue"``, ``"standin"``, ``"synthetic"`` (drawn from a
            seed) or ``"custom"`` (a user task).
        description: One or two human-readable sentences.
        source: ``"hub"`` (Hugging Face dataset), ``"local"`` (JSON-lines files in a folder),
            ``"files"`` (a user task's files; ``splits`` then holds their paths) or
            ``"synthetic"`` (rows drawn by the generator ``path`` with the options ``synthetic``).
        path: Hub dataset id (``"nyu-mll/glue"``); for ``local``, a directory relative to
            :func:`resources_dir` holding ``<split>.jsonl`` files (an absolute path also works);
            for ``files``, the training file.
        subset: Hub configuration name (``"rte"``), or ``None``.
        text_columns: One or two columns forming ``text_a`` / ``text_b`` (for multiple
            choice exactly one: the context).
        label_column: Column holding the label (for generation: the gold answer text).
        type: ``"classification"``, ``"regression"``, ``"multiple_choice"`` or ``"generation"``.
        num_labels: Number of classes; 1 for regression and generation; number of choices for
            multiple choice.
        metrics: Metric names known to :mod:`autopeft.tasks.metrics`.
        main_metric: The metric a search optimises and the paper reports.
        splits: Maps ``train``/``validation``/``test`` to a source split name (for ``files``:
            a file path); a ``None`` validation means "carve ``dev_fraction`` of train", a
            ``None`` test (custom tasks only) "carve ``test_fraction`` of train".
        label_map: Source label -> task label (e.g. SNLI 3-way -> binary), or ``None``.
        choice_columns: Columns holding the answer options (multiple choice: one per choice;
            generation: optional, one column of lists of candidate answers or one per candidate).
        text_template: ``None`` or one ``str.format`` template per text segment, filled
            from the row's columns, e.g. ``("{word}: {sentence1}", "{sentence2}")``.
        dev_fraction: Fraction of train carved off as validation when needed.
        standin_for: The registry task this offline stand-in substitutes, or ``None``.
        label_names: Classification only: the class of each label id. Set for custom tasks,
            whose raw label values (strings or numbers) are mapped to their index here; exports
            predict these names.
        test_fraction: Fraction of train carved off as test when ``splits.test`` is None.
        missing_text: Rows whose text is missing or empty: ``"refuse"`` (fail before
            training, with the count) or ``"drop"`` them (custom tasks).
        file_format: ``csv``, ``tsv``, ``json`` (JSON Lines) or ``parquet``; None: from each
            file's extension (``files`` sources).
        header: CSV/TSV files of a user task start with a header row naming their columns;
            False: they do not, and ``columns`` names them.
        columns: The column names of headerless CSV/TSV files, in order (``header`` False only).
        exclude_labels: Label values (class names as read, ``""`` for a missing label) whose
            rows a user task drops before anything else looks at its labels.
        max_answer_tokens: Generation only: greedy decoding stops at EOS or after this many
            tokens, and training answers are cut to it.
        synthetic: Synthetic tasks only: the generator's options (``None`` otherwise).

    """

    name: str
    benchmark: str
    description: str
    source: str
    path: str
    subset: str | None
    text_columns: tuple[str, ...]
    label_column: str
    type: str
    num_labels: int
    metrics: tuple[str, ...]
    main_metric: str
    splits: Mapping[str, str | None]
    label_map: Mapping[int, int] | None = None
    choice_columns: tuple[str, ...] = ()
    text_template: tuple[str, ...] | None = None
    dev_fraction: float = 0.1
    standin_for: str | None = None
    label_names: tuple[str, ...] | None = None
    test_fraction: float = 0.1
    missing_text: str = "refuse"
    file_format: str | None = None
    header: bool = True
    columns: tuple[str, ...] | None = None
    exclude_labels: tuple[str, ...] = ()
    max_answer_tokens: int = 32
    synthetic: Mapping[str, Any] | None = None

    # ``splits``/``label_map`` are dicts, which the generated hash would choke on; hash the
    # canonical JSON form instead so specs can still be set members or dict keys.
    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the fields (tuples become lists).

        The fields that came with generation tasks appear only when they differ from their
        defaults: every other task keeps the dict, and so the tokenisation cache keys and the
        stored task identities, that it had before they existed.
        """
        out = json.loads(json.dumps(dataclasses.asdict(self)))
        for key, default in _LATER_FIELDS.items():
            if out[key] == default:
                del out[key]
        return out

    def template_fields(self) -> tuple[str, ...]:
        """Column names referenced by ``text_template`` (empty when there is none)."""
        names: list[str] = []
        for template in self.text_template or ():
            for _, field_name, _, _ in string.Formatter().parse(template):
                if field_name is not None and field_name not in names:
                    names.append(field_name)
        return tuple(names)

    def required_columns(self) -> tuple[str, ...]:
        """All source columns that must exist for this task (inputs and label)."""
        cols = [*self.text_columns, *self.template_fields(), *self.choice_columns, self.label_column]
        return tuple(dict.fromkeys(cols))


#: Fields added after the first task format, with the defaults :meth:`TaskSpec.to_dict` leaves out.
_LATER_FIELDS: dict[str, Any] = {"max_answer_tokens": 32, "synthetic": None}


def _fail(spec: TaskSpec, key: str, message: str) -> None:
    raise ConfigError(f"task {spec.name!r}: task.{key} {message}")


def _check_choice(spec: TaskSpec, key: str, options: tuple[str, ...]) -> None:
    value = getattr(spec, key)
    if value not in options:
        _fail(spec, key, f"is {value!r}{did_you_mean(str(value), options)}; allowed: {allowed_list(options)}")


def _check_str_tuple(spec: TaskSpec, key: str, lengths: tuple[int, ...]) -> None:
    value = getattr(spec, key)
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
        _fail(spec, key, f"must be a list of non-empty strings, got {value!r}")
    if len(value) not in lengths:
        _fail(spec, key, f"must have {' or '.join(map(str, lengths))} entries, got {len(value)}")


def _validate_basics(spec: TaskSpec, known_tasks: Collection[str] | None) -> None:
    for key in ("name", "description", "path", "label_column"):
        if not isinstance(getattr(spec, key), str) or not getattr(spec, key):
            _fail(spec, key, f"must be a non-empty string, got {getattr(spec, key)!r}")
    if spec.subset is not None and not isinstance(spec.subset, str):
        _fail(spec, "subset", f"must be a string or null, got {spec.subset!r}")
    _check_choice(spec, "benchmark", BENCHMARKS)
    _check_choice(spec, "source", SOURCES)
    _check_choice(spec, "type", TASK_TYPES)
    _check_choice(spec, "missing_text", MISSING_TEXT_POLICIES)
    if spec.file_format is not None:
        _check_choice(spec, "file_format", FILE_FORMATS)
    if not isinstance(spec.header, bool):
        _fail(spec, "header", f"must be true or false, got {spec.header!r}")
    if spec.header != (spec.columns is None):
        _fail(spec, "columns", "names the columns of headerless files: it is set exactly when task.header is false")
    if spec.columns is not None:
        _check_str_tuple(spec, "columns", tuple(range(1, len(spec.columns) + 1)))
    if not isinstance(spec.exclude_labels, tuple) or not all(isinstance(v, str) for v in spec.exclude_labels):
        _fail(spec, "exclude_labels", f"must be a list of label values, got {spec.exclude_labels!r}")
    if spec.standin_for is not None and known_tasks is not None and spec.standin_for not in known_tasks:
        _fail(spec, "standin_for", f"is {spec.standin_for!r}; allowed: null or {allowed_list(known_tasks)}")


def _validate_inputs(spec: TaskSpec) -> None:
    mc = spec.type == "multiple_choice"
    one_segment = mc or spec.type == "generation"  # the context, or the prompt
    _check_str_tuple(spec, "text_columns", (1,) if one_segment else (1, 2))
    if mc:
        _check_str_tuple(spec, "choice_columns", (spec.num_labels,))
    elif spec.type == "generation":
        if spec.choice_columns:  # one column of lists, or one column per candidate answer
            _check_str_tuple(spec, "choice_columns", tuple(range(1, len(spec.choice_columns) + 1)))
        overlap = set(spec.choice_columns) & {*spec.text_columns, spec.label_column}
        if overlap:
            _fail(spec, "choice_columns", f"must not name the prompt or answer column, got {sorted(overlap)!r}")
    elif spec.choice_columns:
        _fail(
            spec,
            "choice_columns",
            f"is only for multiple_choice and generation tasks, got {spec.choice_columns!r}",
        )
    if spec.text_template is None:
        return
    _check_str_tuple(spec, "text_template", (len(spec.text_columns),))
    try:
        fields = spec.template_fields()
    except ValueError as exc:
        _fail(spec, "text_template", f"is not a valid format string: {exc}")
    for name in fields:
        if not name.isidentifier():  # only plain column names: keeps templates declarative
            _fail(spec, "text_template", f"may only reference column names, got field {{{name}}}")


def _validate_labels(spec: TaskSpec) -> None:
    n = spec.num_labels
    if not isinstance(n, int) or isinstance(n, bool):
        _fail(spec, "num_labels", f"must be an integer, got {n!r}")
    if spec.type in ("regression", "generation") and n != 1:
        _fail(spec, "num_labels", f"must be 1 for {spec.type}, got {n}")
    if spec.type not in ("regression", "generation") and n < 2:
        _fail(spec, "num_labels", f"must be >= 2 for {spec.type}, got {n}")
    if spec.label_names is not None:
        names = spec.label_names
        if spec.type != "classification":
            _fail(spec, "label_names", f"is only for classification tasks, got {names!r}")
        if not isinstance(names, tuple) or not all(isinstance(v, str) and v for v in names):
            _fail(spec, "label_names", f"must be a list of non-empty strings, got {names!r}")
        if len(names) != n or len(set(names)) != n:
            _fail(spec, "label_names", f"must name each of the {n} classes once, got {list(names)!r}")
    if spec.label_map is None:
        return
    if spec.type in ("regression", "generation"):
        _fail(spec, "label_map", "is only for classification or multiple_choice tasks")
    if not isinstance(spec.label_map, Mapping) or not spec.label_map:
        _fail(spec, "label_map", f"must be a non-empty mapping or null, got {spec.label_map!r}")
    for src, dst in spec.label_map.items():
        if not isinstance(src, int) or not isinstance(dst, int) or not 0 <= dst < n:
            _fail(spec, "label_map", f"must map integer labels to 0..{n - 1}, got {src!r}: {dst!r}")


def _validate_metrics(spec: TaskSpec) -> None:
    if not isinstance(spec.metrics, tuple) or not spec.metrics:
        _fail(spec, "metrics", f"must be a non-empty list, got {spec.metrics!r}")
    wanted = spec.type if spec.type in ("regression", "generation") else "classification"
    for metric in spec.metrics:
        if metric not in METRICS:
            _fail(
                spec,
                "metrics",
                f"has unknown metric {metric!r}{did_you_mean(str(metric), METRICS)}; allowed: {allowed_list(METRICS)}",
            )
        if metric_kind(metric) != wanted:
            _fail(spec, "metrics", f"has {metric!r}, which does not apply to {spec.type} tasks")
        if metric == "f1" and spec.num_labels != 2:
            _fail(spec, "metrics", "has 'f1' (binary, positive class 1) but num_labels != 2; use 'macro_f1'")
        if metric == "choice_accuracy" and not spec.choice_columns:
            _fail(spec, "metrics", "has 'choice_accuracy', which needs answer choices: set task.choice_columns")
    if spec.main_metric not in spec.metrics:
        _fail(
            spec,
            "main_metric",
            f"is {spec.main_metric!r}; it must be one of task.metrics: {allowed_list(spec.metrics)}",
        )


def _validate_splits(spec: TaskSpec) -> None:
    if not isinstance(spec.splits, Mapping) or set(spec.splits) != set(SPLIT_KEYS):
        got = list(spec.splits) if isinstance(spec.splits, Mapping) else spec.splits
        _fail(spec, "splits", f"must have exactly the keys {allowed_list(SPLIT_KEYS)}, got {got!r}")
    # Only user tasks may carve their test split from train; built-in tasks test on a fixed split.
    required = ("train",) if spec.benchmark == "custom" else ("train", "test")
    for key in required:
        if not isinstance(spec.splits[key], str) or not spec.splits[key]:
            _fail(spec, f"splits.{key}", f"must name a source split, got {spec.splits[key]!r}")
    for key in SPLIT_KEYS:
        if key not in required and spec.splits[key] is not None and not isinstance(spec.splits[key], str):
            _fail(spec, f"splits.{key}", "must name a source split or be null (carve from train)")
    for key in ("dev_fraction", "test_fraction"):
        frac = getattr(spec, key)
        is_number = isinstance(frac, (int, float)) and not isinstance(frac, bool)
        if not is_number or not math.isfinite(frac) or not 0 < frac < 1:
            _fail(spec, key, f"must be a number strictly between 0 and 1, got {frac!r}")
    carved = (spec.splits["validation"] is None) * spec.dev_fraction + (
        spec.splits["test"] is None
    ) * spec.test_fraction
    if carved >= 0.9:
        _fail(
            spec, "dev_fraction", f"and task.test_fraction carve {carved:.0%} of train; leave at least 10% to train on"
        )


def _validate_later_fields(spec: TaskSpec) -> None:
    """``max_answer_tokens`` and ``synthetic`` (with the generator's own checks of its options)."""
    n = spec.max_answer_tokens
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        _fail(spec, "max_answer_tokens", f"must be an integer >= 1, got {n!r}")
    synthetic = spec.source == "synthetic"
    if synthetic != (spec.synthetic is not None):
        _fail(
            spec,
            "synthetic",
            "holds a synthetic generator's options: it is set exactly when task.source is 'synthetic'",
        )
    if synthetic:
        check_options(spec.name, spec.path, spec.synthetic)


def validate_spec(spec: TaskSpec, known_tasks: Collection[str] | None = None) -> None:
    """Check that every field of ``spec`` has an allowed type and value.

    Args:
        spec: The task.
        known_tasks: The registry's task names, which ``standin_for`` must be one of.

    Raises:
        ConfigError: Naming the task, the offending field and what is allowed.

    """
    _validate_basics(spec, known_tasks)
    _validate_inputs(spec)
    _validate_labels(spec)
    _validate_metrics(spec)
    _validate_splits(spec)
    _validate_later_fields(spec)
