"""Which task a record belongs to in a report: its name, qualified by its metric when names collide.

A task is identified by its ``task.name``. Two runs that share a name but were scored with
different main metrics (two custom datasets that both kept the old default name ``custom``, say:
a regression scored by Spearman and a classification scored by accuracy) are different tasks, and
averaging, tabulating or plotting them together would put accuracy and Spearman on one axis. So
such a name is qualified by the metric everywhere in the report (``custom · accuracy``,
``custom · spearman``), and the report says so once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from autopeft.errors import allowed_list

log = logging.getLogger("autopeft.report")


@dataclass(frozen=True)
class TaskNames:
    """The report's task labels: each task name, and the main metrics it was scored with.

    Attributes:
        metrics: Task name -> the distinct main metrics of its records, sorted.

    """

    metrics: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str | None]]) -> TaskNames:
        """From ``(task, main metric)`` pairs; a metric of None (a failed record has none) is skipped."""
        seen: dict[str, set[str]] = defaultdict(set)
        for task, metric in pairs:
            metrics = seen[str(task)]  # a name without any metric is still a task of the report
            if metric:
                metrics.add(str(metric))
        return cls({task: tuple(sorted(metrics)) for task, metrics in seen.items()})

    def label(self, task: str, metric: str | None) -> str:
        """``task``, or ``task · metric`` when the name was scored with more than one metric."""
        if metric and len(self.metrics.get(str(task), ())) > 1:
            return f"{task} · {metric}"
        return str(task)

    def collisions(self) -> dict[str, tuple[str, ...]]:
        """The task names scored with more than one metric, with those metrics."""
        return {task: metrics for task, metrics in sorted(self.metrics.items()) if len(metrics) > 1}

    def log_collisions(self) -> None:
        """Say, once per name, which task names were split by metric (and how to avoid it)."""
        for task, metrics in self.collisions().items():
            log.warning(
                "task %r was scored with different metrics (%s) in different runs: these are different tasks, "
                "kept apart as %s; give each custom task its own task.name",
                task,
                allowed_list(metrics),
                allowed_list(self.label(task, m) for m in metrics),
            )
