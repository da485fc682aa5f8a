"""One paper experiment end to end (``mode=pipeline``): search, transfer, baselines, report.

A pipeline is a plan of stages, each an ordinary run of another mode with a few overrides on top
of the invocation's own (so ``debug=smoke`` or ``backbone=...`` reach every stage):

1. ``search/<task>``: an AutoPEFT search on each of ``pipeline.search_tasks`` (``mode=search``, at
   the experiment's ``fidelity``, usually ``low``).
2. ``front/<task>``, only with ``retrain.pick=retrained``: each search's whole Pareto front
   retrained on its own task at ``pipeline.retrain_fidelity`` over ``retrain.seeds``, as the
   authors' code does before choosing; the transfers then take the configuration with the best
   retrained mean within ``retrain.budget_percent``. It is kept out of the report (its rows are
   candidates, not results).
3. ``transfer/<searched>_to_<target>``: the configurations ``retrain.select`` picks from each
   search, retrained on each target task at ``pipeline.retrain_fidelity`` over ``retrain.seeds``
   (``mode=retrain`` with ``retrain.from`` = the search). ``pipeline.pairs=all`` retrains every
   search's choice on every target (Figure 5's matrix); ``own`` only on the task it was searched on.
4. ``baselines/<name>/<task>/seed<k>``: every entry of ``pipeline.baselines`` (a ``conf/peft``
   preset, optionally with fixed fields or a sweep over sizes) trained on every target task and
   seed (``mode=train``).
5. ``report/``: the paper-shaped table and plots over the searches, transfers and baselines
   (``mode=report``).

Every stage resumes on its own (a search continues from its ``results.jsonl``, a retraining skips
the seeds in its ``retrain.jsonl``, a finished training is not redone), so rerunning the same
command with ``resume=<run dir>`` after a crash or a kill loses no finished work. The plan and
each stage's status are kept in ``pipeline.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autopeft.bo.executor import ParallelSettings, make_executor
from autopeft.errors import ConfigError, allowed_list, check_known_keys
from autopeft.experiments.scheduling import Job, run_in_dependency_order, run_stage
from autopeft.runtime import override_key

log = logging.getLogger("autopeft.pipeline")

#: Keys of the ``pipeline`` node.
PIPELINE_KEYS = (
    "search_tasks",
    "transfer_tasks",
    "pairs",
    "baselines",
    "retrain_fidelity",
    "label",
    "report",
    "workers",
)

#: How searches are paired with transfer targets.
PAIRS = ("all", "own")

#: Keys of one ``pipeline.baselines`` entry given as a mapping.
BASELINE_KEYS = ("preset", "name", "peft", "sweep", "overrides")

#: Overrides of the invocation that a stage sets itself (or that only concern the pipeline run).
_STAGE_OWNED = (
    "mode",
    "task",
    "peft",
    "seed",
    "fidelity",
    "resume",
    "retrain.from",
    "retrain.label",
    "retrain.retrained_front",
)

#: Kinds of stage, in the order a plan runs them.
STAGE_KINDS = ("search", "front", "transfer", "baseline")

#: Format of ``pipeline.json``.
PIPELINE_FORMAT = 1


@dataclass(frozen=True)
class Baseline:
    """One baseline configuration of the plan: a preset plus fixed ``peft`` fields.

    Attributes:
        name: Its row label in tables (also ``peft.name`` of its trainings).
        preset: The ``conf/peft`` preset it starts from.
        fields: ``peft`` fields set on top of the preset (e.g. ``{"sa_size": 96}``).
        overrides: Further Hydra overrides of its trainings, for a method trained with its own
            published hyper-parameters (e.g. AdaMix's ``trainer.lr=4e-4``).

    """

    name: str
    preset: str
    fields: tuple[tuple[str, Any], ...] = ()
    overrides: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """A directory-safe form of the name."""
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in self.name).strip("-") or self.preset


@dataclass(frozen=True)
class Stage:
    """One run of the plan.

    Attributes:
        kind: One of :data:`STAGE_KINDS`: ``search``, ``front`` (a search's front retrained on its
            own task, for ``retrain.pick=retrained``), ``transfer`` or ``baseline``.
        label: What it is, in words (progress lines, ``pipeline.json``).
        path: Its run directory, relative to the pipeline's.
        overrides: Hydra overrides that turn the experiment's config into this stage's.
        after: Paths of the stages that must finish before it starts (a transfer reads its
            search's results and its front's retraining; a baseline needs nothing).

    """

    kind: str
    label: str
    path: str
    overrides: tuple[str, ...]
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineSettings:
    """The checked ``pipeline`` node (``conf/pipeline/default.yaml`` says what each key does)."""

    search_tasks: tuple[str, ...]
    transfer_tasks: tuple[str, ...]
    pairs: str
    baselines: tuple[Baseline, ...]
    retrain_fidelity: str | None
    label: str
    report: bool
    workers: int = 1


def pipeline_settings(cfg: DictConfig) -> PipelineSettings:
    """Validate the ``pipeline`` node; errors name the bad value and what is allowed."""
    node = cfg.get("pipeline")
    if node is None:
        raise ConfigError("mode=pipeline needs a pipeline node: pick an experiment, e.g. experiment=glue_transfer")
    values = OmegaConf.to_container(node, resolve=True)
    check_known_keys(values, PIPELINE_KEYS, "pipeline")
    for key in ("search_tasks", "transfer_tasks"):
        tasks = values.get(key) or []
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"pipeline.{key}={tasks!r} must be a list of task names (conf/task/<name>.yaml)")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"pipeline.{key}={tasks} lists a task twice")
        values[key] = tasks
    if values.get("pairs") not in PAIRS:
        raise ConfigError(f"pipeline.pairs={values.get('pairs')!r}; allowed: {allowed_list(PAIRS)}")
    if not values["search_tasks"] and not values.get("baselines"):
        raise ConfigError("pipeline.search_tasks and pipeline.baselines are both empty: nothing to run")
    if not values["search_tasks"] and not values["transfer_tasks"]:
        raise ConfigError("pipeline.baselines need tasks: set pipeline.transfer_tasks (or pipeline.search_tasks)")
    baselines = expand_baselines(values.get("baselines") or [])
    workers = values.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"pipeline.workers={workers!r} must be an integer >= 1 (stages running at once)")
    if "{task}" not in str(values.get("label", "")):
        raise ConfigError(f"pipeline.label={values.get('label')!r} must contain '{{task}}' (e.g. 'AutoPEFT^{{task}}')")
    return PipelineSettings(
        search_tasks=tuple(values["search_tasks"]),
        transfer_tasks=tuple(values["transfer_tasks"]),
        pairs=values["pairs"],
        baselines=tuple(baselines),
        retrain_fidelity=values.get("retrain_fidelity"),
        label=str(values["label"]),
        report=bool(values.get("report", True)),
        workers=workers,
    )


def expand_baselines(entries: Sequence[Any]) -> list[Baseline]:
    """Turn ``pipeline.baselines`` entries into :class:`Baseline` s.

    An entry is a preset name (``sa``), or a mapping ``{preset, name?, peft?: {field: value},
    sweep?: {field: [values]}, overrides?: [hydra overrides]}``; a sweep gives one baseline per
    combination of its values (the paper's Figure 4 varies D_SA, D_PA, L_PT and the LoRA rank this
    way).

    Raises:
        ConfigError: On an unknown key, a missing preset, or two baselines with the same name.

    """
    out: list[Baseline] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            out.append(Baseline(name=entry, preset=entry))
            continue
        if not isinstance(entry, Mapping) or "preset" not in entry:
            raise ConfigError(f"pipeline.baselines[{i}]={entry!r} must be a preset name or a mapping with 'preset'")
        check_known_keys(entry, BASELINE_KEYS, f"pipeline.baselines[{i}]")
        fixed = dict(entry.get("peft") or {})
        sweep = dict(entry.get("sweep") or {})
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"pipeline.baselines[{i}].sweep.{key}={values!r} must be a non-empty list")
        extra = entry.get("overrides") or []
        if not isinstance(extra, list) or not all(isinstance(o, str) and "=" in o for o in extra):
            raise ConfigError(f"pipeline.baselines[{i}].overrides={extra!r} must be a list of key=value overrides")
        base_name = str(entry.get("name") or entry["preset"])
        for combo in itertools.product(*sweep.values()) if sweep else [()]:
            swept = dict(zip(sweep, combo, strict=True))
            name = base_name + "".join(f" {k}={v}" for k, v in swept.items())
            out.append(
                Baseline(
                    name=name,
                    preset=str(entry["preset"]),
                    fields=tuple({**fixed, **swept}.items()),
                    overrides=tuple(extra),
                )
            )
    names = [b.name for b in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"pipeline.baselines has two baselines named {duplicates[0]!r}; give each a distinct name")
    return out


def _override_value(value: Any) -> str:
    """A value in Hydra override syntax (strings quoted, lists as [a,b])."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return str(value)


def plan_stages(
    settings: PipelineSettings, seeds: Sequence[int], root: Path, pick: str = "search_score"
) -> list[Stage]:
    """Every stage of the pipeline, in the order they run (searches before their transfers).

    Args:
        settings: The validated ``pipeline`` node (:func:`pipeline_settings`).
        seeds: ``retrain.seeds`` (the baselines train once per seed).
        root: The pipeline's run directory (stages name the searches they read by it).
        pick: ``retrain.pick``; ``retrained`` plans a ``front/<task>`` stage per search (its whole
            front retrained on its own task) and points the transfers at it.

    """
    stages: list[Stage] = []
    searched = settings.search_tasks
    targets = settings.transfer_tasks or searched
    for task in searched:
        stages.append(Stage("search", f"search on {task}", f"search/{task}", (f"task={task}", "mode=search")))
    fidelity = settings.retrain_fidelity
    if pick == "retrained":
        for source in searched:
            label = settings.label.format(task=source.upper())
            stages.append(
                Stage(
                    "front",
                    f"{label}: the front retrained on {source} (to pick within the budget)",
                    f"front/{source}",
                    (
                        f"task={source}",
                        "mode=retrain",
                        f"fidelity={fidelity}",
                        f"retrain.from={_override_value(str(root / 'search' / source))}",
                        "retrain.select=front",
                        "retrain.pick=search_score",
                        "retrain.retrained_front=null",
                        f"retrain.label={_override_value(label)}",
                    ),
                    after=(f"search/{source}",),
                )
            )
    for source in searched:
        pairs = targets if settings.pairs == "all" else [t for t in targets if t == source]
        label = settings.label.format(task=source.upper())
        for target in pairs:
            stages.append(
                Stage(
                    "transfer",
                    f"{label} retrained on {target}" if target != source else f"{label} retrained",
                    f"transfer/{source}_to_{target}",
                    (
                        f"task={target}",
                        "mode=retrain",
                        f"fidelity={fidelity}",
                        f"retrain.from={_override_value(str(root / 'search' / source))}",
                        f"retrain.label={_override_value(label)}",
                        *(
                            [f"retrain.retrained_front={_override_value(str(root / 'front' / source))}"]
                            if pick == "retrained"
                            else []
                        ),
                    ),
                    after=(f"search/{source}", *([f"front/{source}"] if pick == "retrained" else [])),
                )
            )
    for baseline in settings.baselines:
        peft_fields = tuple(f"peft.{k}={_override_value(v)}" for k, v in baseline.fields)
        for task in targets:
            for seed in seeds:
                stages.append(
                    Stage(
                        "baseline",
                        f"baseline {baseline.name} on {task}, seed {seed}",
                        f"baselines/{baseline.slug}/{task}/seed{seed}",
                        (
                            f"task={task}",
                            "mode=train",
                            f"fidelity={fidelity}",
                            f"peft={baseline.preset}",
                            *peft_fields,
                            f"peft.name={_override_value(baseline.name)}",
                            *baseline.overrides,
                            f"seed={seed}",
                        ),
                    )
                )
    return stages


def base_overrides(overrides: Sequence[str]) -> list[str]:
    """The invocation's overrides minus those each stage sets itself."""
    kept = []
    for override in overrides:
        key = override_key(override)
        if key in _STAGE_OWNED or key == "hydra" or key.startswith("hydra."):
            continue
        kept.append(override)
    return kept


Composer = Callable[[Sequence[str]], DictConfig]


def hydra_composer(config_dir: Path) -> Composer:
    """Compose ``conf/run.yaml`` with overrides, inside or outside a running Hydra app.

    Unknown config-group options (a misspelt task or preset) become a ConfigError that keeps
    Hydra's list of available options.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def _compose(overrides: Sequence[str]) -> DictConfig:
        try:
            if GlobalHydra.instance().is_initialized():
                return compose(config_name="run", overrides=list(overrides))
            with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
                return compose(config_name="run", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as err:
            message = " ".join(str(err).split())
            raise ConfigError(f"cannot compose a pipeline stage with overrides {list(overrides)}: {message}") from None

    return _compose


class PipelineState:
    """``pipeline.json``: the invocation, the plan and each stage's status, rewritten atomically.

    Args:
        path: The file.
        overrides: The invocation's overrides.
        stages: The plan.
        choice: How the transfers' configuration is chosen (``retrain.select``, ``pick``,
            ``budget_percent``); each transfer stage adds its ``pick`` (the candidates' scores).

    """

    def __init__(
        self,
        path: Path,
        overrides: Sequence[str],
        stages: Sequence[Stage],
        choice: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        previous = self._load(path)
        status = {s["path"]: s for s in previous.get("stages", [])} if previous else {}
        self.data: dict[str, Any] = {
            "format": PIPELINE_FORMAT,
            "overrides": list(overrides),
            **({"choice": dict(choice)} if choice is not None else {}),
            "stages": [
                {
                    **asdict(stage),
                    "overrides": list(stage.overrides),
                    "after": list(stage.after),
                    **_status_of(status.get(stage.path)),
                }
                for stage in stages
            ],
        }
        self.save()

    @staticmethod
    def _load(path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is damaged ({err.msg} at line {err.lineno}); it was not modified") from None
        if not isinstance(data, dict) or data.get("format") != PIPELINE_FORMAT:
            raise ConfigError(f"{path} is not a pipeline.json of format {PIPELINE_FORMAT}; it was not modified")
        return data

    def mark(self, index: int, status: str, **extra: Any) -> None:
        """Record a stage's status (``done``, ``failed``) and what it produced."""
        self.data["stages"][index].update(status=status, **extra)
        self.save()

    def save(self) -> None:
        """Write the file atomically."""
        from autopeft.io import atomic_write_json

        atomic_write_json(self.path, self.data)


def _status_of(previous: Mapping[str, Any] | None) -> dict[str, Any]:
    if not previous:
        return {"status": "pending"}
    return {k: v for k, v in previous.items() if k in ("status", "summary", "seconds", "pick")}


#: Config keys (and their subtrees) a resumed pipeline may change: where files go, what is shown, how
#: many workers, and budgets that extend what ran (more BO iterations, more seeds) without changing it.
RESUME_FREE_KEYS = (
    "output_root",
    "resume",
    "data.cache_dir",
    "logger",
    "search.n_iter",
    "search.progress",
    "search.parallel",
    "pipeline.workers",
    "trainer.progress_bar",
    "retrain.seeds",
)


def check_resume_overrides(compose: Composer, saved: Sequence[str], extra: Sequence[str], run_dir: Path) -> DictConfig:
    """The resumed pipeline's config, refused when its new overrides change what its results mean.

    The pipeline's config is composed from its saved overrides with and without the new ones;
    any difference outside :data:`RESUME_FREE_KEYS` (another task, backbone, space, fidelity,
    trainer value, ...) would make finished stages and new ones disagree, so it is refused
    before anything is written.

    Returns:
        The config of the saved overrides followed by ``extra`` (the one the pipeline runs).

    Raises:
        ConfigError: Naming the overrides and up to five of the differences they make.

    """
    from autopeft.bo.loop import differences, listed_differences

    resumed = compose([*saved, *extra])
    if not extra:
        return resumed
    before, after = (OmegaConf.to_container(c, resolve=False) for c in (compose(list(saved)), resumed))
    diffs = differences(before, after, ignore=RESUME_FREE_KEYS)
    if diffs:
        raise ConfigError(
            f"cannot resume {run_dir} with {' '.join(extra)}: it changes what the pipeline's results mean; "
            f"{listed_differences(diffs)}. A resume may change only {', '.join(RESUME_FREE_KEYS[2:])}"
        )
    return resumed


def saved_overrides(run_dir: Path) -> list[str] | None:
    """The invocation overrides stored in ``run_dir/pipeline.json`` (None: not a pipeline run)."""
    data = PipelineState._load(Path(run_dir) / "pipeline.json")
    return None if data is None else list(data["overrides"])


def _stage_config(compose: Composer, base: Sequence[str], stage: Stage, group: str) -> DictConfig:
    cfg = compose([*base, *stage.overrides])
    wandb = cfg.logger.get("wandb")
    if wandb is not None:
        # One W&B project per experiment: group by experiment, tag by stage kind and task.
        wandb.group = wandb.group or group
        wandb.name = wandb.get("name") or stage.path
        wandb.tags = [*(wandb.tags or []), stage.kind, str(cfg.task.name)]
    return cfg


def check_stage(cfg: DictConfig) -> None:
    """Validate a stage's config without training (task, backbone shape, PEFT fields, settings)."""
    from autopeft.peft import peft_from_config
    from autopeft.training.backbones import shape_of
    from autopeft.training.train import TrainingJob

    TrainingJob.from_config(cfg)
    if cfg.mode == "train":
        peft_from_config(cfg.peft, shape_of(cfg.backbone))
    elif cfg.mode == "search":
        from autopeft.bo.settings import SearchSettings
        from autopeft.space import SearchSpace

        SearchSettings.from_config(cfg.search)
        SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    elif cfg.mode == "retrain":
        from autopeft.experiments.retrain import RetrainSettings

        RetrainSettings.from_config(cfg.retrain)


def run_pipeline(
    cfg: DictConfig,
    run_dir: Path,
    overrides: Sequence[str],
    runners: Mapping[str, Callable[[DictConfig, Path], Any]],
    compose: Composer,
    group: str = "pipeline",
) -> dict[str, Any]:
    """Run (or continue) every stage of ``cfg.pipeline`` under ``run_dir``, then the report.

    Args:
        cfg: The experiment's composed config (``mode=pipeline``).
        run_dir: The pipeline's run directory; stages get subdirectories.
        overrides: The invocation's overrides (stages are composed from them plus their own).
        runners: ``{"search"|"retrain"|"train"|"report": fn(stage cfg, stage dir)}``.
        compose: Composes ``conf/run.yaml`` with a list of overrides.
        group: The W&B group of every stage (the experiment's name).

    Returns:
        ``{"stages": [...statuses], "report": <report summary or None>, "run_dir": str}``.

    Raises:
        ConfigError: If any stage's config is invalid; checked for all stages before any runs.

    """
    from autopeft.experiments.retrain import pick_setting

    settings = pipeline_settings(cfg)
    run_dir = Path(run_dir)
    seeds = list(cfg.retrain.seeds)
    pick = pick_setting(cfg.retrain)
    stages = plan_stages(settings, seeds, run_dir, pick=pick)
    base = base_overrides(overrides)
    configs = [_stage_config(compose, base, stage, group) for stage in stages]
    for stage, stage_cfg in zip(stages, configs, strict=True):
        try:
            check_stage(stage_cfg)
        except ConfigError as err:
            raise ConfigError(f"pipeline stage '{stage.label}': {err}") from None
    choice = {"select": str(cfg.retrain.select), "pick": pick}
    if cfg.retrain.select == "budget":
        choice["budget_percent"] = cfg.retrain.budget_percent
    state = PipelineState(run_dir / "pipeline.json", overrides, stages, choice=choice)
    counts = {kind: sum(s.kind == kind for s in stages) for kind in STAGE_KINDS}
    fronts = f"{counts['front']} fronts retrained to pick from, " if counts["front"] else ""
    print(
        f"AutoPEFT pipeline: {counts['search']} searches, {fronts}{counts['transfer']} retrainings, "
        f"{counts['baseline']} baseline trainings -> {run_dir}",
        flush=True,
    )
    if settings.workers > 1:
        for stage_cfg in configs:
            # Progress bars of concurrent stages would overwrite each other on one terminal.
            stage_cfg.trainer.progress_bar = False

    def header(index: int) -> str:
        return f"[{index + 1}/{len(stages)}] {stages[index].label}"

    def on_start(index: int) -> None:
        print(f"\n{header(index)}: {run_dir / stages[index].path}", flush=True)

    def on_done(index: int, future: Future, seconds: float) -> None:
        mode = str(configs[index].mode)
        try:
            result = future.result()
            status, summary = _outcome(mode, result)
        except ConfigError as err:
            # Every stage's config was checked above, so this is what an earlier stage left behind
            # (a search with no successful evaluation, a budget its front cannot meet): this
            # stage fails, and the stages that do not depend on it still run.
            result, status, summary = None, "failed", str(err)
        picks = [row["pick"] for row in result if row.get("pick")] if mode == "retrain" and result else []
        state.mark(index, status, summary=summary, seconds=round(seconds, 1), **({"pick": picks[0]} if picks else {}))
        if status != "done":
            log.warning("%s %s (%s); the pipeline goes on", header(index), status, summary)
        elif settings.workers > 1:
            print(f"{header(index)}: done in {seconds:.0f} s ({summary})", flush=True)

    jobs = [
        Job(
            stage.path,
            stage.after,
            run_stage,
            (runners[str(stage_cfg.mode)], stage_cfg, run_dir / stage.path, stage.path),
        )
        for stage, stage_cfg in zip(stages, configs, strict=True)
    ]
    with make_executor(ParallelSettings(workers=settings.workers), settings.workers) as executor:
        run_in_dependency_order(jobs, executor, settings.workers, on_start, on_done)
    report = None
    if settings.report:
        inputs = [run_dir / part for part in ("search", "transfer", "baselines") if (run_dir / part).is_dir()]
        report = runners["report"](_report_config(cfg, inputs), run_dir / "report")
    failed = [s for s in state.data["stages"] if s["status"] != "done"]
    print(
        f"\npipeline finished: {len(stages) - len(failed)}/{len(stages)} stages done"
        + (f", {len(failed)} failed: " + "; ".join(s["label"] for s in failed) if failed else "")
        + f"\ncontinue or rerun: python run.py resume={run_dir}",
        flush=True,
    )
    return {"stages": state.data["stages"], "report": report, "run_dir": str(run_dir)}


def _report_config(cfg: DictConfig, inputs: Sequence[Path]) -> DictConfig:
    report_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    report_cfg.mode = "report"
    report_cfg.report.runs = [str(p) for p in inputs]
    return report_cfg


def _outcome(mode: str, result: Any) -> tuple[str, str]:
    """``(status, one-line summary)`` of a stage from its runner's return value."""
    if mode == "train":
        if result.get("status") != "ok":
            return "failed", f"{result.get('status')}: {result.get('reason', '')}"
        return "done", f"score {result.get('score'):.4f}"
    if mode == "retrain":
        failed = sum(row["failed"] for row in result)
        text = "; ".join(f"{row['configuration']} {row['mean']:.4f} ± {row['sd']:.4f}" for row in result)
        return ("failed" if failed and all(row["seeds"] == 0 for row in result) else "done"), text
    if mode == "search":
        if result.get("failure"):
            return "failed", result["failure"]
        state = result["state"]
        return "done", f"{state['evaluations']} evaluations, front {state['front_size']}"
    return "done", ""
