"""Table 1 of the paper: score per task and method, with parameter budgets, as Markdown and CSV."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from autopeft.data.protocol import scores_caption
from autopeft.io import csv_text
from autopeft.report.collect import Cell


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
