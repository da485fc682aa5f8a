"""Tests for autopeft/data/: offline stand-ins, split policy, tokenisation cache, batches.

Nothing here reaches the Hugging Face hub: stand-ins are local files, hub tasks are exercised
with a monkeypatched ``datasets.load_dataset``, and the tokenizer is the bundled MiniLM one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/datasets read it

import datasets
import pytest
import torch

from autopeft.data import cache as data_cache
from autopeft.data import splits as data_splits
from autopeft.data.cache import Tokenisation, tokenize_splits
from autopeft.data.datamodule import TaskDataModule
from autopeft.data.encoding import make_collator, make_encoder
from autopeft.data.splits import load_raw_splits
from autopeft.errors import ConfigError
from autopeft.tasks.registry import TASKS, get_task, resources_dir
from autopeft.tasks.spec import TaskSpec

STANDINS = resources_dir() / "standins"
MANIFEST = json.loads((STANDINS / "MANIFEST.json").read_text())
CAPS = {"max_train_samples": 64, "max_eval_samples": 32}

datasets.disable_progress_bars()


# --------------------------------------------------------------------------- stand-in files


def test_manifest_matches_committed_files() -> None:
    assert set(MANIFEST) == {"snli", "rotten_tomatoes", "vader_movies"}
    for name, entry in MANIFEST.items():
        assert set(entry["splits"]) == {"train", "validation", "test"}
        for split, facts in entry["splits"].items():
            payload = (STANDINS / name / f"{split}.jsonl").read_bytes()
            assert hashlib.sha256(payload).hexdigest() == facts["sha256"], f"{name}/{split}"
            assert payload.count(b"\n") == facts["rows"], f"{name}/{split}"


def _rows(folder: str, split: str) -> int:
    return MANIFEST[folder]["splits"][split]["rows"]


@pytest.mark.parametrize("name", ["snli", "snli_binary", "rotten_tomatoes", "vader_movies"])
def test_standin_loads_with_expected_splits_and_labels(name: str) -> None:
    spec = get_task(name)
    raw = load_raw_splits(spec, data_seed=0)
    folder = spec.path.split("/")[-1]
    assert list(raw) == ["train", "validation", "test"]
    for split, ds in raw.items():
        assert len(ds) == _rows(folder, split)
        assert set(spec.required_columns()) <= set(ds.column_names)
        labels = ds[spec.label_column]
        if spec.type == "regression":
            assert all(-4.0 <= v <= 4.0 for v in labels)
        else:
            assert set(labels) == set(range(spec.num_labels))


def test_snli_binary_mapping() -> None:
    three = load_raw_splits(get_task("snli"), data_seed=0)
    two = load_raw_splits(get_task("snli_binary"), data_seed=0)
    for split in ("train", "test"):
        assert two[split]["label"] == [0 if v == 0 else 1 for v in three[split]["label"]]
        assert two[split]["premise"] == three[split]["premise"]


# --------------------------------------------------------------------------- hub split policy (faked)


def _fake_glue(n_train: int = 200, n_val: int = 40, test_label: int = 0) -> datasets.DatasetDict:
    def split(n: int, label: int | None) -> datasets.Dataset:
        features = datasets.Features(
            {
                "sentence1": datasets.Value("string"),
                "sentence2": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                "idx": datasets.Value("int32"),
            }
        )
        rows = {
            "sentence1": [f"a{i}" for i in range(n)],
            "sentence2": [f"b{i}" for i in range(n)],
            "label": [i % 2 if label is None else label for i in range(n)],
            "idx": list(range(n)),
        }
        return datasets.Dataset.from_dict(rows, features=features)

    return datasets.DatasetDict({"train": split(n_train, None), "validation": split(n_val, test_label)})


def test_hub_split_policy_carves_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load(path, subset=None, **kwargs):
        calls.append((path, subset))
        return _fake_glue()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    raw = load_raw_splits(get_task("rte"), data_seed=3)
    assert calls == [("nyu-mll/glue", "rte")]
    assert {k: len(v) for k, v in raw.items()} == {"train": 180, "validation": 20, "test": 40}
    assert raw["test"]["idx"] == list(range(40))  # test = the official validation split
    assert sorted([*raw["train"]["idx"], *raw["validation"]["idx"]]) == list(range(200))
    assert list(raw["validation"]["label"]).count(1) == 10  # stratified: 50/50 like train
    assert raw["train"].features["label"] == datasets.Value("int64")
    again = load_raw_splits(get_task("rte"), data_seed=3)
    other = load_raw_splits(get_task("rte"), data_seed=4)
    assert again["validation"]["idx"] == raw["validation"]["idx"]
    assert other["validation"]["idx"] != raw["validation"]["idx"]


def test_hub_errors_name_columns_and_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: _fake_glue())
    with pytest.raises(ConfigError, match=r"lacks column\(s\) 'question'.*available columns: 'sentence1'"):
        load_raw_splits(dataclasses.replace(get_task("rte"), text_columns=("question", "sentence2")), 0)
    with pytest.raises(ConfigError, match=r"task\.splits\.test is 'validation_matched'"):
        load_raw_splits(get_task("mnli"), 0)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: _fake_glue(test_label=-1))
    with pytest.raises(ConfigError, match=r"split 'test' has labels in \[-1, -1\]"):
        load_raw_splits(get_task("rte"), 0)


# --------------------------------------------------------------------------- tokenisation cache


def test_tokenisation_cache_hit_skips_raw_data_and_tokenizer(tokenizer, tmp_path: Path, monkeypatch) -> None:
    spec = get_task("rotten_tomatoes")
    first, hit = tokenize_splits(spec, tokenizer, Tokenisation(max_length=32, data_seed=0, **CAPS), cache_dir=tmp_path)
    assert hit is False
    assert {k: len(v) for k, v in first.items()} == {"train": 64, "validation": 32, "test": 32}
    assert set(first["train"].column_names) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert first["train"].features["labels"] == datasets.Value("int64")
    assert max(len(ids) for ids in first["train"]["input_ids"]) <= 32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # temp dir renamed away

    def forbidden(*args, **kwargs):
        raise AssertionError("a cache hit must not load raw data or call the tokenizer")

    with monkeypatch.context() as m:
        m.setattr(data_cache, "load_raw_splits", forbidden)
        m.setattr(type(tokenizer), "__call__", forbidden)
        second, hit = tokenize_splits(
            spec, tokenizer, Tokenisation(max_length=32, data_seed=0, **CAPS), cache_dir=tmp_path
        )
    assert hit is True
    for split in first:
        assert second[split]["input_ids"] == first[split]["input_ids"]
        assert second[split]["labels"] == first[split]["labels"]

    _, hit = tokenize_splits(spec, tokenizer, Tokenisation(max_length=16, data_seed=0, **CAPS), cache_dir=tmp_path)
    assert hit is False
    assert len([p for p in tmp_path.iterdir()]) == 2


def test_caps_are_seeded_subsets(tokenizer, tmp_path: Path) -> None:
    spec = get_task("vader_movies")
    a, _ = tokenize_splits(spec, tokenizer, Tokenisation(max_length=16, data_seed=1, **CAPS), cache_dir=tmp_path / "a")
    b, _ = tokenize_splits(spec, tokenizer, Tokenisation(max_length=16, data_seed=1, **CAPS), cache_dir=tmp_path / "b")
    c, hit = tokenize_splits(
        spec, tokenizer, Tokenisation(max_length=16, data_seed=2, **CAPS), cache_dir=tmp_path / "a"
    )
    assert hit is False  # data_seed is part of the key
    assert a["train"]["labels"] == b["train"]["labels"]
    assert a["train"]["labels"] != c["train"]["labels"]
    assert a["train"].features["labels"] == datasets.Value("float32")


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize(("name", "dtype"), [("rotten_tomatoes", torch.int64), ("vader_movies", torch.float32)])
def test_datamodule_batches(tokenizer, tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    dm = TaskDataModule(
        get_task(name),
        tokenizer,
        batch_size=8,
        eval_batch_size=16,
        cache_dir=tmp_path,
        seed=5,
        tokenisation=Tokenisation(max_length=24, **CAPS),
    )
    dm.setup("fit")
    assert dm.cache_hit is False and dm.num_train_examples == 64
    dm.setup("fit")  # idempotent
    pickle.dumps(dm.collate_fn)  # DataLoader workers started with spawn must be able to pickle it
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    b, t = batch["input_ids"].shape
    assert b == 8 and t <= 24
    assert batch["attention_mask"].shape == (8, t) and batch["token_type_ids"].shape == (8, t)
    assert batch["input_ids"].dtype == torch.int64 and batch["labels"].dtype == dtype
    assert batch["labels"].shape == (8,)
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) == t  # dynamic padding: to the longest row of this batch
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()

    again = next(iter(dm.train_dataloader()))
    assert torch.equal(again["input_ids"], batch["input_ids"])  # shuffle order fixed by seed
    val = [x["labels"] for x in dm.val_dataloader()]
    assert [len(v) for v in val] == [16, 16]
    assert torch.cat(val).tolist() == pytest.approx(list(dm.datasets["validation"]["labels"]))  # unshuffled

    dm2 = TaskDataModule(
        get_task(name),
        tokenizer,
        batch_size=8,
        eval_batch_size=16,
        cache_dir=tmp_path,
        seed=6,
        tokenisation=Tokenisation(max_length=24, **CAPS),
    )
    assert dm2.num_train_examples == 64 and dm2.cache_hit is True
    assert list(dm2.train_dataloader().sampler) != list(dm.train_dataloader().sampler)  # seed changes order


COPA_ROWS = [
    {
        "premise": "The man broke his toe.",
        "question": "cause",
        "choice1": "He dropped a hammer on his foot.",
        "choice2": "He got a hole in his sock.",
        "label": 0,
    },
    {
        "premise": "I tipped the bottle.",
        "question": "effect",
        "choice1": "The liquid in the bottle froze.",
        "choice2": "The liquid in the bottle poured out.",
        "label": 1,
    },
    {
        "premise": "The sun rose.",
        "question": "effect",
        "choice1": "It got light.",
        "choice2": "It got dark.",
        "label": 0,
    },
    {
        "premise": "She cried.",
        "question": "cause",
        "choice1": "She was sad.",
        "choice2": "She won a prize.",
        "label": 0,
    },
]


def test_multiple_choice_encoder_and_collator(tokenizer) -> None:
    spec = get_task("copa")
    batch = {k: [row[k] for row in COPA_ROWS] for k in COPA_ROWS[0]}
    enc = make_encoder(spec, tokenizer, max_length=64)(batch)
    assert len(enc["input_ids"]) == 4 and all(len(choices) == 2 for choices in enc["input_ids"])
    assert tokenizer.decode(enc["input_ids"][0][0], skip_special_tokens=True) == (
        "the man broke his toe. what was the cause? he dropped a hammer on his foot."
    )
    assert tokenizer.decode(enc["input_ids"][1][1], skip_special_tokens=True).endswith(
        "what was the effect? the liquid in the bottle poured out."
    )
    features = [{k: v[i] for k, v in enc.items()} for i in range(4)]
    out = make_collator(spec, tokenizer)(features)
    b, c, t = out["input_ids"].shape
    assert (b, c) == (4, 2)
    assert out["attention_mask"].shape == (4, 2, t) and out["token_type_ids"].shape == (4, 2, t)
    assert out["labels"].tolist() == [0, 1, 0, 0] and out["labels"].dtype == torch.int64


def test_multiple_choice_end_to_end_from_local_files(tokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "copa_like"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in COPA_ROWS))
    spec: TaskSpec = dataclasses.replace(
        get_task("copa"),
        name="copa_like",
        benchmark="standin",
        source="local",
        path=str(folder),
        splits={"train": "train", "validation": "validation", "test": "test"},
    )
    dm = TaskDataModule(
        spec,
        tokenizer,
        batch_size=2,
        eval_batch_size=4,
        cache_dir=tmp_path / "cache",
        tokenisation=Tokenisation(max_length=32),
    )
    batch = next(iter(dm.test_dataloader()))
    assert batch["input_ids"].shape[:2] == (4, 2) and batch["input_ids"].ndim == 3
    assert batch["labels"].tolist() == [0, 1, 0, 0]


def test_wic_template(tokenizer) -> None:
    spec = get_task("wic")
    batch = {"word": ["bank"], "sentence1": ["The river bank."], "sentence2": ["The bank closed."], "label": [0]}
    enc = make_encoder(spec, tokenizer, max_length=64)(batch)
    expected = "[CLS] bank : the river bank. [SEP] the bank closed. [SEP]"
    assert tokenizer.decode(enc["input_ids"][0]) == expected


def test_local_missing_file_is_config_error(tmp_path: Path) -> None:
    spec = dataclasses.replace(get_task("snli"), path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"train\.jsonl not found"):
        load_raw_splits(spec, 0)


def test_all_registry_tasks_have_data_or_hub_ids() -> None:
    for spec in TASKS.values():
        if spec.source == "local":
            assert data_splits.local_data_files(spec)
        elif spec.source == "synthetic":  # drawn from a seed: the generator draws every split
            assert set(load_raw_splits(spec, 0)) == {"train", "validation", "test"}
        else:
            assert "/" in spec.path


def test_unreachable_hub_gives_a_clear_error_with_the_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigError, match=r"'rte' loads 'nyu-mll/glue'.*stand-in is task=snli_binary"):
        load_raw_splits(get_task("rte"), data_seed=0)
