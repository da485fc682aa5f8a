"""The benchmark scripts run (on a tiny model) so they cannot rot; their numbers are not asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("overrides", [["peft=fft"], ["peft=sa", "peft.sa_size=8", "peft.prefix_len=2"]])
def test_train_throughput_measures_a_training_step(overrides: list[str]) -> None:
    row = _load("train_throughput").measure("tiny_bert", overrides, batch=4, seq=16, steps=2, warmup=1)
    assert row["batch"] == 4 and row["samples_per_s"] > 0 and row["ms_per_step"] > 0
    assert (row["paper_percent"] == 100.0) == (overrides == ["peft=fft"])
