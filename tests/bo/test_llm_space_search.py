"""Every searcher runs the decoder LoRA space (``space=llm_lora``) on a tiny Llama unchanged.

The objective is the synthetic one of :mod:`tests.bo.conftest` (no training): what is under test
is that BO's encoding, local search and pending points, the baselines' enumeration and NSGA-II's
genes all take the group-rank and DoRA columns, and that the proposals are distinct
configurations of the space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.experiments.search import run_search
from autopeft.space import Point

from .conftest import SyntheticObjective


@pytest.mark.parametrize("method", ["bo", "random", "cheapest", "stratified", "nsga2"])
def test_every_searcher_searches_the_llm_lora_space(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, method: str
) -> None:
    extra = ["search.nsga2.population_size=4"] if method == "nsga2" else []
    cfg = search_cfg("backbone=tiny_llama", "space=llm_lora", f"search={method}", *extra)
    result = run_search(cfg, tmp_path / method, objective=SyntheticObjective())
    space = result["space"]
    assert space.name == "llm_lora" and space.modules == ("lora_attn", "lora_mlp", "dora")
    points = [space.canonical(Point.from_dict(r["point"])) for r in result["records"]]
    assert len(points) == 8 and all(space.contains(p) for p in points)
    if method != "random":  # the others never propose a configuration twice
        assert len(set(points)) == len(points)
    assert result["failure"] is None and result["state"]["front_size"] >= 1
