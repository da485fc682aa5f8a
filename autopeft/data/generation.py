"""Generation tasks' inputs: prompt and answer token ids, answer-only labels, and their batches.

Encoding. A row's prompt (its text segment, or the filled template) and its answer (the label
column) are tokenised separately and without the tokenizer's special tokens, then joined::

    [prefix] prompt tokens | answer tokens EOS

``prefix`` is what the tokenizer itself puts before a text (Llama's and Gemma's BOS; nothing for
GPT-2, Qwen or the offline BPE, which appends EOS after a text instead, and a prompt must not end
in EOS). Tokenising the two parts apart keeps the prompt's tokens the same in training and in
decoding, where the model sees the prompt alone. ``labels`` is -100 over the prefix and prompt
(and over padding) and the answer's tokens and EOS elsewhere: the causal-LM loss counts the
answer only. An answer longer than ``max_answer_tokens`` is cut to it, without EOS (a cut answer
does not end there); a prompt too long for ``data.max_length`` loses its beginning, since the
answer continues its end.

Batches (:class:`GenerationCollator`). Training: ``input_ids``/``attention_mask`` padded on the
right and ``labels`` with -100, so real tokens keep positions 0..n-1 and never see a pad.
Decoding: ``prompt_ids``/``prompt_mask`` padded on the *left*, so every row's next token is
predicted at the last column (the model counts positions over real tokens only), and
``answers``, the gold texts. Tasks with answer choices add every (prompt, candidate) sequence of
the batch, flattened and right-padded (``choice_ids``, ``choice_mask``, ``choice_labels`` with
-100 outside the candidate), ``choice_rows`` (the batch row of each) and ``gold_choice`` (B,).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from autopeft.errors import ConfigError
from autopeft.tasks.metrics import normalise_answer
from autopeft.tasks.spec import TaskSpec

#: The label of a position the loss ignores (PyTorch's cross-entropy default).
IGNORE = -100

LABELS = "labels"

_Batch = dict[str, list[Any]]


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before a text of its own accord (a BOS), else ``[]``.

    Read off one probe text: its ids with special tokens, up to where its ids without them start.
    """
    probe = "a"
    full = list(tokenizer(probe).input_ids)
    bare = list(tokenizer(probe, add_special_tokens=False).input_ids)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def eos_id(tokenizer: Any, backbone: str = "the backbone") -> int:
    """The tokenizer's EOS id, which ends every answer and stops greedy decoding.

    Raises:
        ConfigError: If the tokenizer has no EOS token.

    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError(
            f"{backbone}'s tokenizer has no EOS token, which ends every answer of a generation task; "
            "save one with tokenizer.add_special_tokens({'eos_token': ...})"
        )
    return int(eos)


def row_choices(spec: TaskSpec, batch: _Batch, i: int) -> list[str]:
    """Row ``i``'s candidate answers: one column holding a list of them, or one column per candidate.

    A custom task's reader gathers candidate columns into a list under the first one's name
    (:func:`autopeft.data.carving.custom_raw_splits`), so a list there is read as the list.
    """
    first = batch[spec.choice_columns[0]][i]
    if len(spec.choice_columns) == 1 or isinstance(first, list | tuple):
        value = json.loads(first) if isinstance(first, str) else first  # a CSV cell holds JSON text
        return [str(v) for v in value]
    return [str(batch[col][i]) for col in spec.choice_columns]


def gold_index(answer: str, choices: Sequence[str]) -> int | None:
    """The position of ``answer`` among ``choices`` (compared normalised), or None."""
    wanted = normalise_answer(answer)
    for k, choice in enumerate(choices):
        if normalise_answer(choice) == wanted:
            return k
    return None


def answer_part(tokenizer: Any, answer: str, max_answer_tokens: int, eos: int) -> list[int]:
    """The answer's ids followed by EOS, or its first ``max_answer_tokens`` ids without it."""
    ids = list(tokenizer(answer, add_special_tokens=False).input_ids)
    return ids[:max_answer_tokens] if len(ids) > max_answer_tokens else [*ids, eos]


def fit_prompt(prefix: list[int], body: list[int], parts: Sequence[list[int]], max_length: int) -> list[int]:
    """``prefix`` + the end of ``body`` that leaves room in ``max_length`` for the longest of ``parts``.

    At least one prompt token is kept; callers cut ``parts`` to ``max_length - len(prefix) - 1``.
    """
    room = max(1, max_length - len(prefix) - max(len(p) for p in parts))
    return [*prefix, *body[-room:]]


