"""Full-fidelity retraining of chosen configurations over several seeds (paper: mean ± sd over 5 seeds).

Configurations come from a finished search's run directory (its whole Pareto front, the best one
under a parameter budget, or chosen result indices) or from a JSON file of named PEFT
configurations. The task is the run's own ``task``, so pointing ``retrain.from`` at a search on
another task transfers its configurations (the paper's AutoPEFT^RTE on other tasks).

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

from omegaconf import DictConfig, OmegaConf, open_dict

from autopeft.bo.front import front_records
from autopeft.bo.pareto import is_success
from autopeft.bo.store import ResultsStore
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.space import Point

#: How configurations are picked from a search.
SELECTIONS = ("front", "budget", "indices")

#: Keys of the ``retrain`` node.
RETRAIN_KEYS = ("from", "select", "budget_percent", "indices", "configs", "seeds", "label")

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

    """

    name: str
    peft: dict[str, Any]
    source: str
    search_score: float | None = None
    search_task: str | None = None
    search_method: str | None = None


def retrain_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the ``retrain`` node; errors name the bad value and what is allowed."""
    values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
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
    label = values.get("label")
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise ConfigError(f"retrain.label={label!r} must be a non-empty string (or null)")
    return values


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


def choices_from_search(run_dir: Path, settings: Mapping[str, Any]) -> list[Choice]:
    """The configurations ``settings['select']`` picks from the search in ``run_dir``.

    Raises:
        ConfigError: If ``run_dir`` holds no search, no successful evaluation fits, or an index
            is unknown.

    """
    from autopeft.backbones import shape_of
    from autopeft.space import SearchSpace

    run_dir = Path(run_dir)
    manifest = run_dir / "search.json"
    if not manifest.is_file():
        raise ConfigError(f"retrain.from={str(run_dir)!r} has no search.json: not a search run directory")
    config = json.loads(manifest.read_text())["config"]
    space = SearchSpace.from_config(config["space"], shape_of(config["backbone"]))
    records = ResultsStore(run_dir / "results.jsonl").load()
    ok = [r for r in records if is_success(r)]
    select = settings["select"]
    if select == "front":
        picked = [(f"front-{i}", r) for i, r in enumerate(front_records(records), start=1)]
    elif select == "budget":
        fits = [r for r in ok if r["param_percent"] <= settings["budget_percent"]]
        if not fits:
            smallest = min((r["param_percent"] for r in ok), default=math.nan)
            raise ConfigError(
                f"no successful configuration of {run_dir} is within retrain.budget_percent="
                f"{settings['budget_percent']}% (the smallest uses {smallest:.4f}%)"
            )
        best = max(fits, key=lambda r: (r["score"], -r["param_percent"]))
        picked = [(f"best<={settings['budget_percent']}%", best)]
    else:
        by_index = {r["index"]: r for r in records}
        unknown = [i for i in settings["indices"] if i not in by_index]
        if unknown:
            raise ConfigError(f"retrain.indices has {unknown}, not results of {run_dir} (0..{len(records) - 1})")
        picked = [(f"result-{i}", by_index[i]) for i in settings["indices"]]
    if not picked:
        raise ConfigError(f"the search in {run_dir} has no successful evaluation to retrain")
    return [
        Choice(
            name=name,
            peft=space.to_peft(Point.from_dict(r["point"]), name=name).to_dict(),
            source=f"{run_dir} result {r['index']}",
            search_score=r.get("score"),
            search_task=str(config["task"]["name"]),
            search_method=str(config["search"]["method"]),
        )
        for name, r in picked
    ]


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
    from autopeft.export import EXPORT_FORMAT, read_manifest

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


def retrain(cfg: DictConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Train every chosen configuration once per seed at ``cfg.fidelity``; resumable.

    Returns:
        One record per (configuration, seed), in order, including those already done.

    """
    from autopeft.backbones import shape_of
    from autopeft.peft import peft_from_config
    from autopeft.train import train_and_evaluate, validate_run_config

    settings = retrain_settings(cfg.retrain)
    validate_run_config(cfg)
    choices = (
        choices_from_search(Path(settings["from"]), settings)
        if settings.get("from")
        else choices_from_file(Path(settings["configs"]))
    )
    choices = labelled(choices, settings.get("label"))
    shape = shape_of(cfg.backbone)
    for choice in choices:  # every configuration must fit this backbone before anything trains
        peft_from_config(choice.peft, shape)
    store = ResultsStore(Path(run_dir) / "retrain.jsonl", required_keys=RETRAIN_RECORD_KEYS)
    done = {(r["choice"], r["seed"]): r for r in store.load()}
    records = []
    for choice in choices:
        for seed in settings["seeds"]:
            if (choice.name, seed) in done:
                records.append(done[(choice.name, seed)])
                continue
            run_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            cell = f"{_slug(choice.name)}_seed{seed}"
            with open_dict(run_cfg):
                run_cfg.peft = choice.peft
                run_cfg.seed = seed
                if run_cfg.logger.get("wandb") is not None:  # one W&B run per (configuration, seed)
                    run_cfg.logger.wandb.name = f"{run_cfg.logger.wandb.get('name') or Path(run_dir).name}/{cell}"
            record = train_and_evaluate(run_cfg, Path(run_dir) / "runs" / cell)
            record.update(
                choice=choice.name,
                source=choice.source,
                search_score=choice.search_score,
                search_task=choice.search_task,
                search_method=choice.search_method,
            )
            store.append(record)
            records.append(record)
    return records


def _slug(name: str) -> str:
    """A directory-safe form of a configuration's name (``best<=1.5%`` -> ``best_1.5pct``)."""
    return re.sub(r"[^\w.+-]+", "_", name.replace("%", "pct").replace("^", "-")).strip("_") or "choice"


def summarise(records: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Mean ± sd of the held-out ``metric`` per configuration (failed seeds counted apart)."""
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
            }
        )
    return rows
