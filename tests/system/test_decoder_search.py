"""Searches on a tiny decoder: both spaces, a classification and a generation task, killed and resumed.

Each search runs ``run.py`` as a user would, is SIGKILLed half-way through writing its third
result (``AUTOPEFT_FAULT_DELAY_WRITE`` pauses every durable write, so the kill lands inside one
whatever the machine's speed), and is resumed with ``resume=<dir>``: it must finish its budget
with every evaluation once, keep what was done before the kill, and end with the front table
and plot, as the encoder searches do (``test_fault_injection.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.io import FAULT_DELAY_ENV
from tests.bo.conftest import TINY_SEARCH
from tests.processes import wait_for_torn_line

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 8  # TINY_SEARCH: 5 initial + 3 BO evaluations

#: (space, task): the decoder LoRA space and the paper's space, on a classification stand-in and
#: on the synthetic generation task (exact match of greedy decoding).
CASES = [
    ("llm_lora", "snli_binary"),
    ("autopeft", "snli_binary"),
    ("llm_lora", "reverse"),
    ("autopeft", "reverse"),
]


def _command(tmp_path: Path, run_dir: Path, space: str, task: str) -> list[str]:
    return [
        sys.executable,
        "run.py",
        "experiment=none",
        "debug=smoke",
        "backbone=tiny_llama",
        f"space={space}",
        f"task={task}",
        *TINY_SEARCH,
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]


def _lines(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    return [line for line in text.split("\n")[:-1] if line]


@pytest.mark.slow  # about 30 s per case on 2 CPU cores: .ci/run runs it after the default suite
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("space", "task"), CASES)
def test_a_decoder_search_is_killed_and_resumed(tmp_path: Path, space: str, task: str) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, FAULT_DELAY_ENV: "0.5"}
    killed = subprocess.Popen(
        _command(tmp_path, run_dir, space, task),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes its workers too
    )
    try:
        caught = wait_for_torn_line(killed, run_dir / "results.jsonl", complete=2, timeout=300)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        out = killed.communicate()[0].decode(errors="replace")
    assert caught, f"the search ended before its third result was written:\n{out[-3000:]}"
    before = _lines(run_dir / "results.jsonl")
    assert len(before) == 2 and not (run_dir / "results.jsonl").read_text().endswith("\n")

    resumed = subprocess.run(
        [sys.executable, "run.py", f"resume={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=500,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"resuming {run_dir}: 2 of {BUDGET} evaluations done" in output
    after = _lines(run_dir / "results.jsonl")
    indices = [json.loads(line)["index"] for line in after]
    assert sorted(indices) == list(range(BUDGET)), indices
    assert all(after.count(line) == 1 for line in before), "a result finished before the kill was lost or redone"
    records = [json.loads(line) for line in after]
    assert all(r["status"] == "ok" and 0.0 <= r["score"] <= 1.0 for r in records), records
    assert (run_dir / "front.md").read_text().count("\n| ") >= 2 and (run_dir / "pareto.png").stat().st_size > 0
