"""The acquisition function: noisy expected hypervolume improvement (NEHVI) over two objectives.

Objectives, both maximised: the task score (modelled by the surrogate) and the parameter
objective, minus the % of trainable parameters on the search's axis (``search.param_objective``:
``-% params`` or ``-log10 % params``, see :mod:`autopeft.bo.objectives`). The parameter objective
is an exact function of a configuration's encoding, so it is computed from ``X`` inside a botorch
multi-output objective instead of being modelled: no GP noise or extrapolation error on a number
we know.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
from botorch.acquisition.objective import MCAcquisitionObjective
from botorch.models.model import Model
from botorch.sampling import SobolQMCNormalSampler

from autopeft.bo.objectives import LINEAR, ParamAxis
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.settings import check_positive_int
from autopeft.space import SearchSpace

#: Acquisition functions offered: the paper's qNEHVI and its numerically robust log variant.
ACQUISITIONS = ("qnehvi", "qlognehvi")


@dataclass(frozen=True)
class AcquisitionSettings:
    """Which NEHVI variant and how it is estimated.

    Attributes:
        name: ``qnehvi`` (Daulton et al., 2021; the paper) or ``qlognehvi`` (Ament et al., 2023;
            same optimum in exact arithmetic, but its values do not vanish to 0 far from the front,
            which helps the local search find a direction).
        mc_samples: Quasi-Monte Carlo samples of the posterior per evaluation.
        prune_baseline: Drop observed points that are very unlikely to be on the front from the
            baseline (botorch's recommendation; speeds up the acquisition).

    """

    name: str = "qnehvi"
    mc_samples: int = 128
    prune_baseline: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> AcquisitionSettings:
        """Build from the ``search.acquisition`` node (``ref_point`` is read by the search itself)."""
        check_known_keys(cfg, ("name", "mc_samples", "prune_baseline", "ref_point"), "search.acquisition")
        values = {k: v for k, v in dict(cfg).items() if k != "ref_point"}
        settings = cls(**values)
        if settings.name not in ACQUISITIONS:
            raise ConfigError(f"search.acquisition.name={settings.name!r}; allowed: {allowed_list(ACQUISITIONS)}")
        check_positive_int(settings.mc_samples, "search.acquisition.mc_samples")
        return settings


def objectives_objective(
    space: SearchSpace, backbone_params: int, ensemble: bool, param_axis: ParamAxis = LINEAR
) -> MCAcquisitionObjective:
    """The botorch objective mapping score samples to ``[score, param_axis(% params)]``.

    Args:
        space: Gives the exact parameter count of an encoding.
        backbone_params: Denominator of the percentage.
        ensemble: Whether the model's samples carry a dimension of hyper-parameter (MCMC)
            samples just before the ``q`` dimension, as the SAAS GP's do.
        param_axis: The parameter objective (default: ``-% params``).

    """

    def stack(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
        # samples: sample_shape x batch_shape x [mcmc] x q x 1;  X: batch_shape x q x d.
        if X is None:
            raise ValueError("the parameter objective needs X")
        percent = 100.0 * space.param_count_tensor(X).to(samples) / backbone_params
        if ensemble:
            percent = percent.unsqueeze(-3)  # broadcast over the MCMC dimension
        return torch.cat([samples[..., :1], param_axis.transform(percent).expand(*samples.shape[:-1], 1)], dim=-1)

    return GenericMCMultiOutputObjective(stack)


def build_acquisition(
    model: Model,
    X_baseline: torch.Tensor,
    ref_point: torch.Tensor,
    space: SearchSpace,
    backbone_params: int,
    settings: AcquisitionSettings,
    ensemble: bool,
    X_pending: torch.Tensor | None = None,
    seed: int = 0,
    param_axis: ParamAxis = LINEAR,
) -> torch.nn.Module:
    """The NEHVI acquisition over ``[score, param_axis(% params)]``.

    Args:
        model: Fitted score surrogate.
        X_baseline: ``(n, d)`` encodings of the successfully evaluated points.
        ref_point: ``(2,)`` hypervolume reference ``[score, param_axis(% params)]`` (maximisation form).
        space: The search space (for the parameter objective).
        backbone_params: Denominator of the percentage.
        settings: Which NEHVI variant, MC samples, baseline pruning.
        ensemble: Whether ``model`` is a fully Bayesian ensemble (SAAS).
        X_pending: ``(k, d)`` candidates proposed but not yet evaluated; NEHVI integrates over
            their unknown outcomes so a batch is not proposed twice.
        seed: Seeds the quasi-Monte Carlo base samples (reproducible proposals).
        param_axis: The parameter objective, the axis ``ref_point`` is on (default: ``-% params``).

    Returns:
        A callable taking ``(b, q, d)`` and returning ``(b,)`` acquisition values.

    """
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.acquisition.multi_objective.monte_carlo import qNoisyExpectedHypervolumeImprovement

    cls = qNoisyExpectedHypervolumeImprovement if settings.name == "qnehvi" else qLogNoisyExpectedHypervolumeImprovement
    with warnings.catch_warnings():
        # botorch recommends the log variant on every qNEHVI construction; the user chose the
        # paper's qNEHVI on purpose (search.acquisition.name), so the advice is noise here.
        warnings.filterwarnings("ignore", message=r".*qNoisyExpectedHypervolumeImprovement has known numerical.*")
        # prune_baseline draws its own posterior samples from torch's global generator, whose
        # state depends on what ran before in the process (a resumed search has trained less):
        # seeded here, a resumed search prunes, and so proposes, exactly as the original did.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return cls(
                model=model,
                ref_point=ref_point.tolist(),
                X_baseline=X_baseline,
                sampler=SobolQMCNormalSampler(sample_shape=torch.Size([settings.mc_samples]), seed=seed),
                objective=objectives_objective(space, backbone_params, ensemble, param_axis),
                X_pending=X_pending,
                prune_baseline=settings.prune_baseline,
            )
