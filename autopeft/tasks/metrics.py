"""Evaluation metrics as GLUE/SuperGLUE define them, computed with ``torchmetrics``; generation metrics.

Degenerate inputs score 0.0, never NaN. A collapsed model (one that predicts a constant)
makes Pearson/Spearman/Matthews undefined (zero variance in the denominator); a NaN would
poison a configuration search, because NaN compares false with everything and so cannot be
ranked, sorted or fed to a surrogate model. 0.0 is the value of "no correlation", which is
exactly what a constant predictor has, so collapsed configurations rank at the bottom.

Generation tasks are scored on text, not logits (:func:`generation_metrics`): ``exact_match``
compares the greedy decoding with the gold answer after :func:`normalise_answer`, and
``choice_accuracy`` (tasks that list answer choices) counts the rows whose most likely choice,
by summed answer log-likelihood, is the gold one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import (
    binary_f1_score,
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_matthews_corrcoef,
)

from autopeft.errors import ConfigError, allowed_list, did_you_mean

if TYPE_CHECKING:  # tasks.py imports this module, so only import TaskSpec for type checkers
    from autopeft.tasks.spec import TaskSpec


@dataclass(frozen=True)
class MetricInfo:
    """Facts about one metric.

    Attributes:
        kind: ``"classification"`` (applies to classification and multiple choice, scores
            class indices), ``"regression"`` (scores real-valued predictions) or
            ``"generation"`` (scores generated answers or picked choices).
        higher_is_better: Whether larger values are better.
        description: One line for humans.

    """

    kind: str
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("classification", True, "fraction of correct predictions"),
    "f1": MetricInfo("classification", True, "binary F1 of the positive class (label 1)"),
    "macro_f1": MetricInfo("classification", True, "unweighted mean of per-class F1 (classes seen)"),
    "matthews": MetricInfo("classification", True, "Matthews correlation coefficient"),
    "pearson": MetricInfo("regression", True, "Pearson correlation coefficient"),
    "spearman": MetricInfo("regression", True, "Spearman rank correlation coefficient"),
    "exact_match": MetricInfo("generation", True, "fraction of greedy decodings equal to the gold answer (stripped)"),
    "choice_accuracy": MetricInfo(
        "generation", True, "fraction of rows whose choice of highest summed answer log-likelihood is the gold one"
    ),
}


def _info(metric: str) -> MetricInfo:
    if metric not in METRICS:
        hint = did_you_mean(metric, METRICS)
        raise ConfigError(f"unknown metric {metric!r}{hint}; allowed metrics: {allowed_list(METRICS)}")
    return METRICS[metric]


def higher_is_better(metric: str) -> bool:
    """Return whether larger values of ``metric`` are better (all built-in ones: True).

    Raises:
        ConfigError: If ``metric`` is unknown.

    """
    return _info(metric).higher_is_better


def metric_kind(metric: str) -> str:
    """Return ``"classification"``, ``"regression"`` or ``"generation"`` for ``metric``.

    Raises:
        ConfigError: If ``metric`` is unknown.

    """
    return _info(metric).kind


def _finite(value: torch.Tensor) -> float:
    """Convert a scalar tensor to a float, mapping NaN/inf (undefined metric) to 0.0."""
    number = float(value)
    return number if math.isfinite(number) else 0.0


_ClassFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
_CLASS_FNS: dict[str, _ClassFn] = {
    "accuracy": lambda p, t, n: multiclass_accuracy(p, t, num_classes=n, average="micro"),
    "f1": lambda p, t, n: binary_f1_score(p, t),
    "macro_f1": lambda p, t, n: multiclass_f1_score(p, t, num_classes=n, average="macro"),
    "matthews": lambda p, t, n: multiclass_matthews_corrcoef(p, t, num_classes=n),
}
_REG_FNS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "pearson": pearson_corrcoef,
    "spearman": spearman_corrcoef,
}


def _check_shapes(spec: TaskSpec, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Validate shapes and return predictions in canonical shape ((N, C) or (N,))."""
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
    if spec.type == "regression":
        if predictions.ndim == 2 and predictions.shape[1] == 1:  # a (N, 1) regression head
            predictions = predictions[:, 0]
        expected = f"({labels.shape[0]},)"
        ok = predictions.ndim == 1 and predictions.shape[0] == labels.shape[0]
    else:
        expected = f"({labels.shape[0]}, {spec.num_labels})"
        ok = predictions.ndim == 2 and tuple(predictions.shape) == (labels.shape[0], spec.num_labels)
    if not ok:
        raise ValueError(
            f"task {spec.name!r} ({spec.type}) expects predictions of shape {expected}, got {tuple(predictions.shape)}"
        )
    return predictions


