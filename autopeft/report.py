"""Paper-shaped tables and plots from finished run directories (``mode=report``).

Inputs are run directories of any mode, or folders holding them (e.g. a multirun sweep); each is
recognised by what it contains:

- a search (``search.json`` + ``results.jsonl``): its Pareto front and hypervolume trace;
- a retraining (``retrain.jsonl``): one row per configuration, mean ± sd over seeds;
- a single training (``results.json``): a baseline row (its ``peft`` preset) and a point on
  the front plot.

Outputs: ``table.md`` / ``table.csv`` (configurations as rows, tasks as columns, the average and
% params, as the paper's Table 1), ``fronts.png`` (every search's front with the single-training
baselines overlaid, as Figure 4) and ``hypervolume.png`` (hypervolume against evaluations, mean
± sd over seeds per search setting).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.bo.front import front_records
from autopeft.bo.pareto import hypervolume_trace, parse_ref_point, search_reference
from autopeft.bo.store import ResultsStore
from autopeft.errors import ConfigError
from autopeft.evaluate import RETRAIN_RECORD_KEYS
from autopeft.io import save_figure


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
    """Held-out main-metric values of one configuration on one task (one per seed)."""

    values: list[float] = field(default_factory=list)
    param_percent: float | None = None

    def text(self) -> str:
        """``mean ± sd`` (``mean`` alone for one seed), scaled to percent like the paper's tables."""
        if not self.values:
            return "–"
        mean = 100 * statistics.mean(self.values)
        if len(self.values) == 1:
            return f"{mean:.1f}"
        return f"{mean:.1f} ± {100 * statistics.stdev(self.values):.1f}"


def collect_cells(runs: Runs) -> tuple[dict[str, dict[str, Cell]], dict[str, str]]:
    """``{configuration: {task: Cell}}`` from trainings and retrainings, and each task's metric."""
    cells: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    metrics: dict[str, str] = {}
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        _add(cells, metrics, record.get("peft", {}).get("name", "?"), record)
    for run in runs.retrains:
        for record in ResultsStore(run / "retrain.jsonl", required_keys=RETRAIN_RECORD_KEYS).load():
            _add(cells, metrics, record["choice"], record)
    return cells, metrics


def _add(cells: dict, metrics: dict[str, str], name: str, record: Mapping[str, Any]) -> None:
    if record.get("status") != "ok" or "metrics" not in record:
        return
    task, metric = record["task"], record["main_metric"]
    metrics[task] = metric
    cell = cells[name][task]
    cell.values.append(float(record["metrics"]["test"][metric]))
    cell.param_percent = record["params"]["paper_percent"]


