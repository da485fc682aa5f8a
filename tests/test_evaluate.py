"""Retraining chosen configurations over seeds: selection, transfer, resumption, summaries, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from autopeft import evaluate
from autopeft.bo.front import front_records
from autopeft.bo.loop import run_search
from autopeft.bo.store import ResultsStore
from autopeft.cli import mode_retrain
from autopeft.errors import ConfigError
from tests.bo.conftest import TINY_SEARCH, SyntheticObjective


@pytest.fixture
def search_dir(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """A finished tiny search on rotten_tomatoes (synthetic scores: no training)."""
    run_dir = tmp_path / "search"
    run_search(tiny_cfg(*TINY_SEARCH), run_dir, objective=SyntheticObjective())
    return run_dir


def test_front_is_retrained_over_seeds_and_resumes(
    tiny_cfg: Callable[..., DictConfig], search_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_cfg(f"retrain.from={search_dir}", "retrain.seeds=[0,1]")
    records = evaluate.retrain(cfg, tmp_path / "retrain")
    front = front_records(ResultsStore(search_dir / "results.jsonl").load())
    assert len(records) == 2 * len(front)
    assert [(r["choice"], r["seed"]) for r in records[:2]] == [("front-1", 0), ("front-1", 1)]
    assert all(r["status"] == "ok" and r["task"] == "rotten_tomatoes" for r in records)
    rows = evaluate.summarise(records, "accuracy")
    assert [row["seeds"] for row in rows] == [2] * len(front)
    assert all(0 <= row["mean"] <= 1 and row["sd"] >= 0 for row in rows)

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr("autopeft.train.train_and_evaluate", must_not_train)
    again = evaluate.retrain(cfg, tmp_path / "retrain")
    assert [(r["choice"], r["seed"], r["score"]) for r in again] == [
        (r["choice"], r["seed"], r["score"]) for r in records
    ]


def test_budget_pick_and_transfer_to_another_task(
    tiny_cfg: Callable[..., DictConfig], search_dir: Path, tmp_path: Path
) -> None:
    ok = [r for r in ResultsStore(search_dir / "results.jsonl").load() if r["status"] == "ok"]
    budget = sorted(r["param_percent"] for r in ok)[len(ok) // 2]
    expected = max((r for r in ok if r["param_percent"] <= budget), key=lambda r: (r["score"], -r["param_percent"]))
    cfg = tiny_cfg(
        f"retrain.from={search_dir}", "retrain.select=budget", f"retrain.budget_percent={budget}", "retrain.seeds=[3]"
    )
    choices = evaluate.choices_from_search(search_dir, evaluate.retrain_settings(cfg.retrain))
    assert len(choices) == 1 and choices[0].source.endswith(f"result {expected['index']}")
    transfer = tiny_cfg(
        f"retrain.from={search_dir}",
        "retrain.select=budget",
        f"retrain.budget_percent={budget}",
        "retrain.seeds=[3]",
        "task=snli_binary",
    )
    records = evaluate.retrain(transfer, tmp_path / "transfer")
    assert records[0]["task"] == "snli_binary" and records[0]["seed"] == 3
    assert records[0]["source"].endswith(f"result {expected['index']}")


def test_named_configurations_from_a_file(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "configs.json"
    path.write_text(
        json.dumps(
            [{"name": "sa8-top", "peft": {"sa_size": 8, "layers": [1]}}, {"name": "sa8", "peft": {"sa_size": 8}}]
        )
    )
    cfg = tiny_cfg(f"retrain.configs={path}", "retrain.seeds=[0,1]")
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    rows = mode_retrain(cfg)
    assert rows[0]["configuration"] == "sa8-top" and rows[0]["seeds"] == 2
    assert rows[0]["description"] == "SA 8 on layer 1"
    assert rows[1]["description"] == "SA 8 on layers 0–1"  # no layers given: every layer, as presets do
    out = capsys.readouterr().out
    assert "| sa8-top |" in out and "mean ± sd over seeds" in out
    assert (tmp_path / "run" / "retrain.md").exists()


def test_an_exported_configuration_transfers_to_another_task_with_a_label(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from autopeft.train import train_and_evaluate

    trained = train_and_evaluate(tiny_cfg("mode=train", "peft.layers=[1]", "peft.name=found"), tmp_path / "found")
    assert trained["export"]
    for source in (tmp_path / "found", tmp_path / "found" / "export" / "autopeft.json"):
        choices = evaluate.choices_from_file(source)
        assert [(c.name, c.peft["sa_size"], c.peft["layers"]) for c in choices] == [("found", 8, [1])]
    cfg = tiny_cfg(
        f"retrain.configs={tmp_path / 'found'}", "retrain.seeds=[0]", "task=snli_binary", "retrain.label=Ours"
    )
    records = evaluate.retrain(cfg, tmp_path / "transfer")
    assert [(r["choice"], r["task"], r["configuration"]) for r in records] == [
        ("Ours", "snli_binary", "SA 8 on layer 1")
    ]
    assert (tmp_path / "transfer" / "runs" / "Ours_seed0" / "results.json").exists() or records[0]["status"] == "ok"


def test_labels_prefix_several_choices_and_name_a_single_one() -> None:
    choices = [evaluate.Choice("front-1", {}, "s"), evaluate.Choice("front-2", {}, "s")]
    assert [c.name for c in evaluate.labelled(choices, "AutoPEFT^RTE")] == [
        "AutoPEFT^RTE front-1",
        "AutoPEFT^RTE front-2",
    ]
    assert [c.name for c in evaluate.labelled(choices[:1], "AutoPEFT^RTE")] == ["AutoPEFT^RTE"]
    assert evaluate.labelled(choices, None) == choices


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ([], r"give exactly one of retrain\.from=<search run dir> or retrain\.configs="),
        (["retrain.configs=/nope.json"], r"retrain\.configs='/nope\.json' does not exist"),
        (["retrain.from=/tmp", "retrain.select=best"], r"retrain\.select='best'; allowed: 'front', 'budget'"),
        (["retrain.from=/tmp", "retrain.seeds=[]"], r"retrain\.seeds=\[\] must be a non-empty list"),
        (["retrain.from=/tmp", "retrain.select=indices"], r"retrain\.select=indices needs retrain\.indices"),
        (["retrain.from=/tmp"], r"retrain\.from='/tmp' has no search\.json"),
        (["retrain.from=/tmp", "+retrain.seed=1"], r"unknown key retrain\.seed \(did you mean 'seeds'\?\)"),
        (["retrain.from=/tmp", "retrain.label=''"], r"retrain\.label='' must be a non-empty string"),
    ],
)
def test_bad_retrain_settings_are_named(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, overrides: list[str], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        evaluate.retrain(tiny_cfg(*overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_budget_below_every_configuration_and_unknown_indices(
    tiny_cfg: Callable[..., DictConfig], search_dir: Path, tmp_path: Path
) -> None:
    no_head_only = tmp_path / "no_head_only"  # every 0%-parameter configuration failed here
    run_search(tiny_cfg(*TINY_SEARCH), no_head_only, objective=SyntheticObjective(fail=lambda p: p.is_head_only))
    settings = evaluate.retrain_settings(
        tiny_cfg(f"retrain.from={no_head_only}", "retrain.select=budget", "retrain.budget_percent=1e-9").retrain
    )
    with pytest.raises(ConfigError, match=r"no successful configuration .* is within retrain\.budget_percent=1e-09%"):
        evaluate.choices_from_search(no_head_only, settings)
    settings = evaluate.retrain_settings(
        tiny_cfg(f"retrain.from={search_dir}", "retrain.select=indices", "retrain.indices=[1,99]").retrain
    )
    with pytest.raises(ConfigError, match=r"retrain\.indices has \[99\], not results of"):
        evaluate.choices_from_search(search_dir, settings)
