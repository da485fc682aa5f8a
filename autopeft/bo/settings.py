"""The ``search`` config node: validated settings and the searcher they describe."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from autopeft.bo.acquisition import AcquisitionSettings
from autopeft.bo.baselines import CheapestFirstSearcher, StratifiedRandomSearcher
from autopeft.bo.executor import ParallelSettings
from autopeft.bo.local_search import LocalSearchSettings
from autopeft.bo.nsga2 import NSGA2Searcher, nsga2_settings
from autopeft.bo.objectives import ParamAxis, check_param_objective
from autopeft.bo.pareto import parse_ref_point
from autopeft.bo.searchers import BayesianSearcher, EnumerationSearcher, RandomSearcher, Searcher, configuration_count
from autopeft.bo.surrogate import SurrogateSettings
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.settings import plain
from autopeft.space import Point, SearchSpace

#: Search methods: AutoPEFT's BO and the baselines (random search, NSGA-II, and two model-free
#: rules that know the exact parameter count: cheapest-first and random stratified on log % params).
METHODS = ("bo", "random", "nsga2", "cheapest", "stratified")

#: ``search.enumerate``: ``auto`` evaluates every configuration of a space that has no more of
#: them than the initial design ``n_init`` (in ascending % params) instead of searching it; ``never``
#: always searches.
ENUMERATE = ("auto", "never")

#: Keys of the ``search`` node.
SEARCH_KEYS = (
    "method",
    "n_init",
    "n_iter",
    "enumerate",
    "batch_size",
    "progress",
    "surrogate",
    "acquisition",
    "local_search",
    "nsga2",
    "parallel",
    "param_objective",
)

#: Keys a ``search`` node may leave out (they then take their defaults).
OPTIONAL_SEARCH_KEYS = ("parallel", "enumerate", "param_objective")


@dataclass(frozen=True)
class SearchSettings:
    """Validated ``search`` node.

    Attributes:
        method: ``bo`` (AutoPEFT), ``random`` or ``nsga2``.
        n_init: Random initial configurations (paper 100); for ``random`` and ``nsga2`` only part
            of the budget ``n_init + n_iter``.
        n_iter: Configurations proposed after the initial design (paper 100).
        enumerate: ``auto``: a space with at most ``n_init`` distinct configurations is
            enumerated (each evaluated once, ascending % params) instead of searched;
            ``never``: always search.
        batch_size: Configurations proposed at once (q); BO proposes a batch greedily with the
            earlier members as pending points.
        progress: Show a progress bar on a terminal.
        surrogate: Score surrogate (BO only).
        acquisition: NEHVI variant (BO only).
        ref_point: Hypervolume reference ``(score, param_percent)``, None entries inferred.
        local_search: Acquisition optimiser (BO only).
        nsga2: Keyword arguments of Optuna's ``NSGAIISampler``.
        parallel: How many evaluations run at once and where (see :mod:`autopeft.bo.executor`).
        param_objective: The parameter axis optimised and measured by the hypervolume: ``linear``
            (``-% params``) or ``log`` (``-log10 % params``, see :mod:`autopeft.bo.objectives`).

    """

    method: str
    n_init: int
    n_iter: int
    batch_size: int
    progress: bool
    surrogate: SurrogateSettings
    acquisition: AcquisitionSettings
    ref_point: tuple[float | None, float | None]
    local_search: LocalSearchSettings
    nsga2: dict[str, Any]
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    enumerate: str = "auto"
    param_objective: str = "linear"

    @property
    def budget(self) -> int:
        """Total evaluations: ``n_init + n_iter``."""
        return self.n_init + self.n_iter

    def param_axis(self, space: SearchSpace, backbone_params: int) -> ParamAxis:
        """The parameter objective :attr:`param_objective` names, on ``space`` over ``backbone_params``."""
        return ParamAxis.for_space(self.param_objective, space, backbone_params)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> SearchSettings:
        """Validate the ``search`` node; every error names the bad key or value and what is allowed."""
        values = plain(cfg)
        check_known_keys(values, SEARCH_KEYS, "search")
        missing = [k for k in SEARCH_KEYS if k not in values and k not in OPTIONAL_SEARCH_KEYS]
        if missing:
            raise ConfigError(f"search node lacks {missing}; it needs {allowed_list(SEARCH_KEYS)}")
        if values["method"] not in METHODS:
            raise ConfigError(f"search.method={values['method']!r}; allowed: {allowed_list(METHODS)}")
        enumerate_ = values.get("enumerate", "auto")
        if enumerate_ not in ENUMERATE:
            raise ConfigError(f"search.enumerate={enumerate_!r}; allowed: {allowed_list(ENUMERATE)}")
        param_objective = check_param_objective(values.get("param_objective", "linear"))
        for key, low in (("n_init", 1), ("n_iter", 0), ("batch_size", 1)):
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"search.{key}={value!r} must be an integer >= {low}")
        acquisition = dict(values["acquisition"] or {})
        return cls(
            method=values["method"],
            n_init=values["n_init"],
            n_iter=values["n_iter"],
            batch_size=values["batch_size"],
            progress=bool(values["progress"]),
            surrogate=SurrogateSettings.from_config(values["surrogate"] or {}),
            acquisition=AcquisitionSettings.from_config(acquisition),
            ref_point=parse_ref_point(acquisition.get("ref_point")),
            local_search=LocalSearchSettings.from_config(values["local_search"] or {}),
            nsga2=nsga2_settings(values["nsga2"]),
            parallel=ParallelSettings.from_config(values.get("parallel")),
            enumerate=enumerate_,
            param_objective=param_objective,
        )


def make_searcher(
    settings: SearchSettings,
    space: SearchSpace,
    backbone_params: int,
    seed: int,
    candidates: Sequence[Point] | None = None,
) -> Searcher:
    """The searcher ``settings.method`` names, optionally restricted to ``candidates``.

    With ``search.enumerate=auto`` a space (or candidate list) with no more distinct
    configurations than the initial design ``n_init`` gets an :class:`EnumerationSearcher`
    instead, whatever the method: the random initial design would be the whole space in a
    random order. A space larger than ``n_init`` but within the budget is searched, and the
    search then evaluates every configuration once too, in the order the method chooses (the
    paper's Figure 7 enumerates SA, 11 sizes, and searches SA-PA's 121 with 100 + 100).
    """
    if settings.enumerate == "auto" and configuration_count(space, candidates) <= settings.n_init:
        return EnumerationSearcher(space, candidates)
    if settings.method == "random":
        return RandomSearcher(space, seed, candidates, n_init=settings.n_init)
    if settings.method == "nsga2":
        return NSGA2Searcher(space, seed, settings.nsga2, candidates, n_init=settings.n_init)
    if settings.method == "cheapest":
        return CheapestFirstSearcher(space, seed, n_init=settings.n_init, candidates=candidates)
    if settings.method == "stratified":
        return StratifiedRandomSearcher(space, backbone_params, seed, n_init=settings.n_init, candidates=candidates)
    return BayesianSearcher(
        space=space,
        backbone_params=backbone_params,
        n_init=settings.n_init,
        surrogate=settings.surrogate,
        acquisition=settings.acquisition,
        local_search=settings.local_search,
        ref_point=settings.ref_point,
        seed=seed,
        candidates=candidates,
        param_axis=settings.param_axis(space, backbone_params),
    )
