"""The paper's three modules in causal decoder layers (Llama, Qwen, Mistral, Gemma, GPT-2, GPT-NeoX).

Decoder layers are pre-norm: a layer computes ``x + attn(norm(x))`` and then
``y + mlp(norm(y))`` (GPT-NeoX's parallel residual adds both branches to x; Gemma 2/3 add a
post-feedforward norm, ``y + post_norm(mlp(norm(y)))``). Every supported family keeps the
feed-forward block as one module (``mlp``) that maps the normalised input x to h = F(x), and
every family's attention passes its keys and values, after the projections and the rotary
embedding, through the ``update`` method of a key/value cache. The two wrappers here hook into
those two places, so nothing of a family's own attention or MLP code is copied.

**Serial and parallel adapters** (paper eqs. 1-3) wrap the layer's ``mlp``::

    mlp'(x) = h + f_SA(h) + s * f_PA(x),   h = F(x),  x = the MLP's (normalised) input

This is eq. 3's composition f_SA(F(x)) + f_PA(x) added to the MLP's output: the serial
adapter reads the FFN output h (eq. 1, Houlsby et al.'s placement after the FFN) and the
parallel adapter reads what the FFN reads (eq. 2; He et al.'s FFN-parallel adapter, which in
their pre-norm models also takes the normalised FFN input). The layer's residual then adds the
input, as the encoder's ``LN(h + f_SA + s f_PA + x)`` does. Encoders' ``sa_placement`` choice
(whether the serial adapter reads LN(h + x) or h) does not arise: a pre-norm layer has no
LayerNorm after the FFN's residual sum, so on decoders both placements are this one. In Gemma 2
and 3 the adapters sit inside the post-feedforward norm (it normalises h + f_SA + s f_PA), as
the encoder's closing LayerNorm normalises the adapted FFN output: the adapters join the FFN's
output before whatever normalisation the family applies to that output, and a zero adapter
leaves the block exactly as pretrained.

**Prefix-tuning** wraps the layer's attention module. The wrapper hands the attention a
stand-in key/value cache whose ``update`` returns ``[P_k; K]`` and ``[P_v; V]``: K and V are
the layer's own keys and values after the rotary embedding (and after the real cache, if the
caller passed one), P_k and P_v the layer's prefix from the shared
:class:`~autopeft.peft.prefix.PrefixEncoder`. Under grouped-query attention the prefix has the
layer's ``num_key_value_heads`` heads of ``head_dim`` (2 x kv_heads x head_dim numbers per
prefix position, not 2 D_h), and the attention shares each prefix head among its query group
as it shares the real keys. Prefix keys take no rotation: they are position-free, like the
already-rotated keys of a cache prefilled with a prefix (peft's prefix tuning); the real tokens
keep their positions 0..T-1. The attention mask gains L_PT leading key positions that every
query sees; causality and padding among the real tokens stay as the model built them. In
sliding-window layers (Mistral, Gemma 2/3, Qwen's optional ones) the window applies among the
real tokens and the prefix stays visible to all of them, and Gemma 2's logit soft-capping caps
the prefix logits with the others. This works with the ``eager`` and ``sdpa`` attention
implementations, whose masks are tensors; flash-attention and flex-attention take no such mask
and are refused. Every supported family takes prefix-tuning this way, GPT-2 and GPT-NeoX (whose
query, key and value share one projection) included: the prefix enters after the projection.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from autopeft.errors import ConfigError, allowed_list
from autopeft.peft.adapters import Bottleneck
from autopeft.peft.prefix import PrefixEncoder, extend_attention_mask

#: Attention implementations whose masks the prefix wrapper can extend.
PREFIX_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def kv_shape(config: Any) -> tuple[int, int]:
    """(key/value heads, head size) of a config: the shape a layer's prefix must take.

    Encoders (BERT, RoBERTa), GPT-2 and GPT-NeoX configs state neither (every head has its own
    keys; heads are ``hidden_size / num_attention_heads`` wide); Gemma's ``head_dim`` may differ
    from that ratio.
    """
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


def check_prefix_attention(config: Any) -> None:
    """Refuse, in one line, an attention implementation whose mask the prefix cannot extend.

    Raises:
        ConfigError: Naming the implementation, the family and the implementations allowed.

    """
    implementation = config._attn_implementation or "eager"  # unset: transformers falls back to eager
    if implementation not in PREFIX_ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(
            f"prefix-tuning on decoder backbones needs an attention implementation in "
            f"{allowed_list(PREFIX_ATTENTION_IMPLEMENTATIONS)}; this {config.model_type!r} backbone uses "
            f"{implementation!r}"
        )


class DecoderAdaptedMLP(nn.Module):
    """A decoder layer's MLP with a serial and/or parallel adapter: h + f_SA(h) + s f_PA(x).

    See the module docstring for the placement. Both adapters add to the MLP's output, so with
    a zero up-projection (``adapter_init: zero_up``, and the parallel adapter under
    ``adapterhub``) the layer computes exactly what it computed before.

    Args:
        base: The pretrained MLP (weights shared, not copied); called as the layer calls it.
        serial: The serial adapter, reading the MLP output h, or None.
        parallel: The parallel adapter, reading the MLP input x, or None.
        parallel_scale: s, the parallel adapter's output scaling.

    """

    def __init__(
        self, base: nn.Module, serial: Bottleneck | None, parallel: Bottleneck | None, parallel_scale: float
    ) -> None:
        super().__init__()
        if serial is None and parallel is None:
            raise ValueError("DecoderAdaptedMLP needs a serial or a parallel adapter")
        self.base = base
        self.serial = serial
        self.parallel = parallel
        self.parallel_scale = parallel_scale

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Map the MLP input x (B, T, D_h) to h + f_SA(h) + s f_PA(x)."""
        ffn = self.base(hidden_states)
        out = ffn
        if self.serial is not None:
            out = out + _in_own_dtype(self.serial, ffn)
        if self.parallel is not None:
            out = out + self.parallel_scale * _in_own_dtype(self.parallel, hidden_states)
        return out


