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
