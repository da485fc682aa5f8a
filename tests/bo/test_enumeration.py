"""Small spaces are enumerated (paper Figure 7's SA); a search with no successful evaluation fails loudly."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

import autopeft.experiments.search
from autopeft.bo.loop import search_failure
from autopeft.cli import dispatch
from autopeft.errors import ConfigError
from autopeft.experiments.search import run_search
from autopeft.space import Point

from .conftest import SyntheticObjective
from .test_loop import assert_no_repeats, outcome

#: The SA space on tiny_bert cut to three sizes: three configurations (size 0 is head only).
TINY_SA = ["space=sa", "+space.choices.sa=[0,8,16]"]


def sizes(result: dict) -> list[int]:
    return [Point.from_dict(r["point"]).size_of("sa") for r in result["records"]]


@pytest.mark.parametrize("method", ["bo", "random", "nsga2"])
def test_a_space_within_the_initial_design_is_enumerated_once_in_ascending_params(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    objective = SyntheticObjective()
    with caplog.at_level(logging.INFO, logger="autopeft.search"):
        result = run_search(search_cfg(f"search={method}", *TINY_SA), tmp_path / "run", objective=objective)
    assert sizes(result) == [0, 8, 16] and objective.calls == [0, 1, 2]  # each once, then it stops
    assert [r["phase"] for r in result["records"]] == ["enumeration"] * 3
    assert result["searcher"] == "enumeration" and result["failure"] is None
    assert "space 'sa' has 3 configurations <= search.n_init 5: enumerating every one once" in caplog.text
    proposals = [json.loads(line) for line in (tmp_path / "run" / "proposals.jsonl").read_text().splitlines()]
    assert [p["info"]["phase"] for p in proposals] == ["enumeration"] * 3
    # the reference point comes from the whole enumeration, so the hypervolume is defined
    assert result["state"]["hypervolume"] is not None and result["state"]["ref_point"] is not None


def test_enumeration_with_layer_selection_evaluates_head_only_once(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # tiny_bert has 2 layers: 3 non-empty masks x 1 size + one head-only configuration = 4 <= 8
    result = run_search(
        search_cfg("space=sa_layer", "+space.choices.sa=[0,8]"), tmp_path / "run", objective=SyntheticObjective()
    )
    space = result["space"]
    points = [Point.from_dict(r["point"]) for r in result["records"]]
    assert len(points) == 4 == space.num_configurations
    assert {space.canonical(p) for p in space.iter_points()} == set(points)
    assert sum(p.is_head_only for p in points) == 1
    assert_no_repeats(result)


def test_the_papers_n_init_larger_than_the_space_enumerates_it(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # search.n_init=100 on the 7-size SA space of tiny_bert used to end with 0 evaluations
    result = run_search(
        search_cfg("space=sa", "search.n_init=100", "search.n_iter=100"),
        tmp_path / "run",
        objective=SyntheticObjective(),
    )
    assert sizes(result) == [0, 1, 2, 4, 8, 16, 32]
    assert result["state"]["evaluations"] == 7 and result["state"]["hypervolume"] is not None


def test_enumerate_never_searches_as_before(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = search_cfg(*TINY_SA, "search.n_init=2", "search.n_iter=5", "search.enumerate=never")
    result = run_search(cfg, tmp_path / "run", objective=SyntheticObjective())
    assert [r["phase"] for r in result["records"]] == ["init", "init", "bo"]  # random design, then BO
    assert sorted(sizes(result)) == [0, 8, 16] and result["searcher"] == "bo"
    # n_init beyond the space: the initial design is the whole space in random order, then it stops
    big = run_search(
        search_cfg(*TINY_SA, "search.n_init=10", "search.enumerate=never"),
        tmp_path / "big",
        objective=SyntheticObjective(),
    )
    assert [r["phase"] for r in big["records"]] == ["init"] * 3 and sorted(sizes(big)) == [0, 8, 16]


def test_a_space_larger_than_the_budget_is_searched_whatever_enumerate_says(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    auto = run_search(search_cfg("search=random"), tmp_path / "auto", objective=SyntheticObjective())
    never = run_search(
        search_cfg("search=random", "search.enumerate=never"), tmp_path / "never", objective=SyntheticObjective()
    )
    assert outcome(auto) == outcome(never) and auto["searcher"] == "random"
    assert [r["phase"] for r in auto["records"]] == ["init"] * 5 + ["random"] * 3


@pytest.mark.parametrize("kill_at", [1, 4])
def test_an_interrupted_enumeration_resumes_to_the_same_store(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, kill_at: int
) -> None:
    cfg = search_cfg("space=sa", "search.n_init=7", "search.n_iter=1")  # 7 configurations <= n_init
    reference = run_search(cfg, tmp_path / "reference", objective=SyntheticObjective())
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", objective=SyntheticObjective(interrupt_after=kill_at))
    resumed_objective = SyntheticObjective()
    resumed = run_search(cfg, tmp_path / "run", resume=True, objective=resumed_objective)
    assert resumed_objective.calls == list(range(kill_at, 7))  # nothing repeated, nothing skipped
    assert outcome(resumed) == outcome(reference)
    for name in ("results.jsonl", "proposals.jsonl"):
        assert (tmp_path / "run" / name).read_text() == (tmp_path / "reference" / name).read_text()
    # the order is a function of the space alone: another seed enumerates the same sequence
    other = run_search(
        search_cfg("space=sa", "search.n_init=7", "search.n_iter=1", "seed=1"),
        tmp_path / "seed1",
        objective=SyntheticObjective(),
    )
    assert [r["point"] for r in other["records"]] == [r["point"] for r in reference["records"]]


@pytest.mark.parametrize("method", ["bo", "random"])
def test_a_space_larger_than_n_init_but_within_the_budget_is_searched_to_exhaustion(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str
) -> None:
    """As Figure 7's SA-PA (121 configurations, 100 + 100): searched, every configuration once."""
    objective = SyntheticObjective()
    result = run_search(
        search_cfg(f"search={method}", "space=sa", "search.n_init=2", "search.n_iter=8"),
        tmp_path / "run",
        objective=objective,
    )
    assert result["searcher"] == method and objective.calls == list(range(7))  # 7 configurations, then it stops
    assert sorted(sizes(result)) == [0, 1, 2, 4, 8, 16, 32]
    assert [r["phase"] for r in result["records"]][:2] == ["init", "init"]
    assert "enumeration" not in {r["phase"] for r in result["records"]}
    assert_no_repeats(result)


