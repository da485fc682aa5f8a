"""The bad-input catalogue: each bad value gives one short line naming it and what is allowed.

Every case runs the real entry path (``dispatch`` on the composed config, or ``run.py`` for what
Hydra itself checks) and asserts: exit status 2 (Hydra's own checks: 1), a single ``error:`` line
without a traceback that names the bad value and the allowed ones, and nothing written: the run
directory is not created and existing files are left byte for byte as they were.
``python -m tests.system.test_bad_inputs`` prints the first line of every error (quoted in the notes).
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
from omegaconf import DictConfig, open_dict

import autopeft.settings
from autopeft.cli import dispatch
from autopeft.experiments.search import run_search
from tests.bo.conftest import TINY_SEARCH, SyntheticObjective

ROOT = Path(__file__).resolve().parents[2]

#: (case id, overrides, fragments the one-line message must contain). Run through ``dispatch``.
DISPATCH_CASES: list[tuple[str, list[str], list[str]]] = [
    ("misspelt key", ["+search.n_inti=5"], ["unknown key search.n_inti", "did you mean 'n_init'"]),
    ("unknown mode", ["mode=serch"], ["mode='serch' is not a mode", "did you mean 'search'", "'retrain'"]),
    ("unknown search method", ["search.method=bayes"], ["search.method='bayes'", "'bo', 'random', 'nsga2'"]),
    ("size above the backbone", ["mode=params", "peft.sa_size=99999"], ["peft.sa_size=99999", "[0, 128]"]),
    ("negative size", ["mode=params", "peft.prefix_len=-3"], ["peft.prefix_len=-3", "[0, 128]"]),
    ("layer outside the backbone", ["mode=params", "peft.layers=[0,7]"], ["contains 7", "0..1"]),
    ("bad layers form", ["mode=params", "peft.layers=last:9"], ["last:9", "'all', 'first:N' or 'last:N'"]),
    ("unknown LoRA target", ["mode=params", "peft.lora_rank=4", "peft.lora_targets=[query,nope]"], ["'nope'", "'key'"]),
    ("zero initial design", ["search.n_init=0"], ["search.n_init=0 must be an integer >= 1"]),
    ("negative budget", ["search.n_iter=-5"], ["search.n_iter=-5 must be an integer >= 0"]),
    (
        "zero retrain budget",
        ["mode=retrain", "retrain.from=/tmp", "retrain.select=budget", "retrain.budget_percent=0"],
        ["retrain.budget_percent=0 must be a positive %"],
    ),
    (
        "reference point of the wrong shape",
        ["search.acquisition.ref_point=0.5"],
        ["search.acquisition.ref_point=0.5 must be a mapping {score: <number|null>, param_percent: <number|null>}"],
    ),
    ("reference point not a number", ["search.acquisition.ref_point.score=high"], ["ref_point.score='high'"]),
    ("resume of a missing directory", ["resume=/nonexistent/run"], ["resume='/nonexistent/run' does not exist"]),
    (
        "resume outside search",
        ["mode=train", "resume=/tmp"],
        ["resume='/tmp'", "resume= continues a search or a pipeline"],
    ),
    # The top-level values: mode, resume, seed, output_root, and no other top-level key.
    ("mode null", ["mode=null"], ["mode=null is not a mode", "allowed: 'search', 'retrain'"]),
    ("seed not a number", ["seed=abc"], ["seed='abc' must be an integer >= 0"]),
    ("negative seed", ["seed=-1"], ["seed=-1 must be an integer >= 0"]),
    ("seed null", ["seed=null"], ["seed=null must be an integer >= 0"]),  # spelt as typed, not None/True
    ("seed true", ["seed=true"], ["seed=true must be an integer >= 0"]),
    ("resume true", ["resume=true"], ["resume=true is not a run directory", "resume=<run dir>", "resume=null"]),
    ("resume a number", ["resume=3"], ["resume=3 is not a run directory", "resume=null (the default)"]),
    ("resume empty", ["resume="], ["resume='' is empty", "resume=<run dir>"]),
    ("resume of a file", [f"resume={ROOT / 'run.py'}"], ["run.py' is a file, not a run directory", "resume=<run dir>"]),
    ("output root empty", ["output_root="], ["output_root='' names no folder", "output_root=<dir>", "outputs"]),
    ("output root null", ["output_root=null"], ["output_root=null names no folder", "output_root=<dir>"]),
    (
        "output root a file",
        [f"output_root={ROOT / 'run.py'}"],
        ["run.py' is a file, not a folder", "output_root=<dir>"],
    ),
    ("unknown top-level key", ["+sed=1"], ["unknown top-level key 'sed'", "did you mean 'seed'", "'output_root'"]),
    (
        "unknown top-level group",
        ["+tsak.name=rte"],
        ["unknown top-level key 'tsak'", "did you mean 'task'", "'trainer'"],
    ),
    ("zero workers", ["search.parallel.workers=0"], ["search.parallel.workers=0", "'auto'"]),
    ("unknown executor", ["search.parallel.executor=ray"], ["executor='ray'", "'process', 'submitit'"]),
    ("zero epochs", ["mode=train", "fidelity.epochs=0"], ["fidelity.epochs=0"]),
    ("unknown W&B mode", ["mode=train", "logger=wandb", "logger.wandb.mode=cloud"], ["'cloud'", "'offline'"]),
    ("bad save_weights", ["mode=train", "trainer.save_weights=yes"], ["save_weights='yes'", "'peft'"]),
    # trainer.*: checked before the search (the default mode) or training starts; trainer.accelerator,
    # which depends on the machine, has its own test below.
    ("head dropout above 1", ["trainer.head_dropout=1.5"], ["trainer.head_dropout=1.5 must be a number in [0, 1)"]),
    ("negative weight decay", ["trainer.weight_decay=-0.5"], ["trainer.weight_decay=-0.5 must be a number >= 0"]),
    (
        "precision Lightning does not know",
        ["trainer.precision=fp64"],
        ["trainer.precision='fp64' is not a precision", "did you mean '64-true'", "'auto'", "'bf16-mixed'"],
    ),
    ("misspelt precision", ["trainer.precision=16mixed"], ["precision='16mixed'", "did you mean '16-mixed'"]),
    ("negative warm-up ratio", ["trainer.warmup_ratio=-1"], ["trainer.warmup_ratio=-1 must be a number in [0, 1)"]),
    ("zero batch size", ["trainer.batch_size=0"], ["trainer.batch_size=0 must be a positive integer"]),
    ("batch size true", ["trainer.batch_size=true"], ["trainer.batch_size=true must be a positive integer"]),
    ("negative learning rate", ["trainer.lr=-1"], ["trainer.lr=-1 must be a positive number or null"]),
    (
        "zero training batches",
        ["trainer.limit_train_batches=0"],
        ["trainer.limit_train_batches=0 must be null (the whole split), an integer >= 1", "a fraction in (0, 1]"],
    ),
    ("two devices", ["trainer.devices=2"], ["trainer.devices=2: each configuration trains on one device", "1"]),
    ("progress bar not a boolean", ["trainer.progress_bar=yes"], ["trainer.progress_bar='yes' must be true or false"]),
    (
        "head dropout above 1 in mode=train",
        ["mode=train", "peft=sa", "trainer.head_dropout=1.5"],
        ["trainer.head_dropout=1.5 must be a number in [0, 1)"],
    ),
    (
        "precision Lightning does not know in mode=train",
        ["mode=train", "peft=sa", "trainer.precision=fp64"],
        ["trainer.precision='fp64'", "did you mean '64-true'"],
    ),
    (
        "negative warm-up ratio in mode=train",
        ["mode=train", "peft=sa", "trainer.warmup_ratio=-1"],
        ["trainer.warmup_ratio=-1 must be a number in [0, 1)"],
    ),
    (
        "negative weight decay in mode=retrain",
        ["mode=retrain", "retrain.from=/tmp", "fidelity=full", "trainer.weight_decay=-0.5"],
        ["trainer.weight_decay=-0.5 must be a number >= 0"],
    ),
    ("report of a missing folder", ["mode=report", "report.runs=[/nonexistent/sweep]"], ["/nonexistent/sweep"]),
    ("empty pipeline", ["mode=pipeline"], ["pipeline.search_tasks and pipeline.baselines are both empty"]),
    ("unknown retrain selection", ["mode=retrain", "retrain.from=/tmp", "retrain.select=best"], ["'best'", "'front'"]),
    (
        "tokenizer that does not fit the backbone",
        ["mode=train", "backbone.arch.vocab_size=1000"],
        ["tokenizer has 30,522 tokens", "1,000 rows", "does not belong to this model"],
    ),
]


#: Data files with problems (written by the test), with the overrides that use them.
DATA_CASES: list[tuple[str, dict[str, str], list[str], list[str]]] = [
    (
        "dataset without the named column",
        {"train.csv": "review,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=reviews", "task.label=label"],
        ["has no column 'reviews'", "did you mean 'review'", "available columns: 'review', 'label'"],
    ),
    (
        "labels outside the task's label set",
        {"train.csv": "text,label\na,pos\nb,neg\nc,pos\nd,neg\n", "dev.csv": "text,label\ne,pos\nf,mixed\n"},
        ["task.text=text", "task.validation={dir}/dev.csv"],
        ["label(s) 'mixed' that never occur in training", "training labels: 'neg', 'pos'"],
    ),
    (
        "data file that does not exist",
        {},
        ["task.text=text"],
        ["task.train: the file", "does not exist"],
    ),
    (
        "headerless CSV read as if its first row were a header",
        {"train.csv": "good film,pos\nbad film,neg\nfine film,pos\n"},
        ["task.text=text"],
        [
            "has no column 'text'",
            "available columns: 'good film', 'pos'",
            "the first line looks like data, not a header",
            "'pos' also occurs as a value",
            "task.header=false task.columns=[...]",
            "its 2 columns",
        ],
    ),
    (
        "headerless CSV of numbers read as if its first row were a header",
        {"train.csv": "fine,0.5\npoor,1.5\ngood,2.5\n"},
        ["task.text=text", "task.label=score"],
        ["has no column 'text'", "its column name '0.5' is a number", "task.header=false task.columns=[...]"],
    ),
    (
        "headerless CSV without its column names",
        {"train.csv": "good film,pos\nbad film,neg\n"},
        ["task.text=text", "task.header=false"],
        ["task.header=false needs task.columns", "has 2 columns per row", "task.columns=[col1,col2]"],
    ),
    (
        "column names that do not fit the file",
        {"train.csv": "good film,pos\nbad film,neg\n"},
        ["task.text=text", "task.header=false", "task.columns=[text]"],
        ["task.columns names 1 column ('text')", "have 2 fields", "name every column, in order"],
    ),
    (
        "column names for a file with a header row",
        {"train.csv": "text,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=text", "task.columns=[text,label]"],
        ["task.columns=['text', 'label'] names the columns of a file without a header row", "task.header=false"],
    ),
    (
        "header that is not a boolean",
        {"train.csv": "text,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=text", "task.header=maybe"],
        ["task.header='maybe' must be true", "or false"],
    ),
    (
        "excluded labels that are not a list of values",
        {"train.csv": "text,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=text", "task.exclude_labels={a: 1}"],
        ["task.exclude_labels={'a': 1} must be a list of label values", "task.exclude_labels=['-','']"],
    ),
    (
        "custom task named like a built-in task",
        {"train.csv": "text,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=text", "task.name=rte"],
        ["task.name='rte' is the name of a built-in task", "task.name=rte_custom"],
    ),
    (
        "custom task name that cannot name a run directory",
        {"train.csv": "text,label\ngood film,pos\nbad film,neg\n"},
        ["task.text=text", "task.name='my/reviews'"],
        ["task.name='my/reviews' must be a short name of letters, digits", "e.g. task.name=my_reviews"],
    ),
]


@pytest.mark.parametrize(("case", "files", "overrides", "fragments"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_files_are_one_clear_line_and_write_nothing(
    tiny_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    case: str,
    files: dict[str, str],
    overrides: list[str],
    fragments: list[str],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    cfg = tiny_cfg(
        "mode=train",
        "task=custom",
        f"task.train={data / 'train.csv'}",
        *[o.replace("{dir}", str(data)) for o in overrides],
    )
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    code, err = _dispatch(cfg, capsys)
    assert code == 2
    _assert_one_clear_line(err, fragments)
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in data.iterdir()) == sorted(files)


def _dispatch(cfg: DictConfig, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        dispatch(cfg)
    return exit_info.value.code, capsys.readouterr().err


def _assert_one_clear_line(err: str, fragments: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"


@pytest.mark.parametrize(("case", "overrides", "fragments"), DISPATCH_CASES, ids=[c[0] for c in DISPATCH_CASES])
def test_bad_input_is_one_clear_line_and_writes_nothing(
    tiny_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
    case: str,
    overrides: list[str],
    fragments: list[str],
) -> None:
    cfg = tiny_cfg(*overrides)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    code, err = _dispatch(cfg, capsys)
    assert code == 2
    _assert_one_clear_line(err, fragments)
    noise = [
        r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR") and r.name.startswith("autopeft")
    ]
    assert not noise, f"{case}: logged before the error: {noise}"
    assert not (tmp_path / "run").exists(), f"{case}: the run directory was created"


@pytest.mark.parametrize(
    "overrides",
    [["trainer.accelerator=gpu"], ["mode=train", "peft=sa", "trainer.accelerator=gpu"]],
    ids=["search", "train"],
)
def test_a_gpu_accelerator_on_a_machine_without_one_is_one_clear_line(
    tiny_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    overrides: list[str],
) -> None:
    # The machine is made GPU-less for the check, so the case reads the same on any machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(autopeft.settings, "_mps_available", lambda: False)
    cfg = tiny_cfg(*overrides)
    with open_dict(cfg):
        cfg.run_dir = str(tmp_path / "run")
    code, err = _dispatch(cfg, capsys)
    assert code == 2
    _assert_one_clear_line(
        err,
        [
            "trainer.accelerator='gpu' needs a CUDA or Apple MPS GPU",
            "this machine has no GPU (torch.cuda.is_available() is False)",
            "allowed on this machine: 'auto', 'cpu'",
        ],
    )
    assert not (tmp_path / "run").exists()


@pytest.fixture
def finished_search(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    run_dir = tmp_path / "search"
    run_search(tiny_cfg(*TINY_SEARCH), run_dir, objective=SyntheticObjective())
    return run_dir


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, except ``.lock``, which each process that takes the lock stamps with its pid."""
    files = (p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("case", "overrides", "fragments"),
    [
        ("resume with another task", ["task=snli_binary"], ["it is a different search", "task.name"]),
        ("resume with another space", ["space=sa_layer"], ["it is a different search", "space"]),
    ],
)
def test_resume_of_a_different_search_is_refused_and_changes_nothing(
    tiny_cfg: Callable[..., DictConfig],
    finished_search: Path,
    capsys: pytest.CaptureFixture,
    case: str,
    overrides: list[str],
    fragments: list[str],
) -> None:
    before = _snapshot(finished_search)
    cfg = tiny_cfg(*TINY_SEARCH, *overrides)
    with open_dict(cfg):
        cfg.run_dir = str(finished_search)
    code, err = _dispatch(cfg, capsys)
    assert code == 2
    _assert_one_clear_line(err, fragments)
    assert _snapshot(finished_search) == before


