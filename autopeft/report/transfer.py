"""Where each retrained configuration was searched, and the transfer grid of the paper's Figure 5.

A retraining record names its configuration's search in ``source`` (``"<search run dir> result
<i>"``, written by :func:`autopeft.experiments.retrain.retrain`); the searched-on task is that search's
``search.json`` ``config.task.name``. The search directory is looked up, in order:

1. among the searches the report found (same resolved path, or, for an outputs tree that was
   moved or copied, the one found search whose path ends with the source's last two or more
   path components);
2. on disk, as the record (or the retraining's ``.hydra/config.yaml`` ``retrain.from``) names it.

When no search directory is found, the record's own ``search_task`` (and ``search_method``) is
used if it has one; otherwise the retraining cannot be placed in the heat map and is left out
with a warning. Retrainings of a JSON file of configurations (``retrain.configs``) come from no
search and are left out silently.

Heat-map rule: per (source search, target task) one configuration is shown. When several were
retrained (a whole front, or several retraining runs), the ones named ``best...`` (or ``<label>
best...``: ``retrain.select=budget``, as the paper's AutoPEFT^RTE is the best configuration within
a budget) are preferred, since the best of a front would favour its largest configurations and
mix budget into the transfer comparison. Among the remaining candidates the highest mean
*validation* main metric wins (never the held-out one, which is what the cell reports: choosing
on it would flatter every cell); ties go to fewer parameters, then the name. A seed retrained
twice (in two retraining runs) counts once. Under ``data.protocol=paper`` the validation split is
the reported (official dev) split itself, as the paper reports; ``transfer.md`` and ``transfer.csv``
say which protocol produced each cell.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.data.protocol import record_scoring, scores_caption
from autopeft.experiments.retrain import RETRAIN_RECORD_KEYS
from autopeft.io import csv_text
from autopeft.report.identity import TaskNames
from autopeft.runs.store import ResultsStore

log = logging.getLogger("autopeft.report")

#: How :func:`autopeft.experiments.retrain.retrain` names a configuration's origin in a search.
SOURCE_PATTERN = re.compile(r"^(?P<run>.+) result (?P<index>\d+)$")

#: A configuration picked as the best within a budget (``retrain.select=budget`` names it
#: ``best<=1.0%``; with ``retrain.label`` a front's names become ``<label> front-1`` and a budget's
#: ``<label> best<=1.0%``): preferred for the heat map.
BEST_NAME = re.compile(r"(^|\s)best")

#: Columns of ``transfer.csv`` (one row per heat-map cell; scores × 100).
TRANSFER_COLUMNS = (
    "searched_on",
    "source_task",
    "source_method",
    "source_run",
    "target_task",
    "metric",
    "configuration",
    "description",
    "param_percent",
    "seeds",
    "mean_x100",
    "sd_x100",
    "candidates",
    "protocol",
)


@dataclass(frozen=True)
class SearchSource:
    """The search a retrained configuration came from.

    Attributes:
        key: Its identity: the resolved search directory, or the record's own words for it when
            the directory is unknown.
        task: The task it searched on.
        method: Its search method (``bo``, ``random``, ``nsga2``), when known.
        run: Its run directory, when found.

    """

    key: str
    task: str
    method: str | None = None
    run: Path | None = None

    @property
    def base_label(self) -> str:
        """``task (method)``; made unique by :func:`label_sources` when two searches share it."""
        return f"{self.task} ({self.method})" if self.method else self.task


@dataclass
class Retraining:
    """One record of a ``retrain.jsonl`` with the run directory it is in and its source search."""

    run: Path
    record: dict[str, Any]
    source: SearchSource | None = None
    label: str | None = None  # the source's unique label, set by :func:`label_sources`


def _is_ok(record: Mapping[str, Any]) -> bool:
    metrics = record.get("metrics")
    return (
        record.get("status") == "ok"
        and isinstance(metrics, Mapping)
        and record.get("main_metric") in (metrics.get("test") or {})
    )


class SourceResolver:
    """Finds the search behind a retraining record (see the module docstring for the order).

    Args:
        searches: The search run directories the report found.

    """

    def __init__(self, searches: Sequence[Path]) -> None:
        self._found = {Path(p).resolve(): Path(p) for p in searches}
        self._configs: dict[Path, dict[str, Any] | None] = {}
        self._hydra: dict[Path, str | None] = {}
        self._warned: set[tuple[Path, str]] = set()

    def _config(self, run: Path) -> dict[str, Any] | None:
        if run not in self._configs:
            try:
                config = json.loads((run / "search.json").read_text())["config"]
                str(config["task"]["name"])  # the one field the heat map needs
                self._configs[run] = config
            except (OSError, ValueError, KeyError, TypeError):
                self._configs[run] = None  # unreadable: treated as missing, the fallbacks apply
        return self._configs[run]

    def locate(self, text: str) -> Path | None:
        """The search directory ``text`` names, if the report found it or it exists on disk."""
        path = Path(text).expanduser()
        if path.resolve() in self._found:
            return self._found[path.resolve()]
        if (path / "search.json").is_file():
            return path
        # The outputs tree was moved or copied since the retraining: match the path's tail. Two
        # components at least, since multirun cell names such as ``seed=0`` repeat across sweeps.
        parts = [p for p in path.parts if p not in (path.anchor, ".", "..")]
        if not parts:
            return None
        for k in range(len(parts), min(2, len(parts)) - 1, -1):
            matches = [run for run in self._found.values() if run.resolve().parts[-k:] == tuple(parts[-k:])]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                return None  # shorter tails only match more: ambiguous
        return None

    def _hydra_from(self, retrain_dir: Path) -> str | None:
        """``retrain.from`` of the retraining's saved Hydra config (read once per directory)."""
        if retrain_dir not in self._hydra:
            self._hydra[retrain_dir] = None
            path = retrain_dir / ".hydra" / "config.yaml"
            if path.is_file():
                from omegaconf import OmegaConf

                try:
                    value = OmegaConf.select(OmegaConf.load(path), "retrain.from", default=None)
                except Exception:  # a damaged or unresolvable saved config must not stop the report
                    value = None
                self._hydra[retrain_dir] = str(value) if value else None
        return self._hydra[retrain_dir]

    def resolve(self, record: Mapping[str, Any], retrain_dir: Path) -> SearchSource | None:
        """The source search of ``record`` (in ``retrain_dir``), or None (warned once) if unknown."""
        named = []
        match = SOURCE_PATTERN.match(str(record.get("source") or ""))
        if match:
            named.append(match["run"])
        from_config = self._hydra_from(retrain_dir)
        if from_config and from_config not in named:
            named.append(from_config)
        for text in named:
            run = self.locate(text)
            config = self._config(run) if run is not None else None
            if config is not None:
                method = (config.get("search") or {}).get("method")
                return SearchSource(key=str(run.resolve()), task=config["task"]["name"], method=method, run=run)
        if record.get("search_task"):
            key = named[0] if named else f"search_task={record['search_task']}"
            return SearchSource(key=key, task=str(record["search_task"]), method=record.get("search_method"))
        if named and (retrain_dir, named[0]) not in self._warned:
            self._warned.add((retrain_dir, named[0]))
            log.warning(
                "retraining %s: its source search %r is not among the report's inputs nor on disk, and its records "
                "have no search_task; left out of the transfer heat map (add that search to report.runs)",
                retrain_dir,
                named[0],
            )
        return None


