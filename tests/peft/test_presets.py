"""The baseline presets resolve to their sources' sizes on every backbone (``conf/peft/*.yaml``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autopeft.errors import ConfigError
from autopeft.peft import PeftSpec, peft_from_config
from autopeft.peft.config import resolve_size
from autopeft.training.backbones import shape_of


def _spec(compose_cfg: Callable, *overrides: str) -> PeftSpec:
    cfg = compose_cfg("experiment=none", *overrides)
    return peft_from_config(cfg.peft, shape_of(cfg.backbone))


@pytest.mark.parametrize(
    ("preset", "field", "sizes"),
    [
        # Pfeiffer (AdapterHub reduction factor 16): D_h/16; Table 5's Serial is SA 64 on BERT-large.
        ("sa", "sa_size", {"minilm": 24, "bert_base_arch": 48, "bert_large_arch": 64}),
        # He et al. / AdapterHub ParallelConfig (reduction factor 2): D_h/2.
        ("pa", "pa_size", {"minilm": 192, "bert_base_arch": 384, "bert_large_arch": 512}),
        # UniPELT's serial adapter is a Pfeiffer adapter: D_h/16 too.
        ("unipelt", "sa_size", {"minilm": 24, "bert_base_arch": 48, "bert_large_arch": 64}),
        # Absolute sizes stay what their sources publish, whatever the backbone.
        ("mam", "pa_size", {"minilm": 512, "bert_base_arch": 512, "bert_large_arch": 512}),
        ("prefix", "prefix_len", {"minilm": 30, "bert_base_arch": 30, "bert_large_arch": 30}),
        ("lora", "lora_rank", {"minilm": 8, "bert_base_arch": 8, "bert_large_arch": 8}),
    ],
)
def test_presets_resolve_to_their_sources_sizes(
    compose_cfg: Callable, preset: str, field: str, sizes: dict[str, int]
) -> None:
    for backbone, size in sizes.items():
        spec = _spec(compose_cfg, f"peft={preset}", f"backbone={backbone}")
        assert getattr(spec, field) == size, (preset, backbone)
        assert (spec.sa_placement, spec.adapter_init) == ("pfeiffer", "adapterhub")


def test_an_override_still_sets_an_absolute_size(compose_cfg: Callable) -> None:
    assert _spec(compose_cfg, "peft=sa", "backbone=bert_base_arch", "peft.sa_size=96").sa_size == 96


@pytest.mark.parametrize("bad", ["d_h/0", "d_h/x", "D/16", "half"])
def test_a_bad_relative_size_names_the_value_and_the_form(bad: str) -> None:
    from autopeft.peft import BackboneShape

    shape = BackboneShape("minilm", 384, 6, 12)
    with pytest.raises(ConfigError, match=rf"peft\.sa_size='{bad}' must be an integer or 'd_h/K'.*'d_h/16' = 24"):
        resolve_size(bad, "sa_size", shape)


def test_relative_sizes_round_as_adapterhub_does() -> None:
    from autopeft.peft import BackboneShape

    shape = BackboneShape("tiny", 32, 3, 4)
    assert resolve_size("d_h/16", "sa_size", shape) == 2
    assert resolve_size(" d_h / 64 ", "sa_size", shape) == 1  # AdapterHub keeps at least 1
    assert resolve_size(7, "sa_size", shape) == 7
