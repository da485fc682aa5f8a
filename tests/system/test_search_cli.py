"""`python run.py` searches end to end (real training on a tiny BERT) and survives a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from autopeft.cli import dispatch
from autopeft.experiments.modes import mode_search
from autopeft.io import FAULT_DELAY_ENV
from tests.bo.conftest import TINY_SEARCH
from tests.processes import search_command, wait_for_torn_line

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def results(run_dir: Path) -> list[tuple]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return [
        (r["index"], json.dumps(r["point"], sort_keys=True), r["status"], r["score"]) for r in map(json.loads, lines)
    ]


def test_search_writes_front_table_plot_and_summary(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run(search_command(tmp_path, run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "### BO search: rotten_tomatoes, tiny_bert, space autopeft" in result.stdout
    assert "| # | accuracy (val) | % params (paper) |" in result.stdout
    assert f"resume or extend: python run.py resume={run_dir}" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"]["evaluations"] == 8 and len(summary["hypervolume_trace"]) == 8
    assert summary["front"] and summary["front"][0]["rank"] == 1
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "front.csv").read_text().startswith("rank,score,param_percent,")
    assert len(results(run_dir)) == 8
    # each evaluation kept its training logs
    assert len(list((run_dir / "evals").iterdir())) == 8


def test_sigkilled_search_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert run(search_command(tmp_path, reference)).returncode == 0

    # The kill lands inside the write of the 4th result, whatever the machine's speed: with
    # FAULT_DELAY_ENV every durable write stops half-way (fsynced) for a while, so the test waits
    # for 3 complete lines plus a torn 4th and kills there. Exactly 3 evaluations are then done.
    killed = tmp_path / "killed"
    env = {**os.environ, FAULT_DELAY_ENV: "0.3"}
    process = subprocess.Popen(
        search_command(tmp_path, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    store = killed / "results.jsonl"
    assert wait_for_torn_line(process, store, 3), "the search never wrote its 4th result"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert store.read_text().count("\n") == 3  # 3 complete records and the torn 4th, dropped on resume

    resumed = run([sys.executable, "run.py", f"resume={killed}", f"data.cache_dir={tmp_path / 'cache'}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {killed}: 3 of 8 evaluations done" in resumed.stdout + resumed.stderr
    assert results(killed) == results(reference)


def test_resume_of_a_missing_directory_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run([sys.executable, "run.py", f"resume={missing}", f"output_root={tmp_path / 'out'}"])
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: resume='{missing}' does not exist; give the run directory of a search or pipeline to resume"
    )
    assert not missing.exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_default_demo_search_runs(tmp_path: Path) -> None:
    """The README's main job, exactly as a user runs it (under 5 minutes on 2 idle CPU cores)."""
    result = run([sys.executable, "run.py", f"output_root={tmp_path / 'out'}"], timeout=1700)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = (tmp_path / "out" / "search").rglob("summary.json")
    assert json.loads(summary.read_text())["state"]["evaluations"] == 14


def test_paper_search_experiment_runs_offline_and_logs_to_wandb(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_cfg("experiment=autopeft_search")
    assert (cfg.task.name, cfg.backbone.name, cfg.search.n_init, cfg.search.n_iter) == (
        "rte",
        "bert_base_uncased",
        100,
        100,
    )
    assert (cfg.search.surrogate.warmup_steps, cfg.search.surrogate.num_samples, cfg.search.surrogate.thinning) == (
        256,
        128,
        16,
    )
    assert (cfg.search.local_search.restarts, cfg.search.local_search.max_evals) == (10, 100)
    assert cfg.fidelity.epochs == 1 and cfg.trainer.batch_size == 32 and cfg.trainer.lr_peft == 1e-4
    # The paper's NUTS, cold at every refit; only the demo uses the variational SAAS GP.
    assert cfg.search.surrogate.kind == "saas" and not cfg.search.surrogate.warm_start
    demo = compose_cfg().search.surrogate
    assert (demo.kind, demo.vi_steps, demo.vi_samples) == ("saas_vi", 150, 4)

    cfg = compose_cfg(
        "experiment=autopeft_search",
        "backbone=tiny_bert",
        "task=snli_binary",
        "debug=smoke",
        "logger=wandb",
        *TINY_SEARCH,
    )
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    summary = mode_search(cfg)
    assert summary["state"]["evaluations"] == 8 and summary["task"] == "snli_binary"
    assert "### BO search: snli_binary, tiny_bert, space autopeft" in capsys.readouterr().out
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_resume_is_refused_outside_search_mode(
    compose_cfg: Callable[..., DictConfig], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dispatch(compose_cfg("mode=train", "resume=/tmp"))
    assert exit_info.value.code == 2
    assert "resume= continues a search or a pipeline; it does not apply to mode='train'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("experiment", "cells"),
    [("bo_vs_random", 2), pytest.param("ablation", 6, marks=pytest.mark.slow)],  # ablation: 6 cells, slow
)
def test_sweep_experiments_run_offline_with_debug_smoke(tmp_path: Path, experiment: str, cells: int) -> None:
    sweep = tmp_path / "sweep"
    result = run(
        [
            sys.executable,
            "run.py",
            "-m",
            f"experiment={experiment}",
            "backbone=tiny_bert",
            "task=snli_binary",
            "debug=smoke",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep.rglob("summary.json")]
    enumerated = 3 if experiment == "ablation" else None  # the smoke's SA space: 3 sizes, each once
    assert len(summaries) == cells and all(
        s["state"]["evaluations"] == (enumerated if s["space"]["name"] == "sa" and enumerated else 5) for s in summaries
    )
    if experiment == "ablation":
        assert sorted(s["space"]["name"] for s in summaries) == sorted(
            ["sa", "sa_layer", "sa_pa", "sa_pa_layer", "sa_pa_pt", "sa_pa_pt_layer"]
        )
        # the SA space (3 sizes in the smoke, <= n_init 3) is enumerated, the other five searched
        assert {s["space"]["name"]: s["searcher"] for s in summaries} == {
            "sa": "enumeration",
            **{name: "bo" for name in ("sa_layer", "sa_pa", "sa_pa_layer", "sa_pa_pt", "sa_pa_pt_layer")},
        }
    else:
        assert sorted(s["method"] for s in summaries) == ["bo", "random"]