def _in_own_dtype(adapter: Bottleneck, hidden: torch.Tensor) -> torch.Tensor:
    """The adapter's output for ``hidden``, computed in the adapter's dtype and returned in ``hidden``'s.

    A decoder may run in half precision (loaded in bf16, or 4-bit with bf16 compute) while its
    adapters train in float32; outside autocast a float32 ``nn.Linear`` would refuse bf16 input.
    """
    dtype = adapter.down.weight.dtype
    return adapter(hidden.to(dtype)).to(hidden.dtype)


class _PrefixedCache:
    """Stands in for a ``transformers`` cache during one attention call: ``update`` prepends the prefix.

    Every supported attention module calls ``cache.update(keys, values, layer_idx, ...)`` after
    its projections and rotary embedding and attends over what it returns, which makes that call
    the one family-independent place to put the prefix in front of the keys and values. A real
    cache, when the caller passed one, is updated first and keeps the real tokens only, so a
    prefix is never stored in it.
    """

    def __init__(self, key: torch.Tensor, value: torch.Tensor, inner: Any) -> None:
        self.key = key  # (B, kv_heads, L_PT, head_dim)
        self.value = value
        self.inner = inner

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inner is not None:
            key_states, value_states = self.inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        if key_states.shape[1] != self.key.shape[1] or key_states.shape[-1] != self.key.shape[-1]:
            raise RuntimeError(
                f"layer {layer_idx}'s keys have {key_states.shape[1]} heads of {key_states.shape[-1]}; "
                f"its prefix was built with {self.key.shape[1]} heads of {self.key.shape[-1]}"
            )
        key = self.key.to(key_states.dtype).expand(key_states.shape[0], -1, -1, -1)
        value = self.value.to(value_states.dtype).expand(value_states.shape[0], -1, -1, -1)
        return torch.cat([key, key_states], dim=2), torch.cat([value, value_states], dim=2)


