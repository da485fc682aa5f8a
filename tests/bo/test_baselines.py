"""The model-free baselines: cheapest-first and random stratified on log % params."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.bo.baselines import CheapestFirstSearcher, StratifiedRandomSearcher, ascending_configurations
from autopeft.bo.searchers import History, initial_design
from autopeft.experiments.search import run_search
from autopeft.space import Point, SearchSpace
from autopeft.training.backbones import shape_of

from .conftest import SyntheticObjective

BACKBONE_PARAMS = 1_000_000


def space_of(cfg: DictConfig) -> SearchSpace:
    return SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))


def test_lazy_ascending_order_is_the_full_enumeration(search_cfg: Callable[..., DictConfig]) -> None:
    space = space_of(search_cfg())
    full = space.enumerate_configurations()
    lazy = list(ascending_configurations(space))
    assert lazy == full
    counts = [space.param_count(p) for p in lazy]
    assert counts == sorted(counts) and len(set(lazy)) == len(lazy)


def test_cheapest_first_takes_the_design_then_the_cheapest_unseen(search_cfg: Callable[..., DictConfig]) -> None:
    space = space_of(search_cfg())
    searcher = CheapestFirstSearcher(space, seed=3, n_init=4)
    design = initial_design(space, 3, 4)
    proposals: list[dict] = []
    for step in range(10):
        (proposal,) = searcher.propose(History([], proposals), 1)
        proposals.append({"index": step, "point": proposal.point.to_dict(), "batch": step, "records_before": 0})
    points = [Point.from_dict(p["point"]) for p in proposals]
    assert points[:4] == design
    seen = {space.canonical(p) for p in design}
    expected = [p for p in space.enumerate_configurations() if p not in seen][:6]
    assert points[4:] == expected


def test_stratified_draws_cover_the_log_bins_evenly(search_cfg: Callable[..., DictConfig]) -> None:
    space = space_of(search_cfg())
    searcher = StratifiedRandomSearcher(space, BACKBONE_PARAMS, seed=0, n_init=0, bins=5)
    assert searcher.bin_of(space.head_only()) == 0
    proposals = searcher.propose(History([], []), 40)
    assert [p.info["bin"] for p in proposals[:5]] == searcher.order
    landed = Counter(searcher.bin_of(p.point) for p in proposals)
    assert sorted(landed) == list(range(5)), landed
    # Uniform sampling of the same space piles up in the top bins; stratified draws do not.
    uniform = Counter(searcher.bin_of(p) for p in space.sample(__import__("random").Random(0), 40))
    assert max(landed.values()) < max(uniform.values())
    assert all(searcher.bin_of(p.point) == p.info["bin"] for p in proposals)


@pytest.mark.parametrize("method", ["cheapest", "stratified"])
def test_baselines_search_without_repeats_reproducibly_and_share_bo_s_design(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str
) -> None:
    cfg = search_cfg(f"search={method}", "search.n_iter=6")
    first = run_search(cfg, tmp_path / "a", objective=SyntheticObjective())
    space = first["space"]
    canon = [space.canonical(Point.from_dict(r["point"])) for r in first["records"]]
    assert len(canon) == 11 and len(set(canon)) == 11
    assert first["searcher"] == method
    second = run_search(cfg, tmp_path / "b", objective=SyntheticObjective())
    assert [r["point"] for r in first["records"]] == [r["point"] for r in second["records"]]
    bo = run_search(search_cfg("search=bo", "search.n_iter=0"), tmp_path / "bo", objective=SyntheticObjective())
    assert [r["point"] for r in first["records"][:5]] == [r["point"] for r in bo["records"]]


def test_nsga2_starts_from_the_shared_design(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    cfg = search_cfg("search=nsga2", "search.nsga2.population_size=4", "search.n_iter=4")
    result = run_search(cfg, tmp_path / "nsga2", objective=SyntheticObjective())
    random = run_search(search_cfg("search=random", "search.n_iter=0"), tmp_path / "r", objective=SyntheticObjective())
    assert [r["point"] for r in result["records"][:5]] == [r["point"] for r in random["records"]]
    assert [r["phase"] for r in result["records"]][:5] == ["init"] * 5


@pytest.mark.parametrize("method", ["cheapest", "stratified"])
def test_interrupted_baseline_resumes_to_the_uninterrupted_result(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str
) -> None:
    cfg = search_cfg(f"search={method}")
    reference = run_search(cfg, tmp_path / "reference", objective=SyntheticObjective())
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", objective=SyntheticObjective(interrupt_after=6))
    objective = SyntheticObjective()
    resumed = run_search(cfg, tmp_path / "run", resume=True, objective=objective)
    assert objective.calls == [6, 7]
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["point"] for line in lines] == [r["point"] for r in reference["records"]]
    assert len(resumed["records"]) == 8
