"""Paper-shaped tables and plots from finished run directories (``mode=report``).

Inputs are run directories of any mode, or folders holding them (e.g. a multirun sweep); each is
recognised by what it contains:

- a search (``search.json`` + ``results.jsonl``): its Pareto front, hypervolume trace and the
  distribution of the configurations it evaluated;
- a retraining (``retrain.jsonl``): one row per configuration, mean ± sd over seeds, and, when
  the configuration came from a search, a cell of the transfer grid;
- a single training (``results.json``): a baseline row (its ``peft`` preset) and a point on
  the front plots.

Outputs (each only when its inputs exist):

- ``table.md`` / ``table.csv``: configurations as rows, tasks as columns, the average and %
  params (the paper's Table 1); the caption and a ``protocol`` column say which ``data.protocol``
  produced the numbers (:mod:`autopeft.protocol`), and when the runs mix protocols every row is
  named ``<configuration> · protocol=<p>`` so no cell averages numbers of two protocols. A
  retrained configuration whose name comes from more than one search (``front-1``,
  ``best<=1.0%``) is named ``<choice> · <task searched on> (<method>)``, so two searches'
  configurations stay two rows;
- ``fronts.png``: per task, every search's front as the search saw it (low fidelity, validation
  split), with the single trainings *at the search's fidelity* overlaid as ▲; trainings at another
  fidelity are left out of it (the panel says how many) and drawn in ``fronts_full.png``;
- ``fronts_full.png``: Figure 4 proper. Per task, on the held-out split and at the (full)
  fidelity of the trainings: the retrained configurations of each search joined by their Pareto
  staircase, baselines swept over a size (``"SA sa_size=6"``, ``"SA sa_size=48"``) as one line
  per family, other baselines as ▲ and full fine-tuning as a dashed horizontal line (the rules
  are in :func:`full_fidelity_series`);
- ``hypervolume.png``: hypervolume against evaluations, mean ± sd over seeds per search setting;
- ``transfer.png`` / ``transfer.md`` / ``transfer.csv``: searched-on task × retrained-on task,
  held-out score × 100 (Figure 5; the choice of configuration per cell is described in
  :mod:`autopeft.report_transfer`);
- ``distribution.png`` / ``distribution.csv``: per search task, every successful evaluation's
  score against % params coloured by who proposed it, and each proposer's median % params
  (Figure 6).
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.bo.pareto import is_success
from autopeft.bo.store import ResultsStore
from autopeft.errors import ConfigError
from autopeft.io import csv_text
from autopeft.protocol import record_scoring, scores_caption, scores_label
from autopeft.report_plots import (
    plot_distribution,
    plot_fronts,
    plot_fronts_full,
    plot_hypervolume,
    plot_transfer,
)
from autopeft.report_transfer import (
    Retraining,
    load_retrainings,
    transfer_cells,
    transfer_csv,
    transfer_markdown,
    transfer_rows,
)

log = logging.getLogger("autopeft.report")


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


# ---------------------------------------------------------------------- the table


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
    runs: Runs, retrainings: Sequence[Retraining] | None = None
) -> tuple[dict[str, dict[str, Cell]], dict[str, str]]:
    """``{configuration: {task: Cell}}`` from trainings and retrainings, and each task's metric.

    Args:
        runs: The found run directories.
        retrainings: Their retraining records with sources (loaded from ``runs`` if not given).

    """
    if retrainings is None:
        retrainings = load_retrainings(runs.retrains, runs.searches)
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
        _add(cells, metrics, name, record)
    return cells, metrics


def _add(cells: dict, metrics: dict[str, str], name: str, record: Mapping[str, Any]) -> None:
    if record.get("status") != "ok" or "metrics" not in record:
        return
    task, metric = record["task"], record["main_metric"]
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


def table_rows(cells: Mapping[str, Mapping[str, Cell]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """One row per configuration: its cell per task, the average of the task means, % params, protocol."""
    rows = []
    for name, by_task in cells.items():
        protocols = sorted({p for c in by_task.values() for p, _ in c.kinds})
        means = [100 * statistics.mean(by_task[t].values) for t in tasks if t in by_task and by_task[t].values]
        percents = {c.param_percent for c in by_task.values() if c.param_percent is not None}
        rows.append(
            {
                "configuration": name,
                **{t: by_task[t].text() if t in by_task else "–" for t in tasks},
                "avg": f"{statistics.mean(means):.1f}" if len(means) == len(tasks) and means else "–",
                "% params": ", ".join(f"{p:.3f}" for p in sorted(percents)) or "–",
                "protocol": ", ".join(protocols) or "–",
            }
        )
    return rows


def table_scores(cells: Mapping[str, Mapping[str, Cell]]) -> str:
    """The caption line saying which protocol produced the table's numbers, per task when they differ."""
    kinds: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for by_task in cells.values():
        for task, cell in by_task.items():
            kinds[task] += sorted(cell.kinds)
    return scores_caption(kinds)


