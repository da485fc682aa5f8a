"""Pareto front, hypervolume and reference point of a search (objectives [score, -% params])."""

from __future__ import annotations

import math

import pytest
import torch

from autopeft.bo.pareto import (
    hypervolume,
    hypervolume_trace,
    is_success,
    objective_matrix,
    pareto_mask,
    parse_ref_point,
    reference_point,
    search_reference,
)
from autopeft.errors import ConfigError


def rec(index: int, score: float | None, percent: float, status: str = "ok") -> dict:
    return {"index": index, "score": score, "param_percent": percent, "status": status}


def test_pareto_mask_keeps_exactly_the_non_dominated_points() -> None:
    records = [rec(0, 0.7, 1.0), rec(1, 0.8, 2.0), rec(2, 0.6, 2.0), rec(3, 0.8, 3.0), rec(4, 0.5, 0.0)]
    Y = objective_matrix(records)
    assert Y.tolist()[1] == [0.8, -2.0]
    assert pareto_mask(Y).tolist() == [True, True, False, False, True]


def test_hypervolume_of_a_staircase_is_the_sum_of_its_rectangles() -> None:
    Y = objective_matrix([rec(0, 0.7, 1.0), rec(1, 0.8, 2.0)])
    ref = torch.tensor([0.5, -4.0], dtype=torch.float64)
    # (0.7-0.5)*(4-1) + (0.8-0.7)*(4-2) = 0.6 + 0.2
    assert math.isclose(hypervolume(Y, ref), 0.8)
    assert hypervolume(Y, torch.tensor([0.9, -4.0], dtype=torch.float64)) == 0.0


def test_failed_and_nan_scores_are_not_successes() -> None:
    assert is_success(rec(0, 0.5, 1.0))
    assert not is_success(rec(0, None, 1.0, status="diverged"))
    assert not is_success(rec(0, math.nan, 1.0))


def test_reference_point_is_inferred_from_the_initial_design_and_then_fixed() -> None:
    records = [rec(0, 0.6, 1.0), rec(1, 0.8, 3.0), rec(2, None, 9.0, "oom")]
    assert search_reference(records[:2], (None, None), n_init=3) is None  # design unfinished
    ref = search_reference(records, (None, None), n_init=3)
    # nadir (0.6, -3.0) moved 10% of the range (0.2, 2.0) outwards
    assert torch.allclose(ref, torch.tensor([0.58, -3.2], dtype=torch.float64))
    later = [*records, rec(3, 0.1, 50.0)]
    assert torch.equal(search_reference(later, (None, None), n_init=3), ref)


def test_configured_reference_entries_win() -> None:
    assert search_reference([], (0.5, 10.0), n_init=5).tolist() == [0.5, -10.0]
    ref = reference_point((0.0, None), objective_matrix([rec(0, 0.6, 1.0), rec(1, 0.8, 3.0)]))
    assert ref[0] == 0.0 and math.isclose(float(ref[1]), -3.2)


def test_hypervolume_trace_is_monotone_and_skips_failures() -> None:
    records = [rec(0, 0.6, 1.0), rec(1, None, 2.0, "diverged"), rec(2, 0.8, 3.0), rec(3, 0.9, 0.5)]
    trace = hypervolume_trace(records, torch.tensor([0.5, -4.0], dtype=torch.float64))
    assert trace[0] == trace[1] > 0
    assert trace == sorted(trace)
    assert hypervolume_trace(records, None) == [None] * 4


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ([0.5, 1.0], r"must be a mapping \{score"),
        ({"score": 0.5, "params": 1.0}, r"unknown key 'params'.*'score', 'param_percent'"),
        ({"score": "high"}, r"ref_point.score='high' must be a number or null"),
        ({"param_percent": -1}, r"param_percent=-1.0 must be > 0"),
    ],
)
def test_bad_reference_points_are_named(node: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        parse_ref_point(node)
