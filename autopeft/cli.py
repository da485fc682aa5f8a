"""The entry point's dispatch: run ``cfg.mode``; a config error becomes one ``error:`` line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
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
from autopeft.runs.kinds import RESUMABLE, describe_run_dir, run_kind
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


def resumed_kind(run_dir: Path, mode: str, shown: str) -> str:
    """The kind of run ``resume=`` continues (``"search"`` or ``"pipeline"``), checked before anything is written.

    Args:
        run_dir: The existing directory ``resume=`` names.
        mode: The ``mode`` asked for (``search``, the default, resumes either kind).
        shown: ``resume=``'s value as given, for the message.

    Raises:
        ConfigError: ``mode`` is neither search nor pipeline, ``run_dir`` holds no search or
            pipeline (say, a ``mode=train`` run or any other folder), or it holds the other kind
            than ``mode=pipeline`` asks for.

    """
    what = "resume= continues a search or a pipeline"
    if mode not in RESUMABLE:
        raise ConfigError(f"resume={shown!r}: {what}; it does not apply to mode={mode!r}")
    kind = run_kind(run_dir)
    if kind not in RESUMABLE:
        raise ConfigError(
            f"resume={shown!r} is {describe_run_dir(run_dir)}; {what}: give the "
            "directory a search printed at its end ('resume or extend: python run.py resume=<dir>')"
        )
    if mode == "pipeline" and kind != "pipeline":
        raise ConfigError(f"resume={shown!r} is a search, not a pipeline; drop mode=pipeline to resume the search")
    return kind


def dispatch(cfg: DictConfig) -> Any:
    """Run ``cfg.mode``; print config errors as one line and exit with status 2.

    The top-level values (``mode``, ``resume``, ``seed``, ``output_root``) are checked first, so a
    bad one fails before any mode reads the rest of the config.
    """
    quiet_libraries()
    try:
        run = RunSettings.from_config(cfg, MODES)
        if run.resume is not None:
            kind = resumed_kind(run.resume, run.mode, str(cfg.resume))
            if kind == "pipeline":
                return mode_pipeline(cfg, resume_dir=run.resume)
        return MODES[run.mode](cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
