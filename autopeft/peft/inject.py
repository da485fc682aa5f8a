"""Insert PEFT modules into a Hugging Face backbone's layers, in place.

This is the one place that wires modules into a layer. Where each family keeps its layers and
projections is in :mod:`autopeft.peft.families`. Encoder layers take every module and must
expose the BERT names used below (``attention.self.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense``, ``output.{dense,dropout,LayerNorm}``);
decoder layers take LoRA (on the projections their family names), serial and parallel adapters
around their MLP and prefix-tuning in their attention (:mod:`autopeft.peft.decoder_layers`, at the
paths their family names), and the configuration checks
(:func:`~autopeft.peft.config.validate_spec`) refuse the other modules before this runs.
"""

from __future__ import annotations

from torch import nn

from autopeft.errors import ConfigError
from autopeft.peft.adamix import AdaMixFeedForwardOutput, MixtureOfAdapters
from autopeft.peft.adapters import AdaptedFeedForwardOutput, Bottleneck, bottleneck_init
from autopeft.peft.config import PeftSpec, spec_modules
from autopeft.peft.decoder_layers import DecoderAdaptedMLP, PrefixDecoderAttention, kv_shape
from autopeft.peft.families import SUPPORTED_MODEL_TYPES, check_decoder_modules, family_of
from autopeft.peft.gates import Gate, TokenMask
from autopeft.peft.lora import LoRALinear
from autopeft.peft.prefix import PrefixEncoder, PrefixSelfAttention
from autopeft.peft.switch import LayerSwitch

__all__ = ["SUPPORTED_MODEL_TYPES", "backbone_layers", "encoder_layers", "freeze", "inject_peft", "layer_switches"]