@pytest.mark.parametrize(
    ("case", "damage", "fragments"),
    [
        ("corrupt results store", lambda lines: [lines[0], "{not json", *lines[1:]], ["line 2", "not modified"]),
        ("truncated results store", lambda lines: [lines[0][: len(lines[0]) // 2], *lines[1:]], ["line 1"]),
        ("record that mismatches its proposal", lambda lines: [lines[1], lines[0], *lines[2:]], ["does not match"]),
    ],
)
def test_damaged_results_store_is_refused_and_left_as_it_is(
    tiny_cfg: Callable[..., DictConfig],
    finished_search: Path,
    capsys: pytest.CaptureFixture,
    case: str,
    damage: Callable[[list[str]], list[str]],
    fragments: list[str],
) -> None:
    store = finished_search / "results.jsonl"
    lines = store.read_text().splitlines()
    damaged = damage(lines)
    if case == "record that mismatches its proposal":  # swap the points, keep the indices
        first, second = json.loads(lines[0]), json.loads(lines[1])
        first["point"], second["point"] = second["point"], first["point"]
        damaged = [json.dumps(first), json.dumps(second), *lines[2:]]
    store.write_text("\n".join(damaged) + "\n")
    before = _snapshot(finished_search)
    cfg = tiny_cfg(*TINY_SEARCH, "search.n_iter=5")
    with open_dict(cfg):
        cfg.run_dir = str(finished_search)
    code, err = _dispatch(cfg, capsys)
    assert code == 2
    _assert_one_clear_line(err, [str(store) if case != "record that mismatches its proposal" else "", *fragments])
    assert _snapshot(finished_search) == before


#: What run.py checks before Hydra acts (group options, keys: autopeft/overrides_check.py; the output
#: location), run as run.py itself.
SUBPROCESS_CASES: list[tuple[str, list[str], int, list[str]]] = [
    (
        "unknown experiment",
        ["experiment=glue_tranfer"],
        2,
        ["error: experiment='glue_tranfer' is not an option of experiment", "did you mean 'glue_transfer'"],
    ),
    ("unknown task", ["task=rtee"], 2, ["error: task='rtee' is not an option of task", "did you mean 'rte'"]),
    (
        "unknown backbone",
        ["backbone=bert_base"],
        2,
        ["error: backbone='bert_base' is not an option of backbone", "'bert_base_uncased'"],
    ),
    (
        "unknown space",
        ["space=sa_pa_pt_layers"],
        2,
        ["error: space='sa_pa_pt_layers' is not an option of space", "did you mean 'sa_pa_pt_layer'"],
    ),
    (
        "misspelt key without +",
        ["search.n_inti=5"],
        2,
        ["error: unknown key search.n_inti", "did you mean 'search.n_init'"],
    ),
    ("unwritable output folder", ["output_root={file}/runs"], 2, ["output_root=", "is a file, not a folder"]),
    ("empty output folder", ["output_root="], 2, ["error: output_root='' names no folder", "output_root=<dir>"]),
    ("null output folder", ["output_root=null"], 2, ["error: output_root=null names no folder"]),
    # Hydra would create a folder named True or ['a'] in the working directory.
    ("boolean output folder", ["output_root=true"], 2, ["error: output_root=true names no folder"]),
    ("list output folder", ["output_root=[a]"], 2, ["error: output_root=['a'] names no folder"]),
]


@pytest.mark.parametrize(("case", "args", "code", "fragments"), SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_what_hydra_checks_is_reported_without_a_traceback(
    tmp_path: Path, case: str, args: list[str], code: int, fragments: list[str]
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = [a.replace("{file}", str(blocker)) for a in args]
    if not any(a.startswith("output_root=") for a in argv):
        argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    result = subprocess.run(
        [sys.executable, "run.py", "mode=params", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} missing from: {result.stderr}"
    assert not (tmp_path / "run").exists()
    assert not [name for name in ("True", "None", "['a']") if (ROOT / name).exists()]


def _top_level_runs(mode: str) -> set[str]:
    """What ``/<mode>`` holds: where Hydra puts run directories when the output root is empty."""
    top = Path("/") / mode
    return {str(p) for p in top.rglob("*")} if top.is_dir() else set()


@pytest.mark.parametrize(("argv", "env"), [(["output_root="], {}), ([], {"AUTOPEFT_OUTPUT_ROOT": ""})])
def test_an_empty_output_root_is_refused_before_hydra_writes_at_the_top_of_the_disk(
    argv: list[str], env: dict[str, str]
) -> None:
    before = _top_level_runs("params")
    environ = {k: v for k, v in os.environ.items() if k != "AUTOPEFT_OUTPUT_ROOT"} | env
    result = subprocess.run(
        [sys.executable, "run.py", "mode=params", *argv],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    setting = "output_root=''" if argv else "$AUTOPEFT_OUTPUT_ROOT=''"
    assert lines == [
        f"error: {setting} names no folder; run output needs one: output_root=<dir> (default: outputs, "
        "or $AUTOPEFT_OUTPUT_ROOT)"
    ]
    assert _top_level_runs("params") == before


if __name__ == "__main__":  # print the first line of every error, for the notes
    import contextlib
    import io

    from hydra import compose, initialize_config_dir

    from autopeft.runtime import register_resolvers

    register_resolvers()
    for case, overrides, _ in DISPATCH_CASES:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=["experiment=none", "backbone=tiny_bert", "debug=smoke", *overrides])
        with open_dict(cfg):
            cfg.run_dir = "/nonexistent/run"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            dispatch(cfg)
        print(f"{case}: {err.getvalue().strip().splitlines()[0]}")
    for case, args, _, _ in SUBPROCESS_CASES:
        argv = [a.replace("{file}", "/etc/hostname") for a in args]
        out = subprocess.run([sys.executable, "run.py", "mode=params", *argv], cwd=ROOT, capture_output=True, text=True)
        print(f"{case}: {out.stderr.strip().splitlines()[0]}")
