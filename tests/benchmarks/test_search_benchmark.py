"""The whole-space search benchmark: its world, its pairing and its statistics."""

from __future__ import annotations

import importlib
import itertools
import json
import math
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "benchmarks" / "data" / "search_quality_minilm_rotten_tomatoes.jsonl"


@pytest.fixture(scope="module")
def bench():
    # Imported as a module of the namespace package `benchmarks` (its dataclasses need sys.modules).
    return importlib.import_module("benchmarks.search_benchmark")


def test_paired_interval_is_the_t_interval(bench) -> None:
    diffs = [0.1, 0.3, -0.05, 0.2, 0.15]
    mean, low, high = bench.paired_interval(diffs)
    expected = stats.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / 5, scale=stats.sem(diffs))
    assert mean == pytest.approx(0.14)
    assert (low, high) == pytest.approx(expected)
    assert bench.evaluations_to_reach([0.5, 0.4, 0.2, 0.1], 0.25) == 3
    assert bench.evaluations_to_reach([0.5, 0.4], 0.1) is None


@pytest.mark.slow  # 11 s: .ci/run runs it after the default suite
def test_the_benchmark_pairs_methods_and_measures_regret_against_the_true_front(
    bench, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    bench.main(
        [
            "--table",
            str(TABLE),
            "--setting",
            "smoke",
            "--seeds",
            "2",
            "--methods",
            "random",
            "cheapest",
            "stratified",
            "--out-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(results),
        ]
    )
    report = (results / "search_benchmark_smoke.md").read_text()
    assert "cheapest-first" in report and "True front:" in report
    summary = json.loads((results / "search_benchmark_smoke.json").read_text())
    assert summary["seeds"] == [0, 1]
    assert 0.2 < summary["world"]["cv_spearman"] < 1.0  # the trees learn something of the real table
    for axis in ("linear", "log"):
        for method, by_seed in summary["traces"][axis].items():
            for trace in by_seed.values():
                assert len(trace) == 15
                assert all(0.0 <= v <= 1.0 for v in trace)
                assert all(b <= a + 1e-12 for a, b in itertools.pairwise(trace)), method
    # Paired: every method starts from the same 5 configurations, and sees the same noisy score
    # for the same configuration in the same seed.
    runs = tmp_path / "runs" / "smoke_default" / "runs"
    for seed in (0, 1):
        lines = {
            m: [json.loads(line) for line in (runs / f"{m}_seed{seed}" / "results.jsonl").read_text().splitlines()]
            for m in ("random", "cheapest", "stratified")
        }
        designs = {m: [r["point"] for r in records[:5]] for m, records in lines.items()}
        assert designs["random"] == designs["cheapest"] == designs["stratified"]
        scores = {m: [r["score"] for r in records[:5]] for m, records in lines.items()}
        assert scores["random"] == scores["cheapest"] == scores["stratified"]
        assert all(r["score"] != r["true_score"] for r in lines["random"])  # noise was added


def test_the_true_front_has_no_regret(bench) -> None:
    from benchmarks.common import compose_cfg

    meta = json.loads(TABLE.with_suffix(".meta.json").read_text())
    cfg = compose_cfg([o for o in meta["overrides"] if not o.startswith(("search", "seed"))])
    space = bench.space_of(cfg)
    world = bench.build_world(TABLE, space, meta["backbone_params"], eval_examples=200)
    front = bench.true_front(world)
    records = [{"true_score": s, "param_percent": p} for s, p, _ in front]
    for name in ("linear", "log"):
        axis = bench.Axis(name, world, space, meta["backbone_params"])
        assert axis.regret_trace(records)[-1] == pytest.approx(0.0, abs=1e-12)
        worst = min(world.points, key=lambda p: world.truth[p])
        assert axis.regret_trace([{"true_score": world.truth[worst], "param_percent": world.percent[worst]}])[0] > 0.5
    assert world.residual_sd > world.binomial_sd > 0
    assert math.isfinite(world.cv_spearman)
