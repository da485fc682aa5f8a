"""LoRA (Hu et al., 2022): a low-rank update added to a frozen linear projection.

With a UniPELT gate (:class:`~autopeft.peft.gates.Gate`) the update is also scaled by a gate
computed from the projection's input, one gate per adapted projection, as in the UniPELT
authors' ``LoRA_Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + b + g(x) * (alpha / r) * B A dropout(x), with A (r x in) and B (out x r).

    B starts at zero so the wrapped projection is unchanged at initialisation; A uses the
    Kaiming-uniform initialisation of the reference implementation. g(x) is 1 without a gate.

    Args:
        base: The frozen projection (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is stored
            in x out); shared, not copied.
        rank: r.
        alpha: Scaling numerator.
        dropout: Dropout applied to the LoRA branch's input.
        gate: A UniPELT gate mapping the input (B, T, in) to (B, 1, 1), or None.

    """

    def __init__(
        self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0, gate: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.gate = gate
        self.base = base
        self._in, self._out = _widths(base)
        self.lora_a = nn.Parameter(torch.empty(rank, self._in))
        self.lora_b = nn.Parameter(torch.zeros(self._out, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        """Input width of the wrapped projection (kept for code that inspects Linear layers)."""
        return self._in

    @property
    def out_features(self) -> int:
        """Output width of the wrapped projection."""
        return self._out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (..., in) to (..., out)."""
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()
        if self.gate is not None:
            update = update * self.gate(x)
        return self.base(x) + self.scaling * update


def _widths(base: nn.Module) -> tuple[int, int]:
    """(in, out) widths of a linear projection: ``nn.Linear`` or transformers' ``Conv1D`` (nx, nf)."""
    if hasattr(base, "in_features"):
        return base.in_features, base.out_features
    return base.nx, base.nf
