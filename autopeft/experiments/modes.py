"""What ``run.py`` does for each ``mode``: each builds what it needs once and hands it down."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autopeft.data.protocol import DEFAULT_PROTOCOL, protocol_of, record_scoring, scores_caption, scores_text, scoring
from autopeft.errors import ConfigError
from autopeft.runtime import command_line_overrides, experiment_name, override_key, run_dir_of
from autopeft.settings import check_resume


def mode_params(cfg: DictConfig) -> dict[str, Any]:
    """Print the paper's and the exact parameter counts of ``cfg.peft`` on ``cfg.backbone`` as JSON."""
    import torch

    from autopeft.peft import peft_from_config
    from autopeft.peft.params import parameter_report
    from autopeft.tasks.registry import task_from_config
    from autopeft.training.backbones import load_backbone
    from autopeft.training.model import AutoPeftModel

    task = task_from_config(cfg.task)
    backbone = load_backbone(cfg.backbone, weights=False)
    spec = peft_from_config(cfg.peft, backbone.shape)
    with torch.device("meta"):  # counting needs shapes only: no memory, no weights
        model = AutoPeftModel(backbone, spec, task.type, task.num_labels)
    report = {
        "backbone": backbone.name,
        "task": task.name,
        **parameter_report(model, spec, backbone.shape, backbone.num_params),
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def mode_space(cfg: DictConfig) -> dict[str, Any]:
    """Print the search space ``cfg.space`` on ``cfg.backbone`` as one JSON object (with its ``size``)."""
    from autopeft.space import SearchSpace
    from autopeft.training.backbones import shape_of

    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    info = space.to_json_dict()
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return info


def mode_train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; write ``results.json`` into the run directory.

    Raises:
        SystemExit: If the training diverged or ran out of memory (after writing its record).

    """
    record = train_cell(cfg, run_dir_of(cfg) if run_dir is None else run_dir)
    if record["status"] != "ok":
        raise SystemExit(f"error: training {record['status']}: {record.get('reason', '')}")
    return record


def train_cell(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train one configuration into ``run_dir`` unless it already finished there; return its record."""
    from autopeft.io import atomic_write_json
    from autopeft.training.train import TrainingJob, train_and_evaluate

    finished = _finished_train_record(cfg, run_dir)
    if finished is not None:
        print(f"already finished, skipped: {run_dir / 'results.json'} (score {finished.get('score')})")
        return finished
    job = TrainingJob.from_config(cfg)
    record = train_and_evaluate(job, run_dir)
    record["run_dir"] = str(run_dir)
    record["config"] = dict(job.config)
    atomic_write_json(run_dir / "results.json", record)
    print(_train_summary(record))
    return record


#: Config keys that may differ between a finished run and its rerun (where things are, not what ran).
_LOCATION_KEYS = ("output_root", "resume")

#: Settings that leave a training's result as it was: a finished cell is reused whatever they are
#: (a pipeline with more workers turns the progress bars off).
_RESULT_FREE_KEYS = (("trainer", "progress_bar"), ("pipeline", "workers"))


def _finished_train_record(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The finished record in ``run_dir`` if this exact configuration already ran there successfully.

    A rerun of a sweep (same ``hydra.sweep.dir``) reaches each cell's directory again; a cell
    whose ``results.json`` holds a successful run of the same config is not redone. The same
    directory holding a different configuration is refused rather than overwritten.

    Raises:
        ConfigError: If ``run_dir`` holds a finished run of a different configuration.

    """
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a results.json is only ever written atomically; an unreadable one is not a result
    if record.get("status") != "ok":
        return None  # failed cells are retried
    current = OmegaConf.to_container(cfg, resolve=True)
    saved = dict(record.get("config") or {})
    for key in _LOCATION_KEYS:
        current.pop(key, None)
        saved.pop(key, None)
    for node_key, key in _RESULT_FREE_KEYS:
        for node in (current, saved):
            (node.get(node_key) or {}).pop(key, None)
    for node in (current, saved):
        (node.get("data") or {}).pop("cache_dir", None)
    if isinstance(saved.get("data"), dict):
        # Cells finished before data.protocol existed ran the default (held-out) protocol.
        saved["data"].setdefault("protocol", DEFAULT_PROTOCOL)
    if saved != current:
        raise ConfigError(
            f"{run_dir} already holds a finished run of a different configuration; use another "
            "hydra.sweep.dir (or output_root) instead of overwriting it"
        )
    return record


def _train_summary(record: dict[str, Any]) -> str:
    params = record["params"]
    lines = [
        f"AutoPEFT train | task {record['task']} | backbone {record['backbone']} | {record['configuration']}",
        f"  trainable: {params['paper_params']:,} paper count ({params['paper_percent']:.3f}% of "
        f"{params['backbone_params']:,}), {params['trainable_params']:,} exact incl. head",
    ]
    if record["status"] == "ok":
        for split in ("validation", "test"):
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in record["metrics"][split].items())
            lines.append(f"  {split:<10} {metrics}")
        lines.append(f"  test is:   {scores_text(*record_scoring(record))}")
    lines.append(
        f"  time: {record['total_seconds']:.1f}s total, {record['train_seconds']:.1f}s fit, "
        f"{record['samples_per_second']:.1f} train samples/s on {record['device']}"
    )
    lines.append(f"  results: {record['run_dir']}/results.json")
    return "\n".join(lines)


def mode_search(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Run or resume a search; write the front table, plot and summary into the run directory.

    Args:
        cfg: The composed config.
        run_dir: Where to search (default: this run's directory); an existing search there continues.

    """
    from autopeft.bo.loop import resumed_config
    from autopeft.bo.objectives import ParamAxis
    from autopeft.bo.pareto import hypervolume_trace
    from autopeft.experiments.search import run_search
    from autopeft.report.wandb_search import SearchWandb
    from autopeft.runs.front import front_rows, write_search_report
    from autopeft.tasks.registry import task_from_config

    resume = check_resume(cfg.get("resume"))  # the check dispatch makes, for callers that come here directly
    if resume is not None:
        run_dir = resume
        cfg = resumed_config(cfg, run_dir, command_line_overrides())
    elif run_dir is None:
        run_dir = run_dir_of(cfg)
    task = task_from_config(cfg.task)
    wandb_logger: SearchWandb | None = None

    def on_record(record: dict[str, Any], state: dict[str, Any]) -> None:
        nonlocal wandb_logger
        if wandb_logger is None:  # opened on the first evaluation: config errors never create a W&B run
            wandb_logger = SearchWandb(cfg, run_dir)
        wandb_logger.log_evaluation(record, state)

    result = run_search(cfg, run_dir, resume=bool(resume), on_record=on_record, task=task)
    state, records = result["state"], result["records"]
    ref = state["ref_point"]
    param_axis = ParamAxis.from_json(state["param_objective"])
    import torch

    trace = hypervolume_trace(records, None if ref is None else torch.tensor(ref, dtype=torch.float64), param_axis)
    what = "Enumeration" if result["searcher"] == "enumeration" else f"{cfg.search.method.upper()} search"
    title = f"{what}: {task.name}, {cfg.backbone.name}, space {result['space'].name}"
    summary = {
        "task": task.name,
        "metric": task.main_metric,
        "backbone": cfg.backbone.name,
        "space": result["space"].to_json_dict(),
        "method": cfg.search.method,
        "seed": int(cfg.seed),
        "state": state,
        "param_objective": param_axis.to_json(),  # the axis of the hypervolumes and the reference point
        "hypervolume_trace": trace,
        "timings": result["timings"],
        "run_dir": str(run_dir),
        "searcher": result["searcher"],
        "failure": result["failure"],
    }
    paths = write_search_report(run_dir, records, trace, task.main_metric, title, summary, param_axis)
    if wandb_logger is None:
        wandb_logger = SearchWandb(cfg, run_dir)
    wandb_logger.log_final(front_rows(records), paths["plot"], summary)
    print(_search_summary(summary, paths))
    return summary


def search_command(cfg: DictConfig) -> dict[str, Any]:
    """``mode=search`` from the command line: :func:`mode_search`, failing when nothing succeeded.

    A search whose evaluations all failed (or that evaluated nothing) still writes its report,
    then the process exits with status 1 and says why. A pipeline calls :func:`mode_search`
    itself and decides on its own what a failed stage means.

    Raises:
        SystemExit: With ``error: ...`` (exit status 1) if the search has no successful evaluation.

    """
    check_no_peft_override(command_line_overrides(), str(cfg.space.name))
    summary = mode_search(cfg)
    if summary["failure"]:
        raise SystemExit(f"error: the search ended with no successful evaluation: {summary['failure']}")
    return summary


def check_no_peft_override(overrides: list[str], space: str) -> None:
    """Refuse ``peft=`` / ``peft.<key>=`` on a search's command line: a search never reads them.

    A search trains the configurations it proposes from ``space=``; the ``peft`` node only
    describes the one configuration ``mode=train`` (or ``mode=params``) trains, so a ``peft=lora``
    given to a search would be silently ignored.

    Raises:
        ConfigError: Naming the first such override, the space searched and the command that
            trains that one configuration instead.

    """
    for override in overrides:
        key = override_key(override)
        if key == "peft" or key.startswith("peft."):
            raise ConfigError(
                f"{override} does not apply to mode=search: a search chooses each PEFT configuration from "
                f"space= (now space={space}; space=autopeft_lora adds LoRA; python run.py mode=space lists it); "
                f"to train this one configuration instead: python run.py mode=train {override}"
            )


def _search_summary(summary: dict[str, Any], paths: dict[str, Path]) -> str:
    state, timings = summary["state"], summary["timings"]
    hv = f"{state['hypervolume']:.4g}" if state["hypervolume"] is not None else "-"
    hv_label = f"hypervolume ({summary['param_objective']['label']})"
    ref = state["ref_point"]
    ref_text = "[" + ", ".join(f"{v:.4g}" for v in ref) + "]" if ref is not None else "-"
    lines = [
        "",
        paths["front_md"].read_text().rstrip(),
        "",
        f"{state['evaluations']} evaluations ({state['failed']} failed"
        + ("; every configuration of the space, enumerated" if summary["searcher"] == "enumeration" else "")
        + f"), front {state['front_size']}, "
        f"{hv_label} {hv} (reference point {ref_text}), "
        f"{timings['wall_seconds']:.0f}s this session "
        f"({timings['evaluate_seconds']:.0f}s training, {timings['propose_seconds']:.0f}s proposing)",
        f"front table: {paths['front_md']} and {paths['front_csv'].name}; plot: {paths['plot']}",
        f"resume or extend: python run.py resume={summary['run_dir']} [search.n_iter=N to extend]",
    ]
    return "\n".join(lines)


def mode_retrain(cfg: DictConfig, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """Retrain chosen configurations over seeds; write and print the mean ± sd table."""
    from autopeft.experiments.retrain import RetrainSettings, pick_markdown, retrain, summarise
    from autopeft.io import atomic_write_json, atomic_write_text
    from autopeft.settings import TrainingSettings
    from autopeft.tasks.registry import task_from_config

    # A bad retrain or trainer setting is reported before the warning about fidelity writes run.log.
    RetrainSettings.from_config(cfg.retrain)
    TrainingSettings.from_config(cfg)
    task = task_from_config(cfg.task)
    run_dir = run_dir_of(cfg) if run_dir is None else Path(run_dir)
    if cfg.fidelity.name != "full":
        logging.getLogger("autopeft.retrain").warning(
            "retraining at fidelity=%s (%d epochs); the paper retrains at fidelity=full",
            cfg.fidelity.name,
            cfg.fidelity.epochs,
        )
    records = retrain(cfg, run_dir, task)
    rows = summarise(records, task.main_metric)
    scores = scores_caption({task.name: [record_scoring(r) for r in records if r.get("status") == "ok"]})
    protocol = protocol_of(cfg.data)
    lines = [
        f"### Retrained at fidelity {cfg.fidelity.name}: {task.name}, {cfg.backbone.name}, "
        f"{task.main_metric} (mean ± sd over seeds)",
        "",
        scores or f"Scores: {scores_text(protocol, scoring(task.benchmark, protocol))}.",
        "",
        f"| configuration | {task.main_metric} | seeds | % params (paper) | search score | description |",
        "|:--|--:|--:|--:|--:|:--|",
    ]
    for row in rows:
        search = f"{row['search_score']:.4f}" if row["search_score"] is not None else "–"
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"| {row['configuration']} | {row['mean']:.4f} ± {row['sd']:.4f} | {row['seeds']}{failed} | "
            f"{row['param_percent']:.4f} | {search} | {row['description']} |"
        )
    table = "\n".join(lines) + "\n"
    for row in rows:  # a budget pick: which rule chose it, the budget and every candidate's scores
        if row.get("pick"):
            table += "\n" + pick_markdown(row["pick"])
    atomic_write_text(run_dir / "retrain.md", table)
    protocols = sorted({record_scoring(r)[0] for r in records})
    summary = {"task": task.name, "metric": task.main_metric, "protocols": protocols, "scores": scores, "rows": rows}
    atomic_write_json(run_dir / "retrain_summary.json", summary)
    print(table)
    print(f"records: {run_dir / 'retrain.jsonl'}; table: {run_dir / 'retrain.md'}")
    return rows


def mode_report(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Build the paper-shaped table and plots from ``report.runs`` into this run's directory."""
    from autopeft.report.build import build_report
    from autopeft.report.wandb_report import log_report
    from autopeft.settings import ReportSettings

    settings = ReportSettings.from_config(cfg.report)
    out_dir = run_dir_of(cfg) if run_dir is None else Path(run_dir)
    summary = build_report(list(settings.runs), out_dir)
    summary["wandb_run"] = log_report(cfg, out_dir, summary["files"])
    counts = summary["runs"]
    print(
        f"report of {counts['searches']} searches, {counts['retrains']} retrainings, "
        f"{counts['trainings']} single trainings over tasks {', '.join(summary['tasks']) or '–'}"
    )
    for key in ("table_md", "transfer_md"):
        if summary["files"].get(key):
            print(Path(summary["files"][key]).read_text())
    if summary["proposals"]:
        print("Configurations proposed, by proposer (successful evaluations; medians):")
        for row in summary["proposals"]:
            who = "initial design" if row["proposer"] == "init" else row["proposer"]
            print(
                f"  {row['panel']}: {who:<14} n={row['evaluations']:<4} "
                f"% params {row['median_param_percent']:.4g}  score {row['median_score']:.4f}"
            )
    for name, path in summary["files"].items():
        print(f"{name}: {path}")
    return summary


def mode_pipeline(cfg: DictConfig, resume_dir: Path | None = None) -> dict[str, Any]:
    """Run one experiment end to end (see :mod:`autopeft.experiments.pipeline`); ``resume=<dir>`` continues one."""
    from autopeft.experiments.pipeline import check_resume_overrides, hydra_composer, run_pipeline, saved_overrides

    overrides = command_line_overrides()
    compose = hydra_composer(Path(__file__).resolve().parents[2] / "conf")
    if resume_dir is not None:
        saved = saved_overrides(resume_dir) or []
        extra = [o for o in overrides if override_key(o) != "resume"]
        cfg = check_resume_overrides(compose, saved, extra, resume_dir)  # before pipeline.json is rewritten
        overrides = [*saved, *extra]
        run_dir = resume_dir
    else:
        run_dir = run_dir_of(cfg)
    runners = {"search": mode_search, "retrain": mode_retrain, "train": train_cell, "report": mode_report}
    return run_pipeline(cfg, run_dir, overrides, runners, compose, group=experiment_name())
