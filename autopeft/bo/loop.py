"""The search loop: propose, evaluate, record durably, repeat; resumable from its run directory.

Run directory layout:

- ``search.json``: what was searched (task, backbone, space, method, seed, parameter axis,
  fingerprinted settings), written once; a resume must match it.
- ``proposals.jsonl``: every proposed configuration, appended (fsynced) before it is evaluated.
- ``results.jsonl``: every finished evaluation, appended (fsynced) as soon as it finishes.
- ``evals/<index>/``: each evaluation's training logs.
- ``front.md``, ``front.csv``, ``pareto.png``, ``summary.json``: written at the end.

A kill at any instant loses at most the evaluation that was running: on resume the logged but
unfinished proposals are evaluated first, then the searcher continues. Searchers are
deterministic functions of the history and the seed, so a resumed search makes the same
proposals as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autopeft.bo.executor import make_executor, resolve_workers
from autopeft.bo.objectives import LINEAR, ParamAxis
from autopeft.bo.pareto import hypervolume, is_success, objective_matrix, pareto_mask, search_reference
from autopeft.bo.scheduler import Objective, Schedule
from autopeft.bo.searchers import EnumerationSearcher
from autopeft.bo.settings import SearchSettings, make_searcher
from autopeft.errors import ConfigError
from autopeft.io import RunDirectoryLock, atomic_write_json
from autopeft.runs.store import ResultsStore
from autopeft.runtime import override_key
from autopeft.space import Point, SearchSpace

log = logging.getLogger("autopeft.search")

PROPOSAL_KEYS = ("index", "point", "batch", "records_before")

#: Config nodes a resumed search must share with the original (anything else may change, e.g.
#: ``search.n_iter`` to extend a finished search). Keys listed under a node are ignored in it.
FINGERPRINT: dict[str, tuple[str, ...]] = {
    "task": (),
    "backbone": (),
    "space": (),
    "fidelity": (),
    "data": ("cache_dir", "num_workers"),
    # Gradient checkpointing trades memory for time and leaves every result as it was.
    "trainer": ("progress_bar", "log_every_n_steps", "eval_batch_size", "gradient_checkpointing"),
}


@dataclass
class SearchFiles:
    """Paths of a search's run directory."""

    run_dir: Path

    @property
    def manifest(self) -> Path:
        """``search.json``."""
        return self.run_dir / "search.json"

    @property
    def results(self) -> ResultsStore:
        """The results store."""
        return ResultsStore(self.run_dir / "results.jsonl")

    @property
    def proposals(self) -> ResultsStore:
        """The proposals log."""
        return ResultsStore(self.run_dir / "proposals.jsonl", required_keys=PROPOSAL_KEYS)


def fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """The parts of ``cfg`` that define what a search's results mean."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {
        node: {k: v for k, v in (plain.get(node) or {}).items() if k not in ignored}
        for node, ignored in FINGERPRINT.items()
    }
    out["seed"] = plain["seed"]
    out["search.method"] = plain["search"]["method"]
    out["search.n_init"] = plain["search"]["n_init"]
    # The axis changes what BO proposes and what the hypervolume measures: a search is continued
    # on the axis it started on.
    out["search.param_objective"] = plain["search"].get("param_objective", "linear")
    return out


def differences(old: Any, new: Any, prefix: str = "", ignore: Collection[str] = ()) -> list[str]:
    """Each leaf where two nested mappings differ, as ``key.path: <old> in the run, <new> now``.

    Args:
        old: What the run holds.
        new: What this invocation asks for.
        prefix: The key path of ``old`` and ``new`` (with its trailing dot), for recursion.
        ignore: Key paths whose whole subtree may differ (e.g. ``logger``, ``search.n_iter``).

    """
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            if f"{prefix}{key}" not in ignore:
                diffs += differences(old.get(key), new.get(key), f"{prefix}{key}.", ignore)
        return diffs
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} in the run, {new!r} now"]


def listed_differences(diffs: list[str], shown: int = 5) -> str:
    """The first ``shown`` differences joined for a one-line message, and how many more there are."""
    more = f" (+{len(diffs) - shown} more)" if len(diffs) > shown else ""
    return "; ".join(diffs[:shown]) + more


def open_run(cfg: DictConfig, run_dir: Path, space: SearchSpace, param_axis: ParamAxis | None = None) -> SearchFiles:
    """Create or reopen the run directory, refusing a resume of a different search.

    Args:
        cfg: The run config.
        run_dir: The run directory.
        space: The search space (saved in a new ``search.json``).
        param_axis: The parameter objective, saved in a new ``search.json`` (with its floor) so a
            report can measure the search's hypervolume on its own axis.

    Raises:
        ConfigError: ``run_dir`` holds a search whose task, backbone, space, fidelity, data,
            trainer, method, n_init, seed or ``search.param_objective`` differ from ``cfg``.

    """
    files = SearchFiles(Path(run_dir))
    if check_same_search(cfg, files.run_dir):
        return files
    current = fingerprint(cfg)
    files.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "fingerprint": current,
        "space": space.to_json_dict(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if param_axis is not None:
        manifest["param_objective"] = param_axis.to_json()
    atomic_write_json(files.manifest, manifest)
    return files


def check_same_search(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a search; refuse it if it is a different search.

    Reads ``search.json`` only: a resume that is refused leaves the directory as it was, so this
    runs before the directory is locked (the lock file records its holder) and again under it.

    Returns:
        True if ``run_dir`` holds a search that ``cfg`` may continue, False if it holds none.

    Raises:
        ConfigError: ``run_dir`` holds a search whose task, backbone, space, fidelity, data,
            trainer, method, n_init, seed or ``search.param_objective`` differ from ``cfg``, or
            its ``search.json`` is not valid JSON.

    """
    manifest = SearchFiles(Path(run_dir)).manifest
    if not manifest.exists():
        return False
    try:
        saved = json.loads(manifest.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{manifest} is not valid JSON ({err.msg}); it was not modified") from None
    saved_print = saved.get("fingerprint")
    if isinstance(saved_print, dict):  # a run from before the key existed searched on the linear axis
        saved_print = {"search.param_objective": "linear", **saved_print}
    diffs = differences(saved_print, fingerprint(cfg))
    if diffs:
        raise ConfigError(f"cannot resume {run_dir}: it is a different search; {listed_differences(diffs)}")
    return True


def resumed_config(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """The saved config of the search in ``run_dir``, with this command line's overrides applied.

    So ``python run.py resume=<dir>`` needs nothing else, and ``resume=<dir> search.n_iter=200``
    extends a finished search. Each override's value is taken from the freshly composed ``cfg``
    (Hydra has parsed it there); whether the result may continue the search is checked by
    :func:`open_run`.

    Raises:
        ConfigError: If ``run_dir`` holds no readable ``search.json``, or an override names a
            config group that is not a node of the saved config (e.g. ``experiment=``).

    """
    manifest = Path(run_dir) / "search.json"
    if not manifest.is_file():
        raise ConfigError(f"resume={str(run_dir)!r} has no search.json: not a search run directory")
    try:
        saved = OmegaConf.create(json.loads(manifest.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{manifest} is damaged ({err}); it was not modified") from None
    for override in overrides:
        key = override_key(override)
        if key in ("resume", "hydra") or key.startswith("hydra."):
            continue
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>" or key in ("experiment", "debug"):
            raise ConfigError(
                f"override {override!r} cannot be applied to a resumed search: resume=<dir> continues with the "
                "run's saved config, and accepts only overrides of its keys (e.g. search.n_iter=200)"
            )
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    saved.resume = str(run_dir)
    return saved


class Tracker:
    """Front size, best score and hypervolume of the records so far.

    Args:
        settings: The search settings (the configured reference point).
        design_size: How many first evaluations the reference point is inferred from: the
            initial design (``n_init``), or the whole enumeration of an enumerated search.
        param_axis: The parameter objective the hypervolume and reference point are on; may be
            left out only on the linear axis (the log axis' floor needs the space and backbone).

    Raises:
        ValueError: If ``settings`` asks for the log axis and ``param_axis`` is not given or differs.

    """

    def __init__(
        self, settings: SearchSettings, design_size: int | None = None, param_axis: ParamAxis | None = None
    ) -> None:
        self.settings = settings
        self.design_size = settings.n_init if design_size is None else design_size
        self.param_axis = LINEAR if param_axis is None else param_axis
        if self.param_axis.name != settings.param_objective:
            raise ValueError(
                f"search.param_objective={settings.param_objective!r} but the tracker got the "
                f"{self.param_axis.name!r} axis; pass settings.param_axis(space, backbone_params)"
            )

    def state(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """``best``, ``front_size``, ``hypervolume`` (None before a reference point exists), ``failed``.

        ``hypervolume`` and ``ref_point`` are on the axis ``param_objective`` describes
        (:meth:`ParamAxis.to_json`: its name, floor and label).
        """
        ok = [r for r in records if is_success(r)]
        ref = search_reference(records, self.settings.ref_point, self.design_size, self.param_axis)
        Y = objective_matrix(ok, self.param_axis)
        return {
            "evaluations": len(records),
            "failed": len(records) - len(ok),
            "best": max((r["score"] for r in ok), default=None),
            "front_size": int(pareto_mask(Y).sum()) if ok else 0,
            "hypervolume": hypervolume(Y, ref) if ref is not None and ok else None,
            "ref_point": None if ref is None else ref.tolist(),
            "param_objective": self.param_axis.to_json(),
        }


@dataclass(frozen=True)
class SearchProblem:
    """What a search explores and how it scores a configuration, built once by its caller.

    Args:
        settings: The parsed ``search`` node.
        space: The search space.
        backbone_params: The backbone's parameter count (the denominator of % parameters).
        objective: Scores one configuration (low-fidelity training, or a benchmark's stand-in).

    """

    settings: SearchSettings
    space: SearchSpace
    backbone_params: int
    objective: Objective


def search(
    cfg: DictConfig,
    run_dir: Path,
    problem: SearchProblem,
    *,
    resume: bool = False,
    on_record: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    candidates: list[Point] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a search of ``problem`` in ``run_dir`` and return its final state.

    Args:
        cfg: The run config, saved in ``search.json`` and fingerprinted so a resume must match it.
        run_dir: The run directory (an existing one continues where it stopped).
        problem: The settings, space and objective (see :func:`autopeft.experiments.search.run_search`).
        resume: True when the user asked to resume (the directory must hold a search).
        on_record: Called with ``(record, tracker state)`` after each evaluation is stored.
        candidates: Restrict the search to these configurations (tabulated benchmarks).

    Returns:
        ``{"records": [...], "state": {...}, "space": SearchSpace, "backbone_params": int, ...}``.

    Raises:
        ConfigError: ``resume`` is set and ``run_dir`` holds no search.

    """
    if resume and not check_same_search(cfg, Path(run_dir)):  # before the lock writes its holder
        raise ConfigError(f"resume={str(run_dir)!r} has no search.json: not a search run directory")
    with RunDirectoryLock(Path(run_dir), "search"):
        return _run_locked(cfg, Path(run_dir), problem, on_record, candidates)


def _run_locked(
    cfg: DictConfig,
    run_dir: Path,
    problem: SearchProblem,
    on_record: Callable[[dict[str, Any], dict[str, Any]], None] | None,
    candidates: list[Point] | None,
) -> dict[str, Any]:
    settings, space, objective = problem.settings, problem.space, problem.objective
    param_axis = settings.param_axis(space, problem.backbone_params)
    files = open_run(cfg, run_dir, space, param_axis)
    if param_axis.name != "linear":
        log.info("parameter objective (search.param_objective=%s): %s", param_axis.name, param_axis.describe())
    store, proposals_log = files.results, files.proposals
    records, proposals = store.load(), proposals_log.load()
    _check_consistent(records, proposals, space, files)
    searcher = make_searcher(settings, space, problem.backbone_params, int(cfg.seed), candidates)
    budget = settings.budget
    tracker = Tracker(settings, param_axis=param_axis)
    if isinstance(searcher, EnumerationSearcher):
        budget = min(budget, searcher.size)  # no configuration twice: the enumeration ends the search
        log.info(
            "space %r has %d configurations <= search.n_init %d: enumerating every one once, ascending %% params, "
            "instead of searching (search.enumerate=auto)",
            space.name,
            searcher.size,
            settings.n_init,
        )
        if all(p.get("info", {}).get("phase") == "enumeration" for p in proposals):
            # The reference comes from all of them.
            tracker = Tracker(settings, design_size=searcher.size, param_axis=param_axis)
    if records:
        log.info("resuming %s: %d of %d evaluations done", files.run_dir, len(records), budget)
    progress = _progress_bar(settings, budget, len(records))
    redirect = contextlib.nullcontext()
    if progress is not None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
    workers = resolve_workers(settings.parallel)
    if workers > 1:
        log.info(
            "%d evaluations at once (%s executor), at least %d queued ahead; proposals are computed while they run",
            workers,
            settings.parallel.executor,
            settings.parallel.prefetch,
        )

    def make_record(entry: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        return {
            "index": entry["index"],
            "point": entry["point"],
            "configuration": space.describe(Point.from_dict(entry["point"])),
            "phase": entry.get("info", {}).get("phase"),
            "seed": int(cfg.seed),
            **result,
        }

    def stored(record: dict[str, Any]) -> None:
        state = tracker.state(records)
        _report_progress(progress, record, state, budget)
        if on_record is not None:
            on_record(record, state)

    schedule = Schedule(
        searcher=searcher,
        objective=objective,
        space=space,
        executor=make_executor(settings.parallel, workers),
        workers=workers,
        prefetch=settings.parallel.prefetch,
        batch_size=settings.batch_size,
        budget=budget,
        store=store,
        proposals_log=proposals_log,
        make_record=make_record,
        on_record=stored,
    )
    with redirect:
        try:
            stats, exhausted = schedule.run(records, proposals)
        finally:
            if progress is not None:
                progress.close()
    state = tracker.state(records)
    return {
        "records": records,
        "proposals": proposals,
        "state": state,
        "failure": search_failure(records, exhausted),
        "searcher": searcher.name,
        "space": space,
        "settings": settings,
        "backbone_params": problem.backbone_params,
        "run_dir": files.run_dir,
        "timings": stats.summary(),
    }


def search_failure(records: list[dict[str, Any]], exhausted: str | None = None) -> str | None:
    """Why a search has no successful evaluation, in one line; None when it has one.

    Args:
        records: The search's evaluations.
        exhausted: Why the searcher stopped proposing, if it did.

    """
    if any(is_success(r) for r in records):
        return None
    if not records:
        return "nothing was evaluated" + (f": {exhausted}" if exhausted else "")
    first = min(records, key=lambda r: r["index"])
    if first.get("status") == "ok":  # finished, but its score is missing or NaN
        why = f"no usable score ({first.get('score')!r})"
    else:
        why = f"{first.get('status')}: {first.get('reason') or 'no reason recorded'}"
    which = "the only evaluation failed" if len(records) == 1 else f"all {len(records)} evaluations failed"
    return f"{which}; the first (evaluation {first['index']}, {first.get('configuration') or first.get('point')}) {why}"


def _check_consistent(
    records: list[dict[str, Any]], proposals: list[dict[str, Any]], space: SearchSpace, files: SearchFiles
) -> None:
    """Every record must answer a logged proposal with the same configuration, once, in order."""
    by_index = {p["index"]: p for p in proposals}
    if [p["index"] for p in proposals] != list(range(len(proposals))):
        raise ConfigError(f"{files.proposals.path} is corrupt: proposal indices are not 0, 1, 2, ...")
    seen: set[int] = set()
    for record in records:
        index = record["index"]
        if index in seen:
            raise ConfigError(f"{files.results.path} is corrupt: evaluation {index} is recorded twice")
        seen.add(index)
        if index not in by_index or by_index[index]["point"] != record["point"]:
            raise ConfigError(
                f"{files.results.path} is corrupt: evaluation {index} does not match proposal {index} "
                f"of {files.proposals.path}"
            )
        space.check(Point.from_dict(record["point"]))


def _progress_bar(settings: SearchSettings, budget: int, done: int) -> Any:
    if not settings.progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=budget, initial=done, desc="search", unit="eval", dynamic_ncols=True)


def _report_progress(progress: Any, record: dict[str, Any], state: dict[str, Any], budget: int) -> None:
    score = f"{record['score']:.4f}" if record["score"] is not None else record["status"].upper()
    hv = f"{state['hypervolume']:.4g}" if state["hypervolume"] is not None else "-"
    if state["param_objective"]["name"] != "linear":  # name a non-default axis on every line
        hv += f" ({state['param_objective']['label']})"
    best = f"{state['best']:.4f}" if state["best"] is not None else "-"
    line = (
        f"[{state['evaluations']:>{len(str(budget))}}/{budget}] {record['phase'] or '':<5} "
        f"{record['configuration']} | {record['param_percent']:.3f}% params | score {score} | "
        f"{record['seconds']:.1f}s || best {best} | front {state['front_size']} | HV {hv}"
    )
    log.info(line)  # routed through tqdm.write while a bar is shown (see run_search)
    if progress is not None:
        progress.set_postfix_str(f"best {best} | front {state['front_size']} | HV {hv}", refresh=False)
        progress.update(1)
