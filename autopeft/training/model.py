"""The trainable model: a (frozen) backbone with PEFT modules and a task head.

Encoders pool the first token (``cls``) or all tokens (``mean``) into BERT's two-layer head;
decoders read the last real token, the only one that has attended to the whole input, into one
bias-free linear layer, as ``transformers``' ``*ForSequenceClassification`` decoders do (their
``score``), so a decoder's head is the one a peft user knows.
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft.peft import PeftSpec, freeze, inject_peft
from autopeft.peft.families import is_decoder
from autopeft.peft.gates import TokenMask
from autopeft.tasks.spec import TASK_TYPES
from autopeft.training.backbones import Backbone


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
        task_type: ``classification``, ``regression`` or ``multiple_choice``.
        num_labels: Number of classes (ignored for regression and multiple choice).
        head_dropout: Dropout in the head.

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
        if backbone.pooling == "last":
            std = getattr(encoder.config, "initializer_range", 0.02)
            self.head: nn.Module = LastTokenHead(encoder.config.hidden_size, out_dim, std)
        else:
            self.head = TaskHead(encoder.config.hidden_size, out_dim, backbone.pooling, head_dropout, pooler)
        # RoBERTa has a single token type: BERT-style segment ids would index out of range.
        self._use_token_types = getattr(encoder.config, "type_vocab_size", 1) > 1
        # from_pretrained returns eval mode; training must see the backbone's dropout as usual.
        self.train()

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token states (B, T, D_h) of the adapted encoder."""
        if self.prefix_encoder is not None:
            self.prefix_encoder.begin_forward()
        try:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if self._use_token_types:
                inputs["token_type_ids"] = token_type_ids
            if self.decoder:
                inputs["use_cache"] = False  # one pass over whole sequences: a key/value cache is wasted memory
            with self._tokens.active(attention_mask):
                out = self.encoder(**inputs)
        finally:
            if self.prefix_encoder is not None:
                self.prefix_encoder.end_forward()
        return out.last_hidden_state

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Task outputs: logits (B, C), regression values (B,), or choice scores (B, n_choices).

        Multiple-choice inputs are (B, n_choices, T); every (context, choice) pair is encoded
        and scored on its own, and the scores are compared across choices.
        """
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