def table_markdown(
    rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], metrics: Mapping[str, str], scores: str = ""
) -> str:
    """Rows as a Markdown table; the caption says what the numbers are (``scores``: :func:`table_scores`)."""
    header = ["configuration", *tasks, "avg", "% params", "protocol"]
    lines = [
        "Scores × 100 (mean ± sd over seeds; one number: one seed). Metrics: "
        + ", ".join(f"{t} {metrics[t]}" for t in tasks)
        + ". % params: the paper's count (appendix A) as % of the backbone.",
        "",
        *([scores, ""] if scores else []),
        "| " + " | ".join(header) + " |",
        "|:--|" + "--:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> str:
    """Rows as CSV."""
    return csv_text(["configuration", *tasks, "avg", "% params", "protocol"], rows)


# ---------------------------------------------------------------------- fidelity


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


def _has_test_score(record: Mapping[str, Any]) -> bool:
    metrics = record.get("metrics")
    return (
        record.get("status") == "ok"
        and isinstance(metrics, Mapping)
        and isinstance(metrics.get("test"), Mapping)
        and record.get("main_metric") in metrics["test"]
    )


# ---------------------------------------------------------------------- fronts.png (search fidelity)


@dataclass
class SearchPanel:
    """One panel of ``fronts.png``: a task's search fronts and the trainings comparable with them.

    Attributes:
        task: The searched task.
        metric: Its main metric (the searches' validation score).
        fidelities: The searches' fidelities (distinct, in order of the searches).
        fronts: ``(label, front records)`` per search.
        trainings: Single trainings (``results.json`` records) of the task at one of the
            searches' fidelities (:meth:`Fidelity.same_schedule`), overlaid as ▲.
        left_out: Single trainings of the task at another fidelity: not on this plot.

    """

    task: str
    metric: str = "score"
    fidelities: list[Fidelity] = field(default_factory=list)
    fronts: list[tuple[str, list[Mapping[str, Any]]]] = field(default_factory=list)
    trainings: list[Mapping[str, Any]] = field(default_factory=list)
    left_out: list[Mapping[str, Any]] = field(default_factory=list)


def search_front_series(runs: Runs) -> dict[str, SearchPanel]:
    """Per searched task, the data of ``fronts.png`` (tasks without a search have no panel).

    A search scores configurations on the validation split at low fidelity, so a single
    training is overlaid only when it trained with a search's schedule; its ``score`` (best
    validation main metric) is then the same quantity as the front's. Trainings at another
    fidelity are listed in ``left_out``; they are in ``fronts_full.png``.
    """
    from autopeft.bo.front import front_records

    panels: dict[str, SearchPanel] = {}
    for run in runs.searches:
        config = json.loads((run / "search.json").read_text())["config"]
        records = ResultsStore(run / "results.jsonl").load()
        task = config["task"]["name"]
        panel = panels.setdefault(task, SearchPanel(task=task))
        fidelity = Fidelity.of(config.get("fidelity"))
        if fidelity not in panel.fidelities:
            panel.fidelities.append(fidelity)
        panel.fronts.append(
            (f"{config['search']['method']} · {config['space']['name']} ({run.name})", front_records(records))
        )
        main = next((r["main_metric"] for r in records if r.get("main_metric")), None)
        if main:
            panel.metric = main
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        panel = panels.get(record.get("task"))
        if panel is None or record.get("status") != "ok" or not isinstance(record.get("score"), int | float):
            continue
        fidelity = Fidelity.of(record.get("fidelity"))
        same = any(fidelity.same_schedule(f) for f in panel.fidelities)
        (panel.trainings if same else panel.left_out).append(record)
    return panels


# ---------------------------------------------------------------------- fronts_full.png (Figure 4)

#: A baseline swept over one size: ``"<family> <field>=<value>"`` (``"SA sa_size=6"``).
SWEEP_NAME = re.compile(r"^(?P<family>.+?) (?P<field>[A-Za-z_][\w.]*)=(?P<value>\S+)$")


@dataclass
class SeriesPoint:
    """One configuration on one task: held-out main metric per seed (a seed counted once).

    Attributes:
        name: The configuration's name (a retraining's ``choice``, a training's ``peft.name``).
        param_percent: % parameters (paper count).
        values: Held-out main metric per seed, as recorded (not × 100).
        seeds: The seeds counted.

    """

    name: str
    param_percent: float
    values: list[float] = field(default_factory=list)
    seeds: set[Any] = field(default_factory=set)
    kinds: set[tuple[str, str]] = field(default_factory=set)  # record_scoring() of the counted records

    @property
    def mean(self) -> float:
        """Mean over seeds."""
        return statistics.mean(self.values)

    @property
    def sd(self) -> float:
        """Sample sd over seeds (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def add(self, record: Mapping[str, Any]) -> None:
        """Add ``record``'s held-out score unless its seed is already counted."""
        seed = record.get("seed")
        if seed is not None:
            if seed in self.seeds:
                return  # the same seed trained again in another run directory: counted once
            self.seeds.add(seed)
        self.values.append(float(record["metrics"]["test"][record["main_metric"]]))
        self.kinds.add(record_scoring(record))


def pareto_staircase(points: Sequence[SeriesPoint]) -> list[SeriesPoint]:
    """The non-dominated points (fewer % params, higher mean), fewest parameters first.

    A point is dominated when another has at most its % params and at least its mean, one of the
    two strictly; of identical points the first is kept.
    """
    ordered = sorted(points, key=lambda p: (p.param_percent, -p.mean))
    front: list[SeriesPoint] = []
    for point in ordered:
        if not front or point.mean > front[-1].mean:
            front.append(point)
    return front


@dataclass
class FullFidelityPanel:
    """One panel of ``fronts_full.png`` (see :func:`full_fidelity_series`).

    Attributes:
        panel: Its title: the task (``task · backbone`` when the records' backbones differ).
        task: The task trained on.
        metric: Its main metric, reported on the held-out split.
        fidelity: The fidelity of every point of the panel.
        autopeft: Retrained configurations by their search's label (``AutoPEFT^RTE``), fewest
            parameters first.
        sweeps: Baselines swept over a size, by family (``SA``), fewest parameters first;
            ``sweep_fields`` names each family's swept field.
        singles: Other baselines (▲).
        fft: Full fine-tuning (``peft.full_finetune``): dashed horizontal lines.
        left_out: Records of the task at another fidelity: ``{fidelity text: count}``.

    """

    panel: str
    task: str
    metric: str
    fidelity: Fidelity
    autopeft: dict[str, list[SeriesPoint]] = field(default_factory=dict)
    sweeps: dict[str, list[SeriesPoint]] = field(default_factory=dict)
    sweep_fields: dict[str, str] = field(default_factory=dict)
    singles: list[SeriesPoint] = field(default_factory=list)
    fft: list[SeriesPoint] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)

    def staircase(self, label: str) -> list[SeriesPoint]:
        """The Pareto staircase of ``autopeft[label]``."""
        return pareto_staircase(self.autopeft[label])

    def points(self) -> list[SeriesPoint]:
        """Every point of the panel, full fine-tuning included."""
        out = [p for group in self.autopeft.values() for p in group]
        out += [p for group in self.sweeps.values() for p in group]
        return out + self.singles + self.fft

    def scores(self) -> str:
        """What the panel's numbers are and which protocol produced them (:func:`scores_label`)."""
        return scores_label(kind for p in self.points() for kind in p.kinds)


