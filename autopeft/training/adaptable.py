"""Adaptable Adapters (Moosavi et al., 2022) as a two-stage training: learn the layers, then train.

This is AA^uni without its rational activation function, the layer-selection baseline of the
AutoPEFT paper's Table 5:

1. Stage 1 trains adapters in every candidate layer (``peft.layers``) together with a learned
   per-layer switch between "adapter on" and "skip" (:mod:`autopeft.peft.switch`).
2. The selected layers are those whose switch ends "on" or, with ``peft.adaptable_layers: k``
   (to match a parameter budget), the k layers most likely "on".
3. Stage 2 trains fresh adapters, without switches, in the selected layers only.

The final record is stage 2's (its score, parameters and configuration) with an ``adaptable``
entry listing the selected layers, every switch's probability of "on", the rule used and a
summary of stage 1. Both stages go through the same training path
(:func:`autopeft.training.train.train_and_evaluate` passes its own functions in, so this module does
not import the training code).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from autopeft.peft import layer_switches

if TYPE_CHECKING:
    from autopeft.training.train import TrainingJob

TrainFn = Callable[["TrainingJob", Path], dict[str, Any]]


def wants_layer_selection(peft: Mapping[str, Any]) -> bool:
    """Whether the ``peft`` node asks for Adaptable Adapters' learned layer selection."""
    return bool(peft.get("layer_switch", False))


def switch_report(model: nn.Module) -> dict[str, Any]:
    """The state of a model's layer switches, for a training record; empty when it has none.

    Args:
        model: An :class:`~autopeft.training.model.AutoPeftModel` (or anything with an ``encoder``).

    Returns:
        ``{"layer_switch": {"p_on": {layer: probability}, "on": [layers switched on]}}``, with
        layer indices as strings (JSON object keys), or ``{}``.

    """
    encoder = getattr(model, "encoder", model)
    switches = layer_switches(encoder)
    if not switches:
        return {}
    return {
        "layer_switch": {
            "p_on": {str(index): switch.p_on() for index, switch in switches.items()},
            "on": [index for index, switch in switches.items() if switch.is_on()],
        }
    }


def select_layers(p_on: Mapping[int, float], on: list[int], k: int | None) -> tuple[int, ...]:
    """The layers stage 2 trains: the top ``k`` by probability of "on", or those switched on.

    Ties in probability go to the lower layer, so the selection is deterministic.
    """
    if k is None:
        return tuple(sorted(on))
    ranked = sorted(p_on, key=lambda index: (-p_on[index], index))
    return tuple(sorted(ranked[:k]))


def _stage1_job(job: TrainingJob) -> TrainingJob:
    # The switch model is a means to the selection, not worth exporting.
    return job.updated({"trainer.save_weights": False})


def _stage2_job(job: TrainingJob, layers: tuple[int, ...]) -> TrainingJob:
    return job.updated({"peft.layers": list(layers), "peft.layer_switch": False, "peft.adaptable_layers": None})


def run_adaptable(job: TrainingJob, run_dir: Path, stage1: TrainFn, stage2: TrainFn) -> dict[str, Any]:
    """Select layers with switches (stage 1), then train adapters in them (stage 2).

    Args:
        job: The training job, with ``peft.layer_switch: true``.
        run_dir: Stage 2 logs here, stage 1 in ``run_dir/stage1``.
        stage1: Trains one configuration and adds :func:`switch_report` to its record.
        stage2: Trains one configuration (any switch-free config).

    Returns:
        Stage 2's record with an ``adaptable`` entry; stage 1's record (with ``adaptable``
        saying so) when stage 1 did not finish (``diverged``, ``oom``).

    """
    first = stage1(_stage1_job(job), Path(run_dir) / "stage1")
    summary: dict[str, Any] = {
        "stage1": {key: first.get(key) for key in ("status", "score", "best_epoch", "params", "total_seconds")},
    }
    if first["status"] != "ok":
        first["adaptable"] = {**summary, "stopped_at": "stage 1"}
        return first
    state = first["layer_switch"]
    k = job.peft.get("adaptable_layers")
    p_on = {int(index): p for index, p in state["p_on"].items()}
    selected = select_layers(p_on, state["on"], k)
    record = stage2(_stage2_job(job, selected), Path(run_dir))
    record["adaptable"] = {
        "selected_layers": list(selected),
        "switch_probabilities": state["p_on"],
        "switched_on": state["on"],
        "rule": f"top {k} layers by switch probability" if k else "layers whose switch ends on",
        **summary,
    }
    record["total_seconds"] += first["total_seconds"]  # the method's cost is both stages
    return record
