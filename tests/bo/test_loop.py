"""The search loop: every evaluation recorded once, no repeats, reproducible, resumable, failure-tolerant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.bo.loop import resumed_config
from autopeft.errors import ConfigError
from autopeft.experiments.search import run_search
from autopeft.io import RunDirectoryLock
from autopeft.runs.store import CorruptStoreError
from autopeft.space import Point

from .conftest import SyntheticObjective


def outcome(result: dict) -> list[tuple]:
    return [(r["index"], json.dumps(r["point"], sort_keys=True), r["status"], r["score"]) for r in result["records"]]


def assert_no_repeats(result: dict) -> None:
    space = result["space"]
    canon = [space.canonical(Point.from_dict(r["point"])) for r in result["records"]]
    assert len(set(canon)) == len(canon)
    assert [r["index"] for r in result["records"]] == list(range(len(canon)))


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("bo", []),
        ("bo", ["search.surrogate.kind=gp", "search.acquisition.name=qlognehvi", "search.batch_size=3"]),
        ("random", []),
        ("nsga2", ["search.nsga2.population_size=4"]),
    ],
)
def test_search_runs_its_budget_without_repeats_and_is_reproducible(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str, extra: list[str]
) -> None:
    cfg = search_cfg(f"search={method}", *extra)
    first = run_search(cfg, tmp_path / "a", objective=SyntheticObjective())
    assert len(first["records"]) == 8
    assert_no_repeats(first)
    phases = [r["phase"] for r in first["records"]]
    if method == "bo":
        assert phases == ["init"] * 5 + ["bo"] * 3
    second = run_search(cfg, tmp_path / "b", objective=SyntheticObjective())
    assert outcome(first) == outcome(second)
    # everything needed to continue is on disk
    lines = (tmp_path / "a" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(8))


@pytest.mark.parametrize(("method", "kill_at"), [("bo", 2), ("bo", 6), ("nsga2", 5), ("random", 3)])
def test_interrupted_search_resumes_to_the_uninterrupted_result(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str, kill_at: int
) -> None:
    cfg = search_cfg(f"search={method}", "search.nsga2.population_size=4" if method == "nsga2" else "seed=0")
    reference = run_search(cfg, tmp_path / "reference", objective=SyntheticObjective())
    broken = SyntheticObjective(interrupt_after=kill_at)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", objective=broken)
    resumed_objective = SyntheticObjective()
    resumed = run_search(cfg, tmp_path / "run", resume=True, objective=resumed_objective)
    assert outcome(resumed) == outcome(reference)
    assert resumed_objective.calls == list(range(kill_at, 8))  # nothing repeated, nothing skipped


def test_failed_evaluations_are_recorded_and_the_search_goes_on(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    objective = SyntheticObjective(fail=lambda p: p.size_of("prefix") >= 4)
    result = run_search(search_cfg("search.n_iter=5"), tmp_path / "run", objective=objective)
    failed = [r for r in result["records"] if r["status"] != "ok"]
    assert failed and len(result["records"]) == 10
    assert all(r["score"] is None and "nan" in r["reason"] for r in failed)
    assert result["state"]["failed"] == len(failed)
    assert_no_repeats(result)


def test_a_search_can_be_extended(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    run_search(search_cfg(), tmp_path / "run", objective=SyntheticObjective())
    objective = SyntheticObjective()
    longer = run_search(search_cfg("search.n_iter=5"), tmp_path / "run", resume=True, objective=objective)
    assert objective.calls == [8, 9]
    assert len(longer["records"]) == 10
    assert_no_repeats(longer)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("task=snli_binary", r"different search; task\.name: 'rotten_tomatoes' in the run, 'snli_binary' now"),
        ("seed=1", r"seed: 0 in the run, 1 now"),
        ("search=random", r"search\.method: 'bo' in the run, 'random' now"),
        ("space=sa", r"space\.name"),
    ],
)
def test_resuming_a_different_search_is_refused(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, pattern: str
) -> None:
    run_search(search_cfg("search.n_iter=0"), tmp_path / "run", objective=SyntheticObjective())
    before = (tmp_path / "run" / "results.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=pattern):
        run_search(search_cfg(override), tmp_path / "run", resume=True, objective=SyntheticObjective())
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == before


def test_resume_of_a_directory_without_a_search_is_refused(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no search\.json: not a search run directory"):
        run_search(search_cfg(), tmp_path / "empty", resume=True, objective=SyntheticObjective())
    assert list((tmp_path / "empty").iterdir()) == []


def test_corrupt_results_store_is_refused_and_left_alone(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    run_search(search_cfg("search.n_iter=0"), tmp_path / "run", objective=SyntheticObjective())
    store = tmp_path / "run" / "results.jsonl"
    lines = store.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]  # a complete line that is not JSON: not a torn append
    store.write_text("\n".join(lines) + "\n")
    damaged = store.read_bytes()
    with pytest.raises(CorruptStoreError, match=r"results\.jsonl is corrupt at line 3"):
        run_search(search_cfg(), tmp_path / "run", resume=True, objective=SyntheticObjective())
    assert store.read_bytes() == damaged


def test_record_that_does_not_match_its_proposal_is_refused(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run_search(search_cfg("search.n_iter=0"), tmp_path / "run", objective=SyntheticObjective())
    store = tmp_path / "run" / "results.jsonl"
    records = [json.loads(line) for line in store.read_text().splitlines()]
    records[1]["point"], records[2]["point"] = records[2]["point"], records[1]["point"]
    store.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ConfigError, match=r"evaluation 1 does not match proposal 1"):
        run_search(search_cfg(), tmp_path / "run", resume=True, objective=SyntheticObjective())


def test_resumed_config_comes_from_the_run_with_command_line_overrides(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run_search(search_cfg("task=snli_binary"), tmp_path / "run", objective=SyntheticObjective())
    fresh = search_cfg("search.n_iter=7")  # composed with the default task: rotten_tomatoes
    cfg = resumed_config(fresh, tmp_path / "run", ["resume=" + str(tmp_path / "run"), "search.n_iter=7"])
    assert cfg.task.name == "snli_binary" and cfg.search.n_iter == 7 and cfg.resume == str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"override 'experiment=demo' cannot be applied to a resumed search"):
        resumed_config(fresh, tmp_path / "run", ["experiment=demo"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("search.method=grid", r"search\.method='grid'; allowed: 'bo', 'random', 'nsga2'"),
        ("search.n_init=0", r"search\.n_init=0 must be an integer >= 1"),
        ("search.n_iter=-1", r"search\.n_iter=-1 must be an integer >= 0"),
        ("search.batch_size=0", r"search\.batch_size=0 must be an integer >= 1"),
        ("+search.n_inits=3", r"unknown key search\.n_inits \(did you mean 'n_init'\?\)"),
        ("+search.acquisition.ref_point.params=1", r"ref_point has unknown key 'params'"),
    ],
)
def test_bad_search_settings_fail_before_anything_is_written(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, override: str, pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        run_search(search_cfg(override), tmp_path / "run", objective=SyntheticObjective())
    assert not (tmp_path / "run").exists()


def test_an_exhausted_space_ends_the_search_cleanly(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = search_cfg("space=sa", "+space.choices.sa=[0,8,16]", "search.n_init=2", "search.n_iter=5")
    result = run_search(cfg, tmp_path / "run", objective=SyntheticObjective())
    assert len(result["records"]) == 3  # the space has 3 configurations
    assert_no_repeats(result)


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_directory(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    holder = RunDirectoryLock(run_dir).acquire()
    with pytest.raises(ConfigError, match=rf"{run_dir} is in use by pid {os.getpid()} since .*one search per run"):
        run_search(search_cfg(), run_dir, objective=SyntheticObjective())
    holder.release()

    # a holder killed with SIGKILL leaves no stale lock behind
    script = (
        "import time; from autopeft.io import RunDirectoryLock; "
        f"lock = RunDirectoryLock({str(run_dir)!r}).acquire(); print('locked', flush=True); time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=rf"in use by pid {process.pid}"):
        run_search(search_cfg(), run_dir, objective=SyntheticObjective())
    process.kill()
    process.wait()
    result = run_search(search_cfg(), run_dir, objective=SyntheticObjective())
    assert len(result["records"]) == 8


def test_bo_and_random_search_share_the_initial_design(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    # different batch sizes too: the design depends on the seed and n_init only
    bo = run_search(search_cfg("search=bo", "search.batch_size=2"), tmp_path / "bo", objective=SyntheticObjective())
    rnd = run_search(search_cfg("search=random"), tmp_path / "random", objective=SyntheticObjective())
    assert outcome(bo)[:5] == outcome(rnd)[:5]  # paper Figure 6: the same random initial points
    assert [r["phase"] for r in rnd["records"]] == ["init"] * 5 + ["random"] * 3
    assert outcome(bo)[5:] != outcome(rnd)[5:]


def test_identical_scores_give_random_proposals_instead_of_a_degenerate_model(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    class Constant(SyntheticObjective):
        def __call__(self, point: Point, index: int) -> dict:
            return {**super().__call__(point, index), "score": 0.5}

    result = run_search(search_cfg(), tmp_path / "run", objective=Constant())
    assert [r["phase"] for r in result["records"]] == ["init"] * 5 + ["random-fallback"] * 3
    assert_no_repeats(result)
