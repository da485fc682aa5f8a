"""Serial and parallel bottleneck adapters on the feed-forward block (paper eqs. 1-3).

With F the pretrained FFN (``intermediate`` -> ``output.dense`` -> dropout) and x its input,
an adapted layer computes::

    h   = F(x)
    out = LayerNorm(h + f_SA(h) + s * f_PA(x) + x)

where f(z) = ReLU(z W_down) W_up. The up-projections start at zero, so an adapted model
reproduces the frozen model exactly at initialisation.

Optional multipliers scale an adapter's output per example: a UniPELT gate computed from the
adapter's own input (:class:`~autopeft.peft.gates.Gate`), and an Adaptable Adapters layer
switch that turns both adapters of the layer on or off (:class:`~autopeft.peft.switch.LayerSwitch`)::

    out = LayerNorm(h + w * g_SA(h) * f_SA(h) + w * g_PA(x) * s * f_PA(x) + x)

Both multiply a zero-initialised output, so the identity at initialisation is kept.
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
        serial_gate: Maps the serial adapter's input (B, T, D_h) to a (B, 1, 1) multiplier, or None.
        parallel_gate: The same for the parallel adapter, or None.
        switch: Maps the adapter input to the (B, 1, 1) weight of the "adapters on" path, or None.

    """

    def __init__(
        self,
        base: nn.Module,
        serial: Bottleneck | None,
        parallel: Bottleneck | None,
        parallel_scale: float,
        serial_gate: nn.Module | None = None,
        parallel_gate: nn.Module | None = None,
        switch: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.serial = serial
        self.parallel = parallel
        self.parallel_scale = parallel_scale
        self.serial_gate = serial_gate
        self.parallel_gate = parallel_gate
        self.switch = switch

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Compute LayerNorm(h + f_SA(h) + s f_PA(x) + x) with h = F(x), gates and switch applied."""
        ffn = self.base.dropout(self.base.dense(hidden_states))
        on = self.switch(ffn) if self.switch is not None else None
        out = ffn
        if self.serial is not None:
            out = out + _scaled(self.serial(ffn), self.serial_gate, ffn, on)
        if self.parallel is not None:
            out = out + self.parallel_scale * _scaled(self.parallel(input_tensor), self.parallel_gate, input_tensor, on)
        return self.base.LayerNorm(out + input_tensor)


def _scaled(
    update: torch.Tensor, gate: nn.Module | None, gate_input: torch.Tensor, on: torch.Tensor | None
) -> torch.Tensor:
    """An adapter's output times its gate (computed from the adapter's input) and the layer switch."""
    if gate is not None:
        update = update * gate(gate_input)
    if on is not None:
        update = update * on
    return update
