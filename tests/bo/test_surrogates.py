"""Every score surrogate kind: fits, posterior shapes, qNEHVI on top, NUTS options and warm starts."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from autopeft.bo import searchers
from autopeft.bo.acquisition import AcquisitionSettings, build_acquisition
from autopeft.bo.surrogate import (
    STATE_KEY,
    SURROGATE_KINDS,
    ConstantScoreModel,
    SurrogateSettings,
    fit_surrogate,
    latest_state,
)
from autopeft.errors import ConfigError
from autopeft.experiments.search import run_search
from autopeft.peft import BackboneShape
from autopeft.space import SearchSpace

from .conftest import SyntheticObjective

ROOT = Path(__file__).resolve().parents[2]
SHAPE = BackboneShape("minilm", 384, 6, 12)
SPACE = SearchSpace.from_config({"name": "t", "modules": ["sa", "pa", "prefix"], "layer_selection": True}, SHAPE)
BACKBONE_PARAMS = 22_713_216
#: 8 samples thinned by 4: an ensemble of 2 hyper-parameter samples.
NUTS = {"warmup_steps": 8, "num_samples": 8, "thinning": 4}
ENSEMBLE_SIZE = {"saas": 2, "saas_map": 4, "saas_vi": 4}


def smooth(X: torch.Tensor) -> torch.Tensor:
    """A smooth function of the first two of four inputs (the others are irrelevant)."""
    return (torch.sin(3.0 * X[:, 0]) + (X[:, 1] - 0.5) ** 2).unsqueeze(-1)


def data(n: int = 15, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=gen, dtype=torch.float64)
    return X, smooth(X) + 0.01 * torch.randn(n, 1, generator=gen, dtype=torch.float64)


def space_data(n: int = 15, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores on the real space that rise with the SA size column."""
    X = SPACE.encode(SPACE.sample(random.Random(seed), n))
    gen = torch.Generator().manual_seed(seed)
    return X, 0.5 + 0.3 * X[:, [SPACE.mask_dims]] + 0.01 * torch.randn(n, 1, generator=gen, dtype=torch.float64)


def settings(kind: str = "saas", **extra: Any) -> SurrogateSettings:
    return SurrogateSettings.from_config({"kind": kind, **NUTS, **extra})


@pytest.mark.parametrize("kind", SURROGATE_KINDS)
def test_each_kind_fits_and_gives_a_posterior_of_the_right_shape(kind: str) -> None:
    X, Y = data()
    chosen = settings(kind)
    fitted = fit_surrogate(X, Y, chosen, seed=0)
    assert fitted.num_observations == 15 and fitted.seconds > 0
    test = torch.rand(3, 2, 4, dtype=torch.float64)  # batch x q x d
    posterior = fitted.model.posterior(test)
    ensemble = (ENSEMBLE_SIZE[kind],) if kind in ENSEMBLE_SIZE else ()
    assert chosen.is_ensemble == bool(ensemble)
    assert posterior.mean.shape == (3, *ensemble, 2, 1)
    assert posterior.variance.shape == (3, *ensemble, 2, 1)
    assert torch.isfinite(posterior.mean).all() and (posterior.variance > 0).all()
    # NUTS and the MAP-SAAS ensemble have a state to warm-start from; it survives JSON unchanged
    if kind in ("saas", "saas_map"):
        assert fitted.state is not None and json.loads(json.dumps(fitted.state)) == fitted.state
        lengthscales = "_kernel_inv_length_sq" if kind == "saas" else "covar_module.base_kernel.raw_lengthscale"
        assert torch.tensor(fitted.state[lengthscales]).shape[-1] == 4
    else:
        assert fitted.state is None


@pytest.mark.parametrize("kind", ["saas_map", "saas_vi", "constant"])
def test_fast_kinds_work_inside_qnehvi(kind: str) -> None:
    X, Y = space_data()
    chosen = settings(kind)
    fitted = fit_surrogate(X, Y, chosen, seed=0)
    ref = torch.tensor([0.4, -20.0], dtype=torch.float64)
    acq = build_acquisition(
        fitted.model,
        X,
        ref,
        SPACE,
        BACKBONE_PARAMS,
        AcquisitionSettings(name="qnehvi", mc_samples=32),
        ensemble=chosen.is_ensemble,
        X_pending=X[:2],
        seed=0,
    )
    candidates = SPACE.encode(SPACE.sample(random.Random(7), 5)).unsqueeze(-2)
    values = acq(candidates)
    assert values.shape == (5,) and torch.isfinite(values).all() and (values >= 0).all()
    # equal predicted score (exactly so for the constant model): the cheaper configuration is worth more
    small = SPACE.point(mask=[True] + [False] * 5, sa=384)
    large = SPACE.point(sa=384, pa=384, prefix=384)
    pair = acq(SPACE.encode([small, large]).unsqueeze(-2))
    assert pair[0] > pair[1]


