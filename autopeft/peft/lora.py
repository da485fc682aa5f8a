"""LoRA (Hu et al., 2022): a low-rank update added to a frozen linear projection."""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A dropout(x), with A (r x in) and B (out x r).

    B starts at zero so the wrapped projection is unchanged at initialisation; A uses the
    Kaiming-uniform initialisation of the reference implementation.

    Args:
        base: The frozen projection; shared, not copied.
        rank: r.
        alpha: Scaling numerator.
        dropout: Dropout applied to the LoRA branch's input.

    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        """Input width of the wrapped projection (kept for code that inspects Linear layers)."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """Output width of the wrapped projection."""
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (..., in) to (..., out)."""
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()
        return self.base(x) + self.scaling * update