def make_generation_encoder(spec: TaskSpec, tokenizer: Any, max_length: int) -> Callable[[_Batch], _Batch]:
    """Return a batched ``datasets.map`` function turning prompt/answer rows into model inputs.

    Each encoded row has ``input_ids``, ``attention_mask``, ``labels`` (see the module docstring),
    ``prompt_length`` (the prefix and prompt tokens at the start of ``input_ids``) and ``answer``
    (the gold text); with answer choices also ``choice_ids`` (each candidate's answer ids and EOS)
    and ``gold_choice``.

    Raises:
        ConfigError: If the tokenizer has no EOS token, ``max_length`` leaves no room for an
            answer, or (when encoding) a row's answer is not among its choices.

    """
    eos = eos_id(tokenizer)
    prefix = special_prefix(tokenizer)
    if max_length < len(prefix) + 2:
        raise ConfigError(
            f"data.max_length={max_length} leaves no room for a prompt and an answer token "
            f"(task {spec.name!r} is a generation task); allowed: >= {len(prefix) + 2}"
        )
    # Longest answer part that still leaves one prompt token.
    cap = max_length - len(prefix) - 1

    def prompts(batch: _Batch) -> list[str]:
        n = len(batch[spec.label_column])
        if spec.text_template is None:
            return [str(v) for v in batch[spec.text_columns[0]]]
        rows = [{k: v[i] for k, v in batch.items()} for i in range(n)]
        return [spec.text_template[0].format(**row) for row in rows]

    def encode(batch: _Batch) -> _Batch:
        out: _Batch = {"input_ids": [], "attention_mask": [], LABELS: [], "prompt_length": [], "answer": []}
        if spec.choice_columns:
            out.update(choice_ids=[], gold_choice=[])
        bodies = tokenizer(prompts(batch), add_special_tokens=False).input_ids
        for i, (body, answer) in enumerate(zip(bodies, batch[spec.label_column], strict=True)):
            answer = str(answer)
            gold = answer_part(tokenizer, answer, spec.max_answer_tokens, eos)[:cap]
            parts = [gold]
            if spec.choice_columns:
                choices = row_choices(spec, batch, i)
                index = gold_index(answer, choices)
                if index is None:
                    raise ConfigError(
                        f"task {spec.name!r}: the answer {answer!r} is not one of the row's choices {choices!r}"
                    )
                candidates = [answer_part(tokenizer, c, spec.max_answer_tokens, eos)[:cap] for c in choices]
                parts += candidates
                out["choice_ids"].append(candidates)
                out["gold_choice"].append(index)
            prompt = fit_prompt(prefix, list(body), parts, max_length)
            out["input_ids"].append([*prompt, *gold])
            out["attention_mask"].append([1] * (len(prompt) + len(gold)))
            out[LABELS].append([IGNORE] * len(prompt) + gold)
            out["prompt_length"].append(len(prompt))
            out["answer"].append(answer)
        return out

    return encode


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    """Stack id lists into one (N, T) int64 tensor, padding with ``value`` on the right (or left)."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            values = torch.as_tensor(np.asarray(row, dtype=np.int64))
            if left:
                out[i, width - len(row) :] = values
            else:
                out[i, : len(row)] = values
    return out


class GenerationCollator:
    """Pad encoded prompt/answer rows into a generation batch (see the module docstring).

    A class rather than a closure so DataLoader workers started with ``spawn`` can pickle it.

    Args:
        tokenizer: The backbone's tokenizer (its pad id pads ``input_ids``).

    """

    def __init__(self, tokenizer: Any) -> None:
        pad = tokenizer.pad_token_id
        # load_tokenizer gives every decoder a pad token; a bare tokenizer may still lack one.
        self.pad_id = int(pad if pad is not None else eos_id(tokenizer))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` (rows of an encoded split) into a padded batch."""
        ids = [list(f["input_ids"]) for f in features]
        prompts = [row[: int(f["prompt_length"])] for row, f in zip(ids, features, strict=True)]
        batch: dict[str, Any] = {
            "input_ids": _pad(ids, self.pad_id),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0),
            LABELS: _pad([list(f[LABELS]) for f in features], IGNORE),
            "prompt_ids": _pad(prompts, self.pad_id, left=True),
            "prompt_mask": _pad([[1] * len(p) for p in prompts], 0, left=True),
            "answers": [str(f["answer"]) for f in features],
        }
        if "choice_ids" in features[0]:
            seqs, labels, rows = [], [], []
            for r, (prompt, f) in enumerate(zip(prompts, features, strict=True)):
                for candidate in f["choice_ids"]:
                    seqs.append([*prompt, *candidate])
                    labels.append([IGNORE] * len(prompt) + list(candidate))
                    rows.append(r)
            batch["choice_ids"] = _pad(seqs, self.pad_id)
            batch["choice_mask"] = _pad([[1] * len(s) for s in seqs], 0)
            batch["choice_labels"] = _pad(labels, IGNORE)
            batch["choice_rows"] = torch.tensor(rows, dtype=torch.long)
            batch["gold_choice"] = torch.tensor([int(f["gold_choice"]) for f in features], dtype=torch.long)
        return batch
