"""The surrogate of the task score: botorch's fully Bayesian SAAS GP, fitted with NUTS (paper §2.2).

Only the task score is modelled. The other objective, % trainable parameters, is a known
function of the configuration (:meth:`autopeft.space.SearchSpace.param_count_tensor`) and enters
the acquisition deterministically (:mod:`autopeft.bo.acquisition`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from botorch.models.model import Model

from autopeft.errors import ConfigError, allowed_list, check_known_keys

#: Surrogates offered: the paper's SAAS GP, and a standard GP (MAP-fitted) for quick experiments.
SURROGATE_KINDS = ("saas", "gp")


@dataclass(frozen=True)
class SurrogateSettings:
    """How the score surrogate is built and fitted.

    Attributes:
        kind: ``saas`` (fully Bayesian SAAS GP, Matérn-5/2, NUTS; the paper) or ``gp`` (botorch's
            ``SingleTaskGP`` fitted by marginal likelihood; much faster, no sparsity prior).
        warmup_steps: NUTS warm-up (adaptation) steps; paper 256.
        num_samples: NUTS samples drawn after warm-up; paper 128.
        thinning: Keep every ``thinning``-th sample; paper 16 (so 128 / 16 = 8 GP hyper-parameter
            samples are averaged over).
        max_tree_depth: NUTS maximum tree depth (botorch's default 6).

    """

    kind: str = "saas"
    warmup_steps: int = 256
    num_samples: int = 128
    thinning: int = 16
    max_tree_depth: int = 6

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SurrogateSettings:
        """Build from the ``search.surrogate`` node, naming any bad key or value."""
        check_known_keys(cfg, ("kind", "warmup_steps", "num_samples", "thinning", "max_tree_depth"), "search.surrogate")
        settings = cls(**dict(cfg))
        if settings.kind not in SURROGATE_KINDS:
            raise ConfigError(f"search.surrogate.kind={settings.kind!r}; allowed: {allowed_list(SURROGATE_KINDS)}")
        for key in ("warmup_steps", "num_samples", "thinning", "max_tree_depth"):
            value = getattr(settings, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"search.surrogate.{key}={value!r} must be a positive integer")
        if settings.thinning > settings.num_samples:
            raise ConfigError(
                f"search.surrogate.thinning={settings.thinning} exceeds num_samples={settings.num_samples}: "
                "no sample would be kept"
            )
        return settings

    @property
    def is_ensemble(self) -> bool:
        """Whether the fitted model carries a batch dimension of hyper-parameter samples."""
        return self.kind == "saas"


@dataclass
class FittedSurrogate:
    """A fitted model and what the fit cost."""

    model: Model
    seconds: float
    num_observations: int


def fit_surrogate(X: torch.Tensor, Y: torch.Tensor, settings: SurrogateSettings, seed: int) -> FittedSurrogate:
    """Fit the score surrogate to the observations.

    Args:
        X: ``(n, d)`` float64 encodings in ``[0, 1]`` (:meth:`SearchSpace.encode`).
        Y: ``(n, 1)`` task scores (higher is better); outcomes are standardised by the model.
        settings: Which model and how to fit it.
        seed: Seeds the NUTS chain (via torch's generator, which Pyro uses), so that a resumed
            search refits exactly the same model.

    Returns:
        The fitted model in eval mode, with the fit's wall-clock time.

    """
    if X.dim() != 2 or Y.shape != (X.shape[0], 1):
        raise ValueError(f"X must be (n, d) and Y (n, 1); got {tuple(X.shape)} and {tuple(Y.shape)}")
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if settings.kind == "saas":
            from botorch.fit import fit_fully_bayesian_model_nuts
            from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
            from botorch.models.transforms.outcome import Standardize

            # Unlike SingleTaskGP, the SAAS model has no default outcome transform; its priors
            # assume standardised outcomes.
            model = SaasFullyBayesianSingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
            fit_fully_bayesian_model_nuts(
                model,
                max_tree_depth=settings.max_tree_depth,
                warmup_steps=settings.warmup_steps,
                num_samples=settings.num_samples,
                thinning=settings.thinning,
                disable_progbar=True,
            )
        else:
            from botorch.fit import fit_gpytorch_mll
            from botorch.models import SingleTaskGP
            from gpytorch.mlls import ExactMarginalLogLikelihood

            model = SingleTaskGP(X, Y)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return FittedSurrogate(model=model, seconds=time.perf_counter() - started, num_observations=X.shape[0])
