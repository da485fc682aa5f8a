"""What ``run.py`` does for each ``mode``; errors in configs become one clear line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from autopeft.errors import ConfigError, allowed_list, did_you_mean


def register_resolvers() -> None:
    """Register the OmegaConf resolvers that conf/ uses (``${pid:}`` keeps run directories unique)."""
    import os

    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


def quiet_libraries() -> None:
    """Silence library chatter that says nothing about the run (tips, per-shard progress bars)."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def run_dir_of(cfg: DictConfig) -> Path:
    """This run's own output directory (Hydra's, unique per run and per multirun cell)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("run_dir") or "outputs/unmanaged")


def mode_params(cfg: DictConfig) -> dict[str, Any]:
    """Print the paper's and the exact parameter counts of ``cfg.peft`` on ``cfg.backbone`` as JSON."""
    import torch

    from autopeft.backbones import load_backbone
    from autopeft.model import AutoPeftModel
    from autopeft.params import parameter_report
    from autopeft.peft import peft_from_config
    from autopeft.tasks import task_from_config

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
    from autopeft.backbones import shape_of
    from autopeft.space import SearchSpace

    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    info = space.to_json_dict()
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return info


def mode_train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; write ``results.json`` into the run directory."""
    from autopeft.io import atomic_write_json
    from autopeft.train import train_and_evaluate

    run_dir = run_dir_of(cfg)
    record = train_and_evaluate(cfg, run_dir)
    record["run_dir"] = str(run_dir)
    record["config"] = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_json(run_dir / "results.json", record)
    print(_train_summary(record))
    if record["status"] != "ok":
        raise SystemExit(f"error: training {record['status']}: {record.get('reason', '')}")
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
    lines.append(
        f"  time: {record['total_seconds']:.1f}s total, {record['train_seconds']:.1f}s fit, "
        f"{record['samples_per_second']:.1f} train samples/s on {record['device']}"
    )
    lines.append(f"  results: {record['run_dir']}/results.json")
    return "\n".join(lines)


MODES: dict[str, Callable[[DictConfig], Any]] = {"train": mode_train, "params": mode_params, "space": mode_space}


def dispatch(cfg: DictConfig) -> Any:
    """Run ``cfg.mode``; print config errors as one line and exit with status 2."""
    quiet_libraries()
    try:
        mode = cfg.mode
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r} is not a mode{did_you_mean(mode, MODES)}; allowed: {allowed_list(MODES)}")
        return MODES[mode](cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
