"""UniPELT gates (Mao et al., 2022): each PEFT module's contribution scaled by a learned gate.

A gate is a Linear(D_h -> 1) followed by a sigmoid, applied to every token of the module's
input and averaged over the sequence, so it yields one value in (0, 1) per example::

    g = mean_t sigmoid(W_g x_t + b_g)          # (B, 1, 1)

Source followed: the authors' code, github.com/morningmoni/UniPELT —
``transformers/adapters/modeling.py`` (``Adapter``: the adapter output times a gate computed
from the adapter input), ``lora_layers.py`` (``LoRA_Linear``: the LoRA update times a gate
computed from the projection input, one gate per adapted projection) and
``transformers/models/bert/modeling_bert.py`` (``BertSelfAttention``: one gate from the
attention input multiplying both prefix keys and prefix values). The ``adapters`` library's
``UniPELTConfig`` gates the same three places. Gate weights start as N(0, 0.02) with zero
bias (``init_bert_weights`` in the source), so every gate starts near 0.5.

One deliberate difference: the source averages over every position, padding included, so an
example's output would change with the padding of its batch. Here the mean runs over the
real tokens of the :class:`TokenMask` that :class:`~autopeft.training.model.AutoPeftModel` sets for
each forward pass (without one, e.g. on a bare encoder, over all positions as in the source).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class TokenMask:
    """The (B, T) padding mask of the forward pass in progress, shared by every gate of a model."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    @contextmanager
    def active(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Expose ``mask`` (1 = real token) to the gates for the duration of one forward pass."""
        self.mask = mask
        try:
            yield
        finally:
            self.mask = None


class Gate(nn.Module):
    """g = mean over real tokens of sigmoid(W_g x_t + b_g): one value in (0, 1) per example.

    Args:
        hidden_size: D_h, the width of the input the gate reads.
        tokens: The model's shared padding mask holder, or None (mean over all positions).

    """

    def __init__(self, hidden_size: int, tokens: TokenMask | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        # Shared, not owned: kept out of the module tree (it holds no parameters).
        self.__dict__["tokens"] = tokens

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (B, T, D_h) to gate values (B, 1, 1), ready to broadcast over (B, T, D)."""
        per_token = torch.sigmoid(self.proj(hidden))  # (B, T, 1)
        mask = self.tokens.mask if self.tokens is not None else None
        if mask is None or mask.shape != hidden.shape[:2]:
            return per_token.mean(dim=1, keepdim=True)
        weights = mask.to(per_token.dtype).unsqueeze(-1)
        return (per_token * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
