"""``benchmarks/headline.py``: the rows, intervals and paired differences it reads from a pipeline run."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest


def _record(task: str, seed: int, test: float, percent: float, configuration: str, **extra: object) -> dict:
    return {
        "status": "ok",
        "task": task,
        "seed": seed,
        "main_metric": "accuracy",
        "configuration": configuration,
        "metrics": {"test": {"accuracy": test}, "validation": {"accuracy": test + 0.01}},
        "params": {"paper_percent": percent, "trainable_params": int(percent * 1000) + 10},
        "total_seconds": 10.0,
        **extra,
    }


#: Test scores per seed: the pick beats LoRA (fewer params) by 0.02 on every seed, and is within
#: noise of the serial adapter, which has more parameters than the pick.
PICK = [0.80, 0.82, 0.81]
PRESETS = {
    "head_only": (0.0, [0.70, 0.71, 0.69]),
    "lora": (0.3, [0.78, 0.80, 0.79]),
    "sa": (0.5, [0.81, 0.80, 0.83]),
}


def _run_dir(root: Path) -> Path:
    stages = []
    search = root / "search" / "rt"
    search.mkdir(parents=True)
    (search / "results.jsonl").write_text(
        "".join(json.dumps({"status": "ok", "seconds": 5.0, "score": 0.7}) + "\n" for _ in range(4))
    )
    stages.append({"kind": "search", "path": "search/rt", "status": "done"})
    for kind, path in (("front", "front/rt"), ("transfer", "transfer/rt_to_rt")):
        (root / path).mkdir(parents=True)
        lines = [
            _record("rt", s, v, 0.4, "SA 8 + PT 2", choice="AutoPEFT^RT", search_score=0.75) for s, v in enumerate(PICK)
        ]
        (root / path / "retrain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        stages.append({"kind": kind, "path": path, "status": "done"})
    for preset, (percent, scores) in PRESETS.items():
        for seed, score in enumerate(scores):
            path = f"baselines/{preset}/rt/seed{seed}"
            (root / path).mkdir(parents=True)
            (root / path / "results.json").write_text(json.dumps(_record("rt", seed, score, percent, preset)))
            stages.append({"kind": "baseline", "path": path, "status": "done"})
    choice = {"select": "budget", "pick": "retrained", "budget_percent": 0.5}
    state = {"format": 1, "overrides": ["experiment=headline"], "choice": choice, "stages": stages}
    (root / "pipeline.json").write_text(json.dumps(state))
    return root


def test_the_pick_is_compared_with_the_best_preset_at_no_more_parameters(tmp_path: Path) -> None:
    module = importlib.import_module("benchmarks.headline")
    run_dir = _run_dir(tmp_path / "run")
    also = tmp_path / "diagnosis"
    also.mkdir()
    lines = [_record("rt", s, v, 0.2, "PA 4", choice="top") for s, v in enumerate([0.75, 0.76, 0.77])]
    (also / "retrain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = str(tmp_path / "out" / "headline")
    result = module.main(["--analyse-only", "--run-dir", str(run_dir), "--out", out, "--also", str(also)])
    entry = result["tasks"]["rt"]
    headline = entry["headline"]
    # LoRA (0.3%) is the best preset within the pick's 0.4%; the serial adapter (0.5%) is not eligible.
    assert headline["best_preset_within"] == "LoRA"
    assert headline["mean"] == pytest.approx(0.02) and headline["verdict"] == "AutoPEFT better"
    assert headline["low"] == pytest.approx(0.02) and headline["high"] == pytest.approx(0.02)  # constant gap
    by_preset = {c["preset"]: c for c in entry["comparisons"]}
    serial = by_preset["Serial adapter"]
    assert not serial["no_more_params"] and serial["verdict"] == "interval includes 0: no difference shown"
    differences = [p - s for p, s in zip(PICK, PRESETS["sa"][1], strict=True)]
    half = 4.302652729911275 * math.sqrt(sum((d - sum(differences) / 3) ** 2 for d in differences) / 2) / math.sqrt(3)
    assert serial["high"] - serial["low"] == pytest.approx(2 * half)  # t(0.975, 2) = 4.3027
    rows = {row["name"]: row for row in entry["rows"]}
    assert rows["AutoPEFT^RT"]["test_mean"] == pytest.approx(0.81) and rows["AutoPEFT^RT"]["seeds"] == [0, 1, 2]
    assert rows["Head only (linear probe)"]["percent"] == 0.0
    assert [row["name"] for row in entry["front"]] == ["AutoPEFT^RT"]
    assert entry["front"][0]["best_preset_within"] == "LoRA"
    assert entry["front"][0]["versus_best_preset"]["mean"] == pytest.approx(0.02)
    # A further retrained configuration at 0.2% is compared with the only preset at no more: the probe.
    (extra,) = entry["also"]
    assert extra["configuration"] == "PA 4" and extra["best_preset_within"] == "Head only (linear probe)"
    assert extra["versus_best_preset"]["mean"] == pytest.approx(0.06)
    assert result["seconds"] == {
        "search": 20.0,
        "front_retraining": 30.0,
        "autopeft_retraining": 30.0,
        "presets": 90.0,
    }
    # The probe is beaten by LoRA on every seed (+0.09 each): the setting separates the methods.
    separation = {c["preset"]: c for c in entry["separation"]}
    assert separation["LoRA"]["mean"] == pytest.approx(0.09) and separation["LoRA"]["verdict"] == "preset better"
    assert "Head only (linear probe)" not in separation
    text = (tmp_path / "out" / "headline.md").read_text()
    assert "**Headline:** AutoPEFT^RT − LoRA" in text and "→ AutoPEFT better" in text
    assert (tmp_path / "out" / "headline.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "headline.json").read_text())["tasks"]["rt"]["headline"]["mean"] > 0


def test_a_run_directory_without_a_pipeline_is_refused(tmp_path: Path) -> None:
    module = importlib.import_module("benchmarks.headline")
    with pytest.raises(SystemExit, match=r"holds no pipeline\.json"):
        module.main(["--analyse-only", "--run-dir", str(tmp_path), "--out", str(tmp_path / "out")])
