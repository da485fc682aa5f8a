"""A loaded export that predicts labels (or values) for raw text, or writes a generation task's answers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from autopeft.data.encoding import MODEL_COLUMNS, make_collator, make_encoder
from autopeft.data.generation import GenerationCollator, eos_id, make_generation_encoder, row_choices
from autopeft.export.format import quoted_names
from autopeft.tasks.spec import TaskSpec
from autopeft.training.model import AutoPeftModel

#: One model input: a text, a tuple of text segments (pair tasks; context then choices for
#: multiple choice; prompt then candidate answers for generation), or a row mapping the task's
#: source columns to values (templates apply).
Example = str | Sequence[str] | Mapping[str, Any]

#: Column names of the generation inputs given as a string or a tuple (final texts, no template).
_PROMPT, _CHOICES, _ANSWER = "prompt", "choices", "answer"


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

    Generation tasks (:meth:`predict` returns answer texts):

    * a string is the prompt as the model reads it, e.g. ``"reverse: a b c ="``: the answer is
      its greedy continuation, up to EOS or the task's ``max_answer_tokens`` tokens, decoded
      without special tokens (what training's validation scores with ``exact_match``);
    * a tuple ``(prompt, candidate_1, ..., candidate_k)`` (k >= 1): the answer is the candidate
      of highest summed log-likelihood (its tokens and EOS), as ``choice_accuracy`` scores;
    * a mapping of the task's prompt columns (its ``text_template`` applies), e.g.
      ``{"prompt": "reverse: a b c ="}``: greedy, as a string; with the task's answer-choice
      columns too, e.g. ``{"prompt": ..., "choices": [" c b a", " a b c"]}`` on
      ``reverse_choice``, the likeliest candidate, as for a tuple. An answer column is ignored.

    A prompt is cut as training cut it: it keeps its end, and room within ``max_length`` for the
    longest candidate (one token, EOS, when there are none).

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
        if task.type == "generation":
            self._generation_specs = _generation_specs(task)

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

    def _generation_row(self, index: int, example: Any) -> tuple[tuple[bool, bool], dict[str, Any], list[str] | None]:
        """``((is_mapping, has_choices), row, candidates)`` of one generation input (see the class docstring).

        The row's answer column holds what the encoder needs there: nothing (an answer of EOS
        alone) for free generation, the first candidate otherwise (the encoder places the gold
        answer among the candidates; which one it is does not change any candidate's score).

        Raises:
            ValueError: On an input of another shape, missing prompt or choice columns, or no candidates.

        """
        task = self.task
        columns = [*task.template_fields()] if task.text_template else [*task.text_columns]
        if isinstance(example, Mapping):
            missing = [c for c in columns if c not in example]
            present = [c for c in task.choice_columns if c in example]
            if present and len(present) < len(task.choice_columns):  # some candidates but not all
                missing += [c for c in task.choice_columns if c not in example]
            if missing:
                raise ValueError(f"input {index} lacks column(s) {quoted_names(missing)} of task {task.name!r}")
            key, row = (True, bool(present)), dict(example)
        elif isinstance(example, str):
            key, row = (False, False), {_PROMPT: example}
        elif isinstance(example, Sequence) and len(example) >= 2 and all(isinstance(s, str) for s in example):
            key, row = (False, True), {_PROMPT: example[0], _CHOICES: list(example[1:])}
        else:
            raise ValueError(
                f"input {index} is {example!r}; generation task {task.name!r} takes a prompt string, a "
                f"(prompt, candidate_1, ..., candidate_k) tuple of strings or a mapping of its columns "
                f"{quoted_names([*columns, *task.choice_columns], 10)}"
            )
        spec = self._generation_specs[key]
        choices = row_choices(spec, {c: [row[c]] for c in spec.choice_columns}, 0) if key[1] else None
        if choices is not None and not choices:
            raise ValueError(f"input {index} has no candidate answers to choose from")
        row[spec.label_column] = choices[0] if choices else ""
        return key, row, choices

    def _generation_features(self, inputs: Sequence[Example]) -> list[tuple[dict[str, Any], list[str] | None]]:
        """``(encoded row, candidates or None)`` per input, encoded by training's generation encoder."""
        rows = [self._generation_row(i, example) for i, example in enumerate(inputs)]
        features: list[Any] = [None] * len(rows)
        for key, spec in self._generation_specs.items():
            indices = [i for i, (kind, _, _) in enumerate(rows) if kind == key]
            if not indices:
                continue
            names = dict.fromkeys(name for i in indices for name in rows[i][1])
            batch = {name: [rows[i][1].get(name) for i in indices] for name in names}
            encoded = make_generation_encoder(spec, self.tokenizer, self.max_length)(batch)
            for j, i in enumerate(indices):
                features[i] = ({name: values[j] for name, values in encoded.items()}, rows[i][2])
        return features

    def encode(self, inputs: Sequence[Example]) -> list[dict[str, Any]]:
        """Tokenise ``inputs`` exactly as training did (same encoder, template and ``max_length``).

        Returns:
            One unpadded feature dict per input (``input_ids``, ``attention_mask``, ...); for a
            generation task the prompt's (the model's input before its answer), with each
            candidate's answer ids and EOS as ``choice_ids`` where candidates are given.

        Raises:
            TypeError: If ``inputs`` is a single string or mapping instead of a list.
            ValueError: If an input does not fit the task (wrong number of segments, missing columns).

        """
        if isinstance(inputs, (str, Mapping)):
            raise TypeError("pass a list of inputs, e.g. predict(['a sentence']), not a single input")
        if self.task.type == "generation":
            out = []
            for feature, choices in self._generation_features(inputs):
                prompt = list(feature["input_ids"][: int(feature["prompt_length"])])
                out.append({"input_ids": prompt, "attention_mask": [1] * len(prompt)})
                if choices is not None:
                    out[-1]["choice_ids"] = [list(ids) for ids in feature["choice_ids"]]
            return out
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

        Raises:
            ValueError: For generation tasks, whose outputs are texts (:meth:`predict`).

        """
        if self.task.type == "generation":
            raise ValueError(
                f"task {self.task.name!r} is a generation task: predict() writes its answers, or picks the "
                "likeliest of given candidates"
            )
        self.model.eval()
        outputs = [self.model(**batch).float().cpu() for batch in self._batches(inputs, batch_size)]
        if outputs:
            return torch.cat(outputs)
        shape = (0,) if self.task.type == "regression" else (0, self.task.num_labels)
        return torch.empty(shape)

    def predict_proba(self, inputs: Sequence[Example], batch_size: int = 32) -> torch.Tensor:
        """Class (or choice) probabilities (N, C): the softmax of :meth:`scores`.

        Raises:
            ValueError: For regression tasks, which have values, not probabilities, and for
                generation tasks (see :meth:`scores`).

        """
        if self.task.type == "regression":
            raise ValueError(f"task {self.task.name!r} is a regression task: use predict() or scores() for values")
        return torch.softmax(self.scores(inputs, batch_size), dim=-1)

    def predict(self, inputs: Sequence[Example], batch_size: int = 32) -> list[Any]:
        """Predictions for ``inputs``, one per input.

        Label names for classification (label ids when the task has no names), values for
        regression, the chosen choice's index (0-based) for multiple choice; for generation the
        answer text: the greedy continuation of the prompt, or the likeliest given candidate
        (the candidate's text as given).

        Args:
            inputs: A list of inputs (see the class docstring).
            batch_size: Inputs per forward pass (per decoding, for generation).

        Raises:
            TypeError: If ``inputs`` is a single input instead of a list.
            ValueError: If an input does not fit the task, or ``batch_size`` is not a positive integer.

        """
        if self.task.type == "generation":
            return self._answers(inputs, batch_size)
        out = self.scores(inputs, batch_size)
        if self.task.type == "regression":
            return out.tolist()
        ids = out.argmax(dim=-1).tolist()
        if self.task.type == "classification" and self.label_names:
            return [self.label_names[i] for i in ids]
        return ids

    @torch.inference_mode()
    def _answers(self, inputs: Sequence[Example], batch_size: int) -> list[str]:
        """A generation task's answers (see :meth:`predict`), computed as training's validation computes them."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if isinstance(inputs, (str, Mapping)):
            raise TypeError("pass a list of inputs, e.g. predict(['a prompt']), not a single input")
        self.model.eval()
        features = self._generation_features(inputs)
        collate = GenerationCollator(self.tokenizer)
        answers: list[str] = [""] * len(features)
        # Free and choice rows batch apart: the collator adds candidates to a batch whose rows all have them.
        for chosen in (False, True):
            indices = [i for i, (_, choices) in enumerate(features) if (choices is not None) is chosen]
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = collate([features[i][0] for i in chunk])
                texts = self._choose(batch, [features[i][1] for i in chunk]) if chosen else self._decode(batch)
                for i, text in zip(chunk, texts, strict=True):
                    answers[i] = text
        return answers

    def _decode(self, batch: dict[str, Any]) -> list[str]:
        """Greedy answers of the batch's left-padded prompts, decoded without special tokens."""
        ids = self.model.greedy_decode(
            batch["prompt_ids"].to(self.device),
            batch["prompt_mask"].to(self.device),
            self.task.max_answer_tokens,
            eos_id(self.tokenizer),
        )
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def _choose(self, batch: dict[str, Any], candidates: list[list[str]]) -> list[str]:
        """Each row's candidate of highest summed answer log-likelihood (the first of equals)."""
        scores = self.model.answer_log_likelihoods(
            batch["choice_ids"].to(self.device),
            batch["choice_mask"].to(self.device),
            batch["choice_labels"].to(self.device),
        ).cpu()
        rows = batch["choice_rows"]
        return [choices[int(scores[rows == r].argmax())] for r, choices in enumerate(candidates)]


def _generation_specs(task: TaskSpec) -> dict[tuple[bool, bool], TaskSpec]:
    """The spec that encodes each kind of generation input, by ``(is_mapping, has_choices)``.

    Strings and tuples are final texts: a prompt column and a column holding the list of
    candidates, no template. Mappings are the task's own rows: its template applies, and its
    choice columns are read when the row has them (a spec without them otherwise).
    """
    segments = replace(task, text_columns=(_PROMPT,), label_column=_ANSWER, choice_columns=(), text_template=None)
    specs = {
        (False, False): segments,
        (False, True): replace(segments, choice_columns=(_CHOICES,)),
        (True, False): replace(task, choice_columns=()),
    }
    if task.choice_columns:
        specs[(True, True)] = task
    return specs
