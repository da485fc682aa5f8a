"""Building the whole report (tables, figures, files) from a list of run directories."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autopeft.errors import ConfigError
from autopeft.report.collect import collect_cells, find_runs, scan_tasks
from autopeft.report.plots import plot_distribution, plot_fronts, plot_fronts_full, plot_hypervolume, plot_transfer
from autopeft.report.series import (
    full_fidelity_series,
    proposal_csv,
    proposal_medians,
    proposal_points,
    search_front_series,
)
from autopeft.report.tables import table_csv, table_markdown, table_rows, table_scores
from autopeft.report.transfer import (
    load_retrainings,
    transfer_cells,
    transfer_csv,
    transfer_markdown,
    transfer_rows,
)

log = logging.getLogger("autopeft.report")


def build_report(inputs: Sequence[str | Path], out_dir: Path) -> dict[str, Any]:
    """Find the runs under ``inputs`` and write the tables and plots into ``out_dir``.

    Returns:
        What a caller needs to print or log (e.g. to W&B) without reading the files back:
        ``runs`` (counts by kind), ``tasks`` (the table's columns: task names, ``task · metric``
        where one name was scored with two metrics), ``unsuccessful_tasks`` (tasks without any
        successful evaluation, so without a column or panel), ``rows`` (``table.csv``'s rows), ``transfer``
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
    scan = scan_tasks(runs, retrainings)
    names = scan.names
    names.log_collisions()
    if scan.unsuccessful:
        log.warning(
            "no successful evaluation of task(s) %s (%s): nothing of theirs is in the tables and plots",
            ", ".join(repr(t) for t in scan.unsuccessful),
            ", ".join(f"{t}: {n} run{'s' if n != 1 else ''}" for t, n in scan.unsuccessful.items()),
        )
    cells, metrics = collect_cells(runs, retrainings, names)
    tasks = sorted(metrics)
    rows = table_rows(cells, tasks)
    out_dir = Path(out_dir)
    files: dict[str, Path] = {}
    if rows:
        files["table_md"] = out_dir / "table.md"
        files["table_csv"] = out_dir / "table.csv"
        atomic_write_text(files["table_md"], table_markdown(rows, tasks, metrics, table_scores(cells)))
        atomic_write_text(files["table_csv"], table_csv(rows, tasks))
    search_panels = search_front_series(runs, names)
    if any(panel.drawable for panel in search_panels.values()):
        files["fronts"] = plot_fronts(search_panels, out_dir / "fronts.png")
    for panel in search_panels.values():
        if not panel.drawable and panel.task not in scan.unsuccessful:  # those are logged above
            log.warning(
                "fronts.png: no panel for %s: its search(es) %s had no successful evaluation",
                panel.task,
                ", ".join(panel.unsuccessful),
            )
        if panel.left_out:
            log.info(
                "fronts.png, %s: %d single training(s) at another fidelity than the search's left out "
                "(they are in fronts_full.png)",
                panel.task,
                len(panel.left_out),
            )
    full_panels = full_fidelity_series(runs, retrainings, names)
    if full_panels:
        files["fronts_full"] = plot_fronts_full(full_panels, out_dir / "fronts_full.png")
    if any(any(front for _, front in panel.fronts) for panel in search_panels.values()):
        files["hypervolume"] = plot_hypervolume(runs, out_dir / "hypervolume.png", names)
    transfer = transfer_cells(retrainings, names)
    if transfer:
        files["transfer"] = plot_transfer(transfer, out_dir / "transfer.png")
        files["transfer_md"] = out_dir / "transfer.md"
        files["transfer_csv"] = out_dir / "transfer.csv"
        atomic_write_text(files["transfer_md"], transfer_markdown(transfer))
        atomic_write_text(files["transfer_csv"], transfer_csv(transfer))
    points = proposal_points(runs.searches, names)
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
        "unsuccessful_tasks": list(scan.unsuccessful),
        "scores": table_scores(cells),
        "rows": rows,
        "transfer": transfer_rows(transfer),
        "proposals": medians,
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write_json(out_dir / "report.json", summary)
    return summary
