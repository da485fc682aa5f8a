"""The print-only modes compose the real configs and print one JSON object."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autopeft.experiments.modes import mode_space

ROOT = Path(__file__).resolve().parents[2]


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


def test_run_directories_are_named_by_what_they_run() -> None:
    from autopeft.runtime import _run_tag

    assert _run_tag("search", "rotten_tomatoes", "sa", "bo") == "rotten_tomatoes_bo"
    assert _run_tag("train", "reviews", "lora", "bo") == "reviews_lora"
    # A report reads runs of any tasks: it is not named after the default task.
    assert _run_tag("report", "rotten_tomatoes", "sa", "bo") == "report"
    assert _run_tag("pipeline", "rte", "sa", "bo", "glue_transfer") == "glue_transfer"


def test_run_py_names_report_and_custom_task_run_directories(tmp_path: Path) -> None:
    training = tmp_path / "runs" / "t"
    training.mkdir(parents=True)
    (training / "results.json").write_text(json.dumps({"status": "diverged", "task": "x", "peft": {"name": "sa"}}))
    data = tmp_path / "reviews" / "train.csv"
    data.parent.mkdir()
    data.write_text("text,label\n" + "".join(f"review {i},{'ab'[i % 2]}\n" for i in range(10)))
    out = tmp_path / "outputs"
    for args in (
        ["mode=report", f"report.runs=[{tmp_path / 'runs'}]"],
        ["mode=params", "task=custom", f"task.train={data}", "task.text=text"],
    ):
        result = subprocess.run(
            [sys.executable, "run.py", *args, f"output_root={out}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    (report,) = (out / "report").glob("*/*")
    assert re.fullmatch(r"[\d-]+_report_p\d+", report.name), report.name  # no task: not _rotten_tomatoes_report_
    (params,) = (out / "params").glob("*/*")
    assert "_reviews_sa_p" in params.name  # the custom task's name, from its folder
