"""The entry point's dispatch: run ``cfg.mode``; a config error becomes one ``error:`` line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from autopeft.errors import ConfigError
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
from autopeft.settings import RunSettings

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
    """Run ``cfg.mode``; print config errors as one line and exit with status 2.

    The top-level values (``mode``, ``resume``, ``seed``, ``output_root``) are checked first, so a
    bad one fails before any mode reads the rest of the config.
    """
    quiet_libraries()
    try:
        run = RunSettings.from_config(cfg, MODES)
        if run.resume is not None and (run.resume / "pipeline.json").is_file():
            return mode_pipeline(cfg, resume_dir=run.resume)
        if run.resume is not None and run.mode != "search":
            raise ConfigError(
                f"resume={str(cfg.resume)!r}: resume= continues a search or a pipeline; "
                f"it does not apply to mode={run.mode!r}"
            )
        return MODES[run.mode](cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
