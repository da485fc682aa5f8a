"""data.protocol (autopeft/data/protocol.py): paper (best dev-set score over epochs) versus heldout.

The split tests fake the hub with a monkeypatched ``datasets.load_dataset`` (as tests/data/test_data.py
does); the training tests run the real configs on the tiny random BERT and the offline stand-ins.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import datasets
import pandas as pd
import pytest
import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict

from autopeft.data.cache import Tokenisation, cache_key, tokenize_splits
from autopeft.data.protocol import PROTOCOLS, check_protocol, record_scoring, scores_caption, scoring
from autopeft.data.splits import load_raw_splits
from autopeft.errors import ConfigError
from autopeft.experiments.modes import mode_train
from autopeft.report.build import build_report
from autopeft.settings import TrainingSettings
from autopeft.tasks.registry import get_task, task_from_config
from autopeft.tasks.spec import SUPERGLUE_PATH
from autopeft.training.train import TrainingJob, build, train_and_evaluate
from tests.data.test_data import _fake_glue

CONF_EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiment"
#: The experiments that reproduce the paper: all of conf/experiment but the demo and ``none``.
#: Our own experiments (not the paper's): they keep the held-out protocol, a test split never used for selection.
OWN_EXPERIMENTS = ("demo", "none", "headline")
PAPER_EXPERIMENTS = sorted(p.stem for p in CONF_EXPERIMENTS.glob("*.yaml") if p.stem not in OWN_EXPERIMENTS)

datasets.disable_progress_bars()


# --------------------------------------------------------------------------- the value


def test_protocol_is_validated_with_one_clear_line(tiny_cfg: Callable[..., DictConfig]) -> None:
    assert [check_protocol(p) for p in PROTOCOLS] == ["paper", "heldout"]
    with pytest.raises(ConfigError, match=r"^data\.protocol='papr' is not a protocol \(did you mean 'paper'\?\); "):
        TrainingSettings.from_config(tiny_cfg("data.protocol=papr"))
    with pytest.raises(ConfigError, match=r"^data\.protocol='test' is not a protocol; allowed: 'paper', 'heldout'$"):
        load_raw_splits(get_task("rotten_tomatoes"), 0, "test")
    TrainingSettings.from_config(tiny_cfg("data.protocol=paper"))


def test_paper_experiments_set_paper_and_the_demo_keeps_heldout(compose_cfg: Callable[..., DictConfig]) -> None:
    assert len(PAPER_EXPERIMENTS) == 10, PAPER_EXPERIMENTS
    for experiment in PAPER_EXPERIMENTS:
        for extra in ([], ["debug=smoke"]):
            cfg = compose_cfg(f"experiment={experiment}", *extra)
            assert cfg.data.protocol == "paper", (experiment, extra)
            TrainingSettings.from_config(cfg)
    for experiment in OWN_EXPERIMENTS:
        assert compose_cfg(f"experiment={experiment}").data.protocol == "heldout"
    assert compose_cfg().data.protocol == "heldout"


# --------------------------------------------------------------------------- splits


def _fake_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: _fake_glue())


def test_heldout_is_todays_split_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch)
    default = load_raw_splits(get_task("rte"), data_seed=3)
    heldout = load_raw_splits(get_task("rte"), data_seed=3, protocol="heldout")
    assert {k: len(v) for k, v in heldout.items()} == {"train": 180, "validation": 20, "test": 40}
    for split in ("train", "validation", "test"):
        assert heldout[split]["idx"] == default[split]["idx"]
    assert not set(heldout["validation"]["idx"]) & set(heldout["train"]["idx"])


def test_paper_trains_on_all_of_train_and_validates_on_the_official_dev_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _fake_hub(monkeypatch)
    raw = load_raw_splits(get_task("rte"), data_seed=3, protocol="paper")
    assert raw["train"]["idx"] == list(range(200))  # the whole train split, in order: nothing carved
    assert raw["validation"]["idx"] == raw["test"]["idx"] == list(range(40))  # the official dev split
    assert raw["validation"]["label"] == raw["test"]["label"]
    assert raw["train"].features["label"] == datasets.Value("int64")


def test_paper_keeps_the_held_out_split_for_superglue_as_its_table_3_says(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch)
    superglue = dataclasses.replace(get_task("rte"), benchmark="superglue", path=SUPERGLUE_PATH)
    assert scoring("superglue", "paper") == "heldout" and scoring("glue", "paper") == "best_dev"
    assert {scoring(get_task(t).benchmark, "paper") for t in ("cb", "copa", "wic", "boolq")} == {"heldout"}
    paper = load_raw_splits(superglue, data_seed=3, protocol="paper")
    heldout = load_raw_splits(superglue, data_seed=3, protocol="heldout")
    assert {k: len(v) for k, v in paper.items()} == {"train": 180, "validation": 20, "test": 40}
    for split in ("train", "validation", "test"):
        assert paper[split]["idx"] == heldout[split]["idx"]


def test_paper_on_a_stand_in_validates_on_its_test_file() -> None:
    spec = get_task("rotten_tomatoes")
    heldout = load_raw_splits(spec, 0, "heldout")
    paper = load_raw_splits(spec, 0, "paper")
    assert paper["train"]["sentence"] == heldout["train"]["sentence"]
    assert paper["validation"]["sentence"] == paper["test"]["sentence"] == heldout["test"]["sentence"]
    assert paper["validation"]["sentence"] != heldout["validation"]["sentence"]


def test_paper_on_a_custom_task_validates_on_its_test_split_and_carves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    labels = ["yes", "no", "maybe"] * 30
    pd.DataFrame({"a": [f"sentence {i}" for i in range(90)], "label": labels}).to_csv(path, index=False)
    spec = task_from_config({"name": "custom", "train": str(path), "text": ["a"]})
    heldout = load_raw_splits(spec, 0, "heldout")
    paper = load_raw_splits(spec, 0, "paper")
    assert {k: len(v) for k, v in heldout.items()} == {"train": 72, "validation": 9, "test": 9}
    assert paper["test"]["a"] == heldout["test"]["a"]  # the same test carve-out
    assert paper["validation"]["a"] == paper["test"]["a"]
    assert sorted(paper["train"]["a"]) == sorted([*heldout["train"]["a"], *heldout["validation"]["a"]])


# --------------------------------------------------------------------------- cache


def test_the_protocol_is_part_of_the_cache_key(tokenizer, tmp_path: Path) -> None:
    spec = get_task("rotten_tomatoes")
    caps = {"max_length": 16, "data_seed": 0, "max_train_samples": 16, "max_eval_samples": 8}
    today = cache_key(spec, tokenizer, Tokenisation(**caps))
    assert cache_key(spec, tokenizer, Tokenisation(**caps, protocol="heldout")) == today  # held-out caches stay valid
    assert cache_key(spec, tokenizer, Tokenisation(**caps, protocol="paper")) != today
    heldout, hit = tokenize_splits(spec, tokenizer, Tokenisation(**caps), cache_dir=tmp_path)
    assert hit is False
    paper, hit = tokenize_splits(spec, tokenizer, Tokenisation(protocol="paper", **caps), cache_dir=tmp_path)
    assert hit is False and len(list(tmp_path.iterdir())) == 2
    assert paper["validation"]["input_ids"] == paper["test"]["input_ids"] == heldout["test"]["input_ids"]
    assert paper["validation"]["input_ids"] != heldout["validation"]["input_ids"]
    _, hit = tokenize_splits(spec, tokenizer, Tokenisation(protocol="paper", **caps), cache_dir=tmp_path)
    assert hit is True


# --------------------------------------------------------------------------- training and records


def _val_scores_per_epoch(run_dir: Path, metric: str) -> list[float]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return [float(row[f"val/{metric}"]) for row in csv.DictReader(handle) if row.get(f"val/{metric}")]


TRAIN_3_EPOCHS = ("fidelity=full", "fidelity.epochs=3", "fidelity.early_stopping_patience=null", "trainer.lr=3e-3")


def test_paper_reports_the_best_dev_score_over_epochs(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pl.Trainer, "test", lambda *a, **k: pytest.fail("paper reports the best epoch's dev score"))
    cfg = tiny_cfg("data.protocol=paper", *TRAIN_3_EPOCHS)
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path / "paper")
    assert record["status"] == "ok"
    assert (record["protocol"], record["scoring"], record["selected_on_reported_split"]) == ("paper", "best_dev", True)
    per_epoch = _val_scores_per_epoch(tmp_path / "paper", "accuracy")
    assert len(per_epoch) == 3
    assert record["metrics"]["test"]["accuracy"] == max(per_epoch) == record["score"]
    assert record["metrics"]["test"] == record["metrics"]["validation"]
    assert record["best_epoch"] == per_epoch.index(max(per_epoch))
    # The split the score was selected and reported on is the test split (the official dev split).
    setup = build(TrainingJob.from_config(cfg))
    setup.datamodule.setup()
    assert setup.datamodule.datasets["validation"]["input_ids"] == setup.datamodule.datasets["test"]["input_ids"]


def test_heldout_scores_the_test_split_apart_from_validation(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tested: list[str] = []
    real_test = pl.Trainer.test

    def spy(self, *args, **kwargs):
        tested.append("test")
        return real_test(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "test", spy)
    record = train_and_evaluate(TrainingJob.from_config(tiny_cfg(*TRAIN_3_EPOCHS)), tmp_path)
    assert record["status"] == "ok" and tested == ["test"]
    assert (record["protocol"], record["scoring"], record["selected_on_reported_split"]) == (
        "heldout",
        "heldout",
        False,
    )
    assert record["score"] == max(_val_scores_per_epoch(tmp_path, "accuracy"))
    setup = build(TrainingJob.from_config(tiny_cfg(*TRAIN_3_EPOCHS)))
    setup.datamodule.setup()
    assert setup.datamodule.datasets["validation"]["input_ids"] != setup.datamodule.datasets["test"]["input_ids"]


def test_results_json_carries_the_protocol(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    for protocol in PROTOCOLS:
        cfg = tiny_cfg("mode=train", f"data.protocol={protocol}")
        with open_dict(cfg):
            cfg.run_dir = str(tmp_path / protocol)
        mode_train(cfg, tmp_path / protocol)
        saved = json.loads((tmp_path / protocol / "results.json").read_text())
        assert saved["protocol"] == protocol and saved["config"]["data"]["protocol"] == protocol
        assert saved["scoring"] == ("best_dev" if protocol == "paper" else "heldout")


# --------------------------------------------------------------------------- reports


def _training(run: Path, task: str, protocol: str | None, score: float, seed: int = 0) -> None:
    run.mkdir(parents=True)
    record = {
        "status": "ok",
        "task": task,
        "main_metric": "accuracy",
        "metrics": {"validation": {"accuracy": score}, "test": {"accuracy": score}},
        "score": score,
        "params": {"paper_percent": 0.5},
        "peft": {"name": "lora"},
        "seed": seed,
        "fidelity": {"name": "full", "epochs": 20, "early_stopping_patience": 10},
        "backbone": "tiny_bert",
    }
    if protocol is not None:  # None: a record written before the protocol field existed
        record.update(protocol=protocol, scoring=scoring("glue", protocol))
    (run / "results.json").write_text(json.dumps(record))


def test_report_states_the_protocol_of_its_numbers(tmp_path: Path) -> None:
    _training(tmp_path / "paper" / "rte", "rte", "paper", 0.7)
    _training(tmp_path / "paper" / "mrpc", "mrpc", "paper", 0.8)
    summary = build_report([tmp_path / "paper"], tmp_path / "out")
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Scores: best dev-set score over epochs, selected on the reported split (protocol=paper)." in table
    assert "mix" not in table
    assert [row["protocol"] for row in summary["rows"]] == ["paper"]
    assert (tmp_path / "out" / "table.csv").read_text().splitlines()[0].endswith(",protocol")


def test_a_report_mixing_protocols_says_so_and_never_averages_across_them(tmp_path: Path) -> None:
    _training(tmp_path / "runs" / "a", "rte", "paper", 0.7, seed=0)
    _training(tmp_path / "runs" / "b", "rte", None, 0.5, seed=1)  # old record: held-out
    summary = build_report([tmp_path / "runs"], tmp_path / "out")
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Scores mix protocols: " in table and "(protocol=heldout)" in table and "(protocol=paper)" in table
    rows = {row["configuration"]: row for row in summary["rows"]}
    assert rows["lora · protocol=paper"]["rte"] == "70.0"
    assert rows["lora · protocol=heldout"]["rte"] == "50.0"


def test_scores_caption_names_the_tasks_when_paper_scores_superglue_apart() -> None:
    glue, superglue = ("paper", scoring("glue", "paper")), ("paper", scoring("superglue", "paper"))
    caption = scores_caption({"rte": [glue], "cb": [superglue]})
    assert caption.startswith("Scores differ by task: rte: best dev-set score over epochs")
    assert "; cb: held-out official dev split, epochs selected on 10% carved from train" in caption
    assert record_scoring({}) == ("heldout", "heldout")
    assert scores_caption({}) == ""
