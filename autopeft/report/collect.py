"""Finding finished runs under the report's inputs and collecting their scores."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.bo.pareto import is_success
from autopeft.data.protocol import record_scoring
from autopeft.errors import ConfigError
from autopeft.report.identity import TaskNames
from autopeft.report.transfer import (
    Retraining,
    load_retrainings,
)
from autopeft.runs.store import ResultsStore


@dataclass
class Runs:
    """The run directories found under the report's inputs, by kind."""

    searches: list[Path] = field(default_factory=list)
    retrains: list[Path] = field(default_factory=list)
    trainings: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.searches) + len(self.retrains) + len(self.trainings)


def find_runs(inputs: Iterable[str | Path], max_depth: int = 4) -> Runs:
    """Classify every run directory at or below ``inputs`` (sweep folders are searched).

    Raises:
        ConfigError: If an input does not exist or holds no run at all.

    """
    runs = Runs()
    for item in inputs:
        root = Path(item).expanduser()
        if not root.exists():
            raise ConfigError(f"report input {str(root)!r} does not exist")
        found_before = len(runs)
        _walk(root, runs, max_depth)
        if len(runs) == found_before:
            raise ConfigError(
                f"report input {str(root)!r} holds no run directory (a search.json, retrain.jsonl or results.json)"
            )
    return runs


def _walk(folder: Path, runs: Runs, depth: int) -> None:
    if (folder / "search.json").is_file():
        runs.searches.append(folder)
        return  # a search's evals/ are part of it, not runs of their own
    if (folder / "retrain.jsonl").is_file():
        runs.retrains.append(folder)
        return
    if (folder / "results.json").is_file():
        runs.trainings.append(folder)
        return
    if depth > 0:
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            _walk(child, runs, depth - 1)


@dataclass(frozen=True)
class TaskScan:
    """What the report's runs say about their tasks, before anything is tabulated or drawn.

    Attributes:
        names: Each task's label (:class:`~autopeft.report.identity.TaskNames`).
        unsuccessful: Tasks none of whose runs has a successful evaluation (every evaluation of
            their searches failed, every training diverged...), with their number of runs: they
            have no cell, point or panel in the report.

    """

    names: TaskNames
    unsuccessful: dict[str, int]


def scan_tasks(runs: Runs, retrainings: Sequence[Retraining] | None = None) -> TaskScan:
    """Every task of every run, the main metrics it was scored with and whether any evaluation succeeded."""
    if retrainings is None:
        retrainings = load_retrainings(runs.retrains, runs.searches)
    pairs: list[tuple[str, str | None]] = []
    counts: dict[str, int] = defaultdict(int)
    succeeded: set[str] = set()

    def note(task: str, records: Iterable[Mapping[str, Any]], ok: Callable[[Mapping[str, Any]], bool]) -> None:
        counts[task] += 1
        for record in records:
            pairs.append((task, record.get("main_metric")))
            if ok(record):
                succeeded.add(task)

    for run in runs.searches:
        task = str(json.loads((run / "search.json").read_text())["config"]["task"]["name"])
        note(task, ResultsStore(run / "results.jsonl").load(), is_success)
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        note(str(record.get("task")), [record], has_test_score)
    for r in retrainings:
        note(str(r.record.get("task")), [r.record], has_test_score)
    unsuccessful = {task: n for task, n in sorted(counts.items()) if task not in succeeded}
    return TaskScan(names=TaskNames.of(pairs), unsuccessful=unsuccessful)


@dataclass
class Cell:
    """Reported (``metrics.test``) main-metric values of one configuration on one task (one per seed)."""

    values: list[float] = field(default_factory=list)
    param_percent: float | None = None
    seeds: set[int] = field(default_factory=set)
    kinds: set[tuple[str, str]] = field(default_factory=set)  # record_scoring() of the counted records

    def text(self) -> str:
        """``mean ± sd`` (``mean`` alone for one seed), scaled to percent like the paper's tables."""
        if not self.values:
            return "–"
        mean = 100 * statistics.mean(self.values)
        if len(self.values) == 1:
            return f"{mean:.1f}"
        return f"{mean:.1f} ± {100 * statistics.stdev(self.values):.1f}"


