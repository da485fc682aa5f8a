"""Process set-up every mode shares: OmegaConf resolvers, quiet libraries, this run's directory."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def register_resolvers() -> None:
    """Register the OmegaConf resolvers that conf/ uses.

    ``${pid:}`` keeps run directories unique; ``${resume_or:${resume},<new dir>}`` makes a resumed
    search run in its original directory (when that exists; a missing one is reported by the
    search itself, which writes nothing there); ``${unless_resuming:${resume},.hydra}`` keeps Hydra's
    config snapshot out of a resumed run's directory; ``${custom_task_name:<train>,<hub>,<subset>}`` is a
    custom task's default ``task.name``, derived from its data (``conf/task/custom.yaml``).
    """
    import os

    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
    OmegaConf.register_new_resolver("run_tag", _run_tag, replace=True)
    OmegaConf.register_new_resolver("resume_or", lambda resume, new: resume if _resuming(resume) else new, replace=True)
    OmegaConf.register_new_resolver("custom_task_name", _custom_task_name, replace=True)
    OmegaConf.register_new_resolver("unless_resuming", _unless_resuming, replace=True)


def _unless_resuming(resume: object, value: object) -> object:
    """``value`` for a new run, None when ``resume=`` names an existing directory.

    Hydra writes its ``.hydra/`` snapshot into the run directory before any of AutoPEFT's code
    runs; a resume's run directory is the one it continues, so the snapshot would overwrite the
    original run's (and a refused resume would still have written into the directory it names).
    ``hydra.output_subdir`` set to None makes Hydra skip the snapshot: a resumed search keeps its
    config in ``search.json``, a resumed pipeline its overrides in ``pipeline.json``.
    """
    return None if _resuming(resume) else value


def _resuming(resume: object) -> bool:
    """Whether ``resume=`` names an existing directory: the run directory is then the one it continues."""
    return bool(resume) and Path(str(resume)).is_dir()


def _custom_task_name(train: object = None, hub: object = None, subset: object = None) -> str:
    from autopeft.tasks.custom import derived_task_name  # reads pandas: only when a custom task is composed
    from autopeft.tasks.registry import TASKS

    return derived_task_name(train, hub, subset, TASKS)


def _run_tag(mode: str, task: str, peft: str, method: str, experiment: str | None = None) -> str:
    """The run directory's suffix: task plus what distinguishes the run (search method or peft preset).

    A pipeline runs many tasks, so it is named by its experiment instead; a report reads whatever
    runs it is given, whose tasks are known only once it has read them, so it is named ``report``.
    """
    if mode == "pipeline":
        return str(experiment or "pipeline")
    if mode == "report":
        return "report"
    what = {"search": method, "retrain": "retrain"}.get(mode, peft)
    return f"{task}_{what}"


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
    # GP fits on a few dozen points add diagonal jitter routinely; the fit handles it.
    warnings.filterwarnings("ignore", message=r".*not p\.d\., added jitter.*")


def run_dir_of(cfg: DictConfig) -> Path:
    """This run's own output directory (Hydra's, unique per run and per multirun cell)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.get("run_dir") or "outputs/unmanaged")


def command_line_overrides() -> list[str]:
    """This invocation's command-line overrides (empty outside a Hydra run, e.g. in tests)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def override_key(override: str) -> str:
    """The key a command-line override sets: ``search.n_iter`` of ``+search.n_iter=5`` or ``~search.n_iter``."""
    return override.split("=", 1)[0].lstrip("+~")


def experiment_name() -> str:
    """The chosen ``experiment`` config (the W&B group of a pipeline's runs)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("experiment") or "pipeline")
    return "pipeline"