class PrefixDecoderAttention(nn.Module):
    """A decoder layer's attention over [P_k; K] and [P_v; V] (prefix-tuning), any supported family.

    Args:
        base: The pretrained attention module (weights shared, not copied).
        prefix: The shared prefix encoder; its ``kv_width`` must be ``kv_heads * head_dim``.
        slot: Which of the prefix encoder's layers belongs to this attention module.
        kv_heads: Key/value heads of the attention (``num_key_value_heads`` under GQA).
        head_dim: Width of one head.
        cache_arg: The name under which the family's layer passes the key/value cache to its
            attention (``cache``; GPT-NeoX: ``layer_past``).

    Raises:
        ConfigError: If the attention runs an implementation other than eager or sdpa.

    """

    def __init__(
        self, base: nn.Module, prefix: PrefixEncoder, slot: int, kv_heads: int, head_dim: int, cache_arg: str
    ) -> None:
        super().__init__()
        check_prefix_attention(base.config)
        if cache_arg not in inspect.signature(base.forward).parameters:
            # A transformers release that renamed the argument would otherwise drop the prefix silently.
            raise RuntimeError(f"{type(base).__name__}.forward has no {cache_arg!r} argument to take the prefix")
        if prefix.kv_width != kv_heads * head_dim:
            raise ValueError(f"prefix width {prefix.kv_width} != {kv_heads} key/value heads x {head_dim}")
        self.base = base
        # Kept out of the module tree: the encoder is owned (and counted) once, by the model.
        self.__dict__["prefix"] = prefix
        self.slot = slot
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.cache_arg = cache_arg

    def layer_prefix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's prefix keys and values, each (1, kv_heads, L_PT, head_dim)."""
        key, value = self.prefix.layer_prefix(self.slot)  # (L_PT, kv_heads * head_dim) each

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(1, t.shape[0], self.kv_heads, self.head_dim).transpose(1, 2)

        return heads(key), heads(value)

    def forward(self, hidden_states: torch.Tensor, **kwargs: Any) -> Any:
        """The wrapped module's forward, with the prefix in the keys, values and mask; same outputs."""
        # The implementation can be switched after injection (set_attn_implementation).
        check_prefix_attention(self.base.config)
        # Every supported layer passes the mask and the cache by keyword; the deprecated
        # ``past_key_values`` name is still accepted by the wrapped forward, so it is read too.
        cache = kwargs.pop(self.cache_arg, None)
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        key, value = self.layer_prefix()
        prefix_len = key.shape[2]
        kwargs["attention_mask"] = self._mask(kwargs.get("attention_mask"), hidden_states, prefix_len, cache)
        kwargs[self.cache_arg] = _PrefixedCache(key, value, _self_attention_cache(cache))
        return self.base(hidden_states, **kwargs)

    def _mask(self, mask: Any, hidden_states: torch.Tensor, prefix_len: int, cache: Any) -> torch.Tensor:
        """The layer's mask with ``prefix_len`` always-visible key positions in front.

        A mask must be passed even where the model built none (sdpa without padding): without
        one, transformers' sdpa path sets ``is_causal`` and keeps only the first T keys, which
        would be the prefix and the first T - L_PT tokens.
        """
        if mask is not None:
            return extend_attention_mask(mask, prefix_len, mask.dtype)
        length = hidden_states.shape[1]
        past = 0
        if cache is not None:
            layer_idx = getattr(self.base, "layer_idx", 0) or 0
            past = int(_self_attention_cache(cache).get_seq_length(layer_idx))
        keys = torch.arange(past + length, device=hidden_states.device)
        queries = torch.arange(length, device=hidden_states.device) + past
        if getattr(self.base, "is_causal", True):
            visible = keys[None, :] <= queries[:, None]
        else:
            visible = torch.ones(length, past + length, dtype=torch.bool, device=hidden_states.device)
        visible = visible[None, None]  # (1, 1, T, past + T), broadcast over batch and heads
        if self.base.config._attn_implementation != "sdpa":
            # eager attention adds the mask to the logits: 0 where visible, the dtype's minimum elsewhere.
            dtype = hidden_states.dtype
            visible = torch.zeros(visible.shape, dtype=dtype, device=keys.device).masked_fill(
                ~visible, torch.finfo(dtype).min
            )
        return extend_attention_mask(visible, prefix_len, visible.dtype)


def _self_attention_cache(cache: Any) -> Any:
    """The self-attention part of a cache (an encoder-decoder cache's first half), or the cache itself."""
    return getattr(cache, "self_attention_cache", cache) if cache is not None else None