def test_constant_posterior_is_the_observed_mean_and_variance_everywhere() -> None:
    X, Y = data()
    model = fit_surrogate(X, Y, settings("constant"), seed=0).model
    assert isinstance(model, ConstantScoreModel)
    near, far = torch.zeros(1, 4, 4, dtype=torch.float64), torch.rand(6, 4, 4, dtype=torch.float64)
    for test in (near, far, X):
        posterior = model.posterior(test)
        assert torch.allclose(posterior.mean, Y.mean().expand(*test.shape[:-1], 1))
        assert torch.allclose(posterior.variance, Y.var().expand(*test.shape[:-1], 1))
    covariance = model.posterior(far).distribution.covariance_matrix
    assert torch.equal(covariance, torch.diag_embed(torch.diagonal(covariance, dim1=-2, dim2=-1)))
    # identical scores still give a valid normal
    flat = ConstantScoreModel(torch.full((5, 1), 0.7, dtype=torch.float64)).posterior(near)
    assert flat.rsample(torch.Size([2])).shape == (2, 1, 4, 1)


def test_map_saas_predicts_a_smooth_function_far_better_than_the_constant() -> None:
    X, Y = data(n=40, seed=1)
    test_X, _ = data(n=200, seed=2)
    truth = smooth(test_X)

    def r2(kind: str) -> float:
        model = fit_surrogate(X, Y, settings(kind), seed=0).model
        with torch.no_grad():
            posterior = model.posterior(test_X)
        mean = posterior.mixture_mean if kind == "saas_map" else posterior.mean
        return float(1 - ((mean - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())

    # a predictor that ignores X cannot beat R² = 0 (the test set's own mean)
    assert r2("constant") < 0.05
    assert r2("saas_map") > 0.8


def test_default_nuts_fit_is_botorchs_fit_unchanged() -> None:
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
    from botorch.models.transforms.outcome import Standardize

    X, Y = data()
    ours = fit_surrogate(X, Y, settings(), seed=5).model
    with torch.random.fork_rng():
        torch.manual_seed(5)
        theirs = SaasFullyBayesianSingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
        fit_fully_bayesian_model_nuts(theirs, disable_progbar=True, **NUTS)
    assert torch.equal(ours.median_lengthscale, theirs.median_lengthscale)
    assert torch.equal(ours.posterior(X).mean, theirs.posterior(X).mean)


def test_warm_start_runs_fewer_warmup_steps_from_the_state_and_returns_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyro.infer

    calls: list[dict[str, Any]] = []
    real_mcmc, real_nuts = pyro.infer.MCMC, pyro.infer.NUTS

    def mcmc(kernel: Any, **kwargs: Any) -> Any:
        calls.append({"warmup_steps": kwargs["warmup_steps"], "init": kernel._init_strategy})
        return real_mcmc(kernel, **kwargs)

    monkeypatch.setattr(pyro.infer, "MCMC", mcmc)
    monkeypatch.setattr(pyro.infer, "NUTS", real_nuts)
    X, Y = data(n=20)
    chosen = settings(warm_start=True, refit_warmup_steps=3)
    cold = fit_surrogate(X[:15], Y[:15], chosen, seed=0)
    assert not cold.warm_started
    state = json.loads(json.dumps(cold.state))  # as a search logs and reloads it
    warm = fit_surrogate(X, Y, chosen, seed=1, warm_start=state)
    assert warm.warm_started and warm.state is not None and warm.state != cold.state
    assert warm.model.posterior(X).mean.shape == (2, 20, 1)
    assert [c["warmup_steps"] for c in calls] == [8, 3]
    # the warm chain starts at the state's values (Pyro's init_to_value keeps them)
    init = calls[1]["init"]
    assert init.keywords["values"]["kernel_tausq"].item() == state["kernel_tausq"]
    assert init.keywords["values"]["_kernel_inv_length_sq"].tolist() == state["_kernel_inv_length_sq"]


def test_same_seed_and_state_give_the_same_model() -> None:
    X, Y = data()
    chosen = settings(warm_start=True, refit_warmup_steps=4)
    state = fit_surrogate(X[:12], Y[:12], chosen, seed=0).state
    first = fit_surrogate(X, Y, chosen, seed=3, warm_start=state)
    again = fit_surrogate(X, Y, chosen, seed=3, warm_start=dict(state))
    other = fit_surrogate(X, Y, chosen, seed=4, warm_start=state)
    assert first.state == again.state
    assert torch.equal(first.model.posterior(X).mean, again.model.posterior(X).mean)
    assert first.state != other.state  # the seed does drive the chain


def test_a_state_from_another_space_is_refused() -> None:
    X, Y = data()
    state = fit_surrogate(X, Y, settings(), seed=0).state
    wider = torch.rand(15, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"_kernel_inv_length_sq.*shape \(4,\).*\(5,\)"):
        fit_surrogate(wider, Y, settings(), seed=0, warm_start=state)
    with pytest.raises(ValueError, match=r"sites"):
        fit_surrogate(X, Y, settings(), seed=0, warm_start={"mean": 0.0})
    # the other kinds have no chain to start: a state is ignored
    assert not fit_surrogate(X, Y, settings("gp"), seed=0, warm_start=state).warm_started


def test_map_saas_warm_start_begins_at_the_state_and_keeps_its_taus(monkeypatch: pytest.MonkeyPatch) -> None:
    import botorch.fit

    X, Y = data(n=20)
    chosen = settings("saas_map", warm_start=True)
    cold = fit_surrogate(X[:15], Y[:15], chosen, seed=0)
    starts: list[dict[str, torch.Tensor]] = []
    real = botorch.fit.fit_gpytorch_mll

    def recording(mll: Any, **kwargs: Any) -> Any:
        starts.append({k: v.clone() for k, v in mll.model.state_dict().items()})
        return real(mll, **kwargs)

    monkeypatch.setattr(botorch.fit, "fit_gpytorch_mll", recording)
    warm = fit_surrogate(X, Y, chosen, seed=1, warm_start=cold.state)
    again = fit_surrogate(X, Y, chosen, seed=1, warm_start=json.loads(json.dumps(cold.state)))
    fresh = fit_surrogate(X, Y, chosen, seed=1)
    assert warm.warm_started and not fresh.warm_started
    for key, value in cold.state.items():  # L-BFGS starts exactly at the previous fit's optimum
        assert starts[0][key].tolist() == value
    assert warm.state["taus"] == cold.state["taus"] != fresh.state["taus"]  # seed 1 alone would draw others
    assert warm.state == again.state  # from a JSON round trip of the state: the same model
    assert torch.equal(warm.model.posterior(X).mean, again.model.posterior(X).mean)
    assert warm.state != cold.state  # it did refit, to the new data


def test_a_map_state_from_another_model_or_space_is_refused() -> None:
    X, Y = data()
    chosen = settings("saas_map", warm_start=True)
    state = fit_surrogate(X, Y, chosen, seed=0).state
    with pytest.raises(ValueError, match=r"raw_lengthscale.*shape"):
        fit_surrogate(torch.rand(15, 5, dtype=torch.float64), Y, chosen, seed=0, warm_start=state)
    nuts_state = fit_surrogate(X, Y, settings(), seed=0).state
    with pytest.raises(ValueError, match=r"a saas_map model takes"):
        fit_surrogate(X, Y, chosen, seed=0, warm_start=nuts_state)


def test_jit_compiled_nuts_fits() -> None:
    X, Y = data()
    fitted = fit_surrogate(X, Y, settings(jit_compile=True), seed=0)
    assert fitted.model.posterior(X).mean.shape == (2, 15, 1)


def test_latest_state_is_the_last_one_logged() -> None:
    proposals = [
        {"info": {"phase": "init"}},
        {"info": {"phase": "bo", STATE_KEY: {"mean": 1.0}}},
        {"info": {"phase": "bo"}},
        {"info": {"phase": "bo", STATE_KEY: {"mean": 2.0}}},
        {"info": {"phase": "bo"}},
    ]
    assert latest_state(proposals) == {"mean": 2.0}
    assert latest_state(proposals[:1]) is None


@pytest.mark.parametrize("kind", ["saas", "saas_map"])
def test_warm_started_search_logs_states_and_resumes_to_the_same_proposals(
    kind: str, search_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = searchers.fit_surrogate

    def recording(*args: Any, warm_start: Any = None, **kwargs: Any) -> Any:
        seen.append(warm_start is not None)
        return real(*args, warm_start=warm_start, **kwargs)

    monkeypatch.setattr(searchers, "fit_surrogate", recording)
    cfg = search_cfg(
        f"search.surrogate.kind={kind}", "search.surrogate.warm_start=true", "search.surrogate.refit_warmup_steps=4"
    )
    reference = run_search(cfg, tmp_path / "reference", objective=SyntheticObjective())
    bo = [p for p in reference["proposals"] if p["info"]["phase"] == "bo"]
    assert len(bo) == 3 and all(STATE_KEY in p["info"] for p in bo)  # batch size 1: each is a batch's first
    assert seen == [False, True, True]  # the first fit is cold, each refit starts from the last state
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "run", objective=SyntheticObjective(interrupt_after=7))
    resumed = run_search(cfg, tmp_path / "run", resume=True, objective=SyntheticObjective())
    assert [p["point"] for p in resumed["proposals"]] == [p["point"] for p in reference["proposals"]]
    assert [p["info"].get(STATE_KEY) for p in resumed["proposals"]] == [
        p["info"].get(STATE_KEY) for p in reference["proposals"]
    ]


def test_config_defaults_are_todays_behaviour() -> None:
    node = OmegaConf.load(ROOT / "conf" / "search" / "bo.yaml").surrogate
    assert SurrogateSettings.from_config(node) == SurrogateSettings()
    assert SurrogateSettings() == SurrogateSettings(
        kind="saas", jit_compile=False, warm_start=False, refit_warmup_steps=64
    )


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ({"kind": "foo"}, r"search\.surrogate\.kind='foo'; allowed: 'saas', 'gp', 'saas_map', 'saas_vi', 'constant'$"),
        ({"refit_warmup_steps": 0}, r"search\.surrogate\.refit_warmup_steps=0 must be a positive integer$"),
        ({"refit_warmup_steps": True}, r"refit_warmup_steps=True must be a positive integer$"),
        ({"vi_steps": 0}, r"search\.surrogate\.vi_steps=0 must be a positive integer$"),
        ({"vi_samples": 2.5}, r"search\.surrogate\.vi_samples=2\.5 must be a positive integer$"),
        ({"vi_learning_rate": 0}, r"search\.surrogate\.vi_learning_rate=0 must be a positive number$"),
        ({"vi_learning_rate": "fast"}, r"search\.surrogate\.vi_learning_rate='fast' must be a positive number$"),
        ({"jit_compile": "yes"}, r"search\.surrogate\.jit_compile='yes'; allowed: true, false$"),
        ({"warm_start": 1}, r"search\.surrogate\.warm_start=1; allowed: true, false$"),
        ({"warmstart": True}, r"unknown key search\.surrogate\.warmstart \(did you mean 'warm_start'\?\)"),
    ],
)
def test_bad_values_are_named_with_the_allowed_ones(node: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SurrogateSettings.from_config(node)


def test_variational_saas_finds_the_relevant_inputs_as_nuts_does() -> None:
    """``saas_vi`` approximates the SAAS posterior: short lengthscales on the two inputs that matter.

    The function depends on inputs 0 and 1 of 4; the SAAS prior shrinks the other two away. The
    variational ensemble must agree with NUTS on which inputs matter, and its posterior mean must
    rank held-out points as well as NUTS's (within 0.05 Spearman) on the same data.
    """
    from scipy import stats

    X, Y = data(n=40, seed=3)
    X_held, Y_held = data(n=60, seed=4)
    nuts = fit_surrogate(X, Y, SurrogateSettings(kind="saas", warmup_steps=64, num_samples=32, thinning=4), seed=0)
    vi = fit_surrogate(X, Y, SurrogateSettings(kind="saas_vi"), seed=0)
    rho = {}
    for name, fitted in (("nuts", nuts), ("vi", vi)):
        lengthscales = fitted.model.median_lengthscale.reshape(-1)
        assert lengthscales[:2].max() < lengthscales[2:].min(), (name, lengthscales)
        with torch.no_grad():
            mean = fitted.model.posterior(X_held).mixture_mean.reshape(-1)
        rho[name] = stats.spearmanr(mean.numpy(), Y_held.reshape(-1).numpy()).statistic
    assert rho["vi"] > 0.9 and rho["vi"] >= rho["nuts"] - 0.05, rho


def test_variational_fit_is_seeded_and_leaves_pyros_parameter_store_alone() -> None:
    import pyro

    X, Y = data()
    pyro.clear_param_store()
    pyro.param("users_own", torch.tensor(1.0))
    draws = [
        fit_surrogate(X, Y, SurrogateSettings(kind="saas_vi", vi_steps=30), seed=seed).model.median_lengthscale
        for seed in (0, 0, 1)
    ]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    # the guide trained in a scoped store: nothing of it remains, and the user's parameter does
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    pyro.clear_param_store()
