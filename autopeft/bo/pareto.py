"""Pareto front, reference point and hypervolume of a search's evaluations (botorch's utilities).

Objectives in maximisation form: ``[score, p]`` with ``p`` the search's parameter objective
(:class:`~autopeft.bo.objectives.ParamAxis`: ``-% params`` on the default linear axis,
``-log10 % params`` on the log axis). Failed evaluations (diverged, out of memory) have no score
and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume, infer_reference_point
from botorch.utils.multi_objective.pareto import is_non_dominated

from autopeft.bo.objectives import LINEAR, ParamAxis
from autopeft.errors import ConfigError


def is_success(record: Mapping[str, Any]) -> bool:
    """Whether an evaluation produced a usable score."""
    score = record.get("score")
    return record.get("status") == "ok" and isinstance(score, int | float) and score == score  # not NaN


def objective_matrix(records: Sequence[Mapping[str, Any]], param_axis: ParamAxis = LINEAR) -> torch.Tensor:
    """``(n, 2)`` float64 ``[score, param_axis(% params)]`` of the given (successful) records."""
    scores = torch.tensor([float(r["score"]) for r in records], dtype=torch.float64)
    percents = torch.tensor([float(r["param_percent"]) for r in records], dtype=torch.float64)
    return torch.stack([scores, param_axis.transform(percents)], dim=-1).reshape(len(records), 2)


def pareto_mask(Y: torch.Tensor) -> torch.Tensor:
    """Boolean ``(n,)`` mask of the non-dominated rows of ``Y`` (duplicates all kept)."""
    if Y.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    return is_non_dominated(Y, deduplicate=False)


def hypervolume(Y: torch.Tensor, ref_point: torch.Tensor) -> float:
    """Hypervolume dominated by ``Y`` above ``ref_point`` (0 when nothing dominates it)."""
    better = (ref_point < Y).all(dim=-1)
    if not bool(better.any()):
        return 0.0
    front = Y[better][pareto_mask(Y[better])]
    return float(Hypervolume(ref_point=ref_point).compute(front))


def parse_ref_point(cfg: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    """``search.acquisition.ref_point`` as ``(score, param_percent)``, each None to be inferred.

    Raises:
        ConfigError: If the node is not ``{score: ..., param_percent: ...}`` of numbers or nulls.

    """
    if cfg is None:
        return None, None
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            f"search.acquisition.ref_point={cfg!r} must be a mapping {{score: <number|null>, "
            "param_percent: <number|null>} (the worst acceptable score and the largest acceptable % params)"
        )
    unknown = [k for k in cfg if k not in ("score", "param_percent")]
    if unknown:
        raise ConfigError(
            f"search.acquisition.ref_point has unknown key {unknown[0]!r}; allowed: 'score', 'param_percent' "
            "(a two-objective reference point)"
        )
    values = []
    for key in ("score", "param_percent"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"search.acquisition.ref_point.{key}={value!r} must be a number or null (inferred)")
        values.append(None if value is None else float(value))
    if values[1] is not None and values[1] <= 0:
        raise ConfigError(f"search.acquisition.ref_point.param_percent={values[1]} must be > 0")
    return values[0], values[1]


def reference_point(
    configured: tuple[float | None, float | None], Y_initial: torch.Tensor, param_axis: ParamAxis = LINEAR
) -> torch.Tensor:
    """The reference point ``[score, param_axis(% params)]`` in maximisation form.

    Entries given in the config are used as they are (a configured ``param_percent`` is in %
    params on either axis, and is transformed onto ``param_axis``). Missing ones are inferred
    once, from the initial random design, with botorch's ``infer_reference_point`` (the design's
    nadir moved 10% of its range further out), in the transformed space: on the log axis the
    margin is then 10% of the design's range in decades. The reference then depends on the task's
    own score scale instead of one value shared by every task, and it stays fixed after the
    initial design so hypervolumes are comparable across iterations.

    Args:
        configured: ``(score, param_percent)`` from :func:`parse_ref_point`.
        Y_initial: ``(n, 2)`` objectives of the successful initial evaluations, on ``param_axis``.
        param_axis: The parameter objective (default: ``-% params``).

    Raises:
        ValueError: If an entry must be inferred but ``Y_initial`` is empty.

    """
    score, percent = configured
    params = None if percent is None else param_axis.value(percent)
    if score is None or params is None:
        if Y_initial.shape[0] == 0:
            raise ValueError("cannot infer a reference point: no initial evaluation succeeded")
        inferred = infer_reference_point(Y_initial)
        if Y_initial.shape[0] == 1:  # no range to scale by: step one unit of each objective's scale
            inferred = Y_initial[0] - torch.tensor([0.1, 1.0], dtype=torch.float64)
        score = float(inferred[0]) if score is None else score
        params = float(inferred[1]) if params is None else params
    return torch.tensor([score, params], dtype=torch.float64)


def search_reference(
    records: Sequence[Mapping[str, Any]],
    configured: tuple[float | None, float | None],
    n_init: int,
    param_axis: ParamAxis = LINEAR,
) -> torch.Tensor | None:
    """The reference point of a search: configured entries, the rest inferred from its initial design.

    Returns None while an entry still has to be inferred and the initial design is unfinished,
    or when none of its evaluations succeeded: a hypervolume against a reference point that later
    moves would not be comparable across the search. The point is on ``param_axis``.
    """
    if configured[0] is not None and configured[1] is not None:
        return reference_point(configured, torch.zeros(0, 2, dtype=torch.float64), param_axis)
    if sum(r["index"] < n_init for r in records) < n_init:
        return None
    initial = [r for r in records if r["index"] < n_init and is_success(r)]
    if not initial:
        return None
    return reference_point(configured, objective_matrix(initial, param_axis), param_axis)


def hypervolume_trace(
    records: Sequence[Mapping[str, Any]], ref_point: torch.Tensor | None, param_axis: ParamAxis = LINEAR
) -> list[float | None]:
    """Hypervolume after each evaluation, all against the same (final) reference point on ``param_axis``."""
    if ref_point is None:
        return [None] * len(records)
    trace: list[float | None] = []
    ok: list[Mapping[str, Any]] = []
    for record in records:
        if is_success(record):
            ok.append(record)
        trace.append(hypervolume(objective_matrix(ok, param_axis), ref_point) if ok else 0.0)
    return trace
