"""Multirun grids beyond one process: the joblib (parallel) and submitit (SLURM) launcher configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autopeft.peft import peft_from_config
from autopeft.training.backbones import shape_of

ROOT = Path(__file__).resolve().parents[2]


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_asks_one_gpu_per_cell() -> None:
    launcher = _hydra_cfg("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.array_parallelism == 64 and launcher.timeout_min == 1440


def test_parallel_launcher_uses_separate_processes() -> None:
    launcher = _hydra_cfg("hydra/launcher=parallel").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.backend == "loky" and launcher.n_jobs >= 1


def test_every_cell_of_the_baselines_grid_is_a_valid_offline_config() -> None:
    """The baselines experiment's smoke grid, cell by cell, as the sweeper would compose it."""
    params = _hydra_cfg("experiment=baselines", "debug=smoke").hydra.sweeper.params
    presets, tasks = params.peft.split(","), params.task.split(",")
    assert presets == ["fft", "sa", "pa", "prefix", "lora", "mam", "unipelt"] and len(tasks) == 2
    for preset in presets:
        cfg = _hydra_cfg("experiment=baselines", "debug=smoke", f"peft={preset}", f"task={tasks[0]}")
        assert cfg.mode == "train" and cfg.fidelity.name == "full" and cfg.backbone.source != "hub"
        peft_from_config(cfg.peft, shape_of(cfg.backbone))


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_parallel_launcher_runs_cells_in_worker_processes_and_a_rerun_skips_them(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "run.py",
        "-m",
        "experiment=baselines",
        "debug=smoke",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "peft=sa,lora",
        "task=snli_binary",
        "seed=0",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    ]
    first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Joblib.Parallel" in first.stdout + first.stderr
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["peft"]["name"] for r in records] == ["lora", "sa"]
    assert all(r["status"] == "ok" for r in records)
    assert len({r["config"]["seed"] for r in records}) == 1
    stamps = {p: p.stat().st_mtime_ns for p in sweep.glob("*/results.json")}
    again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
