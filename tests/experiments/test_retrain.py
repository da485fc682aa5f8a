"""Retraining chosen configurations over seeds: selection, transfer, resumption, summaries, errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from autopeft.errors import ConfigError
from autopeft.experiments import retrain as evaluate
from autopeft.experiments.modes import mode_retrain
from autopeft.experiments.search import run_search
from autopeft.runs.front import front_records
from autopeft.runs.store import ResultsStore
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

    monkeypatch.setattr("autopeft.training.train.train_and_evaluate", must_not_train)
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
    choices = evaluate.choices_from_search(search_dir, evaluate.RetrainSettings.from_config(cfg.retrain))
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
    from autopeft.training.train import TrainingJob, train_and_evaluate

    trained = train_and_evaluate(
        TrainingJob.from_config(tiny_cfg("mode=train", "peft.layers=[1]", "peft.name=found")), tmp_path / "found"
    )
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
    settings = evaluate.RetrainSettings.from_config(
        tiny_cfg(f"retrain.from={no_head_only}", "retrain.select=budget", "retrain.budget_percent=1e-9").retrain
    )
    with pytest.raises(ConfigError, match=r"no successful configuration .* is within retrain\.budget_percent=1e-09%"):
        evaluate.choices_from_search(no_head_only, settings)
    settings = evaluate.RetrainSettings.from_config(
        tiny_cfg(f"retrain.from={search_dir}", "retrain.select=indices", "retrain.indices=[1,99]").retrain
    )
    with pytest.raises(ConfigError, match=r"retrain\.indices has \[99\], not results of"):
        evaluate.choices_from_search(search_dir, settings)


# A synthetic search (the store files written as a search writes them, with chosen scores) and a
# retraining of its front, so each budget rule has a known answer. Result: (% params, search score,
# retrained validation scores per seed or None for a failed seed). Result 2 is dominated (not on
# the front, so not retrained) and result 4 failed in the search.
SYNTHETIC = {
    0: (0.20, 0.60, [0.69, 0.71]),
    1: (0.50, 0.80, [0.66, 0.64, None]),
    2: (0.70, 0.75, None),
    3: (1.20, 0.90, [0.94, 0.96]),
}


def _synthetic_search(cfg: DictConfig, run_dir: Path) -> dict[int, dict]:
    """Write ``search.json`` and ``results.jsonl`` of a search with :data:`SYNTHETIC`'s results."""
    import random

    from omegaconf import OmegaConf

    from autopeft.space import SearchSpace
    from autopeft.training.backbones import shape_of

    run_dir.mkdir(parents=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    (run_dir / "search.json").write_text(json.dumps({"config": config}))
    space = SearchSpace.from_config(config["space"], shape_of(config["backbone"]))
    points = space.sample(random.Random(1), 5)
    store = ResultsStore(run_dir / "results.jsonl")
    results = {}
    for index, point in enumerate(points):
        percent, score, _ = SYNTHETIC.get(index, (0.1, None, None))
        record = {
            "index": index,
            "point": point.to_dict(),
            "status": "ok" if score is not None else "diverged",
            "score": score,
            "param_percent": percent,
            "seconds": 1.0,
            "seed": 0,
            "configuration": space.to_peft(point).describe(),
        }
        store.append(record)
        results[index] = record
    return results


def _synthetic_front(search: Path, results: dict[int, dict], front_dir: Path, task: str) -> None:
    """Write ``retrain.jsonl`` of a retraining of the synthetic search's front on ``task``."""
    store = ResultsStore(front_dir / "retrain.jsonl", required_keys=evaluate.RETRAIN_RECORD_KEYS)
    for index, (_, _, seeds) in SYNTHETIC.items():
        for seed, score in enumerate(seeds or []):
            store.append(
                {
                    "choice": f"front-{index}",
                    "seed": seed,
                    "status": "ok" if score is not None else "diverged",
                    "score": score,
                    "task": task,
                    "source": f"{search} result {index}",
                    "configuration": results[index]["configuration"],
                    "main_metric": "accuracy",
                    "metrics": {"test": {"accuracy": score - 0.1}} if score is not None else {},
                }
            )


@pytest.fixture
def synthetic(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> tuple[Path, Path, dict[int, dict]]:
    """``(search dir, front retraining dir, results by index)`` of the synthetic search."""
    search, front = tmp_path / "synthetic_search", tmp_path / "synthetic_front"
    cfg = tiny_cfg()
    results = _synthetic_search(cfg, search)
    _synthetic_front(search, results, front, str(cfg.task.name))
    return search, front, results


def _budget_settings(
    tiny_cfg: Callable[..., DictConfig], search: Path, budget: float, *extra: str
) -> evaluate.RetrainSettings:
    cfg = tiny_cfg(f"retrain.from={search}", "retrain.select=budget", f"retrain.budget_percent={budget}", *extra)
    return evaluate.RetrainSettings.from_config(cfg.retrain)


@pytest.mark.parametrize(
    ("pick", "budget", "expected"),
    [
        ("search_score", 0.76, 1),  # 0.80 at 0.50% beats 0.60 at 0.20% in the search
        ("retrained", 0.76, 0),  # but retrained, 0.70 (0.69, 0.71) beats 0.65 (0.66, 0.64; one failed)
        ("search_score", 2.0, 3),
        ("retrained", 2.0, 3),
    ],
)
def test_the_budget_pick_by_each_rule_on_a_synthetic_store(
    tiny_cfg: Callable[..., DictConfig], synthetic: tuple, pick: str, budget: float, expected: int
) -> None:
    search, front, _ = synthetic
    extra = [f"retrain.pick={pick}"] + ([f"retrain.retrained_front={front}"] if pick == "retrained" else [])
    (choice,) = evaluate.choices_from_search(search, _budget_settings(tiny_cfg, search, budget, *extra))
    assert choice.source == f"{search} result {expected}"
    assert choice.pick["rule"] == pick and choice.pick["budget_percent"] == budget
    assert choice.pick["picked"] == expected
    candidates = {c["index"]: c for c in choice.pick["candidates"]}
    assert sorted(candidates) == [0, 1, 3]  # the front: result 2 is dominated, result 4 failed
    assert {i for i, c in candidates.items() if c["within_budget"]} == {
        i for i in (0, 1, 3) if SYNTHETIC[i][0] <= budget
    }
    assert candidates[1]["search_score"] == 0.80
    if pick == "retrained":
        assert choice.name == f"best<={budget}% retrained"
        assert candidates[0]["retrained_mean"] == pytest.approx(0.70)
        assert candidates[1]["retrained_mean"] == pytest.approx(0.65)
        assert (candidates[1]["seeds"], candidates[1]["failed"]) == (2, 1)
        assert candidates[3]["test_mean"] == pytest.approx(0.85)
        assert choice.pick["retrained_front"] == str(front)
        table = evaluate.pick_markdown(choice.pick)
        assert "retrain.pick=retrained" in table and "| 0 | 0.2000 | 0.6000 | 0.7000 ± 0.0141 |" in table
        assert "| 2 (1 failed) |" in table
    else:
        assert choice.name == f"best<={budget}%" and "retrained_mean" not in candidates[0]
        assert "retrain.pick=search_score" in evaluate.pick_markdown(choice.pick)


@pytest.mark.parametrize("pick", ["search_score", "retrained"])
def test_a_budget_no_configuration_fits_names_the_smallest_available(
    tiny_cfg: Callable[..., DictConfig], synthetic: tuple, pick: str
) -> None:
    search, front, _ = synthetic
    extra = [f"retrain.pick={pick}"] + ([f"retrain.retrained_front={front}"] if pick == "retrained" else [])
    with pytest.raises(ConfigError, match=r"within retrain\.budget_percent=0\.1% \(the smallest uses 0\.2000%\)"):
        evaluate.choices_from_search(search, _budget_settings(tiny_cfg, search, 0.1, *extra))


def test_the_retrained_pick_refuses_a_retraining_of_another_search_or_task(
    tiny_cfg: Callable[..., DictConfig], synthetic: tuple, tmp_path: Path
) -> None:
    search, front, results = synthetic
    settings = _budget_settings(tiny_cfg, search, 1.0, "retrain.pick=retrained", f"retrain.retrained_front={front}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(ConfigError, match=r"has no retrain\.jsonl: retrain the search's front there first"):
        evaluate.choices_from_search(search, dataclasses.replace(settings, retrained_front=str(elsewhere)))
    other_task = tmp_path / "other_task"
    _synthetic_front(search, results, other_task, "snli_binary")
    with pytest.raises(ConfigError, match=r"on task 'snli_binary'; retrain\.pick='retrained' ranks retrainings on"):
        evaluate.choices_from_search(search, dataclasses.replace(settings, retrained_front=str(other_task)))
    swapped = {**results, 0: {**results[0], "configuration": "SA 999 on layer 7"}}
    other_search = tmp_path / "other_search"
    _synthetic_front(search, swapped, other_search, str(tiny_cfg().task.name))
    with pytest.raises(ConfigError, match=r"not a successful result of the search"):
        evaluate.choices_from_search(search, dataclasses.replace(settings, retrained_front=str(other_search)))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["retrain.pick=best"], r"^retrain\.pick='best'; allowed: 'search_score', 'retrained'$"),
        (["retrain.pick=retrained"], r"needs retrain\.retrained_front=<run dir"),
        (["retrain.pick=retrained", "retrain.select=front"], r"it needs retrain\.select=budget, not 'front'"),
        (["retrain.retrained_front=/x"], r"retrain\.retrained_front='/x' is only read with retrain\.pick='retrained'"),
    ],
)
def test_bad_pick_settings_are_named(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, overrides: list[str], pattern: str
) -> None:
    cfg = tiny_cfg("retrain.from=/tmp", "retrain.select=budget", *overrides)
    with pytest.raises(ConfigError, match=pattern):
        evaluate.retrain(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_retrained_pick_is_recorded_and_resumes_without_retraining(
    tiny_cfg: Callable[..., DictConfig], synthetic: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search, front, _ = synthetic
    cfg = tiny_cfg(
        f"retrain.from={search}",
        "retrain.select=budget",
        "retrain.budget_percent=0.76",
        "retrain.pick=retrained",
        f"retrain.retrained_front={front}",
        "retrain.seeds=[0,1]",
        "retrain.label=Ours",
    )
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    rows = mode_retrain(cfg)
    assert [(row["configuration"], row["seeds"]) for row in rows] == [("Ours", 2)]
    assert rows[0]["pick"]["rule"] == "retrained" and rows[0]["pick"]["picked"] == 0
    records = ResultsStore(tmp_path / "run" / "retrain.jsonl", required_keys=evaluate.RETRAIN_RECORD_KEYS).load()
    assert [(r["seed"], r["source"], r["pick"]["picked"]) for r in records] == [
        (0, f"{search} result 0", 0),
        (1, f"{search} result 0", 0),
    ]
    table = (tmp_path / "run" / "retrain.md").read_text()
    assert "Picked by retrain.pick=retrained" in table and "within 0.76% params (search result 0)" in table
    summary = json.loads((tmp_path / "run" / "retrain_summary.json").read_text())
    assert summary["rows"][0]["pick"]["budget_percent"] == 0.76

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr("autopeft.training.train.train_and_evaluate", must_not_train)
    assert [r["seed"] for r in evaluate.retrain(cfg, tmp_path / "run")] == [0, 1]
    # The front retraining changes its verdict (result 1 now best): the finished seeds of result 0
    # must not pass for it under the same name.
    store = ResultsStore(front / "retrain.jsonl", required_keys=evaluate.RETRAIN_RECORD_KEYS)
    store.append({**store.load()[2], "seed": 5, "score": 0.99})
    with pytest.raises(ConfigError, match=r"trained from search result 0, but the choice is now result 1"):
        evaluate.retrain(cfg, tmp_path / "run")
