"""Weights & Biases logging of a report: its tables as W&B tables and its plots as images.

With ``logger=wandb`` a report (``mode=report``, or a pipeline's last stage) becomes one W&B run
of job type ``report`` in the same project and group as the runs it summarises, so a whole
experiment can be browsed in one W&B project.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def log_report(cfg: DictConfig, run_dir: Path, files: Mapping[str, str | Path]) -> str | None:
    """Log every CSV of ``files`` as a ``wandb.Table`` and every PNG as a ``wandb.Image``.

    Args:
        cfg: The report's config (``logger.wandb`` decides whether and where to log).
        run_dir: The report's directory (the W&B run's files go there; its id derives from it,
            so rebuilding the report updates the same W&B run).
        files: The report's outputs by name (``build_report``'s ``summary["files"]``).

    Returns:
        The W&B run's id, or None when W&B logging is off.

    """
    wandb_cfg = cfg.logger.get("wandb")
    if wandb_cfg is None or wandb_cfg.mode == "disabled":
        return None
    import wandb

    run_id = "report-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
    run = wandb.init(
        project=wandb_cfg.project,
        entity=wandb_cfg.entity,
        group=wandb_cfg.group,
        tags=[*list(wandb_cfg.tags or []), "report"],
        mode=wandb_cfg.mode,
        dir=str(run_dir),
        name=wandb_cfg.get("name") or f"report {Path(run_dir).parent.name}/{Path(run_dir).name}",
        id=run_id,
        resume="allow",
        job_type="report",
        config={"report": OmegaConf.to_container(cfg.report, resolve=True)},
    )
    logged: dict[str, Any] = {}
    for name, path in files.items():
        path = Path(path)
        if path.suffix == ".csv" and path.is_file():
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
            if rows:
                logged[f"report/{name}"] = wandb.Table(columns=rows[0], data=rows[1:])
        elif path.suffix == ".png" and path.is_file():
            logged[f"report/{name}"] = wandb.Image(str(path), caption=path.stem)
    run.log(logged)
    run.finish()
    return run_id
