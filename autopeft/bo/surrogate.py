"""The surrogate of the task score: botorch's fully Bayesian SAAS GP fitted with NUTS (paper §2.2), and faster options.

Only the task score is modelled. The other objective, % trainable parameters, is a known
function of the configuration (:meth:`autopeft.space.SearchSpace.param_count_tensor`) and enters
the acquisition deterministically (:mod:`autopeft.bo.acquisition`).

``search.surrogate.kind`` chooses the model:

* ``saas``: the paper's :class:`~botorch.models.fully_bayesian.SaasFullyBayesianSingleTaskGP`,
  its hyper-parameters sampled with NUTS. Optionally JIT-compiled, and optionally warm-started
  from the previous fit of the same search (:attr:`FittedSurrogate.state`) with fewer warm-up steps.
* ``saas_vi``: the paper's SAAS GP (same priors and kernel), its hyper-parameter posterior
  approximated by stochastic variational inference instead of NUTS (Pyro's ``SVI`` with an
  ``AutoMultivariateNormal`` guide, a full-covariance normal over the unconstrained
  hyper-parameters); ``vi_samples`` draws from it form the ensemble, as NUTS's kept samples do.
  On the real table it ranks held-out configurations as the paper's NUTS does, with a fit about
  60 times shorter at n = 200 (1.15 s against 77.5 s; ``benchmarks/results/surrogate_fit.md``).
* ``saas_map``: botorch's :class:`~botorch.models.map_saas.EnsembleMapSaasSingleTaskGP`, an
  ensemble of MAP-fitted GPs with the SAAS prior, one per global shrinkage ``tau`` (BONSAI,
  Daulton et al. 2026): the SAAS model's sparsity without MCMC. Optionally warm-started: each
  refit's L-BFGS starts from the previous fit's hyper-parameters (and keeps its taus), about a
  quarter of a cold fit's time at n = 100-200 on the real table, with the same held-out rank
  correlation (``benchmarks/surrogate_fit.py``).
* ``gp``: botorch's ``SingleTaskGP`` fitted by marginal likelihood (no sparsity prior).
* ``constant``: no model at all (:class:`ConstantScoreModel`), a benchmark baseline that shows
  what the score model adds to the search.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator

from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.settings import check_positive_int

#: Surrogates offered (``saas`` and ``gp`` first: older messages and tests list them so).
SURROGATE_KINDS = ("saas", "gp", "saas_map", "saas_vi", "constant")

#: Kinds whose posterior carries an ensemble (batch) dimension just before ``q``.
ENSEMBLE_KINDS = ("saas", "saas_map", "saas_vi")

#: Kinds with a state a refit can warm-start from.
WARM_START_KINDS = ("saas", "saas_map")

#: Ensemble size of ``saas_map`` (botorch's default ``num_taus``).
MAP_SAAS_TAUS = 4

#: The keys of ``search.surrogate``.
SURROGATE_KEYS = (
    "kind",
    "warmup_steps",
    "num_samples",
    "thinning",
    "max_tree_depth",
    "jit_compile",
    "warm_start",
    "refit_warmup_steps",
    "vi_steps",
    "vi_learning_rate",
    "vi_samples",
)

#: The ``saas_map`` model's tensors a warm start carries over: its fitted raw hyper-parameters
#: and the taus that define its ensemble members (not the outcome transform's buffers, which
#: belong to the data of each fit).
MAP_STATE_KEYS = (
    "taus",
    "likelihood.noise_covar.raw_noise",
    "mean_module.raw_constant",
    "covar_module.raw_outputscale",
    "covar_module.base_kernel.raw_lengthscale",
)

#: Key of a proposal's ``info`` holding the surrogate state a later fit may warm-start from.
STATE_KEY = "surrogate_state"


@dataclass(frozen=True)
class SurrogateSettings:
    """How the score surrogate is built and fitted.

    Attributes:
        kind: ``saas`` (fully Bayesian SAAS GP, Matérn-5/2, NUTS; the paper), ``saas_vi`` (the
            same model, its posterior approximated by variational inference), ``saas_map``
            (ensemble of MAP-fitted SAAS GPs), ``gp`` (botorch's ``SingleTaskGP`` fitted by
            marginal likelihood; no sparsity prior) or ``constant`` (no model: every point's
            posterior is the observed scores' mean and variance).
        warmup_steps: NUTS warm-up (adaptation) steps; paper 256.
        num_samples: NUTS samples drawn after warm-up; paper 128.
        thinning: Keep every ``thinning``-th sample; paper 16 (so 128 / 16 = 8 GP hyper-parameter
            samples are averaged over).
        max_tree_depth: NUTS maximum tree depth (botorch's default 6).
        jit_compile: JIT-compile the NUTS potential energy (Pyro's ``jit_compile``); same model
            family, roughly twice as fast per step on CPU. ``saas`` only.
        warm_start: Start each refit of a search from the previous fit. ``saas``: NUTS starts
            from the previous posterior (the median of its kept samples) and runs only
            ``refit_warmup_steps`` warm-up steps. ``saas_map``: the MAP optimisation starts from
            the previous fit's hyper-parameters and taus. The first fit of a search is always cold.
        refit_warmup_steps: NUTS warm-up steps of a warm-started ``saas`` refit.
        vi_steps: ``saas_vi``: optimisation (Adam) steps of the evidence lower bound.
        vi_learning_rate: ``saas_vi``: Adam's learning rate.
        vi_samples: ``saas_vi``: hyper-parameter draws from the fitted approximation, the
            ensemble the acquisition averages over (the paper's NUTS keeps 8; 4 halves the
            acquisition's cost with the same held-out rank quality on the real table).

    """

    kind: str = "saas"
    warmup_steps: int = 256
    num_samples: int = 128
    thinning: int = 16
    max_tree_depth: int = 6
    jit_compile: bool = False
    warm_start: bool = False
    refit_warmup_steps: int = 64
    vi_steps: int = 150
    vi_learning_rate: float = 0.05
    vi_samples: int = 4

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SurrogateSettings:
        """Build from the ``search.surrogate`` node, naming any bad key or value."""
        check_known_keys(cfg, SURROGATE_KEYS, "search.surrogate")
        settings = cls(**dict(cfg))
        if settings.kind not in SURROGATE_KINDS:
            raise ConfigError(f"search.surrogate.kind={settings.kind!r}; allowed: {allowed_list(SURROGATE_KINDS)}")
        for key in ("warmup_steps", "num_samples", "thinning", "max_tree_depth", "refit_warmup_steps"):
            check_positive_int(getattr(settings, key), f"search.surrogate.{key}")
        for key in ("vi_steps", "vi_samples"):
            check_positive_int(getattr(settings, key), f"search.surrogate.{key}")
        rate = settings.vi_learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ConfigError(f"search.surrogate.vi_learning_rate={rate!r} must be a positive number")
        for key in ("jit_compile", "warm_start"):
            value = getattr(settings, key)
            if not isinstance(value, bool):
                raise ConfigError(f"search.surrogate.{key}={value!r}; allowed: true, false")
        if settings.thinning > settings.num_samples:
            raise ConfigError(
                f"search.surrogate.thinning={settings.thinning} exceeds num_samples={settings.num_samples}: "
                "no sample would be kept"
            )
        return settings

    @property
    def is_ensemble(self) -> bool:
        """Whether the fitted model carries a batch dimension of hyper-parameter samples (or taus)."""
        return self.kind in ENSEMBLE_KINDS

    @property
    def warm_starts(self) -> bool:
        """Whether refits start from the previous fit's state (NUTS and the MAP-SAAS ensemble have one)."""
        return self.kind in WARM_START_KINDS and self.warm_start


@dataclass
class FittedSurrogate:
    """A fitted model and what the fit cost.

    Attributes:
        model: The fitted model, in eval mode.
        seconds: Wall-clock time of the fit.
        num_observations: Observations it was fitted to.
        state: What a later fit may warm-start from (:func:`fit_surrogate`'s ``warm_start``),
            JSON-serialisable: for ``saas`` the per-site medians of the kept NUTS samples (Pyro's
            constrained values), for ``saas_map`` the fitted raw hyper-parameters and taus
            (:data:`MAP_STATE_KEYS`). None for the other kinds.
        warm_started: Whether this fit started from a previous state.

    """

    model: Model
    seconds: float
    num_observations: int
    state: dict[str, Any] | None = None
    warm_started: bool = False


class ConstantScoreModel(Model):
    """A model-free score "surrogate": the same independent normal at every point.

    The posterior at any ``batch x q x d`` input is ``q`` independent normals with the mean and
    (unbiased) variance of the observed scores, whatever the input. It ignores ``X`` on purpose:
    as a benchmark baseline it isolates what a score model adds to the search, since with it
    qNEHVI can only trade the exact parameter objective against an uninformed score.

    Args:
        train_Y: ``(n, 1)`` observed scores.

    """

    #: Floor of the variance, so that identical scores still give a valid (positive definite) normal.
    MIN_VARIANCE = 1e-12

    def __init__(self, train_Y: torch.Tensor) -> None:
        super().__init__()
        scores = train_Y.reshape(-1)
        variance = scores.var() if scores.numel() > 1 else torch.zeros((), dtype=scores.dtype)
        self.register_buffer("score_mean", scores.mean().detach())
        self.register_buffer("score_variance", variance.detach().clamp_min(self.MIN_VARIANCE))

    @property
    def num_outputs(self) -> int:
        """One output: the task score."""
        return 1

    @property
    def batch_shape(self) -> torch.Size:
        """No model batch: the posterior's batch shape is the input's."""
        return torch.Size()

    def posterior(
        self,
        X: torch.Tensor,
        output_indices: list[int] | None = None,
        observation_noise: bool | torch.Tensor = False,
        posterior_transform: Any = None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """The constant posterior over ``X`` (``batch x q x d``): mean and variance of the scores.

        ``observation_noise`` is accepted and ignored: the variance of the observed scores already
        contains their noise.
        """
        if output_indices is not None and list(output_indices) != [0]:
            raise ValueError(f"ConstantScoreModel has one output; got output_indices={output_indices}")
        shape = X.shape[:-1]
        mean = self.score_mean.to(X).expand(shape)
        variance = self.score_variance.to(X).expand(shape)
        posterior = GPyTorchPosterior(MultivariateNormal(mean, DiagLinearOperator(variance)))
        return posterior_transform(posterior) if posterior_transform is not None else posterior


def fit_surrogate(
    X: torch.Tensor,
    Y: torch.Tensor,
    settings: SurrogateSettings,
    seed: int,
    warm_start: Mapping[str, Any] | None = None,
) -> FittedSurrogate:
    """Fit the score surrogate to the observations.

    Args:
        X: ``(n, d)`` float64 encodings in ``[0, 1]`` (:meth:`SearchSpace.encode`).
        Y: ``(n, 1)`` task scores (higher is better); outcomes are standardised by the model.
        settings: Which model and how to fit it.
        seed: Seeds the NUTS chain (via torch's generator, which Pyro uses), the ``saas_map``
            taus and any restarts of a MAP fit, so that a resumed search refits exactly the same model.
        warm_start: A previous fit's :attr:`FittedSurrogate.state` (same kind, same ``d``).
            ``saas``: NUTS starts there and runs ``settings.refit_warmup_steps`` warm-up steps
            instead of ``warmup_steps``. ``saas_map``: L-BFGS starts from those hyper-parameters.
            Ignored by the other kinds.

    Returns:
        The fitted model in eval mode, with the fit's wall-clock time (and NUTS state for ``saas``).

    Raises:
        ValueError: If the shapes are wrong, or ``warm_start`` does not fit this model's sites.

    """
    if X.dim() != 2 or Y.shape != (X.shape[0], 1):
        raise ValueError(f"X must be (n, d) and Y (n, 1); got {tuple(X.shape)} and {tuple(Y.shape)}")
    started = time.perf_counter()
    state = None
    warm = warm_start is not None and settings.kind in WARM_START_KINDS
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if settings.kind in ("saas", "saas_vi"):
            from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
            from botorch.models.transforms.outcome import Standardize

            # Unlike SingleTaskGP, the SAAS model has no default outcome transform; its priors
            # assume standardised outcomes.
            model = SaasFullyBayesianSingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
            if settings.kind == "saas":
                state = _fit_nuts(model, settings, warm_start if warm else None)
            else:
                _fit_variational(model, settings)
        elif settings.kind == "saas_map":
            from botorch.fit import fit_gpytorch_mll
            from botorch.models.map_saas import EnsembleMapSaasSingleTaskGP
            from botorch.models.transforms.outcome import Standardize
            from gpytorch.mlls import ExactMarginalLogLikelihood

            # The model repeats the data along an ensemble dimension of num_taus (taus drawn
            # from HalfCauchy(0.1) with torch's generator, hence seeded), so the outcome
            # transform standardises per ensemble member.
            model = EnsembleMapSaasSingleTaskGP(
                X,
                Y,
                num_taus=MAP_SAAS_TAUS,
                outcome_transform=Standardize(m=1, batch_shape=torch.Size([MAP_SAAS_TAUS])),
            )
            if warm:
                _load_map_state(model, warm_start)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            state = _map_state(model)
        elif settings.kind == "constant":
            model = ConstantScoreModel(Y)
        else:
            from botorch.fit import fit_gpytorch_mll
            from botorch.models import SingleTaskGP
            from gpytorch.mlls import ExactMarginalLogLikelihood

            model = SingleTaskGP(X, Y)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return FittedSurrogate(
        model=model,
        seconds=time.perf_counter() - started,
        num_observations=X.shape[0],
        state=state,
        warm_started=warm,
    )


def latest_state(proposals: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The most recent surrogate state logged in proposals' ``info`` (None if there is none).

    A search logs each warm-startable fit's state with the first proposal of its batch, so a
    resumed search reads back exactly the state the uninterrupted one would have used.
    """
    for proposal in reversed(proposals):
        state = proposal.get("info", {}).get(STATE_KEY)
        if state is not None:
            return dict(state)
    return None


def _fit_nuts(model: Any, settings: SurrogateSettings, warm_start: Mapping[str, Any] | None) -> dict[str, Any]:
    """Sample the SAAS GP's hyper-parameters with NUTS and load the kept samples into ``model``.

    Mirrors botorch's ``fit_fully_bayesian_model_nuts`` step for step (so a cold fit draws
    exactly the same chain), but keeps Pyro's raw samples, from which the warm-start state is
    taken, and can start the chain from a given state.

    Returns:
        The state: per-site medians of the kept samples, as floats or lists of floats.

    """
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_value

    model.train()
    options: dict[str, Any] = {}
    warmup_steps = settings.warmup_steps
    if warm_start is not None:
        # Pyro's init strategy takes constrained values; it maps them to the sampler's
        # unconstrained space itself.
        options["init_strategy"] = init_to_value(values=_initial_values(model, warm_start))
        warmup_steps = settings.refit_warmup_steps
    nuts = NUTS(
        model.pyro_model.sample,
        jit_compile=settings.jit_compile,
        full_mass=True,
        ignore_jit_warnings=True,
        max_tree_depth=settings.max_tree_depth,
        **options,
    )
    mcmc = MCMC(nuts, warmup_steps=warmup_steps, num_samples=settings.num_samples, disable_progbar=True)
    mcmc.run()
    raw = {name: values[:: settings.thinning] for name, values in mcmc.get_samples().items()}
    # torch's median of an even count is the lower middle value, an actual sample, so the state
    # is a point the chain visited in every coordinate.
    state = {name: values.median(dim=0).values.tolist() for name, values in sorted(raw.items())}
    samples = model.pyro_model.postprocess_mcmc_samples(mcmc_samples=dict(raw))
    model.load_mcmc_samples(samples)
    model.eval()
    return state


def _fit_variational(model: Any, settings: SurrogateSettings) -> None:
    """Fit a normal approximation of the SAAS GP's hyper-parameter posterior; load draws from it into ``model``.

    The guide is a full-covariance normal over Pyro's unconstrained sites (log lengthscales,
    log shrinkage, ...), so the half-Cauchy priors' heavy tails become a normal's in log space;
    its draws are handled exactly as NUTS's kept samples are.
    """
    import pyro
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoMultivariateNormal
    from pyro.optim import ClippedAdam

    model.train()
    sample = model.pyro_model.sample
    # A fresh, scoped parameter store: the guide's parameters are named by its class only, so a
    # second fit in the same store would silently start from the first one's (and the user's
    # own store is left as it was). Validation off: botorch's model samples its lengthscale
    # vector without ``to_event``, which NUTS accepts and the ELBO's shape check rejects; the log
    # density is the same either way.
    with pyro.get_param_store().scope(), pyro.validation_enabled(False):
        guide = AutoMultivariateNormal(sample, init_scale=0.1)
        svi = SVI(sample, guide, ClippedAdam({"lr": settings.vi_learning_rate}), loss=Trace_ELBO())
        for _ in range(settings.vi_steps):
            svi.step()
        with torch.no_grad():
            draws = [guide() for _ in range(settings.vi_samples)]
    stacked = {name: torch.stack([draw[name] for draw in draws]) for name in draws[0]}
    model.load_mcmc_samples(model.pyro_model.postprocess_mcmc_samples(mcmc_samples=stacked))
    model.eval()


def _initial_values(model: Any, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` as tensors for Pyro's ``init_to_value``, checked against the model's sample sites."""
    import pyro

    # One prior draw of the model gives its latent sites, shapes and supports; drawn under a
    # forked generator so that checking does not move the chain's random stream.
    with torch.random.fork_rng():
        trace = pyro.poutine.trace(model.pyro_model.sample).get_trace()
    sites = {name: site for name, site in trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]}
    if set(state) != set(sites):
        raise ValueError(
            f"warm-start state has sites {sorted(state)}; this model samples {sorted(sites)} "
            "(a state from another model or space?)"
        )
    values = {}
    for name, site in sites.items():
        value = torch.as_tensor(state[name], dtype=site["value"].dtype, device=site["value"].device)
        if value.shape != site["value"].shape:
            raise ValueError(
                f"warm-start state site {name!r} has shape {tuple(value.shape)}; "
                f"this model's is {tuple(site['value'].shape)}"
            )
        if not bool(site["fn"].support.check(value).all()):
            raise ValueError(f"warm-start state site {name!r}={state[name]!r} is outside its prior's support")
        values[name] = value
    return values


def _map_state(model: Any) -> dict[str, Any]:
    """The MAP-SAAS ensemble's :data:`MAP_STATE_KEYS` tensors as (nested) lists of floats."""
    tensors = model.state_dict()
    return {key: tensors[key].tolist() for key in MAP_STATE_KEYS}


def _load_map_state(model: Any, state: Mapping[str, Any]) -> None:
    """Start ``model``'s MAP fit from a previous fit's state, checked against its shapes."""
    if set(state) != set(MAP_STATE_KEYS):
        raise ValueError(
            f"warm-start state has keys {sorted(state)}; a saas_map model takes {sorted(MAP_STATE_KEYS)} "
            "(a state from another model?)"
        )
    current = model.state_dict()
    values = {}
    for key in MAP_STATE_KEYS:
        value = torch.as_tensor(state[key], dtype=current[key].dtype, device=current[key].device)
        if value.shape != current[key].shape:
            raise ValueError(
                f"warm-start state {key!r} has shape {tuple(value.shape)}; this model's is {tuple(current[key].shape)}"
            )
        values[key] = value
    model.load_state_dict(values, strict=False)