@pytest.mark.parametrize("value", ["always", "true", "1"])
def test_a_bad_enumerate_value_is_one_line_naming_it_and_the_allowed_ones(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture, value: str
) -> None:
    shown = {"always": "'always'", "true": "True", "1": "1"}[value]
    with pytest.raises(ConfigError, match=rf"^search\.enumerate={shown}; allowed: 'auto', 'never'$"):
        run_search(search_cfg(f"search.enumerate={value}"), tmp_path / "run", objective=SyntheticObjective())
    assert not (tmp_path / "run").exists()
    cfg = search_cfg(f"search.enumerate={value}")
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "cli")
    with pytest.raises(SystemExit) as exit_info:
        dispatch(cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: search.enumerate={shown}; allowed: 'auto', 'never'\n"


def always_fails(point: Point) -> bool:
    return True


def test_a_search_whose_every_evaluation_fails_exits_non_zero_saying_why(
    search_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    # the CLI builds its objective in autopeft.experiments.search: swap in one whose every training diverges
    monkeypatch.setattr(
        autopeft.experiments.search, "TrainingObjective", lambda *args: SyntheticObjective(fail=always_fails)
    )
    cfg = search_cfg(*TINY_SA)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        dispatch(cfg)
    message = str(exit_info.value.code)  # a message as the exit code: the process exits with status 1
    assert message == (
        "error: the search ended with no successful evaluation: all 3 evaluations failed; the first "
        "(evaluation 0, head only (frozen backbone)) diverged: loss became nan at step 3"
    )
    assert "no successful evaluation" in capsys.readouterr().out  # the front table was still printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["failure"] == message.removeprefix("error: the search ended with no successful evaluation: ")
    # a search with a success exits normally
    monkeypatch.setattr(autopeft.experiments.search, "TrainingObjective", lambda *args: SyntheticObjective())
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "ok")
    assert dispatch(cfg)["failure"] is None


def test_search_failure_names_the_reason() -> None:
    ok = {"index": 1, "status": "ok", "score": 0.5, "configuration": "SA 8"}
    failed = {"index": 0, "status": "oom", "score": None, "reason": "CUDA out of memory", "configuration": "SA 16"}
    assert search_failure([failed, ok]) is None
    assert search_failure([failed]) == (
        "the only evaluation failed; the first (evaluation 0, SA 16) oom: CUDA out of memory"
    )
    nan = {"index": 0, "status": "ok", "score": float("nan"), "configuration": "SA 8"}
    assert search_failure([nan]).endswith("(evaluation 0, SA 8) no usable score (nan)")
    assert search_failure([], "all 3 candidates have been evaluated") == (
        "nothing was evaluated: all 3 candidates have been evaluated"
    )
    assert search_failure([]) == "nothing was evaluated"