def collect_cells(
    runs: Runs, retrainings: Sequence[Retraining] | None = None, names: TaskNames | None = None
) -> tuple[dict[str, dict[str, Cell]], dict[str, str]]:
    """``{configuration: {task: Cell}}`` from trainings and retrainings, and each task's metric.

    Args:
        runs: The found run directories.
        retrainings: Their retraining records with sources (loaded from ``runs`` if not given).
        names: The report's task labels (from :func:`scan_tasks` if not given): a task name
            scored with two metrics is two columns, never one.

    """
    if retrainings is None:
        retrainings = load_retrainings(runs.retrains, runs.searches)
    if names is None:
        names = scan_tasks(runs, retrainings).names
    named: list[tuple[str, Mapping[str, Any]]] = []
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        named.append((record.get("peft", {}).get("name", "?"), record))
    # Choice names such as front-1 or best<=1.0% repeat across searches: a name that comes from
    # more than one source is qualified by its search, so two searches' configurations stay apart.
    sources: dict[str, set[str | None]] = defaultdict(set)
    for r in retrainings:
        sources[r.record["choice"]].add(r.label)
    for r in retrainings:
        name = r.record["choice"]
        if len(sources[name]) > 1 and r.label is not None:
            name = f"{name} · {r.label}"
        named.append((name, r.record))
    # A best-over-epochs dev score and a held-out one are different quantities: when the runs mix
    # protocols, every row names its protocol, so no cell averages the two.
    protocols = {record_scoring(record)[0] for _, record in named if record.get("status") == "ok"}
    cells: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    metrics: dict[str, str] = {}
    for name, record in named:
        if len(protocols) > 1:
            name = f"{name} · protocol={record_scoring(record)[0]}"
        _add(cells, metrics, name, record, names)
    return cells, metrics


def _add(cells: dict, metrics: dict[str, str], name: str, record: Mapping[str, Any], names: TaskNames) -> None:
    if record.get("status") != "ok" or "metrics" not in record:
        return
    metric = record["main_metric"]
    task = names.label(record["task"], metric)
    metrics[task] = metric
    cell = cells[name][task]
    seed = record.get("seed")
    if seed is not None:
        if seed in cell.seeds:
            return  # the same seed trained again in another run directory: counted once, as in the transfer grid
        cell.seeds.add(seed)
    cell.values.append(float(record["metrics"]["test"][metric]))
    cell.param_percent = record["params"]["paper_percent"]
    cell.kinds.add(record_scoring(record))


@dataclass(frozen=True)
class Fidelity:
    """How long a configuration was trained: a record's ``fidelity`` or a search config's.

    Attributes:
        name: The preset's name (``low``, ``full``), when known.
        epochs: Training epochs, when known.
        patience: Early-stopping patience in epochs (None: no early stopping).

    """

    name: str | None = None
    epochs: int | None = None
    patience: int | None = None

    @classmethod
    def of(cls, value: Any) -> Fidelity:
        """From a ``fidelity`` mapping (an empty :class:`Fidelity` when there is none)."""
        if not isinstance(value, Mapping):
            return cls()
        epochs, patience = value.get("epochs"), value.get("early_stopping_patience")
        return cls(
            name=value.get("name"),
            epochs=int(epochs) if isinstance(epochs, int | float) else None,
            patience=int(patience) if isinstance(patience, int | float) and patience else None,
        )

    def same_schedule(self, other: Fidelity) -> bool:
        """Trained for as long: the same epochs and early stopping (the name only when epochs are unknown).

        The name alone does not decide: a smoke run's ``full`` preset cut to 1 epoch trains exactly
        as ``low`` does, and its scores compare with a low-fidelity search's.
        """
        if self.epochs is None or other.epochs is None:
            return self.name is not None and self.name == other.name
        return (self.epochs, self.patience) == (other.epochs, other.patience)

    def text(self) -> str:
        """``full fidelity (20 epochs, early stopping after 10)``; ``fidelity unknown`` without fields."""
        head = f"{self.name} fidelity" if self.name else "fidelity"
        details = []
        if self.epochs is not None:
            details.append(f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}")
            if self.patience:
                details.append(f"early stopping after {self.patience}")
        if not details:
            return head if self.name else "fidelity unknown"
        return f"{head} ({', '.join(details)})"


def has_test_score(record: Mapping[str, Any]) -> bool:
    """Whether ``record`` holds a test-split score (records of retrainings and trainings do; searches' do not)."""
    metrics = record.get("metrics")
    return (
        record.get("status") == "ok"
        and isinstance(metrics, Mapping)
        and isinstance(metrics.get("test"), Mapping)
        and record.get("main_metric") in metrics["test"]
    )
