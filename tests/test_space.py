"""The AutoPEFT search space: sizes, encoding, neighbours, sampling and decoding to PeftSpecs."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from autopeft.errors import ConfigError
from autopeft.peft import BackboneShape, validate_spec
from autopeft.peft.params import paper_param_count
from autopeft.space import MODULES, Point, SearchSpace, default_choices

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SPACE_FILES = sorted(p.stem for p in (CONF_DIR / "space").glob("*.yaml"))

BERT_BASE = BackboneShape("bert_base_arch", 768, 12, 12)
BERT_LARGE = BackboneShape("bert_large_arch", 1024, 24, 16)
MINILM = BackboneShape("minilm", 384, 6, 12)
BERT_BASE_PARAMS = 109_482_240


@cache
def space_node(name: str) -> dict:
    """The ``space`` node of conf/space/<name>.yaml, composed by Hydra when it has a defaults list."""
    node = OmegaConf.load(CONF_DIR / "space" / f"{name}.yaml")
    if "defaults" not in node:
        return OmegaConf.to_container(node)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name="run", overrides=[f"+space={name}"])
        except ConfigCompositionException:  # run.yaml already has a `space` default
            cfg = compose(config_name="run", overrides=[f"space={name}"])
    return OmegaConf.to_container(cfg.space)


def space(name: str, shape: BackboneShape = BERT_BASE) -> SearchSpace:
    return SearchSpace.from_config(space_node(name), shape)


def base_cfg(**changes: object) -> dict:
    cfg = {"name": "t", "modules": ["sa", "pa", "prefix"], "layer_selection": True, "fixed": {}}
    cfg.update(changes)
    return cfg


# ---------------------------------------------------------------- choices and sizes


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        (768, (0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768)),
        (1024, (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
        (384, (0, 1, 3, 6, 12, 24, 48, 96, 192, 384)),
    ],
)
def test_choices_halve_the_hidden_size(hidden: int, expected: tuple[int, ...]) -> None:
    assert default_choices(hidden) == expected
    shape = BackboneShape("b", hidden, 4, 4)
    assert space("autopeft", shape).module_choices == {"sa": expected, "pa": expected, "prefix": expected}


def test_space_sizes_match_the_paper() -> None:
    base = space("autopeft")
    assert base.size == 5_451_776 == 2**12 * 11**3
    assert (base.num_layers, base.dims) == (12, 15)
    assert space("autopeft", BERT_LARGE).size == 2**24 * 12**3
    assert space("sa").size == 11 and space("sa").dims == 1
    assert space("sa_layer").size == 2**12 * 11
    assert space("sa_pa_pt").size == 11**3
    assert space("autopeft_lora").size == 2**12 * 11**4
    assert space("autopeft", MINILM).size == 2**6 * 10**3


def test_sa_pa_pt_layer_is_the_autopeft_space_renamed() -> None:
    full, alias = space("autopeft"), space("sa_pa_pt_layer")
    assert alias.name == "sa_pa_pt_layer"
    assert {**alias.to_json_dict(), "name": "autopeft"} == full.to_json_dict()


def test_json_dict_describes_the_space() -> None:
    info = json.loads(json.dumps(space("autopeft_lora").to_json_dict()))
    assert info["modules"] == ["sa", "pa", "prefix", "lora"]
    assert info["choices"]["lora"] == list(default_choices(768))
    assert info["fixed"]["lora_targets"] == ["query", "value"]
    assert (info["num_layers"], info["hidden_size"], info["dims"]) == (12, 768, 16)
    assert info["size"] == 2**12 * 11**4 and info["layer_selection"] is True


def test_modules_are_put_in_canonical_order_and_choices_can_be_overridden() -> None:
    s = SearchSpace.from_config(base_cfg(modules=["prefix", "sa"], choices={"sa": [0, 8, 64]}), BERT_BASE)
    assert s.modules == ("sa", "prefix")
    assert s.module_choices["sa"] == (0, 8, 64) and s.size == 2**12 * 3 * 11


# ---------------------------------------------------------------- encoding


@pytest.mark.parametrize("shape", [BERT_BASE, MINILM], ids=lambda s: s.name)
@pytest.mark.parametrize("name", SPACE_FILES)
def test_encode_decode_round_trip_for_every_space_file(name: str, shape: BackboneShape) -> None:
    s = space(name, shape)
    points = s.sample(torch.Generator().manual_seed(0), 64)
    points += [s.head_only(), s.point(**{m: c[-1] for m, c in s.module_choices.items()})]
    X = s.encode(points)
    assert X.dtype == torch.float64 and X.shape == (len(points), s.dims)
    assert X.min() >= 0 and X.max() <= 1
    assert s.decode(X) == points
    # Noise below half a step, and values outside the cube, still decode to the same points.
    step = min(1 / (len(c) - 1) for c in s.module_choices.values())
    noise = (torch.rand(X.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5) * 0.9 * step
    assert s.decode(X + noise) == points
    outside = X.clone()
    outside[X == 0], outside[X == 1] = -0.3, 1.3
    assert s.decode(outside) == points
    assert s.decode(X[0]) == points[:1]


def test_encoding_is_ordinal() -> None:
    s = space("sa")
    X = s.encode([s.point(sa=0), s.point(sa=3), s.point(sa=768)])
    assert X.squeeze(1).tolist() == [0.0, 0.2, 1.0]
    with pytest.raises(ValueError, match=r"shape \(n, 1\)"):
        s.decode(torch.zeros(2, 3))


# ---------------------------------------------------------------- neighbours and sampling


def _one_step_apart(s: SearchSpace, a: Point, b: Point) -> bool:
    bit_flips = sum(x != y for x, y in zip(a.mask, b.mask, strict=True))
    moves = [
        abs(c.index(x) - c.index(y))
        for (_, x), (_, y), c in zip(a.sizes, b.sizes, s.module_choices.values(), strict=True)
        if x != y
    ]
    return (bit_flips, moves) in ((1, []), (0, [1]))


@pytest.mark.parametrize("name", ["autopeft", "sa", "sa_pa_pt", "autopeft_lora"])
def test_neighbours_are_one_step_away_unique_and_in_the_space(name: str) -> None:
    s = space(name)
    for point in [*s.sample(random.Random(3), 20), s.head_only()]:
        near = s.neighbours(point)
        assert len(set(near)) == len(near) and point not in near
        assert all(s.contains(n) and _one_step_apart(s, point, n) for n in near)
        ends = sum(size in (c[0], c[-1]) for (_, size), c in zip(point.sizes, s.module_choices.values(), strict=True))
        assert len(near) == s.mask_dims + 2 * len(s.modules) - ends


def test_neighbours_without_layer_selection_only_move_sizes() -> None:
    s = space("sa")
    assert s.neighbours(s.point(sa=48)) == [s.point(sa=24), s.point(sa=96)]
    assert s.neighbours(s.point(sa=0)) == [s.point(sa=1)]


@pytest.mark.parametrize("make_rng", [lambda: torch.Generator().manual_seed(7), lambda: random.Random(7)])
def test_sampling_is_reproducible_and_covers_the_space(make_rng: Callable[[], torch.Generator | random.Random]) -> None:
    s = space("autopeft")
    points = s.sample(make_rng(), 1500)
    assert points == s.sample(make_rng(), 1500)
    assert all(s.contains(p) for p in points)
    for module, options in s.module_choices.items():
        assert {p.size_of(module) for p in points} == set(options)
    on = torch.tensor([p.mask for p in points], dtype=torch.float64).mean(0)
    assert ((on > 0.45) & (on < 0.55)).all()  # each bit is a fair coin
    assert s.sample(make_rng(), 0) == []


def test_sampling_without_layer_selection_keeps_every_layer() -> None:
    s = space("sa_pa_pt")
    assert all(all(p.mask) for p in s.sample(torch.Generator().manual_seed(0), 50))


def test_small_spaces_can_be_enumerated() -> None:
    s = space("sa")
    assert [p.size_of("sa") for p in s.iter_points()] == list(default_choices(768))
    assert len(set(space("sa_pa").iter_points())) == 121
    with pytest.raises(ValueError, match="5451776 points"):
        next(space("autopeft").iter_points())


# ---------------------------------------------------------------- meaning of a point


@pytest.mark.parametrize("name", SPACE_FILES)
def test_to_peft_is_valid_and_param_count_matches_the_paper_formula(name: str) -> None:
    s = space(name)
    for point in [*s.sample(torch.Generator().manual_seed(2), 40), s.head_only()]:
        spec = s.to_peft(point)
        assert validate_spec(spec, BERT_BASE) is spec
        assert spec.layers == point.layers and spec.name == "autopeft"
        assert s.param_count(point) == paper_param_count(spec, BERT_BASE, BERT_BASE_PARAMS)
        assert math.isclose(s.param_percent(point, BERT_BASE_PARAMS), 100 * s.param_count(point) / BERT_BASE_PARAMS)


@pytest.mark.parametrize("name", SPACE_FILES)
def test_vectorised_param_count_equals_the_per_point_count(name: str) -> None:
    s = space(name)
    points = [*s.sample(torch.Generator().manual_seed(3), 50), s.head_only()]
    X = s.encode(points)
    counts = s.param_count_tensor(X)
    assert counts.shape == (len(points), 1)
    assert counts.squeeze(-1).tolist() == [float(s.param_count(p)) for p in points]
    # extra batch dimensions (botorch's b x q x d) are kept
    assert s.param_count_tensor(X.view(len(points), 1, -1)).shape == (len(points), 1, 1)


def test_to_peft_uses_fixed_fields_and_leaves_unsearched_modules_off() -> None:
    s = space("autopeft_lora")
    mask = tuple(i >= 4 for i in range(12))
    spec = s.to_peft(s.point(mask, sa=48, prefix=6, lora=6), name="found")
    got = {k: v for k, v in spec.to_dict().items() if k not in ("lora_dropout", "adapter_dropout", "full_finetune")}
    assert got == {
        "name": "found",
        "layers": list(range(4, 12)),
        "sa_size": 48,
        "pa_size": 0,
        "prefix_len": 6,
        "lora_rank": 6,
        "pa_scale": 4.0,
        "prefix_bottleneck": 800,
        "lora_alpha": 8.0,
        "lora_targets": ["query", "value"],
        "sa_placement": "pfeiffer",  # the paper's serial adapter and initialisation (space.fixed)
        "adapter_init": "adapterhub",
        "gated": False,  # the baselines' options stay off in searched configurations
        "layer_switch": False,
        "adaptable_layers": None,
        "switch_temperature": 0.1,
        "adamix_experts": 0,
        "adamix_share_up": True,
        "adamix_share_down": False,
        "adamix_consistency": 0.0,
        "lora_rank_pattern": {},
        "lora_alpha_rule": "constant",
        "use_dora": False,
    }
    assert s.param_count(s.point(mask, sa=48, prefix=6, lora=6)) == 2 * 768 * (48 + 6 + 6 * 2) * 8
    assert s.describe(s.point(mask, sa=48, prefix=6)) == "SA 48 + PT 6 on layers 4–11"
    sa = space("sa").to_peft(space("sa").point(sa=96))
    assert (sa.layers, sa.sa_size, sa.pa_size, sa.prefix_len, sa.lora_rank) == (tuple(range(12)), 96, 0, 0, 0)


def test_point_json_round_trip() -> None:
    s = space("autopeft_lora")
    for point in s.sample(torch.Generator().manual_seed(4), 10):
        data = json.loads(json.dumps(point.to_dict()))
        assert Point.from_dict(data) == point and hash(Point.from_dict(data)) == hash(point)
    point = s.point(sa=3, lora=1)
    shuffled = {"sizes": dict(reversed(point.to_dict()["sizes"].items())), "mask": point.to_dict()["mask"]}
    assert Point.from_dict(shuffled) == point
    with pytest.raises(ConfigError, match=r"unknown module 'adaptr'.*'sa', 'pa', 'prefix', 'lora'"):
        Point.from_dict({"mask": [True], "sizes": {"adaptr": 3}})


def test_canonical_merges_every_head_only_point() -> None:
    s = space("autopeft")
    head = s.head_only()
    assert head.is_head_only and all(head.mask) and s.param_count(head) == 0
    zero_sizes = s.point(tuple(i % 2 == 0 for i in range(12)))
    empty_mask = s.point((False,) * 12, sa=48, prefix=6)
    assert s.canonical(zero_sizes) == s.canonical(empty_mask) == s.canonical(head) == head
    assert s.describe(empty_mask) == s.describe(head) == "head only (frozen backbone)"
    real = s.point(tuple(i >= 6 for i in range(12)), pa=12)
    assert s.canonical(real) == real
    points = s.sample(random.Random(0), 300)
    canon = {s.canonical(p) for p in points}
    assert all(s.canonical(c) == c for c in canon)
    assert all(s.param_count(s.canonical(p)) == s.param_count(p) for p in points)
    no_layers = space("sa")
    assert no_layers.contains(no_layers.canonical(no_layers.point(sa=0)))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("cfg", "pattern"),
    [
        (base_cfg(modules=["sa", "adapter"]), r"unknown module 'adapter'.*allowed: 'sa', 'pa', 'prefix', 'lora'"),
        (base_cfg(modules=["sa", "sa"]), r"lists a module twice"),
        (base_cfg(modules=[]), r"space\.modules is empty"),
        ({**base_cfg(), "layer_selecton": True}, r"unknown key space\.layer_selecton \(did you mean 'layer_selection'"),
        (base_cfg(choices={"sa": [0, 3, 1000]}), r"space\.choices\.sa has 1000, .*\[0, 768\]"),
        (base_cfg(choices={"pa": [-1, 0, 3]}), r"space\.choices\.pa has -1, .*\[0, 768\]"),
        (base_cfg(choices={"sa": [3, 48]}), r"must contain 0"),
        (base_cfg(choices={"sa": [0, 48, 3]}), r"sorted ascending without duplicates, e\.g\. \[0, 3, 48\]"),
        (base_cfg(choices={"lora": [0, 8]}), r"space\.choices\.lora is not a searched module; allowed: 'sa', 'pa'"),
        (base_cfg(fixed={"sa_size": 8}), r"unknown key space\.fixed\.sa_size; allowed keys .*'pa_scale'"),
        (base_cfg(fixed={"lora_targets": ["query", "keys"]}), r"space\.fixed .*'keys'; allowed: 'query', 'key'"),
        (base_cfg(layer_selection="yes"), r"space\.layer_selection='yes' must be true or false"),
        ({"name": "t", "modules": ["sa"]}, r"space\.layer_selection is missing"),
    ],
)
def test_bad_space_configs_name_the_value_and_what_is_allowed(cfg: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SearchSpace.from_config(cfg, BERT_BASE)


def test_choice_bounds_follow_the_backbone() -> None:
    cfg = base_cfg(choices={"sa": [0, 512]})
    assert SearchSpace.from_config(cfg, BERT_BASE).module_choices["sa"] == (0, 512)
    with pytest.raises(ConfigError, match=r"512, outside what backbone 'minilm' allows: an integer in \[0, 384\]"):
        SearchSpace.from_config(cfg, MINILM)


def test_points_outside_the_space_are_refused() -> None:
    s = space("sa")
    with pytest.raises(ConfigError, match=r"sa=5 is not a choice .*allowed: 0, 1, 3, 6"):
        s.to_peft(Point(mask=(True,) * 12, sizes=(("sa", 5),)))
    with pytest.raises(ConfigError, match="does not search layers"):
        s.encode([Point(mask=(False,) * 12, sizes=(("sa", 3),))])
    with pytest.raises(ConfigError, match=r"mask has 6 bits .* 12 layers"):
        s.param_count(Point(mask=(True,) * 6, sizes=(("sa", 3),)))
    with pytest.raises(ConfigError, match=r"'pa' is not searched .*allowed: 'sa'"):
        s.point(pa=3)
    assert set(MODULES) == {"sa", "pa", "prefix", "lora", "lora_attn", "lora_mlp", "dora"}
