"""A search from a run config: where the search loop meets the task, the backbone and training.

:func:`run_search` checks the config, builds the task, backbone and search space once, and hands
them with the training objective to the loop (:func:`autopeft.bo.loop.search`), which knows
nothing of tasks, models or Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from autopeft.bo.loop import SearchProblem, search
from autopeft.bo.scheduler import Objective
from autopeft.bo.settings import SearchSettings
from autopeft.space import Point, SearchSpace
from autopeft.tasks.spec import TaskSpec
from autopeft.training.backbones import load_backbone
from autopeft.training.objective import TrainingObjective
from autopeft.training.train import TrainingJob


def search_problem(
    cfg: DictConfig, run_dir: Path, objective: Objective | None = None, task: TaskSpec | None = None
) -> SearchProblem:
    """Check ``cfg`` and build what its search needs, before anything is written or trained.

    Args:
        cfg: The composed run config.
        run_dir: The search's run directory (the training objective logs into ``evals/``).
        objective: Scores a configuration; default: low-fidelity training of it.
        task: The task, when the caller built it already (a custom task reads its files).

    Raises:
        ConfigError: Naming the first bad value of the ``search``, trainer, data, task or space nodes.

    """
    settings = SearchSettings.from_config(cfg.search)
    job = TrainingJob.from_config(cfg, task)  # a bad trainer, data or task node fails here, not in an evaluation
    backbone = load_backbone(job.backbone, weights=False)
    space = SearchSpace.from_config(cfg.space, backbone.shape)
    if objective is None:
        objective = TrainingObjective(job, space, backbone.num_params, Path(run_dir))
    return SearchProblem(settings, space, backbone.num_params, objective)


def run_search(
    cfg: DictConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    objective: Objective | None = None,
    on_record: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    candidates: list[Point] | None = None,
    task: TaskSpec | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search ``cfg.search`` in ``run_dir`` and return its final state.

    Args:
        cfg: The composed run config (``search``, ``space``, ``task``, ``backbone``, ...).
        run_dir: The run directory (an existing one continues where it stopped).
        resume: True when the user asked to resume (the directory must hold a search).
        objective: Scores a configuration; default: low-fidelity training (TrainingObjective).
        on_record: Called with ``(record, tracker state)`` after each evaluation is stored.
        candidates: Restrict the search to these configurations (tabulated benchmarks).
        task: The task, when the caller built it already.

    Returns:
        See :func:`autopeft.bo.loop.search`.

    """
    problem = search_problem(cfg, run_dir, objective, task)
    return search(cfg, run_dir, problem, resume=resume, on_record=on_record, candidates=candidates)
