"""The entry point's dispatch: run ``cfg.mode``; a config error becomes one ``error:`` line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from autopeft.errors import ConfigError, allowed_list, did_you_mean
from autopeft.experiments.modes import (
    mode_params,
    mode_pipeline,
    mode_report,
    mode_retrain,
    mode_space,
    mode_train,
    search_command,
)
from autopeft.runtime import quiet_libraries
from autopeft.settings import check_seed

MODES: dict[str, Callable[[DictConfig], Any]] = {
    "search": search_command,
    "retrain": mode_retrain,
    "report": mode_report,
    "train": mode_train,
    "pipeline": mode_pipeline,
    "params": mode_params,
    "space": mode_space,
}


def dispatch(cfg: DictConfig) -> Any:
    """Run ``cfg.mode``; print config errors as one line and exit with status 2."""
    quiet_libraries()
    try:
        mode = cfg.mode
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not a mode{did_you_mean(mode, MODES)}; allowed: {allowed_list(MODES)}")
        check_seed(cfg.get("seed"))
        resume = cfg.get("resume")
        if resume and (Path(str(resume)) / "pipeline.json").is_file():
            return mode_pipeline(cfg, resume_dir=Path(str(resume)))
        if resume and mode != "search":
            raise ConfigError(f"resume= continues a search or a pipeline; it does not apply to mode={mode!r}")
        return MODES[mode](cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
