"""The figures of ``mode=report``: fronts, hypervolume traces, transfer heat map, proposals.

Every figure takes data that :mod:`autopeft.report` has already gathered (or the found run
directories), draws with matplotlib's Agg backend (no display needed) and is written with
:func:`autopeft.io.save_figure`. % parameters is always on a symmetric-log axis whose linear part
ends at the decade below the smallest positive value, so 0% (head only) and 0.01%–10% fit on one
axis, and ``fronts.png`` and ``distribution.png`` read the same way.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopeft.bo.objectives import ParamAxis
from autopeft.bo.pareto import hypervolume_trace, parse_ref_point, search_reference
from autopeft.data.protocol import scores_label
from autopeft.io import save_figure
from autopeft.runs.store import ResultsStore

if TYPE_CHECKING:
    from autopeft.report.collect import Runs
    from autopeft.report.identity import TaskNames
    from autopeft.report.series import FullFidelityPanel, ProposalPoint, SearchPanel, SeriesPoint
    from autopeft.report.transfer import TransferCell

#: x-axis label of every plot against % parameters.
PARAMS_LABEL = "trainable parameters (% of backbone, paper count; symlog)"

#: Who proposed a configuration (``ProposalPoint.category``): legend name and colour. The
#: colours follow the paper's Figure 6 (initial design blue, BO orange, random search grey).
PROPOSERS: dict[str, tuple[str, str]] = {
    "init": ("initial random design", "#1f77b4"),
    "bo": ("BO (AutoPEFT)", "#ff7f0e"),
    "random": ("random search", "#7f7f7f"),
    "nsga2": ("NSGA-II", "#2ca02c"),
    "enumeration": ("enumeration (every configuration)", "#8c564b"),
}
_OTHER_COLOUR = "#9467bd"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # reports are written on headless machines
    import matplotlib.pyplot as plt

    return plt


def _symlog_x(ax: Any, xs: Sequence[float]) -> None:
    """Symlog x axis over ``xs`` (% params, never negative), with limits set by hand.

    Matplotlib's automatic margins on a symlog axis reach into negative % parameters; a small
    linear margin below 0 (when 0% is present) or a factor below the smallest value is enough.
    """
    positive = [x for x in xs if x > 0]
    # The linear part ends at the decade below the smallest value: its tick then sits one decade
    # from the 0 tick instead of on top of it, and every positive point is on the log part.
    linthresh = 10 ** math.floor(math.log10(min(positive))) if positive else 1e-3
    ax.set_xscale("symlog", linthresh=linthresh)
    if xs:
        low = -0.15 * linthresh if min(xs) <= 0 else min(positive) / 1.3
        ax.set_xlim(low, max(max(xs), linthresh) * 1.3)


def _search_config(run: Path) -> dict[str, Any]:
    return json.loads((run / "search.json").read_text())["config"]


def _search_label(config: Mapping[str, Any], task: str | None = None) -> str:
    return f"{config['search']['method']} · {task or config['task']['name']} · {config['space']['name']}"


# ---------------------------------------------------------------------- fronts.png: search fronts


def plot_fronts(panels: Mapping[str, SearchPanel], path: Path) -> Path:
    """Per searched task: every search's front (staircase) as the search saw it, ▲ same-fidelity trainings.

    Everything on this plot is a validation score at the search's fidelity (low: 1 epoch in the
    paper); single trainings at another fidelity are left out and counted in the panel's
    subtitle (they are in ``fronts_full.png``, Figure 4 proper). A panel with nothing to draw
    (its searches had no successful evaluation and no training is overlaid) is left out; one whose
    searches partly failed names them in its title.
    """
    plt = _pyplot()
    tasks = sorted(t for t, panel in panels.items() if panel.drawable)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6.2 * max(1, len(tasks)), 4.9), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        panel = panels[task]
        fidelity = " / ".join(f.text() for f in panel.fidelities)
        xs: list[float] = []
        for label, front in panel.fronts:
            if not front:
                continue
            x = [r["param_percent"] for r in front]
            y = [r["score"] for r in front]
            xs += x
            line = ax.step(x, y, where="post", lw=1.3, label=label)[0]
            ax.scatter(x, y, s=18, color=line.get_color())
        for k, record in enumerate(panel.trainings):
            x, y = record["params"]["paper_percent"], record["score"]
            xs.append(x)
            label = "single trainings (best validation score)" if k == 0 else None
            ax.scatter([x], [y], marker="^", s=50, color="black", zorder=5, label=label)
            ax.annotate(
                record["peft"]["name"], (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
            )
        _symlog_x(ax, xs)
        ax.set_xlabel(PARAMS_LABEL)
        ax.set_ylabel(f"{panel.metric}: search score\n(low fidelity, validation split)")
        if panel.trainings:
            presets = sorted({str((r.get("fidelity") or {}).get("name")) for r in panel.trainings})
            count = len(panel.trainings)
            note = f"▲: {count} single training(s) with the search's schedule (preset {', '.join(presets)})"
        else:
            note = "▲: no single training with the search's schedule"
        if panel.left_out:
            note += f"\n{len(panel.left_out)} single training(s) at another fidelity left out (see fronts_full.png)"
        if panel.unsuccessful:
            note += f"\nno successful evaluation, so no front: {', '.join(panel.unsuccessful)}"
        ax.set_title(f"{task}: search fronts ({fidelity}, validation split)\n{note}", fontsize=9)
        ax.grid(alpha=0.3)
        if panel.fronts or panel.trainings:
            ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- fronts_full.png: Figure 4

#: Marker and colour of the paper's swept baselines (Figure 4); other families cycle through
#: :data:`_EXTRA_STYLES`.
FAMILY_STYLES: dict[str, tuple[str, str]] = {
    "SA": ("o", "#1f77b4"),
    "PA": ("s", "#2ca02c"),
    "PT": ("D", "#9467bd"),
    "LoRA": ("v", "#8c564b"),
}
_EXTRA_STYLES = (("P", "#e377c2"), ("X", "#17becf"), ("h", "#bcbd22"), ("p", "#7f7f7f"))
#: Colours of the retrained AutoPEFT fronts (the paper draws AutoPEFT in red).
_AUTOPEFT_COLOURS = ("#d62728", "#ff7f0e", "#e6550d", "#a50f15")


def _family_style(family: str, index: int) -> tuple[str, str]:
    return FAMILY_STYLES.get(family, _EXTRA_STYLES[index % len(_EXTRA_STYLES)])


def _seeds_text(points: Sequence[SeriesPoint]) -> str:
    counts = sorted({len(p.values) for p in points})
    if counts == [1]:
        return "single seed"
    low, high = counts[0], counts[-1]
    return f"mean ± sd over {high} seeds" if low == high else f"mean (± sd) over {low}–{high} seeds"


def _errorbars(ax: Any, points: Sequence[SeriesPoint], **style: Any) -> Any:
    """``points`` as markers at their mean, with sd bars on those with more than one seed."""
    sds = [p.sd for p in points]
    return ax.errorbar(
        [p.param_percent for p in points],
        [p.mean for p in points],
        yerr=sds if any(sds) else None,
        capsize=2.5,
        elinewidth=0.9,
        **style,
    )


def plot_fronts_full(panels: Mapping[str, FullFidelityPanel], path: Path) -> Path:
    """Per task, Figure 4: retrained fronts against baselines, one fidelity per panel.

    Each panel's title says what its scores are and which ``data.protocol`` produced them
    (``MIXED protocols`` when its records mix them).

    Retrained configurations of a search are stars joined by their Pareto staircase (dominated
    ones hollow); a baseline family swept over a size is a line with its sizes annotated; other
    baselines are ▲ with their names; full fine-tuning is a dashed horizontal line (the paper's
    bar at 100%), its sd shaded. Error bars are ± sd over seeds where there is more than one.
    """
    plt = _pyplot()
    names = sorted(panels)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(6.6 * max(1, len(names)), 5.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        panel = panels[name]
        xs: list[float] = []
        for k, (label, points) in enumerate(sorted(panel.autopeft.items())):
            colour = _AUTOPEFT_COLOURS[k % len(_AUTOPEFT_COLOURS)]
            stair = panel.staircase(label)
            xs += [p.param_percent for p in points]
            configs = f"{len(points)} configuration{'s' if len(points) != 1 else ''}"
            ax.step(
                [p.param_percent for p in stair],
                [p.mean for p in stair],
                where="post",
                color=colour,
                lw=1.8,
                marker="*",
                ms=11,
                label=f"{label} (retrained: {configs}, {len(stair)} on its front)",
                zorder=4,
            )
            _errorbars(ax, stair, fmt="none", color=colour, zorder=5)
            dominated = [p for p in points if all(p is not q for q in stair)]
            if dominated:
                _errorbars(ax, dominated, fmt="*", ms=10, color=colour, mfc="none", zorder=5)
        for k, (family, points) in enumerate(sorted(panel.sweeps.items())):
            marker, colour = _family_style(family, k)
            xs += [p.param_percent for p in points]
            _errorbars(
                ax,
                points,
                fmt=f"-{marker}",
                ms=5.5,
                lw=1.2,
                color=colour,
                label=f"{family} (swept {panel.sweep_fields[family]})",
            )
            for p in points:
                value = p.name.rsplit("=", 1)[-1]
                ax.annotate(value, (p.param_percent, p.mean), textcoords="offset points", xytext=(3, -9), fontsize=6.5)
        for k, p in enumerate(panel.singles):
            xs.append(p.param_percent)
            label = "other baselines / configurations" if k == 0 else None
            _errorbars(ax, [p], fmt="^", ms=7, color="black", label=label, zorder=5)
            ax.annotate(
                p.name, (p.param_percent, p.mean), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7
            )
        for k, p in enumerate(panel.fft):
            colour = "#555555" if k == 0 else _EXTRA_STYLES[k % len(_EXTRA_STYLES)][1]
            ax.axhline(p.mean, ls="--", lw=1.3, color=colour, label=f"full fine-tuning ({p.name}, 100% params)")
            if p.sd:
                ax.axhspan(p.mean - p.sd, p.mean + p.sd, color=colour, alpha=0.12, lw=0)
        _symlog_x(ax, xs)  # full fine-tuning (100%) is a line, not a point: it does not stretch the axis
        ax.set_xlabel(PARAMS_LABEL)
        ax.set_ylabel(f"{panel.metric} ({_seeds_text(panel.points())})")
        title = f"{name}: {panel.fidelity.text()}\n{panel.scores()}"
        if panel.left_out:
            title += "\nleft out: " + ", ".join(f"{n} at {text}" for text, n in sorted(panel.left_out.items()))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Pareto fronts of retrained configurations against baselines (Figure 4)", fontsize=11)
    return save_figure(fig, path)


# ---------------------------------------------------------------------- hypervolume traces


def plot_hypervolume(runs: Runs, path: Path, names: TaskNames | None = None) -> Path:
    """Hypervolume against evaluations, mean ± sd over seeds of each (method, task, space, axis).

    Each search's hypervolume is on its own parameter axis (``search.param_objective``, saved
    with its floor in ``search.json``; a run without it is on the linear axis), and searches on
    different axes are never averaged together; nor are searches of a task name scored with two
    metrics (``names``: the task labels). A search without a successful evaluation has no
    hypervolume and no line.
    """
    plt = _pyplot()
    import torch

    from autopeft.report.collect import scan_tasks

    if names is None:
        names = scan_tasks(runs).names

    groups: dict[str, list[list[float]]] = defaultdict(list)
    labels: set[str] = set()
    for run in runs.searches:
        manifest = json.loads((run / "search.json").read_text())
        config = manifest["config"]
        axis = ParamAxis.from_json(manifest.get("param_objective"))
        records = ResultsStore(run / "results.jsonl").load()
        metric = next((r["main_metric"] for r in records if r.get("main_metric")), None)
        task = names.label(config["task"]["name"], metric)
        acquisition = config["search"].get("acquisition") or {}
        # An enumerated search takes its reference from every configuration, as the loop does.
        enumerated = bool(records) and records[0].get("phase") == "enumeration"
        design = len(records) if enumerated else config["search"]["n_init"]
        ref = search_reference(records, parse_ref_point(acquisition.get("ref_point")), design, axis)
        trace = [math.nan if v is None else v for v in hypervolume_trace(records, ref, axis)]
        if trace and not all(math.isnan(v) for v in trace):
            groups[f"{_search_label(config, task)} · {axis.label}"].append(trace)
            labels.add(axis.label)
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
    ax.set_ylabel(f"hypervolume ({' | '.join(sorted(labels)) or '% params'}; search's reference point)")
    ax.set_title("Hypervolume over the search (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


# ---------------------------------------------------------------------- Figure 5: transfer


def column_normalised(values: Sequence[Sequence[float]]) -> list[list[float]]:
    """Scale each column of ``values`` to [0, 1] (its min to 0, its max to 1); NaN stays NaN.

    Tasks have different metrics and difficulty (accuracy 90 on one, Matthews 40 on another), so
    one colour scale over the whole grid would only show which task is easy; per column, the
    colour shows which source task's configuration transfers best to that target. A column with
    one value, or equal values, is 0.5 throughout.
    """
    rows = [list(r) for r in values]
    for j in range(len(rows[0]) if rows else 0):
        column = [r[j] for r in rows if not math.isnan(r[j])]
        low, high = (min(column), max(column)) if column else (0.0, 0.0)
        for r in rows:
            if not math.isnan(r[j]):
                r[j] = (r[j] - low) / (high - low) if high > low else 0.5
    return rows


def plot_transfer(cells: Sequence[TransferCell], path: Path) -> Path:
    """Heat map: rows the task a configuration was searched on, columns the task it was retrained on.

    Each cell is annotated with the reported main metric × 100 (mean ± sd over seeds) and the
    retrained configuration's name; its colour is that mean normalised within its column. The
    x label says which ``data.protocol`` produced the scores.
    """
    plt = _pyplot()
    rows = sorted({c.searched_on for c in cells})
    columns = sorted({c.target_task for c in cells})
    by_key = {(c.searched_on, c.target_task): c for c in cells}
    metric = {c.target_task: c.metric for c in cells}
    means = [[by_key[(r, t)].mean if (r, t) in by_key else math.nan for t in columns] for r in rows]
    import numpy as np

    shade = np.ma.masked_invalid(np.array(column_normalised(means), dtype=float))
    fig, ax = plt.subplots(figsize=(2.3 * len(columns) + 3.2, 0.95 * len(rows) + 2.2))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6")  # bad: a pair that was never retrained
    image = ax.imshow(shade, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(rows):
        for j, task in enumerate(columns):
            cell = by_key.get((row, task))
            if cell is None:
                ax.text(j, i, "–", ha="center", va="center", fontsize=9, color="#555555")
                continue
            colour = "white" if shade[i, j] < 0.55 else "black"  # viridis is dark at the low end
            ax.text(j, i - 0.1, cell.text(), ha="center", va="center", fontsize=9, color=colour)
            ax.text(j, i + 0.22, cell.configuration, ha="center", va="center", fontsize=6.5, color=colour)
    ax.set_xticks(range(len(columns)), [f"{t}\n({metric[t]})" for t in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), [f"Ours^{r}" for r in rows], fontsize=8)
    kinds = [kind for c in cells for kind in c.kinds]
    ax.set_xlabel(f"retrained on (main metric × 100, mean ± sd over seeds)\n{scores_label(kinds)}")
    ax.set_ylabel("searched on (task, search method)")
    ax.set_title("Transfer of searched configurations across tasks (Figure 5)", fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label("score normalised per column\n(0 = column's lowest, 1 = highest)", fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------- Figure 6: proposals


def _proposer(category: str) -> tuple[str, str]:
    return PROPOSERS.get(category, (category, _OTHER_COLOUR))


def _order(category: str) -> tuple[int, str]:
    names = list(PROPOSERS)
    return (names.index(category) if category in names else len(names), category)


def _log_bins(xs: Sequence[float], count: int = 16) -> list[float]:
    """Histogram edges even on the symlog axis: geometric above 0, plus one bin [0, min) for 0%."""
    import numpy as np

    positive = [x for x in xs if x > 0]
    if not positive:
        return [0.0, 1e-3]
    low, high = min(positive) / 1.15, max(positive) * 1.15  # inside the axis limits of _symlog_x
    edges = [float(e) for e in np.geomspace(low, high, count)]
    return [0.0, *edges] if any(x <= 0 for x in xs) else edges


def plot_distribution(points: Mapping[str, Sequence[ProposalPoint]], path: Path) -> Path:
    """Per search task: every successful evaluation's score against % params, coloured by proposer.

    The scatter (bottom) shows low-fidelity score against % parameters; the strip above it is the
    distribution of % parameters of each proposer's configurations (fraction of that proposer's
    evaluations per bin, so proposers with different budgets compare) with its median dashed.
    Random fallbacks (a searcher exploring at random because nothing could be modelled yet) are
    counted with their searcher and drawn as crosses.
    """
    plt = _pyplot()
    panels = sorted(points)
    fig, axes = plt.subplots(
        2,
        max(1, len(panels)),
        figsize=(6.4 * max(1, len(panels)), 6.2),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 3]},
    )
    for k, panel in enumerate(panels):
        members = points[panel]
        ax_hist, ax = axes[0, k], axes[1, k]
        xs = [p.param_percent for p in members]
        bins = _log_bins(xs)
        for category in sorted({p.category for p in members}, key=_order):
            name, colour = _proposer(category)
            group = [p for p in members if p.category == category]
            regular = [p for p in group if not p.fallback]
            median = statistics.median(p.param_percent for p in group)
            ax.scatter(
                [p.param_percent for p in regular],
                [p.score for p in regular],
                s=20,
                color=colour,
                alpha=0.75,
                edgecolors="none",
                label=f"{name} (n={len(group)}, median {median:.3g}%)",
            )
            fallback = [p for p in group if p.fallback]
            if fallback:
                ax.scatter(
                    [p.param_percent for p in fallback],
                    [p.score for p in fallback],
                    s=24,
                    marker="x",
                    color=colour,
                    label=f"{name}: random fallback (n={len(fallback)})",
                )
            ax_hist.hist(
                [p.param_percent for p in group],
                bins=bins,
                weights=[1 / len(group)] * len(group),
                histtype="step",
                lw=1.4,
                color=colour,
            )
            ax_hist.axvline(median, color=colour, ls="--", lw=1)
        _symlog_x(ax, xs)
        ax.set_xlabel(PARAMS_LABEL)
        ax.set_ylabel(f"{members[0].metric} (validation, low fidelity)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        ax_hist.set_ylabel("share of proposer's\nevaluations (- - median)", fontsize=8)
        ax_hist.tick_params(labelbottom=False)
        ax_hist.grid(alpha=0.3)
        ax_hist.set_title(f"{panel}: evaluated configurations by proposer (Figure 6)", fontsize=10)
    return save_figure(fig, path)
