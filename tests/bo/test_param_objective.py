"""``search.param_objective``: the search's parameter axis, -% params (linear) or -log10 % params (log)."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

from autopeft.bo import searchers
from autopeft.bo.acquisition import build_acquisition, objectives_objective
from autopeft.bo.loop import Tracker
from autopeft.bo.objectives import LINEAR, ParamAxis, log_floor, smallest_positive_param_count
from autopeft.bo.pareto import (
    hypervolume,
    hypervolume_trace,
    objective_matrix,
    pareto_mask,
    reference_point,
    search_reference,
)
from autopeft.bo.settings import SearchSettings
from autopeft.errors import ConfigError
from autopeft.experiments.search import run_search
from autopeft.peft import BackboneShape
from autopeft.runs.front import front_records
from autopeft.space import SearchSpace
from autopeft.training.backbones import load_backbone

from .conftest import SyntheticObjective

#: A toy backbone small enough to enumerate: D_h = 32, 3 layers.
SHAPE = BackboneShape("toy", 32, 3, 4)
BACKBONE_PARAMS = 10_000


def toy_space(layer_selection: bool = True, modules: tuple[str, ...] = ("sa", "prefix")) -> SearchSpace:
    """SA in {4, 8}, prefix in {2, 4}, LoRA in {1, 2} (query and value), each also 0."""
    choices = {"sa": [0, 4, 8], "prefix": [0, 2, 4], "lora": [0, 1, 2]}
    return SearchSpace.from_config(
        {
            "name": "toy",
            "modules": list(modules),
            "layer_selection": layer_selection,
            "choices": {m: choices[m] for m in modules},
        },
        SHAPE,
    )


def rec(index: int, score: float, percent: float) -> dict:
    return {"index": index, "score": score, "param_percent": percent, "status": "ok"}


# ---------------------------------------------------------------------- the floor


@pytest.mark.parametrize(
    ("layer_selection", "modules", "count"),
    [
        (True, ("sa", "prefix"), 128),  # prefix 2 in one layer: 2 * 2 * 32
        (False, ("sa", "prefix"), 384),  # ... in all 3 layers
        (True, ("sa",), 256),  # SA 4 in one layer: 2 * 4 * 32
        (True, ("sa", "lora"), 128),  # LoRA rank 1 on query and value: 2 targets * 2 * 1 * 32
    ],
)
def test_smallest_positive_count_is_exact_and_matches_brute_force(
    layer_selection: bool, modules: tuple[str, ...], count: int
) -> None:
    space = toy_space(layer_selection, modules)
    assert smallest_positive_param_count(space) == count
    every = [space.param_count(p) for p in space.enumerate_configurations()]
    assert min(c for c in every if c > 0) == count


def test_log_floor_is_half_a_decade_below_the_smallest_positive_percent() -> None:
    space = toy_space()
    # 128 of 10,000 parameters = 1.28%; / sqrt(10) = 0.4047715...
    assert log_floor(space, BACKBONE_PARAMS) == pytest.approx(0.40477154, rel=1e-7)
    axis = ParamAxis.for_space("log", space, BACKBONE_PARAMS)
    assert axis.floor == log_floor(space, BACKBONE_PARAMS)
    # the cheapest real configuration sits exactly half a decade above the floor
    assert math.log10(1.28) - math.log10(axis.floor) == pytest.approx(0.5, abs=1e-12)
    assert ParamAxis.for_space("linear", space, BACKBONE_PARAMS) == LINEAR and LINEAR.floor is None


def test_log_transform_values_and_head_only_maps_to_the_floor() -> None:
    space = toy_space()
    axis = ParamAxis.for_space("log", space, BACKBONE_PARAMS)
    head_only = space.param_percent(space.head_only(), BACKBONE_PARAMS)
    assert head_only == 0.0
    percent = torch.tensor([head_only, 1.28, 10.0, 100.0, 1e-9], dtype=torch.float64)
    out = axis.transform(percent)
    assert out.dtype == torch.float64
    floor_value = -math.log10(axis.floor)  # = 0.5 - log10(1.28) = 0.3927...
    assert out.tolist() == pytest.approx([floor_value, -math.log10(1.28), -1.0, -2.0, floor_value], abs=1e-12)
    assert floor_value == pytest.approx(0.5 - math.log10(1.28), abs=1e-12)
    assert axis.value(0.0) == pytest.approx(floor_value, abs=1e-12)
    # the linear axis is exactly today's -% params
    assert LINEAR.transform(percent).tolist() == [-0.0, -1.28, -10.0, -100.0, -1e-9]
    assert axis.hypervolume_label == "hypervolume (log10 % params)"
    assert LINEAR.hypervolume_label == "hypervolume (% params)"
    assert ParamAxis.from_json(axis.to_json()) == axis and ParamAxis.from_json(None) == LINEAR


# ---------------------------------------------------------------------- front and hypervolume


def test_the_pareto_set_is_the_same_on_both_axes() -> None:
    space = toy_space()
    axis = ParamAxis.for_space("log", space, BACKBONE_PARAMS)
    rng = random.Random(0)
    points = [space.head_only(), *space.sample(rng, 60)]
    records = [
        rec(i, round(0.5 + 0.4 * rng.random(), 3), space.param_percent(p, BACKBONE_PARAMS))
        for i, p in enumerate(points)
    ]
    linear_mask = pareto_mask(objective_matrix(records))
    log_mask = pareto_mask(objective_matrix(records, axis))
    assert 2 <= int(linear_mask.sum()) < len(records)  # a real front, not everything or nothing
    assert torch.equal(linear_mask, log_mask)
    assert {r["index"] for r in front_records(records)} == set(torch.nonzero(log_mask).flatten().tolist())


def test_log_hypervolume_of_three_points_by_hand() -> None:
    axis = ParamAxis("log", 0.01)
    records = [rec(0, 0.6, 0.0), rec(1, 0.7, 0.1), rec(2, 0.8, 1.0)]  # log objective 2 (floor), 1, 0
    Y = objective_matrix(records, axis)
    assert torch.allclose(Y, torch.tensor([[0.6, 2.0], [0.7, 1.0], [0.8, 0.0]], dtype=torch.float64), atol=1e-12)
    ref = search_reference(records, (0.5, 10.0), n_init=3, param_axis=axis)  # 10% -> -1 decade
    assert ref.tolist() == pytest.approx([0.5, -1.0], abs=1e-12)
    # staircase: 0.1 * (2 + 1) + 0.1 * (1 + 1) + 0.1 * (0 + 1)
    assert hypervolume(Y, ref) == pytest.approx(0.6, abs=1e-12)
    # the same points on the linear axis: 0.1 * 10 + 0.1 * 9.9 + 0.1 * 9, dominated by the expensive end
    linear_ref = search_reference(records, (0.5, 10.0), n_init=3)
    assert hypervolume(objective_matrix(records), linear_ref) == pytest.approx(2.89, abs=1e-12)


def test_reference_point_is_inferred_in_the_transformed_space() -> None:
    axis = ParamAxis("log", 0.001)
    records = [rec(0, 0.6, 0.1), rec(1, 0.8, 10.0), rec(2, 0.7, 1.0)]
    ref = search_reference(records, (None, None), n_init=3, param_axis=axis)
    # log objectives 1, -1, 0: nadir (0.6, -1) moved 10% of the range (0.2, 2 decades) outwards
    assert ref.tolist() == pytest.approx([0.58, -1.2], abs=1e-12)  # i.e. 10 ** 1.2 = 15.8% params
    linear = search_reference(records, (None, None), n_init=3)
    assert linear.tolist() == pytest.approx([0.58, -10.99], abs=1e-12)  # 10% + 0.1 * 9.9
    assert axis.value(10.99) != pytest.approx(float(ref[1]))  # not the linear reference transformed
    # a configured % params stays in % params and is transformed; the score is inferred
    mixed = reference_point((None, 100.0), objective_matrix(records, axis), axis)
    assert mixed.tolist() == pytest.approx([0.58, -2.0], abs=1e-12)


@pytest.mark.parametrize("ensemble", [True, False])
def test_acquisition_objective_returns_the_log_values(ensemble: bool) -> None:
    space = toy_space()
    axis = ParamAxis.for_space("log", space, BACKBONE_PARAMS)
    points = [space.head_only(), *space.sample(random.Random(1), 5)]
    X = space.encode(points)
    samples = torch.rand(4, 2, *((3,) if ensemble else ()), len(points), 1, dtype=torch.float64)
    out = objectives_objective(space, BACKBONE_PARAMS, ensemble, axis)(samples, X.expand(2, len(points), -1))
    assert out.shape == (*samples.shape[:-1], 2)
    assert torch.equal(out[..., 0], samples[..., 0])
    expected = [-math.log10(max(space.param_percent(p, BACKBONE_PARAMS), axis.floor)) for p in points]
    flat = out[..., 1].reshape(-1, len(points))
    assert torch.allclose(flat, torch.tensor(expected, dtype=torch.float64).expand_as(flat), atol=1e-12)
    linear = objectives_objective(space, BACKBONE_PARAMS, ensemble)(samples, X.expand(2, len(points), -1))
    assert linear[..., 1].reshape(-1, len(points))[0].tolist() == [
        -space.param_percent(p, BACKBONE_PARAMS) for p in points
    ]


# ---------------------------------------------------------------------- settings


def test_a_bad_value_is_one_clear_config_error(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^search\.param_objective='foo'; allowed: 'linear', 'log'$"):
        run_search(search_cfg("search.param_objective=foo"), tmp_path / "run", objective=SyntheticObjective())
    assert not (tmp_path / "run").exists()


def test_the_key_is_optional_and_defaults_to_linear(search_cfg: Callable[..., DictConfig]) -> None:
    node = {k: v for k, v in dict(search_cfg().search).items() if k != "param_objective"}
    assert SearchSettings.from_config(node).param_objective == "linear"
    assert SearchSettings.from_config(search_cfg("search.param_objective=log").search).param_objective == "log"


def test_a_tracker_without_the_log_axis_is_refused(search_cfg: Callable[..., DictConfig]) -> None:
    settings = SearchSettings.from_config(search_cfg("search.param_objective=log").search)
    with pytest.raises(ValueError, match=r"search\.param_objective='log' but the tracker got the 'linear' axis"):
        Tracker(settings)


# ---------------------------------------------------------------------- a real search


def test_a_bo_search_on_the_log_axis_records_and_uses_it(
    search_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    axes_used: list[ParamAxis] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        axes_used.append(kwargs["param_axis"])
        return build_acquisition(*args, **kwargs)

    monkeypatch.setattr(searchers, "build_acquisition", spy)
    cfg = search_cfg("search.param_objective=log")
    result = run_search(cfg, tmp_path / "log", objective=SyntheticObjective())
    records, state = result["records"], result["state"]
    assert [r["phase"] for r in records] == ["init"] * 5 + ["bo"] * 3
    backbone = load_backbone(cfg.backbone, weights=False)
    axis = ParamAxis.for_space("log", result["space"], backbone.num_params)
    assert state["param_objective"] == {"name": "log", "floor": axis.floor, "label": "log10 % params"}
    assert axes_used == [axis] * 3  # every BO proposal's acquisition was on the log axis
    manifest = json.loads((tmp_path / "log" / "search.json").read_text())
    assert manifest["param_objective"] == state["param_objective"]
    assert manifest["fingerprint"]["search.param_objective"] == "log"
    # the reference point and the hypervolume are on the log axis, inferred from the initial design
    initial = objective_matrix(records[:5], axis)
    assert state["ref_point"] == pytest.approx(reference_point((None, None), initial, axis).tolist())
    ref = torch.tensor(state["ref_point"], dtype=torch.float64)
    assert state["hypervolume"] == pytest.approx(hypervolume(objective_matrix(records, axis), ref))
    # ... and BO's acquisition used that reference point
    proposals = [json.loads(line) for line in (tmp_path / "log" / "proposals.jsonl").read_text().splitlines()]
    assert {tuple(p["info"]["ref_point"]) for p in proposals if p["info"]["phase"] == "bo"} == {tuple(ref.tolist())}

    linear = run_search(search_cfg(), tmp_path / "linear", objective=SyntheticObjective())
    assert linear["state"]["param_objective"]["name"] == "linear"
    assert [r["point"] for r in linear["records"][:5]] == [r["point"] for r in records[:5]]  # same design
    linear_initial = objective_matrix(linear["records"][:5])
    assert linear["state"]["ref_point"] == pytest.approx(reference_point((None, None), linear_initial).tolist())
    assert linear["state"]["ref_point"][1] != pytest.approx(state["ref_point"][1])


def test_resume_on_another_axis_is_refused(search_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_search(search_cfg("search.n_iter=0"), run, objective=SyntheticObjective())
    before = (run / "results.jsonl").read_bytes()
    with pytest.raises(ConfigError, match=r"search\.param_objective: 'linear' in the run, 'log' now"):
        run_search(search_cfg("search.param_objective=log"), run, resume=True, objective=SyntheticObjective())
    assert (run / "results.jsonl").read_bytes() == before


def test_a_run_from_before_the_key_resumes_on_the_linear_axis(
    search_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run_search(search_cfg("search.n_iter=0"), run, objective=SyntheticObjective())
    manifest = json.loads((run / "search.json").read_text())
    del manifest["fingerprint"]["search.param_objective"], manifest["param_objective"]
    del manifest["config"]["search"]["param_objective"]
    (run / "search.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"search\.param_objective: 'linear' in the run, 'log' now"):
        run_search(search_cfg("search.param_objective=log"), run, resume=True, objective=SyntheticObjective())
    resumed = run_search(search_cfg("search.n_iter=1"), run, resume=True, objective=SyntheticObjective())
    assert len(resumed["records"]) == 6 and resumed["state"]["param_objective"]["name"] == "linear"


def test_the_search_report_names_the_axis(
    search_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from autopeft.experiments import search
    from autopeft.experiments.modes import mode_search

    def synthetic(*args: Any, **kwargs: Any) -> dict:
        return run_search(*args, **kwargs, objective=SyntheticObjective())

    monkeypatch.setattr(search, "run_search", synthetic)  # mode_search imports it when called
    summary = mode_search(search_cfg("search.param_objective=log", "search.n_iter=1"), tmp_path / "run")
    assert summary["param_objective"]["name"] == "log"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["param_objective"] == saved["state"]["param_objective"] == summary["param_objective"]
    assert saved["hypervolume_trace"][-1] == pytest.approx(saved["state"]["hypervolume"])
    assert f"hypervolume (log10 % params) {saved['state']['hypervolume']:.4g}" in capsys.readouterr().out

    # mode=report's hypervolume plot measures the search on the axis saved in its search.json
    from autopeft.report import plots as report_plots
    from autopeft.report.collect import Runs

    axes_used: list[ParamAxis] = []

    def spy(records: Any, ref: Any, param_axis: ParamAxis = LINEAR) -> Any:
        axes_used.append(param_axis)
        return hypervolume_trace(records, ref, param_axis)

    monkeypatch.setattr(report_plots, "hypervolume_trace", spy)
    path = report_plots.plot_hypervolume(Runs(searches=[tmp_path / "run"]), tmp_path / "hypervolume.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert axes_used == [ParamAxis.from_json(saved["param_objective"])]
