"""The data behind the report's figures: search fronts, full-fidelity fronts, proposals by proposer."""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.bo.pareto import is_success
from autopeft.data.protocol import record_scoring, scores_label
from autopeft.io import csv_text
from autopeft.report.collect import Fidelity, Runs, has_test_score, scan_tasks
from autopeft.report.identity import TaskNames
from autopeft.report.transfer import (
    Retraining,
    load_retrainings,
)
from autopeft.runs.store import ResultsStore


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
        unsuccessful: The run names of its searches without a successful evaluation (no front).

    """

    task: str
    metric: str = "score"
    fidelities: list[Fidelity] = field(default_factory=list)
    fronts: list[tuple[str, list[Mapping[str, Any]]]] = field(default_factory=list)
    trainings: list[Mapping[str, Any]] = field(default_factory=list)
    left_out: list[Mapping[str, Any]] = field(default_factory=list)
    unsuccessful: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        """Whether the panel has anything to draw: a front point or an overlaid training."""
        return any(front for _, front in self.fronts) or bool(self.trainings)


def _search_metric(records: Sequence[Mapping[str, Any]]) -> str | None:
    """A search's main metric, from its records (failed evaluations do not record one)."""
    return next((r["main_metric"] for r in records if r.get("main_metric")), None)


def search_front_series(runs: Runs, names: TaskNames | None = None) -> dict[str, SearchPanel]:
    """Per searched task, the data of ``fronts.png`` (tasks without a search have no panel).

    A search scores configurations on the validation split at low fidelity, so a single
    training is overlaid only when it trained with a search's schedule; its ``score`` (best
    validation main metric) is then the same quantity as the front's. Trainings at another
    fidelity are listed in ``left_out``; they are in ``fronts_full.png``. Panels are keyed by
    the task's label (``names``, from :func:`~autopeft.report.collect.scan_tasks` if not given),
    so a task name scored with two metrics is two panels.
    """
    from autopeft.runs.front import front_records

    if names is None:
        names = scan_tasks(runs).names
    panels: dict[str, SearchPanel] = {}
    for run in runs.searches:
        config = json.loads((run / "search.json").read_text())["config"]
        records = ResultsStore(run / "results.jsonl").load()
        main = _search_metric(records)
        task = names.label(config["task"]["name"], main)
        panel = panels.setdefault(task, SearchPanel(task=task))
        fidelity = Fidelity.of(config.get("fidelity"))
        if fidelity not in panel.fidelities:
            panel.fidelities.append(fidelity)
        front = front_records(records)
        panel.fronts.append((f"{config['search']['method']} · {config['space']['name']} ({run.name})", front))
        if not front:
            panel.unsuccessful.append(run.name)
        if main:
            panel.metric = main
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        panel = panels.get(names.label(str(record.get("task")), record.get("main_metric")))
        if panel is None or record.get("status") != "ok" or not isinstance(record.get("score"), int | float):
            continue
        fidelity = Fidelity.of(record.get("fidelity"))
        same = any(fidelity.same_schedule(f) for f in panel.fidelities)
        (panel.trainings if same else panel.left_out).append(record)
    return panels


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


def full_fidelity_series(
    runs: Runs, retrainings: Sequence[Retraining] | None = None, names: TaskNames | None = None
) -> dict[str, FullFidelityPanel]:
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
    - A panel is one task label (``names``): a task name scored with two metrics is two panels.
    """
    if retrainings is None:
        retrainings = load_retrainings(runs.retrains, runs.searches)
    if names is None:
        names = scan_tasks(runs, retrainings).names
    entries: list[tuple[str, str, str, Mapping[str, Any]]] = []  # (kind, group, name, record)
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        if has_test_score(record):
            entries.append(("baseline", "", str((record.get("peft") or {}).get("name", "?")), record))
    for r in retrainings:
        if not has_test_score(r.record):
            continue
        if r.source is not None and r.label is not None:
            entries.append(("autopeft", autopeft_label(r), str(r.record["choice"]), r.record))
        else:
            entries.append(("baseline", "", str(r.record["choice"]), r.record))
    backbones = {e[3].get("backbone") for e in entries} - {None}  # a record without one does not split panels
    by_panel: dict[tuple[str, str], list[tuple[str, str, str, Mapping[str, Any]]]] = defaultdict(list)
    for entry in entries:
        record = entry[3]
        task = names.label(record["task"], record["main_metric"])
        title = task if len(backbones) <= 1 else f"{task} · {record.get('backbone') or '?'}"
        by_panel[(title, task)].append(entry)
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


def proposal_points(searches: Sequence[Path], names: TaskNames | None = None) -> dict[str, list[ProposalPoint]]:
    """Every successful evaluation of every search, by panel, the shared initial design once.

    Searches of different methods on one task with the same seed and ``n_init`` evaluate the same
    initial design (:func:`autopeft.bo.searchers.initial_design`), so initial points are kept once
    per panel and configuration. Records without a ``phase`` (written before it was logged) count
    as initial when their index is below ``n_init``. A panel is one task label (``names``): a
    task name scored with two metrics is two panels.
    """
    configs = {run: json.loads((run / "search.json").read_text())["config"] for run in searches}
    stores = {run: ResultsStore(run / "results.jsonl").load() for run in searches}
    if names is None:
        names = TaskNames.of((c["task"]["name"], _search_metric(stores[run])) for run, c in configs.items())
    backbones = {c["backbone"]["name"] for c in configs.values()}
    points: dict[str, list[ProposalPoint]] = defaultdict(list)
    seen_initial: set[tuple[str, str]] = set()
    for run, config in configs.items():
        method = config["search"]["method"]
        n_init = int(config["search"].get("n_init") or 0)
        task = names.label(config["task"]["name"], _search_metric(stores[run]))
        panel = task if len(backbones) == 1 else f"{task} · {config['backbone']['name']}"
        for record in stores[run]:
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
