"""The built-in tasks (GLUE, SuperGLUE, offline stand-ins, synthetic generation) and building a task from its node."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.tasks.spec import CUSTOM_DATA_KEYS, CUSTOM_TASK, GLUE_PATH, SUPERGLUE_PATH, TaskSpec, validate_spec
from autopeft.tasks.synthetic import REVERSE_DEFAULTS


def resources_dir() -> Path:
    """Return the package resources directory (``autopeft/resources``)."""
    return Path(__file__).resolve().parents[1] / "resources"


def _glue_splits(test: str = "validation") -> dict[str, str | None]:
    # GLUE/SuperGLUE test labels are hidden: official validation -> our test, carve validation.
    return {"train": "train", "validation": None, "test": test}


_STANDIN_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def _task(
    benchmark: str,
    name: str,
    description: str,
    text_columns: tuple[str, ...],
    num_labels: int,
    metrics: tuple[str, ...],
    *,
    test: str = "validation",
    folder: str | None = None,
    **fields: Any,
) -> TaskSpec:
    """Build a registry entry with its benchmark's conventions; ``fields`` override any of them.

    Hub tasks read subset ``name`` of their benchmark's dataset, test on the official split
    ``test`` and carve validation from train; stand-ins read ``standins/<folder>/*.jsonl``.
    """
    if benchmark == "standin":
        where = {
            "source": "local",
            "path": f"standins/{folder or name}",
            "subset": None,
            "splits": dict(_STANDIN_SPLITS),
        }
    else:
        path = GLUE_PATH if benchmark == "glue" else SUPERGLUE_PATH
        where = {"source": "hub", "path": path, "subset": name, "splits": _glue_splits(test)}
    conventions = {"label_column": "label", "type": "classification", "main_metric": metrics[0], **where}
    return TaskSpec(
        name=name,
        benchmark=benchmark,
        description=description,
        text_columns=text_columns,
        num_labels=num_labels,
        metrics=metrics,
        **{**conventions, **fields},
    )


def _glue(*args: Any, **fields: Any) -> TaskSpec:
    return _task("glue", *args, **fields)


def _superglue(*args: Any, **fields: Any) -> TaskSpec:
    return _task("superglue", *args, **fields)


def _standin(
    name: str,
    description: str,
    folder: str,
    text_columns: tuple[str, ...],
    num_labels: int,
    metrics: tuple[str, ...],
    standin_for: str,
    **fields: Any,
) -> TaskSpec:
    return _task(
        "standin",
        name,
        description,
        text_columns,
        num_labels,
        metrics,
        folder=folder,
        standin_for=standin_for,
        **fields,
    )


def _synthetic(name: str, description: str, metrics: tuple[str, ...], **options: Any) -> TaskSpec:
    """A generation task drawn by the ``reverse`` generator (:mod:`autopeft.tasks.synthetic`).

    Its answers are at most ``max_length`` (6) letters, one token each with the offline
    tokenizer, plus EOS: 16 answer tokens leave room for longer strings set on the command line.
    """
    choices = ("choices",) if options.get("choices") else ()
    return TaskSpec(
        name=name,
        benchmark="synthetic",
        description=description,
        source="synthetic",
        path="reverse",
        subset=None,
        text_columns=("prompt",),
        label_column="answer",
        type="generation",
        num_labels=1,
        metrics=metrics,
        main_metric=metrics[0],
        splits=dict(_STANDIN_SPLITS),
        choice_columns=choices,
        max_answer_tokens=16,
        synthetic={**REVERSE_DEFAULTS, **options},
    )


_REGISTRY: tuple[TaskSpec, ...] = (
    # --- GLUE (labels: rte/qnli 0=entailment; mrpc/qqp 1=equivalent/duplicate; sst2 1=positive)
    _glue(
        "rte",
        "GLUE RTE: textual entailment (0 entailment, 1 not entailment).",
        ("sentence1", "sentence2"),
        2,
        ("accuracy",),
    ),
    _glue("mrpc", "GLUE MRPC: paraphrase detection (1 equivalent).", ("sentence1", "sentence2"), 2, ("accuracy", "f1")),
    _glue(
        "stsb",
        "GLUE STS-B: sentence-pair semantic similarity regression (0..5).",
        ("sentence1", "sentence2"),
        1,
        ("spearman", "pearson"),
        type="regression",
    ),
    _glue("cola", "GLUE CoLA: grammatical acceptability (1 acceptable).", ("sentence",), 2, ("matthews",)),
    _glue("sst2", "GLUE SST-2: binary sentiment (1 positive).", ("sentence",), 2, ("accuracy",)),
    _glue(
        "qnli",
        "GLUE QNLI: does the sentence answer the question (0 entailment).",
        ("question", "sentence"),
        2,
        ("accuracy",),
    ),
    _glue(
        "qqp",
        "GLUE QQP: duplicate question detection (1 duplicate).",
        ("question1", "question2"),
        2,
        ("accuracy", "f1"),
    ),
    _glue(
        "mnli",
        "GLUE MNLI: 3-way NLI (0 entailment, 1 neutral, 2 contradiction); test = matched validation.",
        ("premise", "hypothesis"),
        3,
        ("accuracy",),
        test="validation_matched",
    ),
    # --- SuperGLUE
    _superglue(
        "cb",
        "SuperGLUE CommitmentBank: 3-way NLI (0 entailment, 1 contradiction, 2 neutral).",
        ("premise", "hypothesis"),
        3,
        ("accuracy", "macro_f1"),
    ),
    _superglue(
        "copa",
        "SuperGLUE COPA: choice of plausible alternatives. Context = '{premise} What was the "
        "{question}?' (question is 'cause' or 'effect'); each (context, choice) pair is scored "
        "separately and a softmax over the 2 choices picks the answer (label = choice index).",
        ("premise",),
        2,
        ("accuracy",),
        type="multiple_choice",
        choice_columns=("choice1", "choice2"),
        text_template=("{premise} What was the {question}?",),
    ),
    _superglue(
        "wic",
        "SuperGLUE WiC: is the word used with the same sense in both sentences "
        "(text_a = '{word}: {sentence1}', text_b = sentence2; 1 same sense).",
        ("sentence1", "sentence2"),
        2,
        ("accuracy",),
        text_template=("{word}: {sentence1}", "{sentence2}"),
    ),
    _superglue(
        "boolq", "SuperGLUE BoolQ: yes/no question about a passage (1 yes).", ("question", "passage"), 2, ("accuracy",)
    ),
    # --- Offline stand-ins (files in autopeft/resources/standins, see scripts/build_standins.py)
    _standin(
        "snli",
        "SNLI 3-way NLI (0 entailment, 1 neutral, 2 contradiction); offline stand-in for MNLI.",
        "snli",
        ("premise", "hypothesis"),
        3,
        ("accuracy",),
        "mnli",
    ),
    _standin(
        "snli_binary",
        "SNLI collapsed to entailment (0) vs not (1, from neutral or "
        "contradiction), matching RTE's labels; offline stand-in for RTE.",
        "snli",
        ("premise", "hypothesis"),
        2,
        ("accuracy",),
        "rte",
        label_map={0: 0, 1: 1, 2: 1},
    ),
    _standin(
        "rotten_tomatoes",
        "Rotten Tomatoes review snippets, binary sentiment (1 fresh/positive, 0 rotten); offline stand-in for SST-2.",
        "rotten_tomatoes",
        ("sentence",),
        2,
        ("accuracy", "f1"),
        "sst2",
    ),
    _standin(
        "vader_movies",
        "Movie-review snippets with mean human sentiment ratings (-4..4), regression; offline stand-in for STS-B.",
        "vader_movies",
        ("sentence",),
        1,
        ("spearman", "pearson"),
        "stsb",
        type="regression",
    ),
    # --- Synthetic generation tasks (drawn from a seed, nothing shipped; decoder backbones only)
    _synthetic(
        "reverse",
        "Reverse a short string of letters: 'reverse: d a c =' -> ' c a d' (3-6 of 8 letters, spaced; "
        "2000/200/200 distinct strings from seed 0); scored by exact match of the greedy decoding.",
        ("exact_match",),
    ),
    _synthetic(
        "reverse_choice",
        "The reverse task with 4 candidate answers per row (the gold one, the copy, rotations, shuffles); "
        "scored by the choice of highest answer log-likelihood, and by exact match of the greedy decoding.",
        ("choice_accuracy", "exact_match"),
        choices=4,
    ),
)


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _REGISTRY}


# Defaults of a resolved custom spec: a stored ``TaskSpec.to_dict()`` replaces every field.
_CUSTOM_BASE = TaskSpec(
    name=CUSTOM_TASK,
    benchmark="custom",
    description="A user task from files or a hub dataset.",
    source="files",
    path="train",
    subset=None,
    text_columns=("text",),
    label_column="label",
    type="classification",
    num_labels=2,
    metrics=("accuracy",),
    main_metric="accuracy",
    splits={"train": "train", "validation": None, "test": None},
)


def get_task(name: str) -> TaskSpec:
    """Look up a built-in task by name.

    Raises:
        ConfigError: If ``name`` is unknown; the message suggests the closest name and lists all.

    """
    if name not in TASKS:
        names = [*TASKS, CUSTOM_TASK]
        hint = " ('custom' needs its files: task=custom task.train=... task.text=...)" if name == CUSTOM_TASK else ""
        raise ConfigError(
            f"unknown task {name!r}{did_you_mean(name, names)}{hint}; allowed tasks: {allowed_list(names)}"
        )
    return TASKS[name]


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TaskSpec))


_TUPLE_FIELDS = (
    "text_columns",
    "metrics",
    "choice_columns",
    "text_template",
    "label_names",
    "columns",
    "exclude_labels",
)


def _to_plain(value: Any) -> Any:
    """Turn OmegaConf containers into plain Python so overrides compare and hash cleanly."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency, but keep tasks.py light
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _coerce_override(base: TaskSpec, key: str, value: Any) -> Any:
    """Normalise one override value to the field's Python type."""
    value = _to_plain(value)
    if key in _TUPLE_FIELDS and isinstance(value, (list, tuple)):
        return tuple(value)
    if key == "splits" and isinstance(value, Mapping):
        # Partial overrides (e.g. ``task.splits.validation=null``) merge onto the built-in splits.
        return {**base.splits, **value}
    if key == "label_map" and isinstance(value, Mapping):
        return dict(value)
    if key == "synthetic" and isinstance(value, Mapping) and isinstance(base.synthetic, Mapping):
        # ``task.synthetic.train_size=500`` changes one option and keeps the task's others.
        return {**base.synthetic, **value}
    return value


def task_from_config(cfg: Mapping[str, Any]) -> TaskSpec:
    """Build a validated :class:`TaskSpec` from the Hydra ``task`` config node.

    Args:
        cfg: ``{"name": <registry name>}`` plus optional overrides of any other TaskSpec
            field, e.g. ``{"name": "rte", "dev_fraction": 0.2}``; or a user task
            ``{"name": <its name>, "train": <file>, "text": [...], ...}`` (the keys of
            ``conf/task/custom.yaml``; one of :data:`~autopeft.tasks.spec.CUSTOM_DATA_KEYS`, or the
            name ``custom``, marks it), whose data are read and checked here (see
            :func:`autopeft.tasks.custom.custom_task_spec`); or a resolved custom spec
            (``TaskSpec.to_dict()`` of one, ``benchmark: custom``, as exports store it), rebuilt
            without its data.

    Raises:
        ConfigError: On a missing/unknown name, an unknown key or an invalid value; for
            custom tasks also on data that do not fit (before anything trains).

    """
    cfg = _to_plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"task config must be a mapping with a 'name' key, got {type(cfg).__name__}")
    if cfg.get("benchmark") == "custom":
        check_known_keys(cfg, _FIELD_NAMES, "task")
        fields = {k: _coerce_override(_CUSTOM_BASE, k, v) for k, v in cfg.items()}
        spec = dataclasses.replace(_CUSTOM_BASE, **fields)
        validate_spec(spec, TASKS)
        return spec
    # A user task's node is recognised by its data keys: its name is its own (derived from the data).
    # A resolved spec (it has ``benchmark``) of a built-in task holds ``header`` and the like too.
    is_user_node = cfg.get("name") == CUSTOM_TASK or any(key in cfg for key in CUSTOM_DATA_KEYS)
    if is_user_node and "benchmark" not in cfg:
        from autopeft.tasks.custom import custom_task_spec

        return custom_task_spec(cfg, TASKS)
    check_known_keys(cfg, _FIELD_NAMES, "task")
    if "name" not in cfg:
        raise ConfigError(f"task.name is missing; allowed tasks: {allowed_list([*TASKS, CUSTOM_TASK])}")
    base = get_task(cfg["name"])
    overrides = {k: _coerce_override(base, k, v) for k, v in cfg.items() if k != "name"}
    spec = dataclasses.replace(base, **overrides)
    validate_spec(spec, TASKS)
    return spec


#: Class names of the built-in tasks, index = label id (Hugging Face's names where it has them).
#: Only used while the task keeps its registry labels (same ``num_labels`` and ``label_map``).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "rte": ("entailment", "not_entailment"),
    "mrpc": ("not_equivalent", "equivalent"),
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "qnli": ("entailment", "not_entailment"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "cb": ("entailment", "contradiction", "neutral"),
    "wic": ("False", "True"),
    "boolq": ("False", "True"),
    "snli": ("entailment", "neutral", "contradiction"),
    "snli_binary": ("entailment", "not_entailment"),
    "rotten_tomatoes": ("negative", "positive"),
}


def default_label_names(task: TaskSpec) -> list[str] | None:
    """The class names of ``task`` (index = label id), or None when it has none we can vouch for.

    A task whose labels were overridden (another ``num_labels`` or ``label_map`` than the
    registry's) gets None: the registry names would then be wrong. A custom task carries its own
    class names (in label-id order).
    """
    if task.type == "classification" and getattr(task, "label_names", None):
        return list(task.label_names)
    if task.type != "classification" or task.name not in LABEL_NAMES:
        return None
    names = LABEL_NAMES[task.name]
    base = TASKS.get(task.name)
    if base is None or len(names) != task.num_labels or base.num_labels != task.num_labels:
        return None
    if dict(base.label_map or {}) != dict(task.label_map or {}):
        return None
    return list(names)


# Fail at import time if a registry edit breaks a built-in spec.
for _spec in _REGISTRY:
    validate_spec(_spec, TASKS)


del _spec
