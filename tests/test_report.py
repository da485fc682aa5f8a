"""mode=report: finds runs of every kind under its inputs and writes the paper-shaped table and plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from autopeft.cli import mode_report, mode_retrain, mode_search, mode_train
from autopeft.errors import ConfigError
from autopeft.report import build_report, find_runs
from tests.bo.conftest import TINY_SEARCH


def _in(cfg: DictConfig, run_dir: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture
def outputs(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """A small outputs tree: one search, two single trainings on two tasks, one retraining over 2 seeds."""
    root = tmp_path / "outputs"
    mode_search(_in(tiny_cfg(*TINY_SEARCH), root / "search" / "s1"))
    mode_train(_in(tiny_cfg("mode=train", "peft=lora"), root / "train" / "lora_rt"))
    mode_train(_in(tiny_cfg("mode=train", "peft=lora", "task=snli_binary"), root / "train" / "lora_snli"))
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([{"name": "sa8", "peft": {"sa_size": 8}}]))
    mode_retrain(_in(tiny_cfg(f"retrain.configs={configs}", "retrain.seeds=[0,1]"), root / "retrain" / "r1"))
    return root


def test_report_tabulates_and_plots_every_kind_of_run(
    outputs: Path, tiny_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = find_runs([outputs])
    assert (len(runs.searches), len(runs.retrains), len(runs.trainings)) == (1, 1, 2)
    capsys.readouterr()
    summary = mode_report(_in(tiny_cfg("mode=report", f"report.runs=[{outputs}]"), tmp_path / "report"))
    assert summary["tasks"] == ["rotten_tomatoes", "snli_binary"]
    rows = {row["configuration"]: row for row in summary["rows"]}
    assert set(rows) == {"lora", "sa8"}
    assert rows["lora"]["avg"] != "–"  # both tasks present
    assert " ± " in rows["sa8"]["rotten_tomatoes"] and rows["sa8"]["snli_binary"] == "–"
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| configuration | rotten_tomatoes | snli_binary | avg | % params |" in table
    assert (tmp_path / "report" / "table.csv").read_text().startswith("configuration,rotten_tomatoes,snli_binary")
    for name in ("fronts.png", "hypervolume.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert "report of 1 searches, 1 retrainings, 2 single trainings" in capsys.readouterr().out


def test_report_inputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"report\.runs is empty"):
        build_report([], tmp_path / "out")
    with pytest.raises(ConfigError, match=r"report input '.*/missing' does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no run directory"):
        build_report([tmp_path / "empty"], tmp_path / "out")