def compute_metrics(spec: TaskSpec, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Score raw model outputs with every metric of ``spec``.

    Args:
        spec: The task; its ``type``, ``num_labels`` and ``metrics`` decide what is computed.
        predictions: Logits of shape (N, C) for classification / multiple choice (C =
            ``num_labels``, the number of classes or choices), or floats of shape (N,) (or
            (N, 1)) for regression.
        labels: Gold labels of shape (N,): class/choice indices or floats.

    Returns:
        ``{metric: value}`` for all of ``spec.metrics``, as Python floats; undefined values
        (e.g. correlations of a constant prediction) are 0.0, see the module docstring.

    Raises:
        ValueError: If the shapes do not fit the task.

    """
    if spec.type == "generation":
        raise ValueError(f"task {spec.name!r} is a generation task: score its answers with generation_metrics")
    predictions = _check_shapes(spec, predictions.detach().cpu(), labels.detach().cpu())
    labels = labels.detach().cpu()
    results: dict[str, float] = {}
    if spec.type == "regression":
        preds, target = predictions.float(), labels.float()
        with warnings.catch_warnings():
            # torchmetrics warns on zero variance before returning NaN; we report 0.0 instead.
            warnings.simplefilter("ignore", UserWarning)
            for metric in spec.metrics:
                results[metric] = _finite(_REG_FNS[metric](preds, target))
        return results
    classes, target = predictions.argmax(dim=-1), labels.long()
    for metric in spec.metrics:
        results[metric] = _finite(_CLASS_FNS[metric](classes, target, spec.num_labels))
    return results


def normalise_answer(text: str) -> str:
    """The form in which answers are compared: surrounding whitespace stripped.

    Only the ends are stripped: a prompt that ends before the answer's leading space (``"... ="``
    then ``" c b a"``) must not cost the match, while the answer's own text, case and inner
    spacing included, is what the task asks for.
    """
    return text.strip()


def generation_metrics(
    spec: TaskSpec,
    predictions: Sequence[str],
    answers: Sequence[str],
    chosen: Sequence[int] | None = None,
    gold_choices: Sequence[int] | None = None,
) -> dict[str, float]:
    """Score a generation task's answers with every metric of ``spec``.

    Args:
        spec: The generation task; its ``metrics`` decide what is computed.
        predictions: The decoded greedy answer of each row (up to EOS or the answer budget).
        answers: The gold answer of each row.
        chosen: The index of each row's most likely choice (tasks with choices), else None.
        gold_choices: The index of each row's gold choice, with ``chosen``.

    Returns:
        ``{metric: value}`` for all of ``spec.metrics``, as Python floats.

    Raises:
        ValueError: If the lengths differ, there are no rows, or ``choice_accuracy`` is asked for
            without choices.

    """
    if spec.type != "generation":
        raise ValueError(f"task {spec.name!r} is a {spec.type} task: score its outputs with compute_metrics")
    if len(predictions) != len(answers) or not answers:
        raise ValueError(f"need one prediction per gold answer, got {len(predictions)} for {len(answers)} answers")
    results: dict[str, float] = {}
    for metric in spec.metrics:
        if metric == "exact_match":
            hits = sum(normalise_answer(p) == normalise_answer(a) for p, a in zip(predictions, answers, strict=True))
            results[metric] = hits / len(answers)
        elif metric == "choice_accuracy":
            if chosen is None or gold_choices is None or not len(chosen) == len(gold_choices) == len(answers):
                raise ValueError(
                    f"task {spec.name!r}: choice_accuracy needs the chosen and the gold choice of each row"
                )
            results[metric] = sum(int(c) == int(g) for c, g in zip(chosen, gold_choices, strict=True)) / len(chosen)
        else:
            raise ValueError(f"metric {metric!r} does not apply to generation tasks")
    return results


__all__ = [
    "METRICS",
    "MetricInfo",
    "compute_metrics",
    "generation_metrics",
    "higher_is_better",
    "metric_kind",
    "normalise_answer",
]
