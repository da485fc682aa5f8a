"""Distinct configurations of a space: their count and the fixed order an enumerated search uses."""

from __future__ import annotations

import pytest

from autopeft.peft import BackboneShape
from autopeft.space import SearchSpace

from .test_space import BERT_BASE, SPACE_FILES, space

TINY = BackboneShape("tiny_bert", 32, 2, 4)


@pytest.mark.parametrize("name", SPACE_FILES)
def test_configurations_count_every_head_only_point_once(name: str) -> None:
    s = space(name, TINY)
    if s.size > 20_000:
        pytest.skip("enumerated spaces are small")
    canonical = {s.canonical(p) for p in s.iter_points()}
    assert s.num_configurations == len(canonical)
    listed = s.enumerate_configurations()
    assert len(listed) == len(set(listed)) == s.num_configurations
    assert set(listed) == canonical  # every configuration, each in canonical form
    assert sum(p.is_head_only for p in listed) == 1


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("sa", 11),
        ("sa_pa", 121),
        ("sa_pa_pt", 1331),
        ("sa_layer", 4095 * 10 + 1),
        ("sa_pa_layer", 4095 * 120 + 1),
        ("sa_pa_pt_layer", 4095 * 1330 + 1),
    ],
)
def test_configuration_counts_of_the_ablation_spaces_on_bert_base(name: str, count: int) -> None:
    s = space(name, BERT_BASE)
    assert s.num_configurations == count
    assert s.to_json_dict()["configurations"] == count
    assert s.num_configurations <= s.size


def test_enumeration_order_is_ascending_params_and_a_pure_function_of_the_space() -> None:
    sa = space("sa", BERT_BASE)
    assert [p.size_of("sa") for p in sa.enumerate_configurations()] == [0, 1, 3, 6, 12, 24, 48, 96, 192, 384, 768]
    s = space("sa_pa_layer", TINY)
    listed = s.enumerate_configurations()
    counts = [s.param_count(p) for p in listed]
    assert counts == sorted(counts) and listed[0] == s.head_only()
    # the same list from a space built anew, its modules listed in another order (no state, no seed)
    again = SearchSpace.from_config({"name": "sa_pa_layer", "modules": ["pa", "sa"], "layer_selection": True}, TINY)
    assert again.enumerate_configurations() == listed
