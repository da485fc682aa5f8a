"""The print-only modes compose the real configs and print one JSON object."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from autopeft.experiments.modes import mode_space


@pytest.mark.parametrize(
    ("backbone", "size"),
    [("bert_base_arch", 2**12 * 11**3), ("bert_large_arch", 2**24 * 12**3), ("minilm", 2**6 * 10**3)],
)
def test_mode_space_prints_the_space_with_its_size(
    compose_cfg: Callable, capsys: pytest.CaptureFixture, backbone: str, size: int
) -> None:
    info = mode_space(compose_cfg("mode=space", f"backbone={backbone}"))
    printed = json.loads(capsys.readouterr().out)
    assert printed == info and printed["size"] == size
    assert printed["modules"] == ["sa", "pa", "prefix"] and printed["layer_selection"] is True
