"""The per-layer switch of Adaptable Adapters (Moosavi et al., 2022), without rational activations.

Each candidate layer learns two logits, one for "adapter on" and one for "skip" (the layer's
identity path). In training, every example draws one path with the Gumbel-max trick; the
forward pass uses the hard one-hot choice and the backward pass the gradient of the relaxed
softmax((logits + Gumbel noise) / temperature) (straight-through Gumbel-softmax). Since the
skip path leaves the layer as it is, mixing the two paths with weights (w_on, 1 - w_on) is the
same as scaling the adapters' contribution by w_on, which is what :meth:`LayerSwitch.forward`
returns. In evaluation the switch is deterministic: on when its "on" logit is the larger.

By the Gumbel-max trick a training draw picks "on" with probability softmax(logits)[on],
whatever the temperature: :meth:`LayerSwitch.p_on` is that probability and is what layer
selection ranks by (:mod:`autopeft.training.adaptable`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ON, SKIP = 0, 1


class LayerSwitch(nn.Module):
    """A learned binary choice between a layer's adapters and skipping them.

    Args:
        temperature: Gumbel-softmax temperature (shapes the gradient, not the draw).

    """

    def __init__(self, temperature: float) -> None:
        super().__init__()
        # Equal logits: each path starts with probability 1/2, as in the AA switch.
        self.logits = nn.Parameter(torch.zeros(2))
        self.temperature = temperature

    def p_on(self) -> float:
        """Probability that a training draw switches the adapters on."""
        return float(torch.softmax(self.logits.detach().float(), dim=0)[ON])

    def is_on(self) -> bool:
        """The evaluation-time choice (ties count as on: an untrained switch keeps its adapter)."""
        logits = self.logits.detach()
        return bool(logits[ON] >= logits[SKIP])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The weight of the "on" path per example, (B, 1, 1), exactly 0 or 1 in the forward pass.

        Args:
            hidden: The adapter input (B, T, D); only its batch size, dtype and device are used.

        """
        batch = hidden.shape[0]
        if not self.training:
            return torch.full((batch, 1, 1), float(self.is_on()), dtype=hidden.dtype, device=hidden.device)
        logits = self.logits.float().expand(batch, 2)
        weights = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1)
        return weights[:, ON].to(hidden.dtype).view(batch, 1, 1)
