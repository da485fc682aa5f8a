"""Where the search meets training: score one configuration of the space by a training run.

The search loop knows nothing about Lightning and the trainer nothing about BO; this module
turns a :class:`~autopeft.space.Point` into the ``peft`` node of the run config, trains it at the
configured fidelity (:func:`autopeft.train.train_and_evaluate`) and returns the fields the results
store keeps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from autopeft.space import Point, SearchSpace


class TrainingObjective:
    """Evaluates configurations by low-fidelity training (the paper's search proxy).

    Args:
        cfg: The composed run config; its ``peft`` node is replaced per configuration.
        space: The search space the points come from.
        backbone_params: Denominator of % trainable parameters.
        run_dir: The search's run directory; evaluation ``i`` logs into ``evals/<i>/``.

    """

    def __init__(self, cfg: DictConfig, space: SearchSpace, backbone_params: int, run_dir: Path) -> None:
        self.cfg = cfg
        self.space = space
        self.backbone_params = backbone_params
        self.run_dir = Path(run_dir)

    def config_for(self, point: Point) -> DictConfig:
        """The run config that trains ``point``."""
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True))
        with open_dict(cfg):
            cfg.peft = self.space.to_peft(point, name="search").to_dict()
            # One W&B run per search, not one per evaluation (the loop logs every evaluation to it);
            # per-evaluation curves still go to CSV in evals/<i>/.
            cfg.logger.wandb = None
            cfg.trainer.progress_bar = False
        return cfg

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        """Train ``point`` and return its result fields.

        Returns:
            ``status`` (``ok``, ``diverged`` or ``oom``), ``score`` (main validation metric, None
            when failed), ``reason`` (why it failed), ``param_percent`` (paper's count),
            ``seconds``, and the training record under ``train``.

        """
        from autopeft.train import train_and_evaluate

        started = time.perf_counter()
        record = train_and_evaluate(self.config_for(point), self.run_dir / "evals" / f"{index:04d}")
        ok = record["status"] == "ok"
        return {
            "status": record["status"],
            "score": float(record["score"]) if ok else None,
            "reason": record.get("reason"),
            "param_percent": self.space.param_percent(point, self.backbone_params),
            "params": record["params"],
            "metrics": record.get("metrics"),
            "main_metric": record.get("main_metric"),
            "seconds": time.perf_counter() - started,
            "train_seconds": record["train_seconds"],
            "samples_per_second": record["samples_per_second"],
            "oom_retry": record.get("oom_retry"),  # set when it ran out of memory once and was retried
        }
