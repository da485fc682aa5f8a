"""The adapters-format export loads in AdapterHub's ``adapters`` with the same predictions.

The round trip is marked slow (it needs the library's own virtualenv); the reduction-factor and
install-failure checks are not.

``adapters`` pins transformers 4 (1.3.0: ``transformers~=4.57.6``), AutoPEFT needs 5, so the
library lives in its own virtualenv, created on first use and reused after (under the
git-ignored ``outputs/``, or ``$AUTOPEFT_ADAPTERS_VENV``). It gets ``torch==2.13.0`` first, the
local CPU build, and then ``adapters`` with torch held to that version: left to itself, pip
would fetch PyPI's default torch build, several GB of CUDA. This test writes the exports, their
inputs and the base weights into case folders, runs ``tests/export/adapters_load.py`` there once
for all cases, and compares what adapters computed with what AutoPEFT computes.

An install that fails fails the test with pip's message; ``AUTOPEFT_SKIP_ADAPTERS_ROUNDTRIP=1``
turns that into a skip (for machines without access to PyPI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autopeft.export.adapters_format import (
    ADAPTER_NAME,
    ADAPTERS_TRANSFORMERS,
    ADAPTERS_VERSION_TESTED,
    reduction_factor,
)
from tests.export.libraries import FOUR_LAYERS, TINY_ROBERTA, base_backbone, batches, exported, ours

ROOT = Path(__file__).resolve().parents[2]
#: The torch of the adapters venv: this project's CPU build (any other would be a CUDA download).
TORCH_VERSION = "2.13.0"
VENV_ENV = "AUTOPEFT_ADAPTERS_VENV"
SKIP_ENV = "AUTOPEFT_SKIP_ADAPTERS_ROUNDTRIP"
DEFAULT_VENV = ROOT / "outputs" / ".venvs" / f"adapters-{ADAPTERS_VERSION_TESTED}"
#: What the venv must hold; written as its stamp once the install succeeded.
WANTED = f"torch=={TORCH_VERSION}\nadapters=={ADAPTERS_VERSION_TESTED}\ntransformers=={ADAPTERS_TRANSFORMERS}\n"
ATOL = 1e-5

#: Config fields the adapters side rebuilds the tiny backbone from (transformers 4 reads them all).
ARCH_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)

#: (case, task, peft overrides): every kind of module adapters can express, alone and combined.
CASES = [
    # Pfeiffer serial adapter + prefix-tuning on layers 0 and 2 of 4 (a ConfigUnion with leave_out).
    ("sa_prefix", "rotten_tomatoes", ("peft.sa_size=8", "peft.prefix_len=2", "peft.layers=[0,2]")),
    # The houlsby wiring, every layer, a bottleneck (5) whose reduction factor needs the nudge; regression.
    ("houlsby_regression", "vader_movies", ("peft.sa_size=5", "peft.sa_placement=houlsby", "peft.layers=all")),
    # Parallel adapter + prefix + LoRA on every location adapters has, layers 1-3.
    (
        "pa_prefix_lora",
        "rotten_tomatoes",
        (
            "peft.sa_size=0",
            "peft.pa_size=4",
            "peft.prefix_len=3",
            "peft.lora_rank=2",
            "peft.lora_alpha=5",
            "peft.lora_targets=[query,key,value,intermediate,output]",
            "peft.layers=[1,2,3]",
        ),
    ),
    # Multiple choice, a prefix in the last layer only.
    ("choice_prefix", "copa", ("peft.sa_size=0", "peft.prefix_len=2", "peft.layers=[3]")),
    # RoBERTa: serial adapter + LoRA on layers 1 and 3.
    ("roberta_sa_lora", "rotten_tomatoes", (*TINY_ROBERTA, "peft.lora_rank=2", "peft.layers=[1,3]")),
]


def _fail_or_skip(message: str) -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{message} ({SKIP_ENV}=1)")
    pytest.fail(f"{message}; set {SKIP_ENV}=1 to skip this test where PyPI cannot be reached", pytrace=False)


def adapters_python() -> Path:
    """The Python of the adapters virtualenv, installing it when its stamp is missing or stale."""
    venv = Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)
    python, stamp = venv / "bin" / "python", venv / ".autopeft-installed"
    if python.is_file() and stamp.is_file() and stamp.read_text() == WANTED:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    pin = venv.parent / f"{venv.name}-constraints.txt"
    pin.write_text(f"torch=={TORCH_VERSION}\n")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", f"torch=={TORCH_VERSION}"],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-c",
            str(pin),  # torch stays the build just installed
            f"adapters=={ADAPTERS_VERSION_TESTED}",
            f"transformers=={ADAPTERS_TRANSFORMERS}",
        ],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1800, check=False)
        except subprocess.TimeoutExpired:
            _fail_or_skip(f"installing the adapters venv timed out: {' '.join(step)}")
        if done.returncode:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            _fail_or_skip(f"could not install the adapters venv at {venv} ({' '.join(step[2:])}):\n{tail}")
    stamp.write_text(WANTED)
    return python


def _write_case(tiny_cfg: Callable, folder: Path, task: str, overrides: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Export one case into ``folder`` with its inputs and base weights; return AutoPEFT's outputs."""
    cfg = tiny_cfg("mode=train", FOUR_LAYERS, f"task={task}", *overrides)
    model, path, _ = exported(cfg, folder / "export")
    manifest = json.loads((path / "autopeft.json").read_text())
    entry = manifest["libraries"]["adapters"]
    assert entry["written"], entry
    batch = batches(model, cfg, task)
    if model.encoder.config.type_vocab_size == 1:  # RoBERTa: AutoPEFT passes no segment ids
        batch = {k: v for k, v in batch.items() if k != "token_type_ids"}
    backbone = base_backbone(cfg).model
    save_file({k: v.contiguous() for k, v in batch.items()}, str(folder / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(folder / "base.safetensors"))
    config = {key: getattr(backbone.config, key) for key in ARCH_FIELDS}
    case = {"model_type": backbone.config.model_type, "config": config, "model_class": entry["model_class"]}
    (folder / "case.json").write_text(json.dumps(case))
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in batch.items()}
    with torch.no_grad():
        hidden = model.encode(flat["input_ids"], flat["attention_mask"], flat.get("token_type_ids"))
    return {"logits": ours(model, batch), "hidden": hidden.float()}


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_adapters_exports_load_in_adapters_with_the_same_predictions(tiny_cfg: Callable, tmp_path: Path) -> None:
    python = adapters_python()
    expected = {name: _write_case(tiny_cfg, tmp_path / name, task, extra) for name, task, extra in CASES}
    script = Path(__file__).with_name("adapters_load.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(python), str(script), *(str(tmp_path / name) for name, _, _ in CASES)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (report["adapters"], report["transformers"]) == (ADAPTERS_VERSION_TESTED, ADAPTERS_TRANSFORMERS)
    for name, task, _ in CASES:
        case = report[name]
        assert case["name"] == ADAPTER_NAME and case["active_head"] == ADAPTER_NAME
        for route in (case["flex_head"], case["plain"]):
            assert route["base"] == {"missing": [], "unexpected": []}, (name, route["base"])
            assert not route["adapter"].get("missing_keys") and not route["adapter"].get("unexpected_keys"), route
        got = load_file(str(tmp_path / name / "adapters_out.safetensors"))
        logits = got["logits"].squeeze(-1) if task == "vader_movies" else got["logits"]
        for key, value in (("logits", logits), ("hidden", got["hidden"])):
            diff = (value - expected[name][key]).abs().max().item()
            print(f"adapters round trip, {name} {key}: max abs diff {diff:.3g}")
            torch.testing.assert_close(value, expected[name][key], rtol=0, atol=ATOL)


@pytest.mark.parametrize("hidden", [32, 384, 768, 1024])
def test_the_reduction_factor_gives_every_bottleneck_exactly(hidden: int) -> None:
    # adapters builds int(hidden // factor) units; hidden / D alone floors to D - 1 for e.g. 768 / 13.
    assert all(int(hidden // reduction_factor(hidden, d)) == d for d in range(1, 4 * hidden + 1))


def test_a_failed_install_fails_with_pips_message_unless_skipping_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENV_ENV, str(tmp_path / "venv"))
    monkeypatch.delenv(SKIP_ENV, raising=False)
    calls: list[list[str]] = []

    def no_network(step: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(step)
        failed = "torch==" in " ".join(step)
        return subprocess.CompletedProcess(step, int(failed), "", "ERROR: No matching distribution" if failed else "")

    monkeypatch.setattr(subprocess, "run", no_network)
    with pytest.raises(
        pytest.fail.Exception, match=r"(?s)could not install the adapters venv.*No matching distribution"
    ):
        adapters_python()
    assert calls[1][-1] == f"torch=={TORCH_VERSION}"  # torch first, pinned, before adapters is resolved
    assert not (tmp_path / "venv" / ".autopeft-installed").exists()
    monkeypatch.setenv(SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match=SKIP_ENV):
        adapters_python()
