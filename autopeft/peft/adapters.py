"""Serial and parallel bottleneck adapters on the feed-forward block (paper eqs. 1-3).

With F the pretrained FFN (``intermediate`` -> ``output.dense`` -> dropout) and x its input,
an adapted layer computes::

    h   = F(x)
    out = LayerNorm(h + f_SA(h) + s * f_PA(x) + x)

where f(z) = ReLU(z W_down) W_up. The up-projections start at zero, so an adapted model
reproduces the frozen model exactly at initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    """Down-projection, ReLU, up-projection: f(z) = ReLU(z W_down) W_up.

    Args:
        hidden_size: D_h, input and output width.
        bottleneck: D, the bottleneck width.
        dropout: Dropout on the bottleneck activations.

    """

    def __init__(self, hidden_size: int, bottleneck: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        self.dropout = nn.Dropout(dropout)
        # Zero up-projection: the adapter's contribution is exactly 0 until it trains.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (..., D_h) to (..., D_h)."""
        return self.up(self.dropout(torch.relu(self.down(hidden))))


class AdaptedFeedForwardOutput(nn.Module):
    """Wraps a BERT/RoBERTa ``*Output`` block (dense, dropout, LayerNorm) with SA and/or PA.

    It keeps the call signature ``forward(hidden_states, input_tensor)`` of the block it
    replaces: ``hidden_states`` is the intermediate (4 D_h) activation and ``input_tensor``
    is x, the FFN input (the attention block's output).

    Args:
        base: The pretrained output block; its weights stay shared, not copied.
        serial: The serial adapter, or None.
        parallel: The parallel adapter, or None.
        parallel_scale: s, the parallel adapter's output scaling.

    """

    def __init__(
        self,
        base: nn.Module,
        serial: Bottleneck | None,
        parallel: Bottleneck | None,
        parallel_scale: float,
    ) -> None:
        super().__init__()
        self.base = base
        self.serial = serial
        self.parallel = parallel
        self.parallel_scale = parallel_scale

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Compute LayerNorm(h + f_SA(h) + s f_PA(x) + x) with h = F(x)."""
        ffn = self.base.dropout(self.base.dense(hidden_states))
        out = ffn
        if self.serial is not None:
            out = out + self.serial(ffn)
        if self.parallel is not None:
            out = out + self.parallel_scale * self.parallel(input_tensor)
        return self.base.LayerNorm(out + input_tensor)
