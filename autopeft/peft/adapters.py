"""Serial and parallel bottleneck adapters on the feed-forward block (paper eqs. 1-3).

With F the pretrained FFN (``intermediate`` -> ``output.dense`` -> dropout), x its input,
LN the layer's pretrained output LayerNorm and f(z) = ReLU(z W_down) W_up, an adapted layer
computes one of two wirings of the serial adapter (``PeftSpec.sa_placement``)::

    h = F(x)
    pfeiffer:  out = LN(h + f_SA(LN(h + x)) + s * f_PA(x) + x)     (the paper's, the default)
    houlsby:   out = LN(h + f_SA(h)         + s * f_PA(x) + x)

``pfeiffer`` is the forward pass of the authors' AdapterHub fork (cambridgeltl/autopeft,
``AutoPEFTConfig``: ``original_ln_before=True``, ``residual_before_ln=True``,
``original_ln_after=True``, ``modeling_sappa.py``): the serial adapter reads the pretrained
LayerNorm of the FFN output plus its residual, its own residual is the raw FFN output h, and
the same LayerNorm closes the block, as in Pfeiffer et al. (2020). ``houlsby`` feeds the adapter
the raw FFN output, as the paper's eq. 1 reads literally. The parallel adapter reads x in both.

Initialisation (``PeftSpec.adapter_init``):

* ``adapterhub`` (the authors' code, ``init_weights="bert"``): the serial adapter's projections
  ~ N(0, 0.02) with zero biases; the parallel adapter's down-projection Kaiming-uniform, its
  up-projection and both biases zero (He et al.'s "mam_adapter" initialisation). So at
  initialisation a parallel adapter leaves the model unchanged, a serial adapter does not
  (it adds a small random f_SA).
* ``zero_up``: PyTorch's default ``nn.Linear`` initialisation with a zero up-projection for
  both adapters, so every adapted model reproduces the frozen model exactly at initialisation,
  in either wiring (with f_SA = 0, pfeiffer's LN(h + 0 + x) is the unadapted block).

Optional multipliers scale an adapter's output per example: a UniPELT gate computed from the
adapter's own input (:class:`~autopeft.peft.gates.Gate`), and an Adaptable Adapters layer
switch that turns both adapters of the layer on or off (:class:`~autopeft.peft.switch.LayerSwitch`)::

    out = LN(h + w * g_SA(z) * f_SA(z) + w * g_PA(x) * s * f_PA(x) + x),   z = the SA's input

Both multiply the adapter's output, so whatever identity the initialisation gives is kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Serial-adapter wirings (``PeftSpec.sa_placement``).
SA_PLACEMENTS = ("pfeiffer", "houlsby")
#: Adapter initialisations (``PeftSpec.adapter_init``).
ADAPTER_INITS = ("adapterhub", "zero_up")
#: Standard deviation of AdapterHub's "bert" initialisation (BERT's ``initializer_range``).
BERT_INIT_STD = 0.02


class Bottleneck(nn.Module):
    """Down-projection, ReLU, up-projection: f(z) = ReLU(z W_down) W_up.

    Args:
        hidden_size: D_h, input and output width.
        bottleneck: D, the bottleneck width.
        dropout: Dropout on the bottleneck activations.
        init: How the weights start, see the module docstring: ``"bert"`` (N(0, 0.02) weights,
            zero biases: AdapterHub's serial adapter), ``"mam"`` (Kaiming-uniform down, zero up
            and biases: AdapterHub's parallel adapter) or ``"zero_up"`` (``nn.Linear`` defaults,
            zero up-projection).

    """

    def __init__(self, hidden_size: int, bottleneck: int, dropout: float = 0.0, init: str = "zero_up") -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            if init == "bert":
                for linear in (self.down, self.up):
                    nn.init.normal_(linear.weight, mean=0.0, std=BERT_INIT_STD)
                    nn.init.zeros_(linear.bias)
            elif init == "mam":
                nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
                nn.init.zeros_(self.down.bias)
                nn.init.zeros_(self.up.weight)
                nn.init.zeros_(self.up.bias)
            elif init == "zero_up":
                # Zero up-projection: the adapter's contribution is exactly 0 until it trains.
                nn.init.zeros_(self.up.weight)
                nn.init.zeros_(self.up.bias)
            else:
                raise ValueError(f"init={init!r}; allowed: 'bert', 'mam', 'zero_up'")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Map (..., D_h) to (..., D_h)."""
        return self.up(self.dropout(torch.relu(self.down(hidden))))


def bottleneck_init(adapter_init: str, serial: bool) -> str:
    """The :class:`Bottleneck` initialisation of a serial or parallel adapter under ``adapter_init``."""
    if adapter_init == "adapterhub":
        return "bert" if serial else "mam"
    return "zero_up"


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
        sa_placement: ``"pfeiffer"`` (the serial adapter reads LN(h + x)) or ``"houlsby"`` (it
            reads h); see the module docstring.

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
        sa_placement: str = "pfeiffer",
    ) -> None:
        super().__init__()
        if sa_placement not in SA_PLACEMENTS:
            raise ValueError(f"sa_placement={sa_placement!r}; allowed: {', '.join(SA_PLACEMENTS)}")
        self.base = base
        self.serial = serial
        self.parallel = parallel
        self.parallel_scale = parallel_scale
        self.serial_gate = serial_gate
        self.parallel_gate = parallel_gate
        self.switch = switch
        self.sa_placement = sa_placement

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        """Compute LN(h + f_SA(z) + s f_PA(x) + x), h = F(x), z = LN(h + x) or h; gates and switch applied."""
        ffn = self.base.dropout(self.base.dense(hidden_states))
        out = ffn
        if self.serial is not None:
            # Pfeiffer: the adapter sees the block's normalised output, while its residual stays
            # the raw FFN output h, so the closing LayerNorm below normalises h + f_SA + x.
            sa_input = self.base.LayerNorm(ffn + input_tensor) if self.sa_placement == "pfeiffer" else ffn
            on = self.switch(sa_input) if self.switch is not None else None
            out = out + _scaled(self.serial(sa_input), self.serial_gate, sa_input, on)
        else:
            on = self.switch(ffn) if self.switch is not None else None
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
