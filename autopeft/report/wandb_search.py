"""Weights & Biases logging of a search: one W&B run per search, one step per evaluation.

Resumable: the W&B run id is derived from the run directory, so a resumed search continues the
same W&B run instead of starting a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class SearchWandb:
    """Logs evaluations and the final front to W&B when ``logger.wandb`` is on; does nothing otherwise."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.run: Any = None
        wandb_cfg = cfg.logger.wandb
        if wandb_cfg is None or wandb_cfg.mode == "disabled":
            return
        import wandb

        run_id = hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=wandb_cfg.project,
            entity=wandb_cfg.entity,
            group=wandb_cfg.group or f"search-{cfg.task.name}",
            tags=[*list(wandb_cfg.tags or []), "search", cfg.search.method],
            mode=wandb_cfg.mode,
            dir=str(run_dir),
            name=wandb_cfg.get("name") or Path(run_dir).name,
            id=run_id,
            resume="allow",
            config=OmegaConf.to_container(cfg, resolve=True),
            job_type="search",
        )

    def log_evaluation(self, record: Mapping[str, Any], state: Mapping[str, Any]) -> None:
        """One evaluation and the search state after it."""
        if self.run is None:
            return
        self.run.log(
            {
                "eval/index": record["index"],
                "eval/score": record["score"],
                "eval/param_percent": record["param_percent"],
                "eval/seconds": record["seconds"],
                "eval/failed": int(record["status"] != "ok"),
                "search/best_score": state["best"],
                "search/front_size": state["front_size"],
                "search/hypervolume": state["hypervolume"],
            },
            step=record["index"],
        )

    def log_final(self, rows: Sequence[Mapping[str, Any]], plot: Path, summary: Mapping[str, Any]) -> None:
        """The front as a W&B table, the plot as an image, the summary numbers; then finish."""
        if self.run is None:
            return
        import wandb

        columns = list(rows[0]) if rows else ["configuration"]
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
        self.run.log({"search/front": table, "search/pareto_plot": wandb.Image(str(plot))})
        for key in ("evaluations", "failed", "front_size", "hypervolume", "best"):
            self.run.summary[f"search/{key}"] = summary["state"].get(key)
        # search/hypervolume is on this axis (-% params or -log10 % params)
        self.run.summary["search/param_objective"] = (summary["state"].get("param_objective") or {}).get("name")
        self.run.finish()
