"""The end of a search: the Pareto front as a table (Markdown, CSV) and a plot (PNG), plus a summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autopeft.bo.objectives import LINEAR, ParamAxis
from autopeft.bo.pareto import is_success, objective_matrix, pareto_mask
from autopeft.io import atomic_write_json, atomic_write_text, csv_text, save_figure

FRONT_COLUMNS = ("rank", "score", "param_percent", "paper_params", "trainable_params", "configuration", "index")


def front_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Successful non-dominated evaluations, fewest parameters first (ties: higher score first).

    The same on either parameter axis (a monotone transform of % params keeps the Pareto set),
    so it is computed on the linear one.
    """
    ok = [r for r in records if is_success(r)]
    if not ok:
        return []
    keep = pareto_mask(objective_matrix(ok)).tolist()
    front = [r for r, k in zip(ok, keep, strict=True) if k]
    return sorted(front, key=lambda r: (r["param_percent"], -r["score"], r["index"]))


def front_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The front as table rows with :data:`FRONT_COLUMNS`."""
    rows = []
    for rank, r in enumerate(front_records(records), start=1):
        params = r.get("params") or {}
        rows.append(
            {
                "rank": rank,
                "score": r["score"],
                "param_percent": r["param_percent"],
                "paper_params": params.get("paper_params"),
                "trainable_params": params.get("trainable_params"),
                "configuration": r["configuration"],
                "index": r["index"],
            }
        )
    return rows


def front_markdown(rows: Sequence[Mapping[str, Any]], metric: str, title: str) -> str:
    """A Markdown table of the front, ready to paste into a paper draft."""

    def count(value: Any) -> str:
        return f"{value:,}" if isinstance(value, int) else "–"

    lines = [
        f"### {title}",
        "",
        f"| # | {metric} (val) | % params (paper) | params (paper) | trainable (exact, incl. head) | configuration "
        "| index |",
        "|--:|--:|--:|--:|--:|:--|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rank']} | {row['score']:.4f} | {row['param_percent']:.4f} | {count(row['paper_params'])} | "
            f"{count(row['trainable_params'])} | {row['configuration']} | {row['index']} |"
        )
    if not rows:
        lines.append("| – | – | – | – | – | no successful evaluation | – |")
    return "\n".join(lines) + "\n"


def front_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The front as CSV with :data:`FRONT_COLUMNS` as the header."""
    return csv_text(FRONT_COLUMNS, rows)


def plot_search(
    records: Sequence[Mapping[str, Any]],
    hypervolumes: Sequence[float | None],
    metric: str,
    title: str,
    path: Path,
    param_axis: ParamAxis = LINEAR,
) -> Path:
    """All evaluations with the front highlighted (left) and hypervolume per evaluation (right).

    % parameters is on a symmetric-log axis so that 0% (head only) and 0.01%–10% fit together.
    ``hypervolumes`` are on ``param_axis``, which the right panel's label names.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if is_success(r)]
    failed = [r for r in records if not is_success(r)]
    front = front_records(records)
    fig, (ax, ax_hv) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    styles = {
        "init": ("#9aa5b1", "initial (random)"),
        "bo": ("#1f77b4", "BO proposal"),
        "enumeration": ("#9467bd", "enumerated (every configuration)"),
    }
    order = {"init": 0, "bo": 1, "enumeration": 1}
    for phase in sorted({r.get("phase") or "other" for r in ok}, key=lambda p: (order.get(p, 2), p)):
        colour, label = styles.get(phase, ("#2ca02c", phase))
        members = [r for r in ok if (r.get("phase") or "other") == phase]
        ax.scatter(
            [r["param_percent"] for r in members], [r["score"] for r in members], s=22, c=colour, label=label, alpha=0.8
        )
    if front:
        xs = [r["param_percent"] for r in front]
        ys = [r["score"] for r in front]
        ax.step(xs, ys, where="post", color="#d62728", lw=1.5, zorder=3)
        ax.scatter(xs, ys, s=60, facecolors="none", edgecolors="#d62728", lw=1.5, zorder=4, label="Pareto front")
    if failed and ok:
        floor = min(r["score"] for r in ok)
        ax.scatter(
            [r["param_percent"] for r in failed],
            [floor] * len(failed),
            marker="x",
            c="black",
            s=30,
            label="failed (diverged / OOM)",
        )
    positive = [r["param_percent"] for r in records if r["param_percent"] > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlabel("trainable parameters (% of backbone, paper count; symlog scale)")
    ax.set_ylabel(f"{metric} (validation, low fidelity)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when no evaluation succeeded
        ax.legend(loc="best", fontsize=8)

    points = [(i + 1, hv) for i, hv in enumerate(hypervolumes) if hv is not None and not math.isnan(hv)]
    if points:
        ax_hv.step([p[0] for p in points], [p[1] for p in points], where="post", color="#1f77b4")
    ax_hv.set_xlabel("evaluations")
    ax_hv.set_ylabel(f"dominated hypervolume (score × {param_axis.label})")
    ax_hv.set_title("hypervolume over the search")
    ax_hv.grid(alpha=0.3)
    return save_figure(fig, path)


def write_search_report(
    run_dir: Path,
    records: Sequence[Mapping[str, Any]],
    hypervolumes: Sequence[float | None],
    metric: str,
    title: str,
    summary: Mapping[str, Any],
    param_axis: ParamAxis = LINEAR,
) -> dict[str, Path]:
    """Write ``front.md``, ``front.csv``, ``pareto.png`` and ``summary.json`` into ``run_dir``.

    ``hypervolumes`` are on ``param_axis`` (named on the plot).
    """
    rows = front_rows(records)
    paths = {
        "front_md": run_dir / "front.md",
        "front_csv": run_dir / "front.csv",
        "plot": run_dir / "pareto.png",
        "summary": run_dir / "summary.json",
    }
    atomic_write_text(paths["front_md"], front_markdown(rows, metric, title))
    atomic_write_text(paths["front_csv"], front_csv(rows))
    plot_search(records, hypervolumes, metric, title, paths["plot"], param_axis)
    atomic_write_json(paths["summary"], {**summary, "front": rows})
    return paths
