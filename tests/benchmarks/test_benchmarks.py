"""The benchmark scripts run (on a tiny model) so they cannot rot; their numbers are not asserted."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.peft import BackboneShape
from autopeft.space import SearchSpace
from tests.bo.conftest import SyntheticObjective

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("overrides", [["peft=fft"], ["peft=sa", "peft.sa_size=8", "peft.prefix_len=2"]])
def test_train_throughput_measures_a_training_step(overrides: list[str]) -> None:
    row = _load("train_throughput").measure("tiny_bert", overrides, batch=4, seq=16, steps=2, warmup=1)
    assert row["batch"] == 4 and row["samples_per_s"] > 0 and row["ms_per_step"] > 0
    assert (row["paper_percent"] == 100.0) == (overrides == ["peft=fft"])


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_bo_iteration_time_fits_and_proposes() -> None:
    module = _load("bo_iteration_time")
    args = argparse.Namespace(warmup_steps=8, num_samples=8, thinning=2, acquisition="qlognehvi")
    timings = module.one_iteration(12, args)
    assert timings["fit"] > 0 and timings["acquisition"] > 0
    assert 0 < timings["evals"] <= 10 * 100


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_search_quality_replays_every_searcher_on_a_table(tmp_path: Path) -> None:
    module = _load("search_quality")
    space = SearchSpace.from_config(
        {"name": "autopeft", "modules": ["sa", "pa", "prefix"], "layer_selection": True},
        BackboneShape("minilm", 384, 6, 12),
    )
    objective = SyntheticObjective(fail=lambda p: p.size_of("prefix") == 384)
    rows = [
        {"index": i, "point": p.to_dict(), "configuration": space.describe(p), "seed": 0, **objective(p, i)}
        for i, p in enumerate(space.sample(random.Random(0), 30))
    ]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"task": "rotten_tomatoes", "backbone": "minilm", "evaluations": len(rows)}
    table.with_suffix(".meta.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    tiny = ["--n-init", "5", "--batch-size", "2", "--warmup-steps", "8", "--num-samples", "8", "--thinning", "2"]
    module.main(["replay", "--table", str(table), "--out-dir", str(out), "--seeds", "2", "--budget", "12", *tiny])
    traces = json.loads((out / "search_quality.json").read_text())["traces"]
    assert set(traces) == {"linear", "log"}
    for by_method in traces.values():
        assert set(by_method) == {"bo", "random", "nsga2"}
        for runs in by_method.values():
            assert len(runs) == 2 and all(len(t) == 12 and 0 <= t[-1] <= 1 + 1e-9 for t in runs)
            assert all(t == sorted(t) for t in runs)  # hypervolume never decreases
    assert "| AutoPEFT BO (SAAS-GP + qNEHVI) |" in (out / "search_quality.md").read_text()
    assert (out / "search_quality.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_experiment_cost_is_computed_from_the_real_plans() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/experiment_cost.py", "--samples-per-second", "2000", "glue_transfer", "superglue"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    # glue_transfer: 200 search evaluations + the front (10 configurations, the default --front-size)
    # retrained on RTE x 5 seeds (retrain.pick=retrained) + 8 tasks x 5 seeds + 8 baselines x 8 tasks x 5 seeds.
    assert rows["glue_transfer"].split("|")[3].strip() == str(200 + 10 * 5 + 8 * 5 + 8 * 8 * 5)
    assert rows["superglue"].split("|")[3].strip() == str(200 + 10 * 5 + 4 * 5 + 8 * 4 * 5)
    assert "BERT-base 2,000 training samples/s" in result.stdout


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_search_speed_measures_both_modes_on_the_same_search(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = _load("search_speed").main(
        [
            "--backbone=tiny_bert",
            "--n-init=3",
            "--n-iter=2",
            "--nuts",
            "8",
            "8",
            "2",
            "--workers=2",
            "--max-train-samples=32",
            "--max-eval-samples=16",
            "--max-length=16",
            f"--out-dir={tmp_path}",
            "--override",
            "trainer.log_every_n_steps=1",
        ]
    )
    assert [r["mode"] for r in rows] == ["sequential", "parallel (2 workers)"]
    assert [r["evaluations"] for r in rows] == [5, 5]
    # Same seed: both start from the same initial design (the parallel one records it in completion order).
    designs = [
        sorted(json.dumps(r["point"], sort_keys=True) for r in row["records"] if r["phase"] == "init") for row in rows
    ]
    assert len(designs[0]) == 3 and designs[0] == designs[1]
    out = capsys.readouterr().out
    assert "| mode | evaluations | wall clock (s) | CPU busy % |" in out and "speed-up of parallel" in out


def test_fidelity_agreement_statistics_and_its_settings_guard(tmp_path: Path) -> None:
    module = _load("fidelity_agreement")
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    same, reversed_ = module.agreement(x, [v * 2 for v in x]), module.agreement(x, x[::-1])
    assert same["spearman"] == pytest.approx(1.0) and same["kendall"] == pytest.approx(1.0)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    low, high = same["spearman_ci95"]
    assert low <= same["spearman"] <= high
    assert module.top_k_overlap([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], 2) == 0
    assert module.top_k_overlap([5, 4, 3, 2, 1], [5, 4, 1, 1, 1], 2) == 2
    # Configurations at the floor (collapsed training) of either column are left out of the second view.
    low_scores = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.8, 4: 0.5}
    full_scores = {0: 0.5, 1: 0.75, 2: 0.65, 3: 0.85, 4: 0.7}
    learning = module._learning_only(low_scores, full_scores, [0, 1, 2, 3, 4])
    assert learning["n"] == 3 and learning["collapsed"] == 2 and learning["spearman"] == pytest.approx(1.0)
    args = argparse.Namespace(**{key: 1 for key in module.SETTING_ARGS})
    module.check_same_settings(tmp_path / "run", args)
    module.check_same_settings(tmp_path / "run", args)  # same settings: resumes
    args.train = 2
    with pytest.raises(SystemExit, match=r"made with other settings: --train 1 \(now 2\)"):
        module.check_same_settings(tmp_path / "run", args)


@pytest.mark.parametrize("name", ["gp", "saas_vi"])
def test_surrogate_fit_cell_fits_and_runs_the_real_local_search(name: str) -> None:
    """One cell of benchmarks/surrogate_fit.py on the committed real table: quality and proposal times."""
    module = _load("surrogate_fit")
    rows, meta, space = module.load_table(module.DEFAULT_TABLE)
    setting = module.SETTINGS[name]
    if name == "saas_vi":  # a short variational fit: this checks the plumbing, not the quality
        setting = dataclasses.replace(setting, surrogate=dataclasses.replace(setting.surrogate, vi_steps=20))
    args = argparse.Namespace(table_sha256="test", threads=1, candidates=20, chunk=10, seed=0)
    cell = module.run_cell(setting, rows[:60], space, int(meta["backbone_params"]), 30, 0, args)
    assert (cell["setting"], cell["n"], cell["held_out"]) == (name, 30, 30)
    assert -1.0 <= cell["spearman"] <= 1.0 and cell["rmse"] > 0
    # The local search scored candidates beyond its starting points, and its time is part of the proposal.
    assert cell["local_search_evaluations"] > 10
    assert cell["local_proposal_seconds"] == pytest.approx(cell["fit_seconds"] + cell["local_search_seconds"])
