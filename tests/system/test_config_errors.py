"""Bad configuration values fail early with a message naming the value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from autopeft.cli import dispatch
from autopeft.errors import ConfigError
from autopeft.overrides_check import SHAPES, check_overrides
from autopeft.peft import peft_from_config
from autopeft.settings import TrainingSettings
from autopeft.training.backbones import shape_of

ROOT = Path(__file__).resolve().parents[2]


def test_misspelt_key_on_the_command_line_is_refused(compose_cfg: Callable) -> None:
    with pytest.raises(ConfigCompositionException, match="sa_sise"):
        compose_cfg("peft.sa_sise=3")


def test_misspelt_key_added_with_plus_is_named_with_a_suggestion(compose_cfg: Callable) -> None:
    cfg = compose_cfg("+peft.sa_sise=3")
    with pytest.raises(ConfigError, match=r"unknown key peft\.sa_sise \(did you mean 'sa_size'\?\)"):
        peft_from_config(cfg.peft, shape_of(cfg.backbone))


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["peft.sa_size=1537"], r"peft\.sa_size=1537 is outside .*'minilm'.*\[0, 1536\]"),
        (["peft.prefix_len=-1"], r"peft\.prefix_len=-1 .*\[0, 1536\]"),
        (["backbone=bert_base_arch", "peft.pa_size=3073"], r"peft\.pa_size=3073 .*\[0, 3072\]"),
        (["peft=lora", "peft.lora_rank=385"], r"peft\.lora_rank=385 .*\[0, 384\]"),
        (["peft.layers=last:7"], r"peft\.layers='last:7': N=7 is outside 1\.\.6"),
        (["peft.layers=[0,6]"], r"contains 6, .*6 layers: allowed indices are 0\.\.5"),
        (["peft.layers=[1,1]"], r"lists a layer twice"),
        (["peft.layers=some"], r"peft\.layers='some'.*'all'"),
        (["peft=lora", "peft.lora_targets=[query,keys]"], r"'keys'; allowed: 'query', 'key'"),
        (["peft=fft", "peft.sa_size=8"], r"cannot be combined with PEFT modules"),
    ],
)
def test_peft_values_outside_the_backbone_fail_early(compose_cfg: Callable, overrides: list[str], pattern: str) -> None:
    cfg = compose_cfg(*overrides)
    with pytest.raises(ConfigError, match=pattern):
        peft_from_config(cfg.peft, shape_of(cfg.backbone))


def test_unknown_group_options_list_the_allowed_ones(compose_cfg: Callable) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_cfg("task=rtee")
    assert "rtee" in str(err.value) and "rte" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["trainer.batch_size=0"], r"trainer\.batch_size=0 must be a positive integer"),
        (["fidelity.epochs=-1"], r"fidelity\.epochs=-1"),
        (["+trainer.learning_rate=1"], r"unknown key trainer\.learning_rate"),
        (["logger=wandb", "logger.wandb.mode=sometimes"], r"logger\.wandb\.mode='sometimes'; allowed: 'offline'"),
    ],
)
def test_run_settings_are_validated(compose_cfg: Callable, overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TrainingSettings.from_config(compose_cfg(*overrides))


def test_unknown_mode_exits_with_status_two(compose_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dispatch(compose_cfg("mode=trian"))
    assert exit_info.value.code == 2
    assert "mode='trian' is not a mode (did you mean 'train'?)" in capsys.readouterr().err


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "run.py", "mode=params", "peft.sa_size=1537", f"output_root={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: peft.sa_size=1537 is outside")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- run.py's override check
# Hydra's own report of the cases above is 5-24 lines without the closest match, and for a misspelt
# key it advises `+serch.n_iter=3`, which would add an unused key. run.py calls check_overrides
# first: one `error:` line with the closest match and the allowed values, exit status 2.

#: (command line, fragments of the one-line message).
BAD_OVERRIDES: list[tuple[list[str], list[str]]] = [
    (
        ["task=rotten_tomato", "backbone=tiny_bert"],
        ["task='rotten_tomato' is not an option of task (did you mean 'rotten_tomatoes'?); allowed: 'boolq', 'cb'"],
    ),
    (["backbone=bert"], ["backbone='bert'", "did you mean 'tiny_bert'?", "'bert_base_uncased'"]),
    (["fidelity=medium"], ["fidelity='medium' is not an option of fidelity; allowed: 'full', 'full_es5', 'low'"]),
    (["search=bayes"], ["search='bayes'", "allowed: 'bo', 'cheapest', 'nsga2', 'random', 'stratified'"]),
    (["experiment=glue_tranfer"], ["experiment='glue_tranfer'", "did you mean 'glue_transfer'?", "'demo'"]),
    (["-m", "task=rte,rtee", "debug=smoke"], ["task='rtee'", "did you mean 'rte'?", "'wic'"]),
    (["task=choice(rte,cbb)"], ["task='cbb'", "did you mean 'cb'?"]),
    (["hydra/launcher=paralel"], ["hydra/launcher='paralel'", "did you mean 'parallel'?", "'basic', 'joblib'"]),
    (["debug=null"], ["debug=null is not an option of debug; allowed: 'smoke'"]),
    (["hydra/launchr=parallel"], ["no config group 'hydra/launchr' (did you mean 'hydra/launcher'?)"]),
    (["bakbone@x=tiny_bert"], ["no config group 'bakbone' (did you mean 'backbone'?)"]),
    (
        ["serch.n_iter=3"],
        ["unknown key serch.n_iter (did you mean 'search.n_iter'?); allowed top-level keys: 'backbone'", "'seed'"],
    ),
    (["serch.n_itr=3"], ["unknown key serch.n_itr (did you mean 'search.n_iter'?)"]),
    (
        ["search.n_inti=5"],
        [
            "unknown key search.n_inti (did you mean 'search.n_init'?); "
            "allowed keys of search with search=bo: 'acquisition'"
        ],
    ),
    (["tsak=rte"], ["unknown key tsak (did you mean 'task'?)"]),
    (["~serch"], ["unknown key serch (did you mean 'search'?)"]),
    (
        ["peft=lora", "peft.lora_rnk=4"],
        ["peft.lora_rnk (did you mean 'peft.lora_rank'?)", "keys of peft with peft=lora"],
    ),
    (["-m", "seed=0,1", "search.n_iter=2,3", "serch.n_init=1,2"], ["unknown key serch.n_init", "'search.n_init'"]),
    (["--cfg", "job", "serch.n_iter=3"], ["unknown key serch.n_iter"]),  # what would be printed, checked too
    (
        ["logger.wandb.mode=online"],
        ["logger.wandb holds null with logger=csv, not keys; logger=wandb has it"],
    ),
    (["seed.x=1"], ["unknown key seed.x: seed holds 0, not keys"]),
    (["hydra.run.dri=/tmp/x"], ["unknown key hydra.run.dri (did you mean 'hydra.run.dir'?)"]),
    (["+seed=1"], ["+seed=1 adds a key, but seed exists: change it with seed=1"]),
    (
        ["search.acquisition.ref_point=[0.5,1]"],
        [
            "search.acquisition.ref_point=[0.5, 1] must be a mapping "
            "{score: <number|null>, param_percent: <number|null>}"
        ],
    ),
    (["-m", "search.acquisition.ref_point=null,[1,2]"], ["search.acquisition.ref_point=[1, 2] must be a mapping"]),
    (["peft.lora_targets={a:1}"], ["peft.lora_targets={'a': 1} must be a list, like its default"]),
    (["search.surrogate=[1]"], ["search.surrogate=[1] must be a mapping {kind: <text>, warmup_steps: <number>"]),
]


@pytest.mark.parametrize(("argv", "fragments"), BAD_OVERRIDES, ids=[" ".join(a) for a, _ in BAD_OVERRIDES])
def test_check_overrides_names_the_closest_match_and_the_allowed_values(argv: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(argv)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    assert "+serch" not in message and "append" not in message  # never Hydra's advice to add a key


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["mode=params", "backbone=tiny_bert", "peft=lora"],
        ["mode=space", "backbone=tiny_bert", "space=sa"],
        ["experiment=glue_transfer", "debug=smoke", "search.n_iter=3"],
        ["-m", "task=rte,cb", "seed=0,1"],
        ["-m", "peft=sa,lora", "peft.lora_rank=4", "search.acquisition.ref_point.score=0.5"],
        ["task=glob(rt*)"],  # a glob picks among the existing options
        ["hydra/launcher=parallel", "hydra.launcher.n_jobs=4", "hydra.run.dir=/tmp/x"],
        ["logger=wandb", "logger.wandb.mode=online"],
        ["+peft.sa_sise=3", "+sed=1"],  # '+' adds a key: AutoPEFT's own checks name it later
        ["++seed=3", "~search.n_iter"],
        ["task={name: x}"],  # a mapping sets the task node's keys (Hydra: a key override, not a group)
        ["--cfg", "job", "search.n_iter=3"],
        ["--help", "task=nope"],  # help composes nothing the user means to run
        ["task=["],  # a syntax error: Hydra's message says where
        ["--config-name", "other", "task=nope"],  # another primary config: Hydra checks it
    ],
)
def test_check_overrides_lets_good_command_lines_through(argv: list[str]) -> None:
    from autopeft.overrides_check import CONF_DIR, CONFIG_NAME, _check

    _check(argv, CONF_DIR, CONFIG_NAME)  # without check_overrides' safety net, which would hide a fault


def test_shape_message_words_the_reference_point_as_the_search_does() -> None:
    from autopeft.bo.pareto import parse_ref_point

    with pytest.raises(ConfigError) as search_err:
        parse_ref_point([0.5, 1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as override_err:
        check_overrides(["search.acquisition.ref_point=[0.5,1]"])
    assert SHAPES["search.acquisition.ref_point"] in str(search_err.value)
    assert str(override_err.value).startswith(str(search_err.value))


def test_key_overrides_of_the_primary_config_need_no_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.overrides_check as overrides_check

    composed = []
    monkeypatch.setattr(overrides_check, "_check_keys", lambda *args, **kwargs: composed.append(args))
    check_overrides(
        ["mode=params", "seed=1", "output_root=/tmp/x", "hydra.run.dir=/tmp/y", "task=rte", "-m", "peft=sa,lora"]
    )
    assert not composed  # mode, seed, output_root and hydra.run.dir are plain values of conf/run.yaml
    check_overrides(["search.n_iter=3"])
    assert len(composed) == 1


def test_a_fault_of_the_check_itself_leaves_the_command_line_to_hydra(monkeypatch: pytest.MonkeyPatch) -> None:
    import autopeft.overrides_check as overrides_check

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the check")

    monkeypatch.setattr(overrides_check, "_check_keys", broken)
    check_overrides(["search.n_iter=3"])  # no error: Hydra still checks what it runs


#: The issue's examples through run.py itself (each ~0.5 s: the check exits before torch loads).
RUN_PY_CASES: list[tuple[list[str], list[str]]] = [
    (["task=rotten_tomato", "backbone=tiny_bert"], ["did you mean 'rotten_tomatoes'?", "'boolq'"]),
    (["backbone=bert"], ["did you mean 'tiny_bert'?", "'minilm'"]),
    (["fidelity=medium"], ["fidelity='medium'", "'full', 'full_es5', 'low'"]),
    (["search=bayes"], ["search='bayes'", "'random'"]),
    (["serch.n_iter=3"], ["unknown key serch.n_iter (did you mean 'search.n_iter'?)", "'search'"]),
    (["search.acquisition.ref_point=[0.5,1]"], ["must be a mapping {score: <number|null>", "ref_point.score="]),
    (["-m", "task=rte,rtee", "debug=smoke"], ["task='rtee'", "did you mean 'rte'?", "'cb'"]),
]


@pytest.mark.parametrize(("argv", "fragments"), RUN_PY_CASES, ids=[" ".join(a) for a, _ in RUN_PY_CASES])
def test_run_py_reports_a_bad_override_in_one_line_and_writes_nothing(
    tmp_path: Path, argv: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "run.py", *argv, "mode=params", f"output_root={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"
    assert "+serch" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_run_py_runs_hydra_after_composing_for_the_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "run.py", "--cfg", "job", "task=rte", "search.n_iter=7", f"output_root={tmp_path / 'out'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "n_iter: 7" in result.stdout and "name: rte" in result.stdout