def autopeft_label(retraining: Retraining) -> str:
    """``AutoPEFT^<task searched on>`` (``AutoPEFT^RTE``), plus the method unless BO and the run if needed."""
    source = retraining.source
    if source is None:
        return str(retraining.record.get("choice"))
    label = f"AutoPEFT^{source.task}"
    if source.method not in (None, "bo"):
        label += f" ({source.method} search)"
    extra = (retraining.label or "")[len(source.base_label) :]  # ", <run>" when two searches share a label
    return label + extra


def full_fidelity_series(runs: Runs, retrainings: Sequence[Retraining] | None = None) -> dict[str, FullFidelityPanel]:
    """Per task, the data of ``fronts_full.png``: held-out scores, mean ± sd over seeds.

    Rules:

    - Retrained configurations (``retrain.jsonl`` records) that came from a search are grouped by
      that search (label :func:`autopeft_label`) and by ``choice``: one point each, joined by
      their Pareto staircase (:func:`pareto_staircase`). Retrainings of a file of configurations
      (no search) count as baselines under their ``choice``.
    - Single trainings (``results.json``) are baselines under their ``peft.name``. Full
      fine-tuning (``peft.full_finetune``) is a horizontal line. Names ``"<family>
      <field>=<value>"`` of one family with two or more members form a sweep (one line per
      family); every other baseline is a single point.
    - Scores are the held-out main metric (``metrics.test``). One fidelity per panel: the longest
      training among the task's records (most epochs; on a tie, the schedule with more records).
      Records at another fidelity are counted in ``left_out`` and not drawn, so no panel mixes a
      1-epoch score with a 20-epoch one.
    - A seed trained twice (two run directories) counts once.
    """
    if retrainings is None:
        retrainings = load_retrainings(runs.retrains, runs.searches)
    entries: list[tuple[str, str, str, Mapping[str, Any]]] = []  # (kind, group, name, record)
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        if _has_test_score(record):
            entries.append(("baseline", "", str((record.get("peft") or {}).get("name", "?")), record))
    for r in retrainings:
        if not _has_test_score(r.record):
            continue
        if r.source is not None and r.label is not None:
            entries.append(("autopeft", autopeft_label(r), str(r.record["choice"]), r.record))
        else:
            entries.append(("baseline", "", str(r.record["choice"]), r.record))
    backbones = {e[3].get("backbone") for e in entries} - {None}  # a record without one does not split panels
    by_panel: dict[tuple[str, str], list[tuple[str, str, str, Mapping[str, Any]]]] = defaultdict(list)
    for entry in entries:
        record = entry[3]
        title = record["task"] if len(backbones) <= 1 else f"{record['task']} · {record.get('backbone') or '?'}"
        by_panel[(title, record["task"])].append(entry)
    panels: dict[str, FullFidelityPanel] = {}
    for (title, task), group in sorted(by_panel.items()):
        schedules: dict[tuple[int, int], list[Fidelity]] = defaultdict(list)
        for entry in group:
            fidelity = Fidelity.of(entry[3].get("fidelity"))
            schedules[(-1 if fidelity.epochs is None else fidelity.epochs, fidelity.patience or 0)].append(fidelity)
        chosen = max(schedules, key=lambda k: (k[0], len(schedules[k])))
        candidates = schedules[chosen]  # same schedule; the names may differ (the most common one is shown)
        reference = max(candidates, key=lambda f: (candidates.count(f), f.name or ""))
        panel = FullFidelityPanel(panel=title, task=task, metric=group[0][3]["main_metric"], fidelity=reference)
        autopeft: dict[str, dict[str, SeriesPoint]] = defaultdict(dict)
        baselines: dict[str, SeriesPoint] = {}
        fft: set[str] = set()
        for kind, label, name, record in group:
            fidelity = Fidelity.of(record.get("fidelity"))
            if not fidelity.same_schedule(reference) and fidelity != reference:
                panel.left_out[fidelity.text()] = panel.left_out.get(fidelity.text(), 0) + 1
                continue
            percent = float((record.get("params") or {}).get("paper_percent") or 0.0)
            target = autopeft[label] if kind == "autopeft" else baselines
            target.setdefault(name, SeriesPoint(name=name, param_percent=percent)).add(record)
            if kind == "baseline" and (record.get("peft") or {}).get("full_finetune"):
                fft.add(name)
        for label, by_choice in sorted(autopeft.items()):
            panel.autopeft[label] = sorted(by_choice.values(), key=lambda p: (p.param_percent, p.name))
        families: dict[str, list[SeriesPoint]] = defaultdict(list)
        fields: dict[str, set[str]] = defaultdict(set)
        for name, point in baselines.items():
            match = SWEEP_NAME.match(name)
            if name not in fft and match:
                families[match["family"]].append(point)
                fields[match["family"]].add(match["field"])
        for family, members in sorted(families.items()):
            if len(members) < 2:
                continue
            panel.sweeps[family] = sorted(members, key=lambda p: (p.param_percent, p.name))
            panel.sweep_fields[family] = ", ".join(sorted(fields[family]))
        swept = {p.name for members in panel.sweeps.values() for p in members}
        panel.fft = [baselines[n] for n in sorted(fft)]
        singles = [p for n, p in baselines.items() if n not in fft and n not in swept]
        panel.singles = sorted(singles, key=lambda p: (p.param_percent, p.name))
        panels[title] = panel
    return panels


