"""Where the search meets training: score one configuration of the space by a training run.

The search loop knows nothing about Lightning and the trainer nothing about BO; this module
turns a :class:`~autopeft.space.Point` into the ``peft`` node of the run config, trains it at the
configured fidelity (:func:`autopeft.training.train.train_and_evaluate`) and returns the fields the results
store keeps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autopeft.space import Point, SearchSpace
from autopeft.training.train import TrainingJob, train_and_evaluate


class TrainingObjective:
    """Evaluates configurations by low-fidelity training (the paper's search proxy).

    Args:
        job: The run's training job; its ``peft`` node is replaced per configuration.
        space: The search space the points come from.
        backbone_params: Denominator of % trainable parameters.
        run_dir: The search's run directory; evaluation ``i`` logs into ``evals/<i>/``.

    """

    def __init__(self, job: TrainingJob, space: SearchSpace, backbone_params: int, run_dir: Path) -> None:
        self.job = job
        self.space = space
        self.backbone_params = backbone_params
        self.run_dir = Path(run_dir)

    def job_for(self, point: Point) -> TrainingJob:
        """The training job of ``point``."""
        return self.job.updated(
            {
                "peft": self.space.to_peft(point, name="search").to_dict(),
                # One W&B run per search, not one per evaluation (the loop logs every evaluation to
                # it); per-evaluation curves still go to CSV in evals/<i>/.
                "logger.wandb": None,
                "trainer.progress_bar": False,
            }
        )

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        """Train ``point`` and return its result fields.

        Returns:
            ``status`` (``ok``, ``diverged`` or ``oom``), ``score`` (main validation metric, None
            when failed), ``reason`` (why it failed), ``param_percent`` (paper's count),
            ``seconds``, and the training record under ``train``.

        """
        started = time.perf_counter()
        record = train_and_evaluate(self.job_for(point), self.run_dir / "evals" / f"{index:04d}")
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
