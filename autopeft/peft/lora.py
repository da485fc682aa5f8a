"""LoRA (Hu et al., 2022) and DoRA (Liu et al., 2024): a low-rank update of a frozen linear projection.

With a UniPELT gate (:class:`~autopeft.peft.gates.Gate`) the update is also scaled by a gate
computed from the projection's input, one gate per adapted projection, as in the UniPELT
authors' ``LoRA_Linear``.

DoRA splits the adapted weight into a learned magnitude (one value per output feature) and a
direction, W' = m * (W + s B A) / ||W + s B A||, the norm taken per output feature over the
input dimension. The arithmetic is peft 0.21.2's (``tuners/lora/dora.py``,
``DoraLinearLayer``, with ``variants.DoraLinearVariant``) step for step, so that a peft export
predicts what AutoPEFT predicts:

* the magnitude starts at ||W||, so with B = 0 the projection is unchanged at initialisation;
* the norm ||W + s B A|| is detached (section 4.3 of the DoRA paper: it is treated as a
  constant, which saves the memory of its gradient graph);
* the output is base(x) + (m / ||.|| - 1) * W x + (m / ||.||) * s * B A x, i.e. the base output
  (bias included) rescaled without touching the bias, plus the rescaled low-rank update;
* with dropout in training, x in both extra terms is the dropped-out input and W x is
  recomputed from it; without dropout (or in eval mode) W x is the base output less its bias.

GPT-2's ``Conv1D`` stores its weight in x out; peft handles it as a ``Linear`` with
``fan_in_fan_out=True`` (DoRA included), and so does this module: the weight is transposed to
out x in wherever the norm or W x is computed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """y = W x + b + g(x) * (alpha / r) * B A dropout(x), with A (r x in) and B (out x r); or DoRA.

    B starts at zero so the wrapped projection is unchanged at initialisation; A uses the
    Kaiming-uniform initialisation of the reference implementation. g(x) is 1 without a gate.
    With ``use_dora`` the module also learns ``lora_magnitude`` (out,), see the module docstring.

    Args:
        base: The frozen projection (``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is stored
            in x out); shared, not copied.
        rank: r.
        alpha: Scaling numerator.
        dropout: Dropout applied to the LoRA branch's input.
        gate: A UniPELT gate mapping the input (B, T, in) to (B, 1, 1), or None.
        use_dora: Learn a per-output-feature magnitude as DoRA does (no gate allowed).

    Raises:
        ValueError: On a gate with ``use_dora`` (the configuration checks refuse it first), or
            ``use_dora`` on a quantized (not floating-point) base weight.

    """

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        gate: nn.Module | None = None,
        use_dora: bool = False,
    ) -> None:
        super().__init__()
        if use_dora and gate is not None:
            raise ValueError("DoRA takes no UniPELT gate (peft.use_dora with peft.gated)")
        if use_dora and not base.weight.is_floating_point():
            # A quantized weight (4-bit packed as uint8) has no per-feature norm until dequantized.
            raise ValueError(f"DoRA needs a floating-point base weight; this one is {base.weight.dtype}")
        self.gate = gate
        self.base = base
        self._in, self._out = _widths(base)
        self.lora_a = nn.Parameter(torch.empty(rank, self._in))
        self.lora_b = nn.Parameter(torch.zeros(self._out, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_magnitude: nn.Parameter | None = None
        if use_dora:
            # ||W + s B A|| with B = 0, i.e. ||W||: the direction starts as W and the magnitude as its norm.
            with torch.no_grad():
                self.lora_magnitude = nn.Parameter(self._weight_norm(self.delta()))

    @property
    def in_features(self) -> int:
        """Input width of the wrapped projection (kept for code that inspects Linear layers)."""
        return self._in

    @property
    def out_features(self) -> int:
        """Output width of the wrapped projection."""
        return self._out

    @property
    def use_dora(self) -> bool:
        """Whether this is a DoRA projection (it has a magnitude vector)."""
        return self.lora_magnitude is not None

    @property
    def fan_in_fan_out(self) -> bool:
        """Whether the base stores its weight in x out (GPT-2's ``Conv1D``), peft's ``fan_in_fan_out``."""
        return not hasattr(self.base, "in_features")  # as _widths: Conv1D has nx/nf instead

    def base_weight(self) -> torch.Tensor:
        """The frozen weight as out x in (transposed from GPT-2's in x out storage)."""
        weight = self.base.weight
        return weight.t() if self.fan_in_fan_out else weight

    def delta(self) -> torch.Tensor:
        """The low-rank update s B A as out x in."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def _weight_norm(self, delta: torch.Tensor) -> torch.Tensor:
        """||W + delta|| per output feature (over the input dimension), as peft's ``get_weight_norm``."""
        weight = self.base_weight().to(delta.dtype) + delta
        return torch.linalg.norm(weight, dim=1).to(weight.dtype)

    def merged_weight(self) -> torch.Tensor:
        """The weight with the update folded in, in the base's own layout (in x out for ``Conv1D``).

        LoRA: W + s B A; DoRA: (m / ||W + s B A||) * (W + s B A), per output feature, as peft's
        ``merge``. The bias is unchanged by either, so base(x) with this weight is the forward
        pass (without gate and dropout).
        """
        with torch.no_grad():
            delta = self.delta()
            weight = self.base_weight() + delta
            if self.lora_magnitude is not None:
                weight = (self.lora_magnitude / self._weight_norm(delta)).view(-1, 1) * weight
            weight = weight.to(self.base.weight.dtype)
        return weight.t() if self.fan_in_fan_out else weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (..., in) to (..., out)."""
        result = self.base(x)
        if self.lora_magnitude is not None:
            return result + self._dora(x, result)
        update = (self.dropout(x) @ self.lora_a.t()) @ self.lora_b.t()
        if self.gate is not None:
            update = update * self.gate(x)
        return result + self.scaling * update

    def _dora(self, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """DoRA's addition to the base output, in peft's order of operations (see the module docstring)."""
        # peft builds B A by passing an identity through the factors; the product is the same.
        lora_weight = (self.lora_b @ self.lora_a).to(x.dtype)
        weight = self.base_weight().to(x.dtype)
        norm = torch.linalg.norm(weight + self.scaling * lora_weight.detach(), dim=1).to(weight.dtype).detach()
        scale = (self.lora_magnitude / norm).view(1, -1)
        if self.dropout.p == 0 or not self.training:
            # The base output already holds W x; only its bias must stay out of the rescaling.
            bias = getattr(self.base, "bias", None)
            base_result = result - bias if bias is not None else result
        else:
            x = self.dropout(x)
            base_result = F.linear(x, weight)
        lora_result = (x @ self.lora_a.t()) @ self.lora_b.t()
        return (scale - 1) * base_result + scale * lora_result * self.scaling


def _widths(base: nn.Module) -> tuple[int, int]:
    """(in, out) widths of a linear projection: ``nn.Linear`` or transformers' ``Conv1D`` (nx, nf)."""
    if hasattr(base, "in_features"):
        return base.in_features, base.out_features
    return base.nx, base.nf