# ---------------------------------------------------------------------- proposals (Figure 6)


@dataclass(frozen=True)
class ProposalPoint:
    """One successful evaluation of a search, for the distribution plot.

    Attributes:
        panel: The plot panel: the search's task (``task · backbone`` when backbones differ).
        category: Who proposed it: ``init`` (the initial random design) or the search method
            (``bo``, ``random``, ``nsga2``).
        param_percent: % parameters (paper count).
        score: Low-fidelity validation score.
        metric: The score's metric.
        fallback: Proposed at random by a model-based searcher that had nothing to model yet.

    """

    panel: str
    category: str
    param_percent: float
    score: float
    metric: str
    fallback: bool = False


def proposal_points(searches: Sequence[Path]) -> dict[str, list[ProposalPoint]]:
    """Every successful evaluation of every search, by panel, the shared initial design once.

    Searches of different methods on one task with the same seed and ``n_init`` evaluate the same
    initial design (:func:`autopeft.bo.searchers.initial_design`), so initial points are kept once
    per panel and configuration. Records without a ``phase`` (written before it was logged) count
    as initial when their index is below ``n_init``.
    """
    configs = {run: json.loads((run / "search.json").read_text())["config"] for run in searches}
    backbones = {c["backbone"]["name"] for c in configs.values()}
    points: dict[str, list[ProposalPoint]] = defaultdict(list)
    seen_initial: set[tuple[str, str]] = set()
    for run, config in configs.items():
        method = config["search"]["method"]
        n_init = int(config["search"].get("n_init") or 0)
        panel = (
            config["task"]["name"]
            if len(backbones) == 1
            else f"{config['task']['name']} · {config['backbone']['name']}"
        )
        for record in ResultsStore(run / "results.jsonl").load():
            if not is_success(record):
                continue
            phase = record.get("phase") or ("init" if record["index"] < n_init else method)
            if phase == "init":
                key = (panel, json.dumps(record["point"], sort_keys=True))
                if key in seen_initial:
                    continue
                seen_initial.add(key)
            points[panel].append(
                ProposalPoint(
                    panel=panel,
                    category=phase if phase in ("init", "enumeration") else method,
                    param_percent=float(record["param_percent"]),
                    score=float(record["score"]),
                    metric=record.get("main_metric") or "score",
                    fallback=phase == "random-fallback",
                )
            )
    return dict(points)


