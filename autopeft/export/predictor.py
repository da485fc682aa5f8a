"""A loaded export that predicts labels (or values) for raw text."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from autopeft.data.encoding import MODEL_COLUMNS, make_collator, make_encoder
from autopeft.export.format import quoted_names
from autopeft.tasks.spec import TaskSpec
from autopeft.training.model import AutoPeftModel

#: One model input: a text, a tuple of text segments (pair tasks; context then choices for
#: multiple choice), or a row mapping the task's source columns to values (templates apply).
Example = str | Sequence[str] | Mapping[str, Any]


class Predictor:
    """A trained model with the tokenisation training used, ready for new inputs.

    Inputs (a list, one entry per example):

    * a string, for single-sentence tasks;
    * a tuple ``(text_a, text_b)`` for sentence-pair tasks; for multiple choice
      ``(context, choice_1, ..., choice_k)``. Tuples are the final text segments (no template
      is applied);
    * a mapping of the task's source columns, e.g. ``{"premise": ..., "question": "cause",
      "choice1": ..., "choice2": ...}`` for COPA: the task's ``text_template`` applies, as in
      training.

    Args:
        model: The model, in eval mode.
        task: Its task.
        tokenizer: The backbone's tokenizer.
        max_length: Truncation length used in training.
        label_names: Class names by label id, or None (labels are ids).
        manifest: The export manifest it was loaded from (scores, versions, ...).

    """

    def __init__(
        self,
        model: AutoPeftModel,
        task: TaskSpec,
        tokenizer: Any,
        max_length: int,
        label_names: Sequence[str] | None = None,
        manifest: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.label_names = list(label_names) if label_names else None
        self.manifest = dict(manifest or {})
        self._collate = make_collator(task, tokenizer)
        self._encode_rows = make_encoder(task, tokenizer, max_length)
        # Tuples are final segments: the same encoder with plain columns and no template.
        n_text = len(task.text_columns)
        self._segment_task = replace(
            task,
            text_columns=tuple(f"text_{i}" for i in range(n_text)),
            choice_columns=tuple(f"choice_{i}" for i in range(len(task.choice_columns))),
            text_template=None,
        )
        self._encode_segments = make_encoder(self._segment_task, tokenizer, max_length)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def _batch_of(self, spec: TaskSpec, rows: list[Mapping[str, Any]]) -> dict[str, list[Any]]:
        columns = [c for c in spec.required_columns() if c != spec.label_column]
        batch = {c: [row[c] for row in rows] for c in columns}
        batch[spec.label_column] = [0] * len(rows)  # the encoder reads labels; these are never used
        return batch

    def _row_of(self, index: int, example: Any) -> tuple[bool, dict[str, Any]]:
        """``(is_source_row, row)`` for one input; raises ValueError on a shape that does not fit."""
        task = self.task
        if isinstance(example, Mapping):
            missing = [c for c in task.required_columns() if c != task.label_column and c not in example]
            if missing:
                raise ValueError(f"input {index} lacks column(s) {quoted_names(missing)} of task {task.name!r}")
            return True, dict(example)
        segments = (example,) if isinstance(example, str) else tuple(example) if isinstance(example, Sequence) else ()
        spec = self._segment_task
        width = len(spec.text_columns) + len(spec.choice_columns)
        if len(segments) != width or not all(isinstance(s, str) for s in segments):
            if task.type == "multiple_choice":
                shape = f"(context, {', '.join(f'choice_{i + 1}' for i in range(len(task.choice_columns)))})"
            else:
                shape = "a string" if width == 1 else "a (text_a, text_b) pair of strings"
            raise ValueError(
                f"input {index} is {example!r}; task {task.name!r} takes {shape} or a mapping of its columns "
                f"{quoted_names([c for c in task.required_columns() if c != task.label_column], 10)}"
            )
        return False, dict(zip((*spec.text_columns, *spec.choice_columns), segments, strict=True))

    def encode(self, inputs: Sequence[Example]) -> list[dict[str, Any]]:
        """Tokenise ``inputs`` exactly as training did (same encoder, template and ``max_length``).

        Returns:
            One unpadded feature dict per input (``input_ids``, ``attention_mask``, ...).

        Raises:
            TypeError: If ``inputs`` is a single string or mapping instead of a list.
            ValueError: If an input does not fit the task (wrong number of segments, missing columns).

        """
        if isinstance(inputs, (str, Mapping)):
            raise TypeError("pass a list of inputs, e.g. predict(['a sentence']), not a single input")
        kinds = [self._row_of(i, example) for i, example in enumerate(inputs)]
        features: list[dict[str, Any] | None] = [None] * len(kinds)
        for source, spec, encode in (
            (True, self.task, self._encode_rows),
            (False, self._segment_task, self._encode_segments),
        ):
            indices = [i for i, (is_source, _) in enumerate(kinds) if is_source is source]
            if not indices:
                continue
            encoded = encode(self._batch_of(spec, [kinds[i][1] for i in indices]))
            for j, i in enumerate(indices):
                features[i] = {k: encoded[k][j] for k in MODEL_COLUMNS if k in encoded}
        return [f for f in features if f is not None]

    def _batches(self, inputs: Sequence[Example], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        features = self.encode(inputs)
        for start in range(0, len(features), batch_size):
            chunk = [{**f, "labels": 0} for f in features[start : start + batch_size]]
            batch = self._collate(chunk)  # the training collator: the same dynamic padding
            batch.pop("labels")
            yield {k: v.to(self.device) for k, v in batch.items()}

    @torch.inference_mode()
    def scores(self, inputs: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """Raw model outputs on CPU, float32.

        Returns:
            Logits (N, num_labels) for classification, values (N,) for regression, choice
            scores (N, num_choices) for multiple choice.

        """
        self.model.eval()
        outputs = [self.model(**batch).float().cpu() for batch in self._batches(inputs, batch_size)]
        if outputs:
            return torch.cat(outputs)
        shape = (0,) if self.task.type == "regression" else (0, self.task.num_labels)
        return torch.empty(shape)

    def predict_proba(self, inputs: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """Class (or choice) probabilities (N, C): the softmax of :meth:`scores`.

        Raises:
            ValueError: For regression tasks, which have values, not probabilities.

        """
        if self.task.type == "regression":
            raise ValueError(f"task {self.task.name!r} is a regression task: use predict() or scores() for values")
        return torch.softmax(self.scores(inputs, batch_size), dim=-1)

    def predict(self, inputs: Sequence[Example], batch_size: int = 32) -> list[Any]:
        """Predictions for ``inputs``, one per input.

        Label names for classification (label ids when the task has no names), values for
        regression, the chosen choice's index (0-based) for multiple choice.

        Args:
            inputs: A list of inputs (see the class docstring).
            batch_size: Inputs per forward pass.

        """
        out = self.scores(inputs, batch_size)
        if self.task.type == "regression":
            return out.tolist()
        ids = out.argmax(dim=-1).tolist()
        if self.task.type == "classification" and self.label_names:
            return [self.label_names[i] for i in ids]
        return ids
