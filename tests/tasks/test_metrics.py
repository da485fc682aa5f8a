"""Tests for autopeft/tasks/metrics.py against hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from autopeft.errors import ConfigError
from autopeft.tasks.metrics import METRICS, compute_metrics, higher_is_better
from autopeft.tasks.registry import get_task


def logits_for(classes: list[int], num_classes: int) -> torch.Tensor:
    """One-hot-ish logits whose argmax is ``classes``."""
    out = torch.zeros(len(classes), num_classes)
    out[torch.arange(len(classes)), torch.tensor(classes)] = 3.0
    return out


def binary_spec(*metrics: str):
    return dataclasses.replace(get_task("mrpc"), metrics=metrics, main_metric=metrics[0])


def test_binary_metrics_hand_computed() -> None:
    # labels 1 0 1 1 0 1 vs preds 1 0 0 1 1 1: TP=3, TN=1, FP=1, FN=1.
    labels = torch.tensor([1, 0, 1, 1, 0, 1])
    preds = logits_for([1, 0, 0, 1, 1, 1], 2)
    got = compute_metrics(binary_spec("accuracy", "f1", "macro_f1", "matthews"), preds, labels)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 0.75
    # class 0: TP=1, FP=1, FN=1 -> F1 0.5; class 1: 0.75
    assert got["macro_f1"] == pytest.approx((0.5 + 0.75) / 2)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 2 / sqrt(4*4*2*2)
    assert got["matthews"] == pytest.approx(2 / 8)
    assert all(type(v) is float for v in got.values())


def test_three_class_macro_f1_and_accuracy() -> None:
    spec = get_task("cb")  # accuracy + macro_f1, 3 classes
    labels = torch.tensor([0, 1, 2, 2])
    got = compute_metrics(spec, logits_for([0, 2, 2, 1], 3), labels)
    # per-class F1: class0 1.0, class1 0.0 (TP=0), class2 0.5 (TP=1, FP=1, FN=1)
    assert got == pytest.approx({"accuracy": 0.5, "macro_f1": 0.5})


def test_regression_pearson_and_spearman() -> None:
    spec = get_task("stsb")
    preds = torch.tensor([1.0, 2.0, 3.0, 40.0])
    labels = torch.tensor([1.0, 3.0, 2.0, 4.0])
    got = compute_metrics(spec, preds, labels)
    # deviations: x (-10.5, -9.5, -8.5, 28.5), y (-1.5, 0.5, -0.5, 1.5): cov 58, Sxx 1085, Syy 5
    assert got["pearson"] == pytest.approx(58 / math.sqrt(1085 * 5), rel=1e-5)
    # ranks (1,2,3,4) vs (1,3,2,4): Pearson of ranks = 4 / 5
    assert got["spearman"] == pytest.approx(0.8, rel=1e-5)
    # a (N, 1) regression head is accepted
    assert compute_metrics(spec, preds[:, None], labels) == pytest.approx(got)


def test_degenerate_constant_predictions_score_zero() -> None:
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    got = compute_metrics(get_task("stsb"), torch.full((4,), 2.5), labels)
    assert got == {"spearman": 0.0, "pearson": 0.0}
    constant = logits_for([0, 0, 0, 0], 2)
    got = compute_metrics(binary_spec("matthews", "f1"), constant, torch.tensor([0, 1, 0, 1]))
    assert got == {"matthews": 0.0, "f1": 0.0}
    assert compute_metrics(get_task("cola"), logits_for([1, 1], 2), torch.tensor([0, 1]))["matthews"] == 0.0


def test_nan_predictions_do_not_leak_nan() -> None:
    preds = torch.tensor([float("nan"), 1.0, 2.0])
    got = compute_metrics(get_task("stsb"), preds, torch.tensor([1.0, 2.0, 3.0]))
    assert all(math.isfinite(v) for v in got.values())


def test_multiple_choice_accuracy() -> None:
    spec = get_task("copa")
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0]])
    assert compute_metrics(spec, logits, torch.tensor([1, 0, 0])) == {"accuracy": pytest.approx(2 / 3)}


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"expects predictions of shape \(3, 2\)"):
        compute_metrics(get_task("rte"), torch.zeros(3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"expects predictions of shape \(3,\)"):
        compute_metrics(get_task("stsb"), torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="non-empty"):
        compute_metrics(get_task("rte"), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_higher_is_better() -> None:
    assert set(METRICS) == {
        *("accuracy", "f1", "macro_f1", "matthews", "pearson", "spearman"),
        *("exact_match", "choice_accuracy"),  # generation tasks
    }
    assert all(higher_is_better(m) for m in METRICS)
    with pytest.raises(ConfigError, match="unknown metric 'acc'"):
        higher_is_better("acc")