def _model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def backbone_layers(model: nn.Module) -> nn.ModuleList:
    """The Transformer layers of a supported base model (``encoder.layer``, ``layers``, ``h``).

    Raises:
        ConfigError: If the model is not of a supported family.

    """
    return model.get_submodule(family_of(_model_type(model)).layers)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The Transformer layers of a BERT-family encoder (``model.encoder.layer``).

    The exports and the Adaptable Adapters code know the encoder layout only, so a decoder is
    refused here with one line rather than failing on a missing ``attention.self``.

    Raises:
        ConfigError: If the model is not a supported encoder.

    """
    family = family_of(_model_type(model))
    if family.decoder:
        raise ConfigError(
            "this step supports encoder backbones only (bert, roberta); "
            f"the backbone is a {family.model_type!r} decoder"
        )
    return model.get_submodule(family.layers)


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_path, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)


def freeze(model: nn.Module) -> None:
    """Stop gradients for every existing parameter (modules added later stay trainable)."""
    for param in model.parameters():
        param.requires_grad_(False)


def inject_peft(model: nn.Module, spec: PeftSpec, tokens: TokenMask | None = None) -> PrefixEncoder | None:
    """Insert the modules of ``spec`` into ``model``'s layers.

    LoRA goes in first so that the adapter and prefix wrappers, which call the layer's
    projections, route through the LoRA-adapted ones. On a decoder the adapters wrap the
    layer's MLP and the prefix its attention (:mod:`autopeft.peft.decoder_layers`); the prefix
    then has the attention's key/value heads, not D_h. With ``spec.gated`` every module gets
    its own UniPELT gate (one per LoRA projection); with ``spec.layer_switch`` each layer's
    adapters get an Adaptable Adapters switch. With ``spec.adamix_experts`` the serial adapter
    is AdaMix's mixture of adapter experts (:mod:`autopeft.peft.adamix`).

    Args:
        model: A supported base model (e.g. ``BertModel``, ``LlamaModel``); modified in place.
        spec: A validated configuration.
        tokens: The padding-mask holder the gates average over (see :mod:`autopeft.peft.gates`).

    Returns:
        The shared prefix encoder when prefix-tuning is on (the caller owns it so that its
        parameters are registered once), else None.

    """
    family = family_of(_model_type(model))
    if family.decoder:
        # validate_spec refuses these first; this guards callers that build a spec by hand.
        check_decoder_modules(spec_modules(spec), family.model_type, family.model_type)
    layers = backbone_layers(model)
    hidden = model.config.hidden_size
    active = spec.active_layers
    # A layer's prefix is as wide as its keys: D_h on encoders, kv_heads x head_dim under GQA.
    kv_heads, head_dim = kv_shape(model.config)
    prefix = (
        PrefixEncoder(len(active), spec.prefix_len, hidden, spec.prefix_bottleneck, kv_width=kv_heads * head_dim)
        if spec.prefix_len and active
        else None
    )

    def gate() -> Gate | None:
        return Gate(hidden, tokens) if spec.gated else None

    for slot, index in enumerate(active):
        layer = layers[index]
        if spec.lora_on:
            # active_layers holds every layer of spec.layers where some projection has a rank > 0; each
            # projection takes its own rank from lora_rank_pattern (0 leaves it alone, so a layer whose
            # ranks are all 0 gets nothing) and the alpha of that rank under lora_alpha_rule.
            for target in spec.lora_targets:
                rank = spec.lora_rank_of(index, target)
                if not rank:
                    continue
                path = family.lora_targets[target]
                lora = LoRALinear(
                    layer.get_submodule(path),
                    rank,
                    spec.lora_alpha_of(rank),
                    spec.lora_dropout,
                    gate(),
                    use_dora=spec.use_dora,
                )
                _replace(layer, path, lora)
        if family.decoder:  # validated: no gates, switches or AdaMix on decoders
            if spec.sa_size or spec.pa_size:
                _replace(
                    layer,
                    family.mlp,
                    DecoderAdaptedMLP(
                        layer.get_submodule(family.mlp),
                        _adapter(spec, hidden, serial=True),
                        _adapter(spec, hidden, serial=False),
                        spec.pa_scale,
                    ),
                )
            if prefix is not None:
                attention = layer.get_submodule(family.attention)
                wrapped = PrefixDecoderAttention(attention, prefix, slot, kv_heads, head_dim, family.cache_arg)
                _replace(layer, family.attention, wrapped)
            continue
        if spec.adamix_experts:  # validated: a serial adapter only, no PA, gates or switches
            mixture = MixtureOfAdapters(
                hidden, spec.sa_size, spec.adamix_experts, spec.adamix_share_up, spec.adamix_share_down
            )
            layer.output = AdaMixFeedForwardOutput(layer.output, mixture)
        elif spec.sa_size or spec.pa_size:
            layer.output = AdaptedFeedForwardOutput(
                layer.output,
                _adapter(spec, hidden, serial=True),
                _adapter(spec, hidden, serial=False),
                spec.pa_scale,
                serial_gate=gate() if spec.sa_size else None,
                parallel_gate=gate() if spec.pa_size else None,
                switch=LayerSwitch(spec.switch_temperature) if spec.layer_switch else None,
                sa_placement=spec.sa_placement,
            )
        if prefix is not None:
            layer.attention.self = PrefixSelfAttention(layer.attention.self, prefix, slot, gate())
    return prefix


def _adapter(spec: PeftSpec, hidden: int, serial: bool) -> Bottleneck | None:
    """The serial (or parallel) adapter of one layer under ``spec``, or None when its size is 0."""
    size = spec.sa_size if serial else spec.pa_size
    if not size:
        return None
    return Bottleneck(hidden, size, spec.adapter_dropout, bottleneck_init(spec.adapter_init, serial=serial))


def layer_switches(model: nn.Module) -> dict[int, LayerSwitch]:
    """The Adaptable Adapters switches of an injected encoder, by layer index (empty if none)."""
    return {
        index: layer.output.switch
        for index, layer in enumerate(backbone_layers(model))
        if isinstance(getattr(layer, "output", None), AdaptedFeedForwardOutput) and layer.output.switch is not None
    }
