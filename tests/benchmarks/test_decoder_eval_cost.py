"""``benchmarks/decoder_eval_cost.py --tiny`` runs on the CPU through the real training path; numbers not asserted."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest


def test_tiny_run_prints_a_row_per_backbone_and_preset_with_positive_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    module = importlib.import_module("benchmarks.decoder_eval_cost")
    rows = module.main(["--tiny", "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| tiny_")]
    cells = [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in table]
    assert [c[:3] for c in cells] == [
        (backbone, peft, "off") for backbone in ("tiny_llama", "tiny_qwen2") for peft in ("lora", "sa")
    ]
    assert "device: cpu" in out and "64 training examples x 32 tokens, 1 epoch" in out and "bf16-mixed" in out
    for row, cell in zip(rows, cells, strict=True):
        assert row["status"] == "ok" and cell[3] == "ok", row
        assert row["precision"] == "bf16-mixed" and row["train_examples"] == 64
        seconds, epoch, throughput = (float(c.replace(",", "")) for c in cell[4:7])
        assert seconds > 0 and epoch > 0 and throughput > 0 and row["seconds"] >= row["train_seconds"] > 0
        assert cell[7] == "-" and row["peak_gib"] is None  # no GPU: no GPU memory to report
        assert int(cell[8].replace(",", "")) == row["trainable_params"] > 0
    saved = json.loads((tmp_path / "decoder_eval_cost.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["settings"]["seq"] == 32
    assert (tmp_path / "decoder_eval_cost.md").read_text().count("\n| tiny_") == len(rows)


def test_a_refused_configuration_is_a_row_saying_why(tmp_path: Path) -> None:
    module = importlib.import_module("benchmarks.decoder_eval_cost")
    args = module.parse_args(["--tiny"])
    task = module.write_task(tmp_path / "data", 8, 4, 8)
    overrides = module.overrides_for(args, "tiny_llama", "sa", False, task, tmp_path)
    row = module.measure([*overrides, "peft.sa_size=100000"], tmp_path / "run")
    assert row["status"] == "refused" and row["reason"].startswith("peft.sa_size=100000 is outside what backbone")
    line = module.table([{"backbone": "tiny_llama", "peft": "sa", "checkpointing": True, **row}]).splitlines()[-1]
    assert line.startswith("| tiny_llama | sa | on | refused: peft.sa_size=100000 is outside")
    assert line.endswith("| - | - | - | - | - |")