def table_rows(cells: Mapping[str, Mapping[str, Cell]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """One row per configuration: its cell per task, the average of the task means, % params."""
    rows = []
    for name, by_task in cells.items():
        means = [100 * statistics.mean(by_task[t].values) for t in tasks if t in by_task and by_task[t].values]
        percents = {c.param_percent for c in by_task.values() if c.param_percent is not None}
        rows.append(
            {
                "configuration": name,
                **{t: by_task[t].text() if t in by_task else "–" for t in tasks},
                "avg": f"{statistics.mean(means):.1f}" if len(means) == len(tasks) and means else "–",
                "% params": ", ".join(f"{p:.3f}" for p in sorted(percents)) or "–",
            }
        )
    return rows


def table_markdown(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str], metrics: Mapping[str, str]) -> str:
    """Rows as a Markdown table; the caption says what the numbers are."""
    header = ["configuration", *tasks, "avg", "% params"]
    lines = [
        "Held-out scores × 100 (mean ± sd over seeds; one number: one seed). Metrics: "
        + ", ".join(f"{t} {metrics[t]}" for t in tasks)
        + ". % params: the paper's count (appendix A) as % of the backbone.",
        "",
        "| " + " | ".join(header) + " |",
        "|:--|" + "--:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> str:
    """Rows as CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["configuration", *tasks, "avg", "% params"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------------- the plots


def _search_label(run: Path) -> tuple[str, dict[str, Any]]:
    manifest = json.loads((run / "search.json").read_text())
    config = manifest["config"]
    label = f"{config['search']['method']} · {config['task']['name']} · {config['space']['name']}"
    return label, config


def plot_fronts(runs: Runs, path: Path) -> Path:
    """Per task: every search's front (staircase) and single-training baselines as markers (Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fronts: dict[str, list[tuple[str, list[Mapping[str, Any]]]]] = defaultdict(list)
    points: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    metric: dict[str, str] = {}
    for run in runs.searches:
        _, config = _search_label(run)
        records = ResultsStore(run / "results.jsonl").load()
        task = config["task"]["name"]
        fronts[task].append(
            (f"{config['search']['method']} · {config['space']['name']} ({run.name})", front_records(records))
        )
        main = next((r["main_metric"] for r in records if r.get("main_metric")), None)
        if main:
            metric[task] = main
    for run in runs.trainings:
        record = json.loads((run / "results.json").read_text())
        if record.get("status") == "ok":
            points[record["task"]].append(record)
            metric[record["task"]] = record["main_metric"]
    tasks = sorted(set(fronts) | set(points))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6.2 * max(1, len(tasks)), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        xs: list[float] = []
        for label, front in fronts[task]:
            if not front:
                continue
            x = [r["param_percent"] for r in front]
            y = [r["score"] for r in front]
            xs += x
            line = ax.step(x, y, where="post", lw=1.3, label=label)[0]
            ax.scatter(x, y, s=18, color=line.get_color())
        for record in points[task]:
            x, y = record["params"]["paper_percent"], record["score"]
            xs.append(x)
            ax.scatter([x], [y], marker="^", s=50, color="black", zorder=5)
            ax.annotate(record["peft"]["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        positive = [x for x in xs if x > 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
        ax.set_xlabel("trainable parameters (% of backbone, paper count; symlog)")
        ax.set_ylabel(f"{metric.get(task, 'score')} (validation)")
        ax.set_title(f"{task}: search fronts, ▲ single configurations", fontsize=10)
        ax.grid(alpha=0.3)
        if fronts[task]:
            ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_hypervolume(runs: Runs, path: Path) -> Path:
    """Hypervolume against evaluations, mean ± sd over seeds of each (method, task, space)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    groups: dict[str, list[list[float]]] = defaultdict(list)
    for run in runs.searches:
        label, config = _search_label(run)
        records = ResultsStore(run / "results.jsonl").load()
        acquisition = config["search"].get("acquisition") or {}
        ref = search_reference(records, parse_ref_point(acquisition.get("ref_point")), config["search"]["n_init"])
        trace = [math.nan if v is None else v for v in hypervolume_trace(records, ref)]
        if trace:
            groups[label].append(trace)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, traces in groups.items():
        length = min(len(t) for t in traces)
        runs_t = torch.tensor([t[:length] for t in traces], dtype=torch.float64)
        mean = runs_t.mean(0)
        xs = range(1, length + 1)
        line = ax.plot(xs, mean, label=f"{label} (n={len(traces)})")[0]
        if len(traces) > 1:
            sd = runs_t.std(0)
            ax.fill_between(xs, mean - sd, mean + sd, alpha=0.15, color=line.get_color())
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (search's reference point)")
    ax.set_title("Hypervolume over the search (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- entry point


def build_report(inputs: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    """Find the runs under ``inputs`` and write the table and plots into ``out_dir``.

    Returns:
        ``{"runs": {kind: count}, "tasks": [...], "rows": [...], "files": {name: path}}``.

    """
    from autopeft.io import atomic_write_json, atomic_write_text

    if not inputs:
        raise ConfigError(
            "report.runs is empty; give run directories or folders holding them, e.g. report.runs=[outputs]"
        )
    runs = find_runs(inputs)
    cells, metrics = collect_cells(runs)
    tasks = sorted(metrics)
    rows = table_rows(cells, tasks)
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    if rows:
        files["table_md"] = out_dir / "table.md"
        files["table_csv"] = out_dir / "table.csv"
        atomic_write_text(files["table_md"], table_markdown(rows, tasks, metrics))
        atomic_write_text(files["table_csv"], table_csv(rows, tasks))
    if runs.searches or runs.trainings:
        files["fronts"] = plot_fronts(runs, out_dir / "fronts.png")
    if runs.searches:
        files["hypervolume"] = plot_hypervolume(runs, out_dir / "hypervolume.png")
    summary = {
        "runs": {"searches": len(runs.searches), "retrains": len(runs.retrains), "trainings": len(runs.trainings)},
        "tasks": tasks,
        "rows": rows,
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write_json(out_dir / "report.json", summary)
    return summary
