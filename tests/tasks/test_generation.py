"""Generation tasks: their metrics, their spec checks, the synthetic reverse task and custom generation files.

Every data file here is written by the tests; the learning and training tests are in
``tests/training/test_generation.py`` and ``tests/training/test_generation_learns.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from autopeft.data.splits import load_raw_splits
from autopeft.errors import ConfigError
from autopeft.tasks.metrics import compute_metrics, generation_metrics, metric_kind, normalise_answer
from autopeft.tasks.registry import TASKS, get_task, task_from_config
from autopeft.tasks.spec import validate_spec
from autopeft.tasks.synthetic import REVERSE_DEFAULTS, check_options, synthetic_rows

# --------------------------------------------------------------------------- metrics


def test_exact_match_compares_stripped_text_only() -> None:
    spec = get_task("reverse")
    predictions = [" c b a", "c b a\n", "C b a", "c b", "c  b a", ""]
    answers = [" c b a"] * 5 + [" "]
    # Stripped: equal, equal, case differs, too short, inner spacing differs, both empty.
    assert generation_metrics(spec, predictions, answers) == {"exact_match": pytest.approx(3 / 6)}
    assert normalise_answer("  x y \t") == "x y"


def test_choice_accuracy_counts_rows_whose_likeliest_choice_is_gold() -> None:
    spec = get_task("reverse_choice")
    got = generation_metrics(
        spec, ["a", "b", "c", "d"], ["a", "x", "c", "x"], chosen=[0, 2, 1, 3], gold_choices=[0, 1, 1, 3]
    )
    assert got == {"choice_accuracy": pytest.approx(3 / 4), "exact_match": pytest.approx(2 / 4)}
    with pytest.raises(ValueError, match="choice_accuracy needs the chosen and the gold choice"):
        generation_metrics(spec, ["a"], ["a"])
    with pytest.raises(ValueError, match="one prediction per gold answer"):
        generation_metrics(spec, ["a"], ["a", "b"], chosen=[0], gold_choices=[0])


def test_generation_metrics_go_through_the_metric_table() -> None:
    assert metric_kind("exact_match") == metric_kind("choice_accuracy") == "generation"
    with pytest.raises(ValueError, match="score its answers with generation_metrics"):
        compute_metrics(get_task("reverse"), torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match="score its outputs with compute_metrics"):
        generation_metrics(get_task("rte"), ["a"], ["a"])


# --------------------------------------------------------------------------- spec checks


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"metrics": ("accuracy",), "main_metric": "accuracy"}, r"has 'accuracy', which does not apply to generation"),
        ({"metrics": ("exact_match", "choice_accuracy")}, r"has 'choice_accuracy', which needs answer choices"),
        ({"num_labels": 2}, r"task.num_labels must be 1 for generation, got 2"),
        ({"text_columns": ("prompt", "answer2")}, r"task.text_columns must have 1 entries, got 2"),
        ({"choice_columns": ("answer",)}, r"task.choice_columns must not name the prompt or answer column"),
        ({"max_answer_tokens": 0}, r"task.max_answer_tokens must be an integer >= 1, got 0"),
        ({"label_map": {0: 0}}, r"task.label_map is only for classification or multiple_choice tasks"),
        ({"synthetic": None}, r"task.synthetic holds a synthetic generator's options"),
    ],
)
def test_generation_spec_checks_are_one_line(changes: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as caught:
        validate_spec(dataclasses.replace(get_task("reverse"), **changes))
    assert "\n" not in str(caught.value)


def test_exact_match_does_not_apply_to_classification() -> None:
    with pytest.raises(ConfigError, match=r"has 'exact_match', which does not apply to classification"):
        task_from_config({"name": "rte", "metrics": ["exact_match"], "main_metric": "exact_match"})


def test_older_tasks_keep_their_dict_and_generation_fields_appear_when_set() -> None:
    # Cache keys and stored identities of the existing tasks do not change with the new fields.
    assert "max_answer_tokens" not in get_task("rte").to_dict() and "synthetic" not in get_task("rte").to_dict()
    reverse = get_task("reverse").to_dict()
    assert reverse["max_answer_tokens"] == 16 and reverse["synthetic"]["train_size"] == 2000


# --------------------------------------------------------------------------- the synthetic reverse task


def test_reverse_rows_are_deterministic_distinct_and_reversed() -> None:
    options = {**REVERSE_DEFAULTS, "train_size": 300, "validation_size": 50, "test_size": 50}
    rows = synthetic_rows("reverse", "reverse", options)
    assert rows == synthetic_rows("reverse", "reverse", options)  # same seed, same rows
    assert rows != synthetic_rows("reverse", "reverse", {**options, "seed": 1})
    assert {k: len(v) for k, v in rows.items()} == {"train": 300, "validation": 50, "test": 50}
    prompts = [r["prompt"] for split in rows.values() for r in split]
    assert len(set(prompts)) == len(prompts)  # no string in two splits (or twice in one)
    for row in rows["test"]:
        letters = row["prompt"].removeprefix("reverse: ").removesuffix(" =").split(" ")
        assert 3 <= len(letters) <= 6 and set(letters) <= set("abcdefgh")
        assert row["answer"] == " " + " ".join(reversed(letters))
    lengths = {len(r["prompt"].split()) - 2 for r in rows["train"]}
    assert lengths == {3, 4, 5, 6}  # every length drawn, not only the many long strings


def test_copy_and_choices() -> None:
    options = {**REVERSE_DEFAULTS, "operation": "copy", "choices": 3, "train_size": 20, "min_length": 2}
    for row in synthetic_rows("copy", "reverse", options)["train"]:
        letters = row["prompt"].removeprefix("copy: ").removesuffix(" =")
        assert row["answer"] == " " + letters
        assert len(row["choices"]) == len(set(row["choices"])) == 3 and row["answer"] in row["choices"]


def test_every_reverse_choice_row_lists_its_answer_once() -> None:
    spec = get_task("reverse_choice")
    raw = load_raw_splits(spec, data_seed=0)
    for row in raw["validation"]:
        assert row["choices"].count(row["answer"]) == 1 and len(row["choices"]) == 4


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"trian_size": 5}, r"unknown key task.synthetic.trian_size \(did you mean 'train_size'\?\)"),
        ({"operation": "revers"}, r"task.synthetic.operation is 'revers' \(did you mean 'reverse'\?\); allowed"),
        ({"min_length": 1, "max_length": 1}, r"= 2400 distinct strings, but only 8 strings of length 1..1"),
        ({"alphabet": "aa"}, r"task.synthetic.alphabet must be a string of at least 2 distinct"),
        ({"choices": 1}, r"task.synthetic.choices must be 0 \(free generation\) or an integer >= 2"),
        ({"max_length": 2}, r"task.synthetic.max_length must be an integer >= 3, got 2"),
    ],
)
def test_bad_synthetic_options_are_one_line(options: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as caught:
        check_options("reverse", "reverse", options)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("task 'reverse': ")


def test_synthetic_options_override_from_the_task_node() -> None:
    spec = task_from_config({"name": "reverse", "synthetic": {"train_size": 40, "test_size": 7}})
    assert spec.synthetic["train_size"] == 40 and spec.synthetic["validation_size"] == 200
    raw = load_raw_splits(spec, data_seed=0)
    assert (len(raw["train"]), len(raw["test"])) == (40, 7)
    with pytest.raises(ConfigError, match=r"task.path='revers' names no synthetic generator"):
        task_from_config({"name": "reverse", "path": "revers"})


# --------------------------------------------------------------------------- custom generation files


def _qa_rows(n: int) -> list[dict]:
    return [{"prompt": f"Q: {i} plus one? A:", "answer": f" {i + 1}"} for i in range(n)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def custom(train: Path, **fields) -> dict:
    """A ``task=custom`` node as conf/task/custom.yaml makes it (``name`` null: derived from the file)."""
    return {"name": None, "train": str(train), "type": "generation", **fields}


def test_a_generation_file_with_prompt_and_answer_columns(tmp_path: Path) -> None:
    spec = task_from_config(custom(_jsonl(tmp_path / "sums.jsonl", _qa_rows(50))))
    assert (spec.name, spec.type, spec.text_columns, spec.label_column) == ("sums", "generation", ("prompt",), "answer")
    assert (spec.metrics, spec.main_metric, spec.num_labels, spec.max_answer_tokens) == (
        ("exact_match",),
        "exact_match",
        1,
        32,
    )
    raw = load_raw_splits(spec, data_seed=0)
    assert {k: len(v) for k, v in raw.items()} == {"train": 40, "validation": 5, "test": 5}
    assert raw["train"][0]["answer"].startswith(" ")  # the answer's leading space is kept


def test_named_columns_csv_choices_and_parquet(tmp_path: Path) -> None:
    rows = [
        {"question": f"Colour of thing {i}?", "gold": ("red", "blue")[i % 2], "options": json.dumps(["red", "blue"])}
        for i in range(30)
    ]
    csv = tmp_path / "colours.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    spec = task_from_config(custom(csv, text="question", label="gold", choices="options", max_answer_tokens=4))
    assert spec.choice_columns == ("options",) and spec.metrics == ("choice_accuracy", "exact_match")
    assert load_raw_splits(spec, data_seed=0)["test"][0]["options"] == ["red", "blue"]
    # One column per candidate, from Parquet.
    frame = pd.DataFrame({"q": [r["question"] for r in rows], "a": [r["gold"] for r in rows]})
    frame["c1"], frame["c2"] = "red", "blue"
    parquet = tmp_path / "colours.parquet"
    frame.to_parquet(parquet)
    spec = task_from_config(custom(parquet, text="q", label="a", choices=["c1", "c2"]))
    raw = load_raw_splits(spec, data_seed=0)
    assert raw["train"][0]["c1"] == ["red", "blue"]  # gathered into one list column


GENERATION_ERRORS = {
    # case: (rows of t.jsonl, node fields, pattern)
    "no answer column": (
        [{"prompt": "p", "target": "t"}] * 4,
        {},
        r"task.label: the train file '.*t.jsonl' has no column 'answer'; available columns: 'prompt', 'target'",
    ),
    "no prompt column": (
        [{"question": "p", "answer": "t"}] * 4,
        {},
        r"task.text: the train file .* has no column 'prompt'; available columns: 'question', 'answer'",
    ),
    "two prompt columns": (
        [{"prompt": "p", "context": "c", "answer": "t"}] * 4,
        {"text": ["prompt", "context"]},
        r"task.text=\['prompt', 'context'\] names 2 columns; a generation task has one prompt column",
    ),
    "missing answer": (
        [{"prompt": "p", "answer": "t"}] * 3 + [{"prompt": "p", "answer": None}],
        {},
        r"task.label: 1 of 4 rows of the train file .* has no value in label column 'answer' \(line 4\)",
    ),
    "choices column missing": (
        [{"prompt": "p", "answer": "t"}] * 4,
        {"choices": "options"},
        r"task.choices: the train file .* has no column 'options'; available columns: 'prompt', 'answer'",
    ),
    "choices not a list": (
        [{"prompt": "p", "answer": "t", "options": ["t", "u"]}] * 3 + [{"prompt": "p", "answer": "t", "options": "t"}],
        {"choices": "options"},
        r"task.choices: 1 row of the train file .* has no list of at least two candidate answers in column "
        r"'options' \(line 4\)",
    ),
    "answer not among choices": (
        [{"prompt": "p", "answer": "t", "options": ["t", "u"]}] * 2
        + [{"prompt": "p", "answer": "v", "options": ["t", "u"]}],
        {"choices": "options"},
        r"task.choices: in 1 row of the train file .* the answer is not one of the row's choices \(line 3; "
        r"the first: 'v' not in \['t', 'u'\]\)",
    ),
    "choices on a classification task": (
        [{"prompt": "p", "answer": "t"}] * 4,
        {"type": "classification", "text": "prompt", "choices": "options"},
        r"task.choices='options' names the candidate answers of a generation task; set task.type=generation",
    ),
    "class names on a generation task": (
        [{"prompt": "p", "answer": "t"}] * 4,
        {"label_names": ["t"]},
        r"task.label_names is only for classification; this task is a generation task",
    ),
    "bad metric": (
        [{"prompt": "p", "answer": "t"}] * 4,
        {"metrics": ["accuracy"]},
        r"task.metrics has 'accuracy', which does not apply to generation tasks",
    ),
}


@pytest.mark.parametrize("case", list(GENERATION_ERRORS))
def test_bad_generation_files_fail_in_one_line(case: str, tmp_path: Path) -> None:
    rows, fields, pattern = GENERATION_ERRORS[case]
    node = {"type": "generation", **fields}
    with pytest.raises(ConfigError, match=pattern) as caught:
        task_from_config({"name": "custom", "train": str(_jsonl(tmp_path / "t.jsonl", rows)), **node})
    assert "\n" not in str(caught.value)


def test_the_registry_lists_the_generation_tasks() -> None:
    assert {name for name, spec in TASKS.items() if spec.type == "generation"} == {"reverse", "reverse_choice"}
    assert get_task("reverse_choice").choice_columns == ("choices",)
