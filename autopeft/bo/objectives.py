"""The parameter objective of a search: on which axis "fewer trainable parameters" is maximised.

``search.param_objective`` chooses it:

- ``linear``: ``-% params``, the original objective. A hypervolume on this axis is dominated by
  the expensive end of the front: going from 1% to 2% of the parameters weighs a hundred times
  more than going from 0.01% to 0.02%.
- ``log``: ``-log10(% params)``, the axis the paper plots its fronts on, on which every decade of
  % params weighs the same, so the cheap end of the front counts as much as the expensive end.

The head-only configuration trains 0% of the backbone, and ``log10(0)`` is ``-inf``, so the log
axis is floored half a decade below the space's smallest positive % params. The floor depends
only on the space and the backbone size, never on the evaluations, so a resumed search, and a
report drawn from its run directory, use exactly the same axis.

Every place that turns % params into an objective value goes through :class:`ParamAxis`: the
acquisition's exact parameter objective, the objective matrix, the reference point and the
hypervolume. A monotone transform leaves the Pareto set unchanged, so only the search's
preferences and the hypervolume differ between the two axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from autopeft.errors import ConfigError, allowed_list
from autopeft.space import SearchSpace

#: Values of ``search.param_objective``.
PARAM_OBJECTIVES = ("linear", "log")

#: The log axis' floor is this factor below the space's smallest positive % params (half a
#: decade): head-only then sits half a decade left of the cheapest real configuration, as far as
#: a factor of ~3.16 in % params, instead of infinitely far away.
FLOOR_FACTOR = math.sqrt(10.0)


def check_param_objective(name: Any) -> str:
    """Return ``name`` if it is one of :data:`PARAM_OBJECTIVES`.

    Raises:
        ConfigError: Naming the bad value and the allowed ones.

    """
    if not isinstance(name, str) or name not in PARAM_OBJECTIVES:
        raise ConfigError(f"search.param_objective={name!r}; allowed: {allowed_list(PARAM_OBJECTIVES)}")
    return name


def smallest_positive_param_count(space: SearchSpace) -> int:
    """The smallest positive :meth:`SearchSpace.param_count` over every configuration of ``space``.

    A configuration's count is a sum of non-negative per-module terms, each growing with the
    module's size, times the number of layers it is inserted in. The cheapest configuration
    that trains anything therefore switches on one module, at its smallest positive size, in as
    few layers as the space allows (one with layer selection, all of them without). Each such
    candidate is priced with the space's own :meth:`~SearchSpace.param_count`, so this stays
    exact for whatever that counts (e.g. LoRA's per-target factor).

    Raises:
        ConfigError: If no configuration of ``space`` trains a positive number of parameters.

    """
    layers = space.num_layers if not space.layer_selection else 1
    mask = [i < layers for i in range(space.num_layers)]
    counts = []
    for module, options in space.choices:
        smallest = min(size for size in options if size > 0)
        counts.append(space.param_count(space.point(mask=mask, **{module: smallest})))
    positive = [count for count in counts if count > 0]
    if not positive:
        raise ConfigError(
            f"space {space.name!r} has no configuration with a positive parameter count, so "
            "search.param_objective='log' has no scale; use search.param_objective='linear'"
        )
    return min(positive)


def log_floor(space: SearchSpace, backbone_params: int) -> float:
    """The % params the log axis is clamped at: :data:`FLOOR_FACTOR` below the smallest positive one.

    Args:
        space: The search space (its smallest positive parameter count).
        backbone_params: Denominator of % params.

    """
    if backbone_params <= 0:
        raise ValueError(f"backbone_params={backbone_params} must be > 0")
    return 100.0 * smallest_positive_param_count(space) / backbone_params / FLOOR_FACTOR


@dataclass(frozen=True)
class ParamAxis:
    """The parameter objective: % trainable parameters mapped to a value to maximise.

    Attributes:
        name: ``linear`` (``-% params``) or ``log`` (``-log10(max(% params, floor))``).
        floor: The log axis' clamp in % params (:func:`log_floor`); None on the linear axis.

    """

    name: str = "linear"
    floor: float | None = None

    def __post_init__(self) -> None:
        """Check the name, and that a floor comes with (and only with) the log axis."""
        check_param_objective(self.name)
        if self.name == "log" and not (isinstance(self.floor, float | int) and self.floor > 0):
            raise ValueError(f"the log parameter axis needs a floor > 0 (in % params), got {self.floor!r}")
        if self.name == "linear" and self.floor is not None:
            raise ValueError(f"the linear parameter axis has no floor, got {self.floor!r}")

    @classmethod
    def for_space(cls, name: str, space: SearchSpace, backbone_params: int) -> ParamAxis:
        """The axis ``search.param_objective=name`` gives on ``space`` over a backbone of ``backbone_params``.

        Raises:
            ConfigError: If ``name`` is not one of :data:`PARAM_OBJECTIVES`.

        """
        if check_param_objective(name) == "linear":
            return cls()
        return cls("log", log_floor(space, backbone_params))

    def transform(self, percent: torch.Tensor) -> torch.Tensor:
        """The maximised objective of ``percent`` (% params, any shape; float64 in, float64 out)."""
        if self.name == "linear":
            return -percent
        return -torch.log10(percent.clamp_min(self.floor))

    def value(self, percent: float) -> float:
        """:meth:`transform` of one % params value."""
        return float(self.transform(torch.tensor(float(percent), dtype=torch.float64)))

    @property
    def label(self) -> str:
        """The axis' unit in words, e.g. in ``hypervolume (log10 % params)``."""
        return "% params" if self.name == "linear" else "log10 % params"

    @property
    def hypervolume_label(self) -> str:
        """How a hypervolume on this axis is named in logs and reports."""
        return f"hypervolume ({self.label})"

    def describe(self) -> str:
        """The objective in words, with the floor of the log axis."""
        if self.name == "linear":
            return "maximise -% params"
        return f"maximise -log10(% params), % params floored at {self.floor:.4g}% (head-only sits there)"

    def to_json(self) -> dict[str, Any]:
        """``{"name", "floor", "label"}``, as :meth:`from_json` reads it (search.json, summary.json)."""
        return {"name": self.name, "floor": self.floor, "label": self.label}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ParamAxis:
        """Inverse of :meth:`to_json`; None (a run from before the key existed) is the linear axis."""
        if data is None:
            return cls()
        floor = data.get("floor")
        return cls(str(data.get("name", "linear")), None if floor is None else float(floor))


#: The linear axis, ``-% params``: the default everywhere an axis is optional.
LINEAR = ParamAxis()
