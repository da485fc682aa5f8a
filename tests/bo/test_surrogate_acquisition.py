"""SAAS-GP surrogate (short NUTS runs) and the NEHVI acquisition with an exact parameter objective."""

from __future__ import annotations

import random

import pytest
import torch

from autopeft.bo.acquisition import AcquisitionSettings, build_acquisition, objectives_objective
from autopeft.bo.surrogate import SurrogateSettings, fit_surrogate
from autopeft.errors import ConfigError
from autopeft.peft import BackboneShape
from autopeft.space import SearchSpace

SHAPE = BackboneShape("minilm", 384, 6, 12)
SPACE = SearchSpace.from_config({"name": "t", "modules": ["sa", "pa", "prefix"], "layer_selection": True}, SHAPE)
BACKBONE_PARAMS = 22_713_216
TINY_NUTS = SurrogateSettings(warmup_steps=16, num_samples=16, thinning=4)


def data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores that depend on the SA size column only (plus a little noise)."""
    points = SPACE.sample(random.Random(seed), n)
    X = SPACE.encode(points)
    gen = torch.Generator().manual_seed(seed)
    Y = 0.5 + 0.3 * X[:, [SPACE.mask_dims]] + 0.01 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return X, Y


def test_saas_fit_is_seeded_and_learns_the_relevant_dimension() -> None:
    X, Y = data()
    first = fit_surrogate(X, Y, TINY_NUTS, seed=3)
    again = fit_surrogate(X, Y, TINY_NUTS, seed=3)
    probe = X[:4]
    mean = first.model.posterior(probe).mean.mean(0)
    assert torch.allclose(mean, again.model.posterior(probe).mean.mean(0))
    # 16 samples thinned by 4 -> 4 hyper-parameter samples in the ensemble
    assert first.model.batch_shape == torch.Size([4])
    # the SA column matters, the layer bits do not: SAAS gives it the shortest lengthscale
    lengthscales = first.model.median_lengthscale
    assert int(lengthscales.argmin()) == SPACE.mask_dims
    assert first.num_observations == 24 and first.seconds > 0


def test_standard_gp_option() -> None:
    X, Y = data()
    fitted = fit_surrogate(X, Y, SurrogateSettings(kind="gp"), seed=0)
    low, high = X[:1].clone(), X[:1].clone()
    low[0, SPACE.mask_dims], high[0, SPACE.mask_dims] = 0.0, 1.0
    assert fitted.model.posterior(high).mean > fitted.model.posterior(low).mean


@pytest.mark.parametrize("ensemble", [True, False])
def test_parameter_objective_is_exact_and_broadcasts(ensemble: bool) -> None:
    points = SPACE.sample(random.Random(1), 5)
    X = SPACE.encode(points)
    samples = torch.rand(7, 3, *((2,) if ensemble else ()), 5, 1, dtype=torch.float64)
    objective = objectives_objective(SPACE, BACKBONE_PARAMS, ensemble)
    out = objective(samples, X.expand(3, 5, -1))
    assert out.shape == (*samples.shape[:-1], 2)
    assert torch.equal(out[..., 0:1], samples)
    expected = torch.tensor([-SPACE.param_percent(p, BACKBONE_PARAMS) for p in points], dtype=torch.float64)
    assert torch.allclose(out[0, 0, ..., 1].reshape(-1, 5)[0], expected)


@pytest.mark.parametrize("name", ["qnehvi", "qlognehvi"])
def test_nehvi_prefers_fewer_parameters_at_equal_predicted_score(name: str) -> None:
    X, _ = data(seed=2)
    Y = torch.full((X.shape[0], 1), 0.7, dtype=torch.float64) + 0.001 * torch.randn(
        X.shape[0], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    fitted = fit_surrogate(X, Y, TINY_NUTS, seed=0)
    ref = torch.tensor([0.6, -20.0], dtype=torch.float64)
    acq = build_acquisition(
        fitted.model, X, ref, SPACE, BACKBONE_PARAMS, AcquisitionSettings(name=name), ensemble=True, seed=0
    )
    small = SPACE.point(mask=[True] + [False] * 5, sa=1)
    large = SPACE.point(sa=384, pa=384, prefix=384)
    values = acq(SPACE.encode([small, large]).unsqueeze(-2))
    assert values.shape == (2,)
    assert values[0] > values[1]


def test_pending_points_lower_the_value_of_the_same_candidate() -> None:
    X, Y = data(seed=4)
    fitted = fit_surrogate(X, Y, TINY_NUTS, seed=0)
    ref = torch.tensor([0.4, -20.0], dtype=torch.float64)
    settings = AcquisitionSettings(name="qnehvi")
    candidate = SPACE.encode([SPACE.point(mask=[True] * 6, sa=384)])
    free = build_acquisition(fitted.model, X, ref, SPACE, BACKBONE_PARAMS, settings, ensemble=True, seed=0)
    taken = build_acquisition(
        fitted.model, X, ref, SPACE, BACKBONE_PARAMS, settings, ensemble=True, X_pending=candidate, seed=0
    )
    assert taken(candidate.unsqueeze(0)) < free(candidate.unsqueeze(0))


def test_the_acquisition_does_not_depend_on_the_global_generator() -> None:
    """A resumed search has run less before its next proposal: its global torch state differs.

    Baseline pruning draws posterior samples from torch's global generator; the acquisition
    must be seeded by its own ``seed`` alone, and leave the global generator as it found it.
    """
    X, Y = data(seed=4)
    fitted = fit_surrogate(X, Y, TINY_NUTS, seed=0)
    ref = torch.tensor([0.4, -20.0], dtype=torch.float64)
    settings = AcquisitionSettings(name="qnehvi", prune_baseline=True)
    candidates = SPACE.encode(SPACE.sample(random.Random(0), 16)).unsqueeze(-2)
    values = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        acq = build_acquisition(fitted.model, X, ref, SPACE, BACKBONE_PARAMS, settings, ensemble=True, seed=7)
        assert torch.equal(torch.get_rng_state(), before)
        values.append(acq(candidates).detach())
    assert torch.equal(values[0], values[1])


@pytest.mark.parametrize(
    ("cls", "node", "pattern"),
    [
        (SurrogateSettings, {"kind": "saasbo"}, r"kind='saasbo'; allowed: 'saas', 'gp'"),
        (SurrogateSettings, {"warmup_steps": 0}, r"warmup_steps=0 must be a positive integer"),
        (SurrogateSettings, {"num_samples": 8, "thinning": 16}, r"thinning=16 exceeds num_samples=8"),
        (SurrogateSettings, {"warmup": 10}, r"warmup"),
        (AcquisitionSettings, {"name": "ehvi"}, r"name='ehvi'; allowed: 'qnehvi', 'qlognehvi'"),
        (AcquisitionSettings, {"mc_samples": 0}, r"mc_samples=0 must be a positive integer"),
    ],
)
def test_bad_settings_are_named(cls: type, node: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        cls.from_config(node)