def load_retrainings(retrain_dirs: Sequence[Path], searches: Sequence[Path]) -> list[Retraining]:
    """Every record of every ``retrain.jsonl``, with its source search resolved and labelled."""
    resolver = SourceResolver(searches)
    out = []
    for run in retrain_dirs:
        for record in ResultsStore(run / "retrain.jsonl", required_keys=RETRAIN_RECORD_KEYS).load():
            out.append(Retraining(run=run, record=record, source=resolver.resolve(record, run)))
    label_sources(out)
    return out


def label_sources(retrainings: Sequence[Retraining]) -> None:
    """Give every source search a short label, unique among them: ``task (method)``, plus the run name if needed."""
    sources = {r.source.key: r.source for r in retrainings if r.source is not None}
    by_base: dict[str, list[SearchSource]] = defaultdict(list)
    for source in sources.values():
        by_base[source.base_label].append(source)
    labels: dict[str, str] = {}
    for base, group in by_base.items():
        if len(group) == 1:
            labels[group[0].key] = base
            continue
        names = [s.run.name if s.run is not None else Path(s.key).name for s in group]
        for source, name in zip(group, names, strict=True):
            # Two searches with the same task, method and directory name: only the full path tells them apart.
            labels[source.key] = f"{base}, {name}" if names.count(name) == 1 else f"{base}, {source.key}"
    for r in retrainings:
        if r.source is not None:
            r.label = labels[r.source.key]


@dataclass(frozen=True)
class TransferCell:
    """One cell of the heat map: a configuration searched on one task, retrained on another.

    Attributes:
        searched_on: The source search's label (the row).
        source: The source search.
        target_task: The task it was retrained on (the column).
        metric: That task's main metric.
        configuration: The retrained configuration's name (``best<=1.0%``, ``front-3``, ...).
        description: Its description (modules and layers).
        param_percent: Its % parameters (paper count) on the retraining's backbone.
        values: Reported (``metrics.test``) main metric per seed, as recorded (not × 100).
        candidates: How many configurations of this source were retrained on this task.
        kinds: ``(protocol, scoring)`` of the records counted (:func:`autopeft.data.protocol.record_scoring`).

    """

    searched_on: str
    source: SearchSource
    target_task: str
    metric: str
    configuration: str
    description: str
    param_percent: float | None
    values: tuple[float, ...] = field(default_factory=tuple)
    candidates: int = 1
    kinds: frozenset[tuple[str, str]] = frozenset()  # record_scoring() of the counted records

    @property
    def mean(self) -> float:
        """Mean over seeds × 100."""
        return 100 * statistics.mean(self.values)

    @property
    def sd(self) -> float:
        """Sample sd over seeds × 100 (0 for one seed)."""
        return 100 * statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        """``mean ± sd`` (``mean`` alone for one seed)."""
        return f"{self.mean:.1f}" if len(self.values) == 1 else f"{self.mean:.1f} ± {self.sd:.1f}"


