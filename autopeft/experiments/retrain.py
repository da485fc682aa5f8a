"""Full-fidelity retraining of chosen configurations over several seeds (paper: mean ± sd over 5 seeds).

Configurations come from a finished search's run directory (its whole Pareto front, the best one
under a parameter budget, or chosen result indices) or from a JSON file of named PEFT
configurations. The task is the run's own ``task``, so pointing ``retrain.from`` at a search on
another task transfers its configurations (the paper's AutoPEFT^RTE on other tasks).

The best configuration under a budget (``select=budget``) is ranked by ``retrain.pick``:
``search_score``, the search's own low-fidelity score, or ``retrained``, the mean validation score
of a full-fidelity retraining of the search's whole front on the searched task over the seeds
(what the authors' code does before the paper reports one configuration per budget: it retrains
every Pareto-optimal point over five seeds). Which rule picked, the budget and every candidate's
scores travel with the choice into ``retrain.jsonl``, ``retrain.md`` and ``pipeline.json``.

Every finished (configuration, seed) training is appended to ``retrain.jsonl`` in the run
directory before the next starts, so a killed retraining resumes without redoing finished cells.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from autopeft.bo.pareto import is_success
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.runs.front import front_records
from autopeft.runs.store import ResultsStore
from autopeft.settings import plain
from autopeft.space import Point
from autopeft.tasks.spec import TaskSpec

#: How configurations are picked from a search.
SELECTIONS = ("front", "budget", "indices")

#: How ``select=budget`` ranks the configurations within the budget: by the search's low-fidelity
#: score, or by the mean validation score of the search's front retrained on the searched task.
PICKS = ("search_score", "retrained")

#: Keys of the ``retrain`` node.
RETRAIN_KEYS = (
    "from",
    "select",
    "budget_percent",
    "pick",
    "retrained_front",
    "indices",
    "configs",
    "seeds",
    "label",
)

#: Keys of one record of ``retrain.jsonl``.
RETRAIN_RECORD_KEYS = ("choice", "seed", "status")


@dataclass(frozen=True)
class Choice:
    """One configuration to retrain.

    Attributes:
        name: Short label used in tables (``front-1``, ``budget-1.0%``, or the file's name).
        peft: The ``peft`` node (a :class:`~autopeft.peft.PeftSpec` dict).
        source: Where it came from, e.g. ``"<run dir> result 42"``.
        search_score: Its low-fidelity score in the search, when it came from one.
        search_task: The task it was searched on (reports draw the transfer matrix from it).
        search_method: The method that searched (``bo``, ``random``, ``nsga2``).
        pick: For a budget pick, how it was made: ``rule`` (a :data:`PICKS` value),
            ``budget_percent``, ``picked`` (the search result index) and ``candidates`` (each
            with its result index, % params, search score and, for ``retrained``, the retrained
            mean ± sd), so the outputs show why this configuration and not another.

    """

    name: str
    peft: dict[str, Any]
    source: str
    search_score: float | None = None
    search_task: str | None = None
    search_method: str | None = None
    pick: dict[str, Any] | None = None


def pick_setting(node: Mapping[str, Any]) -> str:
    """The validated ``retrain.pick`` of a ``retrain`` node (``search_score`` when absent).

    Raises:
        ConfigError: If it is not one of :data:`PICKS`.

    """
    pick = node.get("pick", "search_score")
    if pick not in PICKS:
        raise ConfigError(f"retrain.pick={pick!r}; allowed: {allowed_list(PICKS)}")
    return str(pick)


@dataclass(frozen=True)
class RetrainSettings:
    """The checked ``retrain`` node (``conf/retrain/default.yaml`` says what each key does).

    ``source`` is the node's ``from`` key (a search run directory), renamed because ``from`` is a
    Python keyword.
    """

    source: str | None
    select: str
    budget_percent: float | None
    pick: str
    retrained_front: str | None
    indices: tuple[int, ...]
    configs: str | None
    seeds: tuple[int, ...]
    label: str | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RetrainSettings:
        """Validate the ``retrain`` node; errors name the bad value and what is allowed."""
        values = plain(cfg)
        check_known_keys(values, RETRAIN_KEYS, "retrain")
        if (values.get("from") is None) == (values.get("configs") is None):
            raise ConfigError(
                "give exactly one of retrain.from=<search run dir> or retrain.configs=<JSON file of configurations>"
            )
        if values.get("select") not in SELECTIONS:
            raise ConfigError(f"retrain.select={values.get('select')!r}; allowed: {allowed_list(SELECTIONS)}")
        seeds = values.get("seeds")
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError(f"retrain.seeds={seeds!r} must be a non-empty list of integers")
        budget = values.get("budget_percent")
        if values["select"] == "budget" and not (isinstance(budget, int | float) and budget > 0):
            raise ConfigError(f"retrain.budget_percent={budget!r} must be a positive % of backbone parameters")
        if values["select"] == "indices" and not values.get("indices"):
            raise ConfigError("retrain.select=indices needs retrain.indices=[...] (result indices of the search)")
        pick = pick_setting(values)
        front = values.get("retrained_front")
        if pick == "retrained":
            if values["select"] != "budget":
                raise ConfigError(
                    f"retrain.pick='retrained' ranks the configurations within retrain.budget_percent: "
                    f"it needs retrain.select=budget, not {values['select']!r}"
                )
            if values.get("from") is None:
                raise ConfigError("retrain.pick='retrained' ranks a search's front: give retrain.from=<search run dir>")
            if not front:
                raise ConfigError(
                    "retrain.pick='retrained' needs retrain.retrained_front=<run dir of the search's front retrained "
                    "on its own task> (mode=retrain retrain.select=front retrain.from=<search> task=<its task> "
                    "fidelity=full); mode=pipeline plans that stage itself"
                )
        elif front is not None:
            raise ConfigError(
                f"retrain.retrained_front={front!r} is only read with retrain.pick='retrained' (now {pick!r})"
            )
        label = values.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ConfigError(f"retrain.label={label!r} must be a non-empty string (or null)")
        source, configs = values.get("from"), values.get("configs")
        return cls(
            source=None if source is None else str(source),
            select=values["select"],
            budget_percent=budget,
            pick=pick,
            retrained_front=None if front is None else str(front),
            indices=tuple(values.get("indices") or ()),
            configs=None if configs is None else str(configs),
            seeds=tuple(seeds),
            label=label,
        )


def labelled(choices: Sequence[Choice], label: str | None) -> list[Choice]:
    """Prefix the choices' names with ``label`` (a single choice takes the label as its name).

    Tables name rows by configuration, so a pipeline labels a search's choices by the task it was
    searched on (``AutoPEFT^RTE``), keeping choices of different searches apart.
    """
    if not label:
        return list(choices)
    if len(choices) == 1:
        return [replace(choices[0], name=label)]
    return [replace(choice, name=f"{label} {choice.name}") for choice in choices]


def choices_from_search(run_dir: Path, settings: RetrainSettings) -> list[Choice]:
    """The configurations ``settings.select`` picks from the search in ``run_dir``.

    Raises:
        ConfigError: If ``run_dir`` holds no search, no successful evaluation fits, or an index
            is unknown.

    """
    from autopeft.space import SearchSpace
    from autopeft.training.backbones import shape_of

    run_dir = Path(run_dir)
    manifest = run_dir / "search.json"
    if not manifest.is_file():
        raise ConfigError(f"retrain.from={str(run_dir)!r} has no search.json: not a search run directory")
    config = json.loads(manifest.read_text())["config"]
    space = SearchSpace.from_config(config["space"], shape_of(config["backbone"]))
    records = ResultsStore(run_dir / "results.jsonl").load()
    ok = [r for r in records if is_success(r)]
    task = str(config["task"]["name"])
    select = settings.select
    pick: dict[str, Any] | None = None
    if select == "front":
        picked = [(f"front-{i}", r) for i, r in enumerate(front_records(records), start=1)]
    elif select == "budget":
        if not ok:
            raise ConfigError(f"the search in {run_dir} has no successful evaluation to retrain")
        budget = settings.budget_percent
        if settings.pick == "retrained":
            best, pick = _pick_retrained(run_dir, space, ok, budget, Path(str(settings.retrained_front)), task)
            picked = [(f"best<={budget}% retrained", best)]
        else:
            best, pick = _pick_by_search_score(run_dir, records, ok, budget)
            picked = [(f"best<={budget}%", best)]
    else:
        by_index = {r["index"]: r for r in records}
        unknown = [i for i in settings.indices if i not in by_index]
        if unknown:
            raise ConfigError(f"retrain.indices has {unknown}, not results of {run_dir} (0..{len(records) - 1})")
        picked = [(f"result-{i}", by_index[i]) for i in settings.indices]
    if not picked:
        raise ConfigError(f"the search in {run_dir} has no successful evaluation to retrain")
    return [
        Choice(
            name=name,
            peft=space.to_peft(Point.from_dict(r["point"]), name=name).to_dict(),
            source=f"{run_dir} result {r['index']}",
            search_score=r.get("score"),
            search_task=task,
            search_method=str(config["search"]["method"]),
            pick=pick,
        )
        for name, r in picked
    ]


def _candidate(record: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """One search result as a candidate of a budget pick."""
    return {
        "index": record["index"],
        "param_percent": record["param_percent"],
        "search_score": record.get("score"),
        "within_budget": record["param_percent"] <= budget,
    }


def _no_fit(what: str, budget: float, smallest: float) -> ConfigError:
    return ConfigError(
        f"no {what} is within retrain.budget_percent={budget}% (the smallest uses {smallest:.4f}%): "
        f"raise retrain.budget_percent to at least {smallest:.4f}"
    )


def _best_within(items: Sequence[Mapping[str, Any]], budget: float, score: str, what: str) -> Mapping[str, Any]:
    """The item with the highest ``score`` within ``budget`` % params; ties go to fewer parameters.

    Raises:
        ConfigError: If none fits the budget; the message names ``what`` and the smallest % params.

    """
    fits = [item for item in items if item["param_percent"] <= budget]
    if not fits:
        raise _no_fit(what, budget, min(item["param_percent"] for item in items))
    return max(fits, key=lambda item: (item[score], -item["param_percent"]))


def _pick_by_search_score(
    run_dir: Path, records: Sequence[Mapping[str, Any]], ok: Sequence[Mapping[str, Any]], budget: float
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The successful search result with the best low-fidelity score within ``budget`` % params.

    Ties go to fewer parameters. The candidates recorded are the search's Pareto front (the best
    score within any budget is on it).

    Raises:
        ConfigError: If no successful result fits the budget; the message gives the smallest % params.

    """
    best = _best_within(ok, budget, "score", f"successful configuration of {run_dir}")
    pick = {
        "rule": "search_score",
        "budget_percent": budget,
        "picked": best["index"],
        "candidates": [_candidate(r, budget) for r in front_records(records)],
    }
    return best, pick


def _pick_retrained(
    run_dir: Path,
    space: Any,
    ok: Sequence[Mapping[str, Any]],
    budget: float,
    front_dir: Path,
    task: str,
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The search result whose full-fidelity retraining has the best mean validation score within ``budget``.

    ``front_dir`` is a ``mode=retrain`` run of the search's configurations (usually its whole front)
    on the searched task; each of its records names the search result it retrained (``source``).
    The mean is over that configuration's successful seeds of the validation ``score`` (the split
    epochs are selected on): under ``data.protocol=heldout`` the reported test split plays no part
    in the choice; under ``paper`` it is the official dev split, as in the authors' code. Each
    candidate also carries its mean test score (``test_mean``) for the record. Ties go to fewer
    parameters.

    Raises:
        ConfigError: If ``front_dir`` holds no retraining of this search on ``task``, none succeeded,
            or none fits the budget (the message gives the smallest % params).

    """
    store_path = front_dir / "retrain.jsonl"
    if not store_path.is_file():
        raise ConfigError(
            f"retrain.retrained_front={str(front_dir)!r} has no retrain.jsonl: retrain the search's front there "
            f"first (mode=retrain retrain.select=front retrain.from={run_dir} task={task} fidelity=full)"
        )
    by_index = {r["index"]: r for r in ok}
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for record in ResultsStore(store_path, required_keys=RETRAIN_RECORD_KEYS).load():
        index = _result_index(record.get("source"))
        searched = by_index.get(index) if index is not None else None
        if searched is None or (
            record.get("configuration") is not None
            and record["configuration"] != space.to_peft(Point.from_dict(searched["point"])).describe()
        ):
            raise ConfigError(
                f"{store_path} holds {record['choice']!r} from {record.get('source')!r}, not a successful result "
                f"of the search {run_dir}: retrain.retrained_front must be a retraining of this search's front"
            )
        if record.get("task") != task:
            raise ConfigError(
                f"{store_path} retrained {record['choice']!r} on task {record.get('task')!r}; "
                f"retrain.pick='retrained' ranks retrainings on the searched task {task!r}"
            )
        grouped.setdefault(index, []).append(record)
    candidates = []
    for index, runs in grouped.items():
        scores = [float(r["score"]) for r in runs if is_success(r)]
        reported = [
            float(r["metrics"]["test"][r["main_metric"]])
            for r in runs
            if is_success(r) and r.get("main_metric") in ((r.get("metrics") or {}).get("test") or {})
        ]
        candidates.append(
            {
                **_candidate(by_index[index], budget),
                "retrained_mean": statistics.mean(scores) if scores else None,
                "retrained_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "test_mean": statistics.mean(reported) if reported else None,
                "seeds": len(scores),
                "failed": len(runs) - len(scores),
            }
        )
    candidates.sort(key=lambda c: (c["param_percent"], c["index"]))
    scored = [c for c in candidates if c["seeds"]]
    if not scored:
        raise ConfigError(
            f"no configuration in {store_path} retrained successfully: retrain.pick='retrained' has no score"
        )
    best = _best_within(scored, budget, "retrained_mean", f"retrained configuration in {store_path}")
    pick = {
        "rule": "retrained",
        "budget_percent": budget,
        "picked": best["index"],
        "retrained_front": str(front_dir),
        "candidates": candidates,
    }
    return by_index[best["index"]], pick


def _result_index(source: Any) -> int | None:
    """The search result index in a choice's ``source`` (``"<run dir> result 42"``), if it names one."""
    match = re.fullmatch(r".* result (\d+)", str(source or ""))
    return int(match[1]) if match else None


def pick_markdown(pick: Mapping[str, Any]) -> str:
    """What picked a budget choice, in words, and its candidates as a Markdown table."""
    budget = pick["budget_percent"]
    if pick["rule"] == "retrained":
        text = (
            f"Picked by retrain.pick=retrained: the best mean validation score of the front retrained in "
            f"{pick['retrained_front']} within {budget}% params (search result {pick['picked']})."
        )
        header = "| result | % params (paper) | search score | retrained val. | reported | seeds | fits | picked |"
        rule = "|--:|--:|--:|--:|--:|--:|:-:|:-:|"
    else:
        text = (
            f"Picked by retrain.pick=search_score: the best low-fidelity search score within {budget}% params "
            f"(search result {pick['picked']}); the search's front:"
        )
        header = "| result | % params (paper) | search score | fits | picked |"
        rule = "|--:|--:|--:|:-:|:-:|"
    lines = [text, "", header, rule]
    for c in pick["candidates"]:
        cells = [str(c["index"]), f"{c['param_percent']:.4f}", _number(c["search_score"])]
        if pick["rule"] == "retrained":
            failed = f" ({c['failed']} failed)" if c["failed"] else ""
            mean = "–" if c["retrained_mean"] is None else f"{c['retrained_mean']:.4f} ± {c['retrained_sd']:.4f}"
            cells += [mean, _number(c["test_mean"]), f"{c['seeds']}{failed}"]
        cells += ["yes" if c["within_budget"] else "no", "**yes**" if c["index"] == pick["picked"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def choices_from_file(path: Path) -> list[Choice]:
    """Named configurations from a file, to retrain or transfer.

    Two kinds of file are read:

    - a JSON list ``[{"name": ..., "peft": {PeftSpec fields}}, ...]``; fields an entry leaves out
      take the ``head_only`` preset's values, in particular ``layers: all`` (a configuration that
      names no layers inserts into every layer, as a preset does, rather than silently into none);
    - an export of a trained configuration (``<run dir>/export/autopeft.json``, or the run
      directory or export folder holding it): its configuration, under its own name.

    Raises:
        ConfigError: If the file is missing, not JSON, or an entry lacks ``name`` or ``peft``.

    """
    from autopeft.export.format import EXPORT_FORMAT
    from autopeft.export.load import read_manifest

    path = Path(path)
    if path.is_dir():
        manifest, file = read_manifest(path)
        return [Choice(name=str(manifest["peft"].get("name") or "exported"), peft=manifest["peft"], source=str(file))]
    if not path.is_file():
        raise ConfigError(f"retrain.configs={str(path)!r} does not exist")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"retrain.configs={str(path)!r} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(entries, dict) and entries.get("format") == EXPORT_FORMAT:
        manifest, file = read_manifest(path)
        return [Choice(name=str(manifest["peft"].get("name") or "exported"), peft=manifest["peft"], source=str(file))]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"retrain.configs={str(path)!r} must hold a non-empty JSON list of configurations "
            "or be an export (autopeft.json)"
        )
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry or "peft" not in entry:
            raise ConfigError(f"entry {i} of {path} needs 'name' and 'peft' (a mapping of peft fields)")
        if not isinstance(entry["peft"], dict):
            raise ConfigError(f"entry {i} of {path}: 'peft' must be a mapping of peft fields, not {entry['peft']!r}")
        peft = {"layers": "all", "name": str(entry["name"]), **entry["peft"]}
        out.append(Choice(name=str(entry["name"]), peft=peft, source=str(path)))
    return out


def retrain(cfg: DictConfig, run_dir: Path, task: TaskSpec | None = None) -> list[dict[str, Any]]:
    """Train every chosen configuration once per seed at ``cfg.fidelity``; resumable.

    Args:
        cfg: The run config (``retrain`` says which configurations and seeds).
        run_dir: Where the records and each cell's training go.
        task: The task, when the caller built it already.

    Returns:
        One record per (configuration, seed), in order, including those already done.

    """
    from autopeft.peft import peft_from_config
    from autopeft.training.backbones import shape_of
    from autopeft.training.train import TrainingJob, train_and_evaluate

    settings = RetrainSettings.from_config(cfg.retrain)
    job = TrainingJob.from_config(cfg, task)
    choices = (
        choices_from_search(Path(settings.source), settings)
        if settings.source
        else choices_from_file(Path(str(settings.configs)))
    )
    choices = labelled(choices, settings.label)
    shape = shape_of(job.backbone)
    for choice in choices:  # every configuration must fit this backbone before anything trains
        peft_from_config(choice.peft, shape)
    store = ResultsStore(Path(run_dir) / "retrain.jsonl", required_keys=RETRAIN_RECORD_KEYS)
    done = {(r["choice"], r["seed"]): r for r in store.load()}
    records = []
    for choice in choices:
        for seed in settings.seeds:
            if (choice.name, seed) in done:
                previous = done[(choice.name, seed)]
                _check_same_choice(previous, choice, Path(run_dir))
                records.append(previous)
                continue
            cell = f"{_slug(choice.name)}_seed{seed}"
            changes: dict[str, Any] = {"peft": choice.peft, "seed": seed}
            wandb = job.settings.logger.wandb
            if wandb is not None:  # one W&B run per (configuration, seed)
                changes["logger.wandb.name"] = f"{wandb.name or Path(run_dir).name}/{cell}"
            cell_job = job.updated(changes).from_origin(choice_origin(choice, settings))
            record = train_and_evaluate(cell_job, Path(run_dir) / "runs" / cell)
            record.update(
                choice=choice.name,
                source=choice.source,
                search_score=choice.search_score,
                search_task=choice.search_task,
                search_method=choice.search_method,
            )
            if choice.pick is not None:
                record["pick"] = choice.pick
            store.append(record)
            records.append(record)
    return records


def choice_origin(choice: Choice, settings: RetrainSettings) -> dict[str, Any]:
    """Where a retrained choice came from, as its export's ``provenance`` records it.

    Returns:
        ``search_run`` or ``configs_file``, ``select``, ``choice``, ``source``, ``search_index``
        (the ``results.jsonl`` index of a search result, else None), ``search_score``,
        ``search_task``, ``search_method`` and ``pick``.

    """
    return {
        "search_run": settings.source,
        "configs_file": settings.configs,
        "select": settings.select,
        "choice": choice.name,
        "source": choice.source,
        "search_index": _result_index(choice.source),
        "search_score": choice.search_score,
        "search_task": choice.search_task,
        "search_method": choice.search_method,
        "pick": choice.pick,
    }


def _check_same_choice(previous: Mapping[str, Any], choice: Choice, run_dir: Path) -> None:
    """Refuse to reuse a finished seed that trained another search result under the same name.

    A budget pick can change between runs (a search resumed with more evaluations, a front
    retraining that finished more seeds) while its name (``best<=0.76%``, a pipeline label) stays.

    Raises:
        ConfigError: If ``previous`` retrained a different search result than ``choice`` names.

    """
    before, now = _result_index(previous.get("source")), _result_index(choice.source)
    if before is not None and now is not None and before != now:
        raise ConfigError(
            f"{run_dir / 'retrain.jsonl'} holds {choice.name!r} seed {previous['seed']} trained from search result "
            f"{before}, but the choice is now result {now}: retrain into a new run directory"
        )


def _slug(name: str) -> str:
    """A directory-safe form of a configuration's name (``best<=1.5%`` -> ``best_1.5pct``)."""
    return re.sub(r"[^\w.+-]+", "_", name.replace("%", "pct").replace("^", "-")).strip("_") or "choice"


def summarise(records: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Mean ± sd of the reported (``test``) ``metric`` per configuration (failed seeds counted apart).

    Which split that is follows each record's ``protocol`` (:mod:`autopeft.data.protocol`), kept in the row.
    """
    rows = []
    for name in dict.fromkeys(r["choice"] for r in records):
        runs = [r for r in records if r["choice"] == name]
        values = [r["metrics"]["test"][metric] for r in runs if r["status"] == "ok"]
        rows.append(
            {
                "configuration": name,
                "description": runs[0]["configuration"],
                "param_percent": runs[0]["params"]["paper_percent"],
                "mean": statistics.mean(values) if values else math.nan,
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
                "failed": len(runs) - len(values),
                "search_score": runs[0].get("search_score"),
                "pick": runs[0].get("pick"),
                "protocol": runs[0].get("protocol", "heldout"),
            }
        )
    return rows
