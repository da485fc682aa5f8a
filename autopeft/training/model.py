"""The trainable model: a (frozen) backbone with PEFT modules and a task head.

Encoders pool the first token (``cls``) or all tokens (``mean``) into BERT's two-layer head;
decoders read the last real token, the only one that has attended to the whole input, into one
bias-free linear layer, as ``transformers``' ``*ForSequenceClassification`` decoders do (their
``score``), so a decoder's head is the one a peft user knows.

Generation tasks (decoders only) use the backbone's causal-LM head instead
(:mod:`autopeft.training.lm_head`): :meth:`AutoPeftModel.lm_loss` trains it on the answer tokens
alone, :meth:`AutoPeftModel.greedy_decode` writes answers and
:meth:`AutoPeftModel.answer_log_likelihoods` scores given ones.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autopeft.data.generation import IGNORE
from autopeft.errors import ConfigError, allowed_list
from autopeft.peft import DECODER_MODEL_TYPES, PeftSpec, freeze, inject_peft
from autopeft.peft.families import is_decoder
from autopeft.peft.gates import TokenMask
from autopeft.tasks.spec import TASK_TYPES
from autopeft.training.backbones import Backbone
from autopeft.training.lm_head import LMHead, build_lm_head


def check_generation_backbone(task: str | None, backbone: str, model_type: str | None) -> None:
    """Refuse a generation task on an encoder backbone, in one line.

    Args:
        task: The task's name, when known.
        backbone: The backbone's config name.
        model_type: The backbone's family (``bert``, ``llama``, ...).

    Raises:
        ConfigError: Unless ``model_type`` is a decoder family.

    """
    if not is_decoder(model_type):
        what = f"task {task!r} is a generation task, which" if task else "a generation task"
        raise ConfigError(
            f"{what} needs a decoder backbone (it writes its answers with a "
            f"causal-LM head); backbone {backbone!r} is a {model_type!r} encoder; decoder families: "
            f"{allowed_list(DECODER_MODEL_TYPES)} (offline: backbone=tiny_llama, tiny_qwen2, tiny_gpt2, ...)"
        )


def positions_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only: 0.. from each row's first real token (any padding side)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index (B,) of each row's last real token, whichever side the padding is on.

    The position of the last 1 in the mask: ``length - 1`` under right padding, ``T - 1``
    under left padding.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.to(positions.dtype) * positions).argmax(-1)


class LastTokenHead(nn.Module):
    """A decoder's head: the last real token's state through one bias-free linear layer (``score``).

    Args:
        hidden_size: D_h.
        out_dim: Number of classes, or 1 for regression and per-choice scoring.
        std: Standard deviation of the initial weights (the backbone's ``initializer_range``,
            as ``transformers`` initialises its ``score``).

    """

    def __init__(self, hidden_size: int, out_dim: int, std: float = 0.02) -> None:
        super().__init__()
        self.pooling = "last"
        self.score = nn.Linear(hidden_size, out_dim, bias=False)
        nn.init.normal_(self.score.weight, std=std)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Map token states (B, T, D_h) to outputs (B, out_dim)."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.score(hidden[rows, last_token_index(attention_mask)])


class TaskHead(nn.Module):
    """Pool token states, then dense -> tanh -> dropout -> output (BERT's classifier head).

    The dense layer starts from the backbone's pretrained pooler when it has one, so CLS
    pooling begins where ``BertForSequenceClassification`` does.

    Args:
        hidden_size: D_h.
        out_dim: Number of classes, or 1 for regression and per-choice scoring.
        pooling: ``cls`` (first token) or ``mean`` (mask-weighted mean of all tokens).
        dropout: Dropout before the output layer.
        pooler: The pretrained pooler to initialise from, or None.

    """

    def __init__(self, hidden_size: int, out_dim: int, pooling: str, dropout: float, pooler: nn.Module | None) -> None:
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, out_dim)
        if pooler is not None and not pooler.dense.weight.is_meta:
            self.dense.load_state_dict(pooler.dense.state_dict())

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Map token states (B, T, D_h) to outputs (B, out_dim)."""
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        else:
            pooled = hidden[:, 0]
        return self.out(self.dropout(torch.tanh(self.dense(pooled))))


class AutoPeftModel(nn.Module):
    """Backbone + PEFT modules + head. Only PEFT weights and the head train, unless fine-tuning fully.

    The attribute is called ``encoder`` for every backbone, decoders included, so that saved
    exports and the code that walks a model keep one name.

    Args:
        backbone: The loaded backbone; it is modified in place and an encoder's pooler
            detached (the head takes over its weights).
        spec: The PEFT configuration.
        task_type: ``classification``, ``regression``, ``multiple_choice`` or ``generation``
            (decoders only: the head is then the backbone's causal-LM head, frozen unless the
            whole model is fine-tuned).
        num_labels: Number of classes (ignored for regression, multiple choice and generation).
        head_dropout: Dropout in the head.

    Raises:
        ConfigError: On a generation task with an encoder backbone.

    """

    def __init__(
        self, backbone: Backbone, spec: PeftSpec, task_type: str, num_labels: int, head_dropout: float = 0.1
    ) -> None:
        super().__init__()
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type={task_type!r}; allowed: {TASK_TYPES}")
        encoder = backbone.model
        pooler = getattr(encoder, "pooler", None)
        if pooler is not None:
            encoder.pooler = None  # the head replaces it; no need to compute it every step
        if not spec.full_finetune:
            freeze(encoder)
        self.encoder = encoder
        self.spec = spec
        self.task_type = task_type
        # UniPELT gates average over the real tokens of the batch in progress (set in encode).
        self._tokens = TokenMask()
        self.prefix_encoder = inject_peft(encoder, spec, self._tokens)
        out_dim = num_labels if task_type == "classification" else 1
        self.decoder = is_decoder(encoder.config.model_type)
        if task_type == "generation":
            check_generation_backbone(None, backbone.name, encoder.config.model_type)
            self.head = build_lm_head(encoder)
            if not spec.full_finetune:
                self.head.requires_grad_(False)  # a pretrained part, as peft leaves a causal LM's head
        elif backbone.pooling == "last":
            std = getattr(encoder.config, "initializer_range", 0.02)
            self.head: nn.Module = LastTokenHead(encoder.config.hidden_size, out_dim, std)
        else:
            self.head = TaskHead(encoder.config.hidden_size, out_dim, backbone.pooling, head_dropout, pooler)
        # RoBERTa has a single token type: BERT-style segment ids would index out of range.
        self._use_token_types = getattr(encoder.config, "type_vocab_size", 1) > 1
        # from_pretrained returns eval mode; training must see the backbone's dropout as usual.
        self.train()

    def _run(self, inputs: dict[str, Any], token_mask: torch.Tensor) -> Any:
        """The adapted encoder's outputs for ``inputs``; ``token_mask`` marks the real tokens among them."""
        if self.prefix_encoder is not None:
            self.prefix_encoder.begin_forward()
        try:
            with self._tokens.active(token_mask):
                return self.encoder(**inputs)
        finally:
            if self.prefix_encoder is not None:
                self.prefix_encoder.end_forward()

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token states (B, T, D_h) of the adapted encoder.

        ``position_ids`` (decoders) number the tokens; by default 0..T-1, right for inputs padded
        on the right.
        """
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._use_token_types:
            inputs["token_type_ids"] = token_type_ids
        if self.decoder:
            inputs["use_cache"] = False  # one pass over whole sequences: a key/value cache is wasted memory
            if position_ids is not None:
                inputs["position_ids"] = position_ids
        return self._run(inputs, attention_mask).last_hidden_state

    def _lm_targets(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, targets, rows)`` of the supervised positions only.

        Position t predicts token t + 1, so the states of positions 0..T-2 meet the labels of
        1..T-1; only positions whose label is not -100 (the answer's) go through the head, which
        keeps a large vocabulary's logits off the prompt and the padding.
        """
        if not isinstance(self.head, LMHead):
            raise ValueError(f"a {self.task_type} model has no LM head; build it for task_type='generation'")
        hidden = self.encode(input_ids, attention_mask)
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = self.head(hidden[:, :-1][keep]).float()
        return logits, targets[keep], keep.nonzero()[:, 0]

    def lm_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the positions whose label is not -100 (the answers').

        Args:
            input_ids: (B, T) prompt and answer ids, right-padded.
            attention_mask: (B, T).
            labels: (B, T): the answer's ids (and EOS) where it is, -100 over prompt and padding.

        """
        logits, targets, _ = self._lm_targets(input_ids, attention_mask, labels)
        return F.cross_entropy(logits, targets)

    def answer_log_likelihoods(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Each sequence's summed log-probability (N,) of its labelled tokens (a candidate answer and EOS)."""
        logits, targets, rows = self._lm_targets(input_ids, attention_mask, labels)
        picked = F.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]
        return torch.zeros(input_ids.shape[0], device=picked.device).index_add_(0, rows, picked)

    @torch.no_grad()
    def greedy_decode(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int,
        use_cache: bool = True,
    ) -> list[list[int]]:
        """Greedy continuations of left-padded prompts, each up to its first EOS (excluded).

        Every row's next token is read at the last column; position ids count real tokens only,
        so a padded row decodes as it would alone. With ``use_cache`` each step feeds the new
        tokens only and reuses the keys and values of the earlier ones; without it, every step
        runs the whole sequence again (slower, same tokens: the tests compare the two).

        Args:
            prompt_ids: (B, P) prompt ids, padded on the left.
            prompt_mask: (B, P) 1 on real tokens.
            max_new_tokens: The most tokens written per row (EOS included).
            eos_token_id: The token that ends an answer.
            use_cache: Reuse keys and values between steps.

        """
        if not isinstance(self.head, LMHead):
            raise ValueError(f"a {self.task_type} model has no LM head; build it for task_type='generation'")
        ids, mask = prompt_ids, prompt_mask.long()
        positions = positions_of(mask)
        step_ids, step_positions, cache = ids, positions, None
        # transformers 5 renamed the key/value cache argument and output (past_key_values -> cache).
        cache_key = "cache" if "cache" in inspect.signature(self.encoder.forward).parameters else "past_key_values"
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        written: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            inputs: dict[str, Any] = {"attention_mask": mask, "use_cache": use_cache}
            if use_cache:
                inputs.update({"input_ids": step_ids, "position_ids": step_positions, cache_key: cache})
            else:
                inputs.update(input_ids=ids, position_ids=positions)
            outputs = self._run(inputs, torch.ones_like(inputs["input_ids"]))
            cache = getattr(outputs, cache_key) if use_cache else None
            token = self.head(outputs.last_hidden_state[:, -1]).argmax(-1)
            token = torch.where(done, torch.full_like(token, eos_token_id), token)
            written.append(token)
            done |= token == eos_token_id
            if bool(done.all()):
                break
            step_ids, step_positions = token[:, None], positions[:, -1:] + 1
            ids = torch.cat([ids, step_ids], dim=1)
            positions = torch.cat([positions, step_positions], dim=1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        rows = torch.stack(written, dim=1).tolist() if written else [[] for _ in range(ids.shape[0])]
        return [row[: row.index(eos_token_id)] if eos_token_id in row else row for row in rows]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task outputs: logits (B, C), values (B,), choice scores (B, n_choices) or next-token logits.

        Generation models return next-token logits (B, T, vocab). Multiple-choice inputs are
        (B, n_choices, T); every (context, choice) pair is encoded and scored on its own, and the
        scores are compared across choices.
        """
        if self.task_type == "generation":
            return self.head(self.encode(input_ids, attention_mask, position_ids=positions_of(attention_mask)))
        if self.task_type == "multiple_choice":
            batch, choices, length = input_ids.shape
            flat = [
                t.reshape(batch * choices, length) if t is not None else None
                for t in (input_ids, attention_mask, token_type_ids)
            ]
            hidden = self.encode(*flat)
            return self.head(hidden, flat[1]).view(batch, choices)
        hidden = self.encode(input_ids, attention_mask, token_type_ids)
        logits = self.head(hidden, attention_mask)
        return logits.squeeze(-1) if self.task_type == "regression" else logits