def _selection_score(records: Sequence[Mapping[str, Any]]) -> float:
    """Mean validation main metric of a configuration's seeds (held-out only if validation is missing)."""
    metric = records[0]["main_metric"]
    validation = [(r["metrics"].get("validation") or {}).get(metric) for r in records]
    if all(isinstance(v, int | float) and not math.isnan(v) for v in validation):
        return statistics.mean(validation)
    return statistics.mean(r["metrics"]["test"][metric] for r in records)


def transfer_cells(retrainings: Sequence[Retraining], names: TaskNames | None = None) -> list[TransferCell]:
    """One :class:`TransferCell` per (source search, target task), by the module docstring's rule.

    A target task is a task label (``names``, from the retrainings if not given): a task name
    scored with two metrics is two columns, never one.
    """
    if names is None:
        names = TaskNames.of((r.record.get("task"), r.record.get("main_metric")) for r in retrainings)
    groups: dict[tuple[str, str], dict[str, list[Retraining]]] = defaultdict(lambda: defaultdict(list))
    for r in retrainings:
        if r.source is None or r.label is None or not _is_ok(r.record):
            continue
        target = names.label(r.record["task"], r.record["main_metric"])
        seeds = groups[(r.label, target)][r.record["choice"]]
        if any(s.record.get("seed") == r.record.get("seed") for s in seeds):
            continue  # the same seed retrained twice (two retraining runs): count it once
        seeds.append(r)
    cells = []
    for (label, task), by_choice in sorted(groups.items()):
        names = sorted(n for n in by_choice if BEST_NAME.search(n)) or sorted(by_choice)

        def rank(name: str, by_choice: Mapping[str, list[Retraining]] = by_choice) -> tuple[float, float]:
            records = [r.record for r in by_choice[name]]
            return _selection_score(records), -(records[0].get("params") or {}).get("paper_percent", math.inf)

        chosen = max(names, key=rank)  # max keeps the first of equals: the alphabetically first name
        runs = by_choice[chosen]
        first = runs[0].record
        cells.append(
            TransferCell(
                searched_on=label,
                source=runs[0].source,
                target_task=task,
                metric=first["main_metric"],
                configuration=chosen,
                description=str(first.get("configuration", "")),
                param_percent=(first.get("params") or {}).get("paper_percent"),
                values=tuple(float(r.record["metrics"]["test"][first["main_metric"]]) for r in runs),
                candidates=len(by_choice),
                kinds=frozenset(record_scoring(r.record) for r in runs),
            )
        )
    return cells


def transfer_markdown(cells: Sequence[TransferCell]) -> str:
    """The grid as a Markdown table: rows searched-on, columns retrained-on, ``mean ± sd [configuration]``."""
    rows = sorted({c.searched_on for c in cells})
    columns = sorted({c.target_task for c in cells})
    by_key = {(c.searched_on, c.target_task): c for c in cells}
    metric = {c.target_task: c.metric for c in cells}
    lines = [
        "Transfer: reported main metric × 100 (mean ± sd over seeds; one number: one seed) of the configuration "
        "searched on the row's task (search method in brackets), retrained on the column's task. Per cell the "
        "configuration named best* if one was retrained, otherwise the best by mean validation score; its name "
        "is in brackets.",
        "",
        scores_caption({c.target_task: sorted(c.kinds) for c in cells}),
        "",
        "| searched on | " + " | ".join(f"{t} ({metric[t]})" for t in columns) + " |",
        "|:--|" + "--:|" * len(columns),
    ]
    for row in rows:
        texts = [
            f"{by_key[(row, t)].text()} [{by_key[(row, t)].configuration}]" if (row, t) in by_key else "–"
            for t in columns
        ]
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def transfer_rows(cells: Sequence[TransferCell]) -> list[dict[str, Any]]:
    """The cells as flat rows with :data:`TRANSFER_COLUMNS` (for ``transfer.csv`` and callers)."""
    return [
        {
            "searched_on": c.searched_on,
            "source_task": c.source.task,
            "source_method": c.source.method or "",
            "source_run": str(c.source.run) if c.source.run is not None else "",
            "target_task": c.target_task,
            "metric": c.metric,
            "configuration": c.configuration,
            "description": c.description,
            "param_percent": c.param_percent,
            "seeds": len(c.values),
            "mean_x100": c.mean,
            "sd_x100": c.sd,
            "candidates": c.candidates,
            "protocol": ", ".join(sorted({p for p, _ in c.kinds})),
        }
        for c in cells
    ]


def transfer_csv(cells: Sequence[TransferCell]) -> str:
    """The cells as CSV, one row per cell, with :data:`TRANSFER_COLUMNS` as the header."""
    return csv_text(TRANSFER_COLUMNS, transfer_rows(cells))
