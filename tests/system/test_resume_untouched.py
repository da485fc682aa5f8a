"""``resume=`` is checked before anything is written: a refused resume leaves the directory as it was.

Hydra writes its ``.hydra/`` snapshot and opens ``run.log`` in the run directory before any of
AutoPEFT's code runs, and a resume's run directory is the one it names; these tests run the real
``run.py`` and compare every file of that directory, bytes and names, before and after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from autopeft.cli import resumed_kind
from autopeft.errors import ConfigError
from autopeft.experiments.pipeline import PIPELINE_FORMAT, check_resume_overrides, hydra_composer
from autopeft.experiments.search import run_search
from autopeft.runs.kinds import describe_run_dir, run_kind
from tests.bo.conftest import TINY_SEARCH, SyntheticObjective

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden ones and the lock file included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def searched(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """A finished search (scored by a synthetic objective) in a run directory with Hydra's files."""
    run_dir = tmp_path / "search"
    run_search(tiny_cfg(*TINY_SEARCH), run_dir, objective=SyntheticObjective())
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- backbone=tiny_bert\n")
    (run_dir / "run.log").write_text("[the search's own log]\n")
    return run_dir


def test_a_folder_that_is_no_run_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("my notes\n")
    before = _files(folder)
    line = _one_error_line(_run(f"resume={folder}"), f"resume='{folder}'", "not the run directory of a search")
    assert "search.json" in line and "pipeline.json" in line
    assert _files(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]  # no .hydra/, no run.log


def test_a_train_run_is_refused_and_its_hydra_snapshot_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- mode=train\n- peft=lora\n")
    (run_dir / ".hydra" / "config.yaml").write_text("mode: train\n")
    (run_dir / "results.json").write_text(json.dumps({"status": "ok", "score": 0.5}))
    (run_dir / "run.log").write_text("[the training's log]\n")
    before = _files(run_dir)
    _one_error_line(_run(f"resume={run_dir}"), "is a mode=train run (results.json)", "not a search or pipeline")
    assert _files(run_dir) == before


def test_a_resume_with_another_task_is_refused_and_writes_nothing(searched: Path) -> None:
    before = _files(searched)
    _one_error_line(_run(f"resume={searched}", "task=snli_binary"), "it is a different search", "task.name")
    assert _files(searched) == before  # .hydra/overrides.yaml still names the run's own overrides


@pytest.mark.parametrize(
    ("marker", "kind"),
    [("pipeline.json", "pipeline"), ("search.json", "search"), ("retrain.jsonl", "retrain"), ("results.json", "train")],
)
def test_run_kind_is_told_from_the_marker_file(tmp_path: Path, marker: str, kind: str) -> None:
    (tmp_path / marker).write_text("{}")
    assert run_kind(tmp_path) == kind
    assert run_kind(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("mode", "marker", "expected"),
    [
        ("search", "search.json", "search"),
        ("search", "pipeline.json", "pipeline"),  # resume=<pipeline dir> alone continues the pipeline
        ("pipeline", "pipeline.json", "pipeline"),
        ("pipeline", "search.json", r"is a search, not a pipeline; drop mode=pipeline"),
        ("train", "search.json", r"it does not apply to mode='train'"),
        ("search", "results.json", r"is a mode=train run \(results.json\), not a search or pipeline"),
        ("search", None, r"not the run directory of a search or pipeline"),
    ],
)
def test_resumed_kind_accepts_only_the_run_the_mode_continues(
    tmp_path: Path, mode: str, marker: str | None, expected: str
) -> None:
    if marker:
        (tmp_path / marker).write_text("{}")
    if expected in ("search", "pipeline"):
        assert resumed_kind(tmp_path, mode, str(tmp_path)) == expected
    else:
        with pytest.raises(ConfigError, match=expected):
            resumed_kind(tmp_path, mode, str(tmp_path))
    assert "Traceback" not in describe_run_dir(tmp_path)


@pytest.mark.slow  # two real run.py searches (about 20 s): .ci/run runs it after the default suite
def test_an_accepted_resume_keeps_the_snapshot_and_appends_to_the_log(tmp_path: Path) -> None:
    """A real tiny search resumed to extend it: the original .hydra/ stays, run.log grows."""
    common = ["backbone=tiny_bert", "debug=smoke", f"data.cache_dir={tmp_path / 'cache'}", "search.progress=false"]
    first = _run(*common, "search.n_init=2", "search.n_iter=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    snapshot = _files(run_dir / ".hydra")
    log_before = (run_dir / "run.log").read_text()
    again = _run(f"resume={run_dir}", "search.n_iter=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _files(run_dir / ".hydra") == snapshot  # the run's own overrides, not the resume's
    log_after = (run_dir / "run.log").read_text()
    assert log_after.startswith(log_before) and len(log_after) > len(log_before)
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 3


def _pipeline_dir(tmp_path: Path) -> Path:
    """A pipeline's run directory as its first start leaves it: pipeline.json with its invocation."""
    run_dir = tmp_path / "pipeline"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=layer_selection\n- debug=smoke\n")
    state = {
        "format": PIPELINE_FORMAT,
        "overrides": ["experiment=layer_selection", "debug=smoke"],
        "stages": [],
    }
    (run_dir / "pipeline.json").write_text(json.dumps(state))
    return run_dir


def test_a_pipeline_resume_with_another_task_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    run_dir = _pipeline_dir(tmp_path)
    before = _files(run_dir)
    line = _one_error_line(_run(f"resume={run_dir}", "task=snli_binary"), "changes what the pipeline's results mean")
    assert "task.name: 'rte' in the run, 'snli_binary' now" in line
    assert _files(run_dir) == before


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ([], None),
        (["search.n_iter=50", "logger=wandb", "retrain.seeds=[0,1,2,3]"], None),  # budgets and logging only
        (["task=snli_binary"], "task"),
        (["trainer.lr_peft=0.001"], "trainer.lr_peft"),
        (["backbone=tiny_bert"], "backbone"),
    ],
)
def test_pipeline_resume_overrides_may_extend_but_not_change(extra: list[str], refused: str | None) -> None:
    compose = hydra_composer(ROOT / "conf")
    saved = ["experiment=layer_selection", "debug=smoke"]
    if refused is None:
        check_resume_overrides(compose, saved, extra, Path("run"))
    else:
        with pytest.raises(ConfigError, match=rf"cannot resume run with .*{refused}"):
            check_resume_overrides(compose, saved, extra, Path("run"))
