"""Tests for the task registry (autopeft/tasks/registry.py) and its Hydra options (conf/task)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from autopeft.errors import ConfigError
from autopeft.tasks.metrics import METRICS
from autopeft.tasks.registry import TASKS, get_task, resources_dir, task_from_config
from autopeft.tasks.spec import TaskSpec, validate_spec

CONF_TASK = Path(__file__).resolve().parents[2] / "conf" / "task"

# Main metric as the AutoPEFT paper reports it, per task.
PAPER_MAIN_METRIC = {
    "rte": "accuracy",
    "mrpc": "accuracy",
    "stsb": "spearman",
    "cola": "matthews",
    "sst2": "accuracy",
    "qnli": "accuracy",
    "qqp": "accuracy",
    "mnli": "accuracy",
    "cb": "accuracy",
    "copa": "accuracy",
    "wic": "accuracy",
    "boolq": "accuracy",
    "snli": "accuracy",
    "snli_binary": "accuracy",
    "rotten_tomatoes": "accuracy",
    "vader_movies": "spearman",
    # Not in the paper: the synthetic generation tasks (decoders only).
    "reverse": "exact_match",
    "reverse_choice": "choice_accuracy",
}


def test_every_task_has_a_conf_file_and_vice_versa() -> None:
    files = {p.stem for p in CONF_TASK.glob("*.yaml")}
    assert files == {*TASKS, "custom"}  # custom.yaml: a user task built at run time (tests/tasks/test_custom.py)
    for name in TASKS:
        text = (CONF_TASK / f"{name}.yaml").read_text()
        assert text.startswith("# "), f"{name}.yaml needs a one-line comment"
        node = OmegaConf.to_container(OmegaConf.create(text))
        if TASKS[name].source == "synthetic":
            # A synthetic task's file lists its generator's options, so the command line can set
            # each (task.synthetic.train_size=500); they are the registry's.
            assert node == {"name": name, "synthetic": dict(TASKS[name].synthetic)}
        else:
            assert node == {"name": name}


def test_conf_files_build_valid_specs() -> None:
    for path in CONF_TASK.glob("*.yaml"):
        if path.stem == "custom":
            continue  # needs the user's files
        spec = task_from_config(OmegaConf.load(path))
        assert spec == TASKS[path.stem]


def test_registry_specs_are_consistent() -> None:
    assert set(TASKS) == set(PAPER_MAIN_METRIC)
    for name, spec in TASKS.items():
        assert spec.name == name
        validate_spec(spec)
        assert spec.main_metric == PAPER_MAIN_METRIC[name]
        assert set(spec.metrics) <= set(METRICS)
        assert spec.dev_fraction == 0.1


@pytest.mark.parametrize("name", ["rte", "mrpc", "stsb", "cola", "sst2", "qnli", "qqp", "mnli"])
def test_glue_split_policy(name: str) -> None:
    spec = get_task(name)
    assert (spec.benchmark, spec.source, spec.path, spec.subset) == ("glue", "hub", "nyu-mll/glue", name)
    # Test labels are hidden: official validation is our test, validation is carved from train.
    official = "validation_matched" if name == "mnli" else "validation"
    assert dict(spec.splits) == {"train": "train", "validation": None, "test": official}


@pytest.mark.parametrize("name", ["cb", "copa", "wic", "boolq"])
def test_superglue_split_policy(name: str) -> None:
    spec = get_task(name)
    expected = ("superglue", "hub", "aps/super_glue", name)
    assert (spec.benchmark, spec.source, spec.path, spec.subset) == expected
    assert dict(spec.splits) == {"train": "train", "validation": None, "test": "validation"}


def test_real_column_names() -> None:
    expected = {
        "rte": ("sentence1", "sentence2"),
        "mrpc": ("sentence1", "sentence2"),
        "stsb": ("sentence1", "sentence2"),
        "cola": ("sentence",),
        "sst2": ("sentence",),
        "qnli": ("question", "sentence"),
        "qqp": ("question1", "question2"),
        "mnli": ("premise", "hypothesis"),
        "cb": ("premise", "hypothesis"),
        "boolq": ("question", "passage"),
        "wic": ("sentence1", "sentence2"),
        "copa": ("premise",),
    }
    for name, cols in expected.items():
        assert get_task(name).text_columns == cols, name
    assert set(get_task("wic").required_columns()) == {"word", "sentence1", "sentence2", "label"}
    assert set(get_task("copa").required_columns()) == {"premise", "question", "choice1", "choice2", "label"}


def test_metric_sets() -> None:
    assert get_task("mrpc").metrics == ("accuracy", "f1")
    assert get_task("qqp").metrics == ("accuracy", "f1")
    assert get_task("stsb").metrics == ("spearman", "pearson")
    assert get_task("cb").metrics == ("accuracy", "macro_f1")
    assert get_task("rotten_tomatoes").metrics == ("accuracy", "f1")
    assert get_task("vader_movies").metrics == ("spearman", "pearson")


def test_copa_is_multiple_choice() -> None:
    spec = get_task("copa")
    assert spec.type == "multiple_choice" and spec.num_labels == 2
    assert spec.choice_columns == ("choice1", "choice2")
    assert spec.text_template == ("{premise} What was the {question}?",)
    assert "softmax" in spec.description


def test_standins() -> None:
    expected = {
        "snli": ("mnli", 3),
        "snli_binary": ("rte", 2),
        "rotten_tomatoes": ("sst2", 2),
        "vader_movies": ("stsb", 1),
    }
    for name, (target, num_labels) in expected.items():
        spec = get_task(name)
        got = (spec.benchmark, spec.source, spec.standin_for, spec.num_labels)
        assert got == ("standin", "local", target, num_labels)
        assert dict(spec.splits) == {"train": "train", "validation": "validation", "test": "test"}
        assert (resources_dir() / spec.path).is_dir()
    assert dict(get_task("snli_binary").label_map) == {0: 0, 1: 1, 2: 1}
    assert get_task("vader_movies").type == "regression"


def test_get_task_unknown_names_value_hint_and_allowed() -> None:
    with pytest.raises(ConfigError) as info:
        get_task("rtee")
    message = str(info.value)
    assert "'rtee'" in message and "did you mean 'rte'" in message
    for name in TASKS:
        assert repr(name) in message


def test_task_from_config_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key task\.dev_fracton \(did you mean 'dev_fraction'\?\)"):
        task_from_config({"name": "rte", "dev_fracton": 0.2})


def test_task_from_config_requires_name() -> None:
    with pytest.raises(ConfigError, match=r"task\.name is missing"):
        task_from_config({"dev_fraction": 0.2})


def test_task_from_config_overrides() -> None:
    cfg = OmegaConf.create({"name": "rte", "dev_fraction": 0.2, "metrics": ["accuracy", "f1"]})
    spec = task_from_config(cfg)
    assert spec.dev_fraction == 0.2 and spec.metrics == ("accuracy", "f1")
    assert spec.path == "nyu-mll/glue"  # untouched fields come from the registry
    spec = task_from_config({"name": "rte", "splits": {"validation": "validation"}})
    assert dict(spec.splits) == {"train": "train", "validation": "validation", "test": "validation"}
    hash(spec)  # specs with dict fields stay hashable
    assert json.loads(json.dumps(spec.to_dict()))["splits"]["validation"] == "validation"


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"dev_fraction": 1.5}, "dev_fraction must be a number strictly between 0 and 1"),
        ({"dev_fraction": 0}, "dev_fraction"),
        ({"type": "ranking"}, "task.type is 'ranking'"),
        ({"main_metric": "f1"}, "main_metric is 'f1'; it must be one of task.metrics"),
        ({"metrics": ["acuracy"]}, "unknown metric 'acuracy' \\(did you mean 'accuracy'\\?\\)"),
        ({"metrics": ["accuracy", "pearson"]}, "'pearson', which does not apply to classification"),
        ({"benchmark": "glu"}, "did you mean 'glue'"),
        ({"source": "web"}, "task.source is 'web'"),
        ({"num_labels": 1}, "num_labels must be >= 2"),
        ({"text_columns": ["a", "b", "c"]}, "text_columns must have 1 or 2 entries"),
        ({"splits": {"dev": "x"}}, "splits must have exactly the keys"),
        ({"splits": {"test": None}}, "splits.test must name a source split"),
        ({"label_map": {0: 5}}, "label_map must map integer labels to 0..1"),
        ({"text_template": ["{0}", "{b}"]}, "may only reference column names"),
        ({"standin_for": "nope"}, "standin_for is 'nope'"),
    ],
)
def test_task_from_config_validates_values(override: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        task_from_config({"name": "rte", **override})


def test_validate_multiple_choice_needs_matching_choices() -> None:
    with pytest.raises(ConfigError, match="choice_columns must have 2 entries"):
        task_from_config({"name": "copa", "choice_columns": ["choice1"]})
    with pytest.raises(ConfigError, match="choice_columns is only for multiple_choice"):
        task_from_config({"name": "rte", "choice_columns": ["a", "b"]})


def test_taskspec_is_frozen() -> None:
    spec: TaskSpec = get_task("rte")
    with pytest.raises(AttributeError):
        spec.num_labels = 3  # type: ignore[misc]
