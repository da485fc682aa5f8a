"""Turning rows into model inputs: segments, tokenisation, dynamic-padding collation.

Generation tasks have their own encoder and collator (:mod:`autopeft.data.generation`), which
:func:`make_encoder` and :func:`make_collator` hand them to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import DataCollatorForMultipleChoice, DataCollatorWithPadding

from autopeft.data.generation import GenerationCollator, make_generation_encoder
from autopeft.tasks.spec import TaskSpec

# Columns of the tokenised datasets that the collators understand.
MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


LABELS = "labels"


_Batch = dict[str, list[Any]]


def _segments(spec: TaskSpec, batch: _Batch) -> list[list[str]]:
    """Return one list of strings per text segment (text_a[, text_b]) for a batch."""
    n = len(batch[spec.label_column])
    if spec.text_template is None:
        return [[str(v) for v in batch[col]] for col in spec.text_columns]
    rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
    return [[template.format(**row) for row in rows] for template in spec.text_template]


def make_encoder(spec: TaskSpec, tokenizer: Any, max_length: int) -> Callable[[_Batch], _Batch]:
    """Return a batched ``datasets.map`` function turning raw rows into model inputs.

    Classification/regression rows become ``input_ids`` etc. of one (pair) sequence;
    multiple-choice rows become per-choice lists: ``input_ids[i]`` is a list of
    ``num_labels`` token lists, one per (context, choice) pair. Truncation only; padding
    is done per batch by the collator. Generation rows: see
    :func:`~autopeft.data.generation.make_generation_encoder`.
    """
    if spec.type == "generation":
        return make_generation_encoder(spec, tokenizer, max_length)
    label_dtype = float if spec.type == "regression" else int

    def encode(batch: _Batch) -> _Batch:
        segments = _segments(spec, batch)
        labels = [label_dtype(v) for v in batch[spec.label_column]]
        if spec.type != "multiple_choice":
            enc = tokenizer(*segments, truncation=True, max_length=max_length)
            out = {k: enc[k] for k in MODEL_COLUMNS if k in enc}
            return {**out, LABELS: labels}
        contexts, k = segments[0], len(spec.choice_columns)
        flat_a = [ctx for ctx in contexts for _ in range(k)]
        flat_b = [str(batch[col][i]) for i in range(len(contexts)) for col in spec.choice_columns]
        enc = tokenizer(flat_a, flat_b, truncation=True, max_length=max_length)
        # Regroup the flat (example x choice) encodings into one list of k choices per example.
        out = {key: [enc[key][i : i + k] for i in range(0, len(flat_a), k)] for key in MODEL_COLUMNS if key in enc}
        return {**out, LABELS: labels}

    return encode


class BatchCollator:
    """Pad a list of tokenised rows into a batch dict of tensors (dynamic padding).

    Multiple-choice batches have inputs of shape (B, num_choices, T) and int64 labels;
    others (B, T), with int64 (classification) or float32 (regression) labels. A class
    rather than a closure so DataLoader workers started with ``spawn`` can pickle it.
    """

    def __init__(self, spec: TaskSpec, tokenizer: Any) -> None:
        if spec.type == "multiple_choice":
            self.inner = DataCollatorForMultipleChoice(tokenizer=tokenizer)
        else:
            self.inner = DataCollatorWithPadding(tokenizer=tokenizer)
        self.label_dtype = torch.float32 if spec.type == "regression" else torch.int64

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``features`` (rows of a tokenised split) into a padded batch."""
        batch = dict(self.inner(features))
        batch[LABELS] = batch[LABELS].to(self.label_dtype)  # the MC collator always emits int64
        return batch


def make_collator(spec: TaskSpec, tokenizer: Any) -> BatchCollator | GenerationCollator:
    """Return the collate function for ``spec``: a :class:`BatchCollator`, or a generation collator.

    Generation tasks get :class:`~autopeft.data.generation.GenerationCollator`.
    """
    if spec.type == "generation":
        return GenerationCollator(tokenizer)
    return BatchCollator(spec, tokenizer)