#: Columns of ``distribution.csv``.
PROPOSAL_COLUMNS = ("panel", "proposer", "evaluations", "median_param_percent", "median_score")


def proposal_medians(points: Mapping[str, Sequence[ProposalPoint]]) -> list[dict[str, Any]]:
    """Per panel and proposer: evaluations, median % params and median score (successful ones).

    The initial design's row is the reference: the paper's point (Figure 6) is that BO's
    proposals reach similar scores with far fewer parameters than random ones.
    """
    rows = []
    for panel in sorted(points):
        by_proposer: dict[str, list[ProposalPoint]] = defaultdict(list)
        for p in points[panel]:
            by_proposer[p.category].append(p)
        for proposer in sorted(by_proposer, key=lambda c: (c != "init", c)):
            group = by_proposer[proposer]
            rows.append(
                {
                    "panel": panel,
                    "proposer": proposer,
                    "evaluations": len(group),
                    "median_param_percent": statistics.median(p.param_percent for p in group),
                    "median_score": statistics.median(p.score for p in group),
                }
            )
    return rows


def proposal_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Median rows as CSV with :data:`PROPOSAL_COLUMNS` as the header."""
    return csv_text(PROPOSAL_COLUMNS, rows)


# ---------------------------------------------------------------------- entry point


def build_report(inputs: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    """Find the runs under ``inputs`` and write the tables and plots into ``out_dir``.

    Returns:
        What a caller needs to print or log (e.g. to W&B) without reading the files back:
        ``runs`` (counts by kind), ``tasks``, ``rows`` (``table.csv``'s rows), ``transfer``
        (``transfer.csv``'s rows, one per heat-map cell), ``proposals`` (``distribution.csv``'s
        rows: per panel and proposer the median % params) and ``files`` (``{name: path}`` of
        everything written, ``report.json`` aside). The same object is saved as ``report.json``.

    """
    from autopeft.io import atomic_write_json, atomic_write_text

    if not inputs:
        raise ConfigError(
            "report.runs is empty; give run directories or folders holding them, e.g. report.runs=[outputs]"
        )
    runs = find_runs(inputs)
    retrainings = load_retrainings(runs.retrains, runs.searches)
    cells, metrics = collect_cells(runs, retrainings)
    tasks = sorted(metrics)
    rows = table_rows(cells, tasks)
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    if rows:
        files["table_md"] = out_dir / "table.md"
        files["table_csv"] = out_dir / "table.csv"
        atomic_write_text(files["table_md"], table_markdown(rows, tasks, metrics, table_scores(cells)))
        atomic_write_text(files["table_csv"], table_csv(rows, tasks))
    search_panels = search_front_series(runs)
    if search_panels:
        files["fronts"] = plot_fronts(search_panels, out_dir / "fronts.png")
    for panel in search_panels.values():
        if panel.left_out:
            log.info(
                "fronts.png, %s: %d single training(s) at another fidelity than the search's left out "
                "(they are in fronts_full.png)",
                panel.task,
                len(panel.left_out),
            )
    full_panels = full_fidelity_series(runs, retrainings)
    if full_panels:
        files["fronts_full"] = plot_fronts_full(full_panels, out_dir / "fronts_full.png")
    if runs.searches:
        files["hypervolume"] = plot_hypervolume(runs, out_dir / "hypervolume.png")
    transfer = transfer_cells(retrainings)
    if transfer:
        files["transfer"] = plot_transfer(transfer, out_dir / "transfer.png")
        files["transfer_md"] = out_dir / "transfer.md"
        files["transfer_csv"] = out_dir / "transfer.csv"
        atomic_write_text(files["transfer_md"], transfer_markdown(transfer))
        atomic_write_text(files["transfer_csv"], transfer_csv(transfer))
    points = proposal_points(runs.searches)
    medians = proposal_medians(points)
    if points:
        files["distribution"] = plot_distribution(points, out_dir / "distribution.png")
        files["distribution_csv"] = out_dir / "distribution.csv"
        atomic_write_text(files["distribution_csv"], proposal_csv(medians))
    for row in medians:
        log.info(
            "%s: %s proposals, %d successful evaluations, median %.4g%% params, median score %.4f",
            row["panel"],
            "initial-design" if row["proposer"] == "init" else row["proposer"],
            row["evaluations"],
            row["median_param_percent"],
            row["median_score"],
        )
    summary = {
        "runs": {"searches": len(runs.searches), "retrains": len(runs.retrains), "trainings": len(runs.trainings)},
        "tasks": tasks,
        "scores": table_scores(cells),
        "rows": rows,
        "transfer": transfer_rows(transfer),
        "proposals": medians,
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write_json(out_dir / "report.json", summary)
    return summary
