"""Prefix-tuning (Li & Liang, 2021) with the MLP reparameterisation used by the paper.

Each inserted layer gets L_PT extra key and value vectors (P_k, P_v in R^{L_PT x D_h}) that
every token can attend to. As in the reference implementation (and the ``adapters``
library the AutoPEFT authors used), the prefixes of all inserted layers are produced by one
shared MLP from a learned (L_PT x D_h) embedding::

    P = W_2 tanh(W_1 E + b_1) + b_2,   W_1: D_h -> bottleneck (800), W_2: -> n_layers * 2 * D_h

After training, P can be computed once and the MLP dropped; that is why the paper counts
2 * L_PT * D_h parameters per layer while training holds the larger MLP.

On a decoder with grouped-query attention a layer's keys and values are narrower than D_h
(``num_key_value_heads`` x ``head_dim``), and so is its prefix: the MLP's output width per layer
is then 2 x kv_heads x head_dim (``kv_width``), and the embedding stays L_PT x D_h. The decoder
wiring is :class:`~autopeft.peft.decoder_layers.PrefixDecoderAttention`.

With a UniPELT gate, one gate per layer computed from the attention input scales both P_k and
P_v of each example, as in the UniPELT authors' ``BertSelfAttention`` (see
:mod:`autopeft.peft.gates`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrefixEncoder(nn.Module):
    """Produces the prefix keys and values of every inserted layer.

    Args:
        num_layers: Number of layers that receive a prefix.
        prefix_len: L_PT.
        hidden_size: D_h.
        bottleneck: Width of the reparameterisation MLP (800 in the paper).
        dropout: Dropout on the produced prefixes.
        kv_width: Width of one layer's prefix keys (and values): D_h (the default) for
            encoders, ``num_key_value_heads * head_dim`` for a decoder's attention.

    """

    def __init__(
        self,
        num_layers: int,
        prefix_len: int,
        hidden_size: int,
        bottleneck: int,
        dropout: float = 0.0,
        kv_width: int | None = None,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.prefix_len = prefix_len
        self.hidden_size = hidden_size
        self.kv_width = kv_width or hidden_size
        self.embedding = nn.Embedding(prefix_len, hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, bottleneck),
            nn.Tanh(),
            nn.Linear(bottleneck, num_layers * 2 * self.kv_width),
        )
        self.dropout = nn.Dropout(dropout)
        self._cached: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        """Return all prefixes, shape (num_layers, 2, L_PT, kv_width); index 0 is keys, 1 is values."""
        out = self.mlp(self.embedding.weight)  # (L_PT, n * 2 * kv_width)
        out = out.view(self.prefix_len, self.num_layers, 2, self.kv_width).permute(1, 2, 0, 3)
        return self.dropout(out)

    def begin_forward(self) -> None:
        """Compute the prefixes once for a model forward pass (shared by all layers)."""
        self._cached = self()

    def end_forward(self) -> None:
        """Drop the per-pass prefixes so no graph outlives its forward pass."""
        self._cached = None

    def layer_prefix(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one inserted layer, each (L_PT, kv_width)."""
        if self._cached is None:
            # Called outside AutoPeftModel.forward (e.g. the bare encoder): compute on demand.
            kv = self()
            return kv[slot, 0], kv[slot, 1]
        return self._cached[slot, 0], self._cached[slot, 1]


def extend_attention_mask(mask: torch.Tensor | None, prefix_len: int, dtype: torch.dtype) -> torch.Tensor | None:
    """Prepend ``prefix_len`` always-visible key positions to an attention mask.

    Handles the mask forms Hugging Face encoders pass to their attention modules: None (no
    padding), a boolean mask (True = attend), an additive float mask (0 = attend, large
    negative = masked), each shaped (B|1, 1, T_q|1, T_k), and a 2-D (B, T_k) padding mask.

    Returns:
        A mask usable by ``scaled_dot_product_attention`` with T_k + prefix_len key positions.

    """
    if mask is None:
        return None
    if mask.dim() == 2:
        mask = mask.bool()[:, None, None, :]
    pad_shape = (*mask.shape[:-1], prefix_len)
    if mask.dtype == torch.bool:
        return torch.cat([mask.new_ones(pad_shape), mask], dim=-1)
    mask = mask.to(dtype)
    return torch.cat([mask.new_zeros(pad_shape), mask], dim=-1)


class PrefixSelfAttention(nn.Module):
    """Self-attention over [P_k; K] and [P_v; V], reusing a pretrained module's projections.

    This is the per-architecture part of prefix-tuning: it reads the ``query``, ``key``,
    ``value``, ``num_attention_heads``, ``attention_head_size``, ``scaling`` and ``dropout``
    attributes shared by BERT and RoBERTa self-attention modules.

    Args:
        base: The pretrained self-attention module (weights shared, not copied).
        prefix: The shared prefix encoder.
        slot: Which of the prefix encoder's layers belongs to this attention module.
        gate: A UniPELT gate mapping the attention input (B, T, D_h) to (B, 1, 1), or None.

    """

    def __init__(self, base: nn.Module, prefix: PrefixEncoder, slot: int, gate: nn.Module | None = None) -> None:
        super().__init__()
        self.base = base
        # Kept out of the module tree: the encoder is owned (and counted) once, by the model.
        self.__dict__["prefix"] = prefix
        self.slot = slot
        self.gate = gate

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, None]:
        """Same contract as the wrapped module: returns (context (B, T, D_h), None)."""
        base = self.base
        batch, length, _ = hidden_states.shape
        heads, head_dim = base.num_attention_heads, base.attention_head_size

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], -1, heads, head_dim).transpose(1, 2)

        query = split_heads(base.query(hidden_states))
        key = split_heads(base.key(hidden_states))
        value = split_heads(base.value(hidden_states))
        prefix_key, prefix_value = self.prefix.layer_prefix(self.slot)
        prefix_len = prefix_key.shape[0]
        prefix_key = split_heads(prefix_key.unsqueeze(0).to(key.dtype)).expand(batch, -1, -1, -1)
        prefix_value = split_heads(prefix_value.unsqueeze(0).to(value.dtype)).expand(batch, -1, -1, -1)
        if self.gate is not None:
            gate = self.gate(hidden_states).view(batch, 1, 1, 1).to(key.dtype)
            prefix_key, prefix_value = prefix_key * gate, prefix_value * gate
        key = torch.cat([prefix_key, key], dim=2)
        value = torch.cat([prefix_value, value], dim=2)
        mask = extend_attention_mask(attention_mask, prefix_len, query.dtype)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            dropout_p=base.dropout.p if self.training else 0.0,
            scale=base.scaling,
        )
        return context.transpose(1, 2).reshape(batch, length, heads * head_dim), None
