"""Backbone families: where each supported architecture keeps its layers and projections.

A family is a ``config.model_type`` of ``transformers``. Encoders (BERT, RoBERTa) take every
PEFT module; decoders (Llama, Qwen, Mistral, Gemma, GPT-2, GPT-NeoX) take the paper's serial
and parallel adapters and prefix-tuning (:mod:`autopeft.peft.decoder_layers`), LoRA and the task
head, and the other modules (UniPELT gates, layer switches, AdaMix) are refused with one line
naming the module, the family and what the family does take (:func:`check_decoder_modules`), so
a user never meets a traceback from a layer that has no ``attention.self``.

Adding a family means one :class:`Family` entry in :data:`FAMILIES`: the path of its layer
list in the base model (``AutoModel``), the paths of the projections LoRA may adapt and, for a
decoder, the paths of its attention and MLP modules and the name under which its layer passes
the key/value cache to the attention.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from autopeft.errors import ConfigError, allowed_list

#: LoRA targets of a BERT/RoBERTa layer, by config name (``peft.lora_targets``).
ENCODER_LORA_TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    }
)

# Llama-style layers (Llama, Qwen2/2.5/3, Mistral, Gemma 1-3): separate q/k/v/o projections and a
# gated MLP. The generic names keep the encoder's meaning (``intermediate`` widens, ``output``
# narrows) so that a space's ``lora_targets: [query, value]`` means the same on both kinds;
# ``gate`` is the gated MLP's extra projection, which encoders do not have.
_LLAMA_LORA_TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "intermediate": "mlp.up_proj",
        "output": "mlp.down_proj",
    }
)


#: LoRA projection groups (``peft.lora_rank_pattern`` keys ``attention`` and ``mlp``): every target
#: name of every family belongs to exactly one.
LORA_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "attention": ("query", "key", "value", "attention_output"),
        "mlp": ("gate", "intermediate", "output"),
    }
)


def lora_group_of(target: str) -> str:
    """The projection group (``attention`` or ``mlp``) of a LoRA target name."""
    for group, targets in LORA_GROUPS.items():
        if target in targets:
            return group
    raise ConfigError(f"LoRA target {target!r} is in no projection group; groups: {dict(LORA_GROUPS)}")


@dataclass(frozen=True)
class Family:
    """What the PEFT injection needs to know about one architecture.

    Attributes:
        model_type: The ``transformers`` ``config.model_type``.
        decoder: Whether it is a causal decoder (last-token head, decoder-only PEFT modules).
        layers: Dotted path of the layer list inside the base model (``AutoModel``).
        lora_targets: LoRA target name -> dotted path of the projection inside one layer.
        fused: Where query, key and value share one projection (so they cannot be adapted
            one by one), or None.
        attention: A decoder layer's attention module, which prefix-tuning wraps (decoders only).
        mlp: A decoder layer's feed-forward module, which the adapters wrap (decoders only).
        cache_arg: The keyword under which a decoder layer passes the key/value cache to its
            attention; the prefix goes in through it (:mod:`autopeft.peft.decoder_layers`).

    """

    model_type: str
    decoder: bool
    layers: str
    lora_targets: Mapping[str, str] = field(default_factory=dict)
    fused: str | None = None
    attention: str | None = None
    mlp: str | None = None
    cache_arg: str = "cache"


def _llama_like(model_type: str) -> Family:
    return Family(
        model_type, decoder=True, layers="layers", lora_targets=_LLAMA_LORA_TARGETS, attention="self_attn", mlp="mlp"
    )


#: Every supported family, encoders first (the order of the "supported families" lists).
FAMILIES: Mapping[str, Family] = MappingProxyType(
    {
        "bert": Family("bert", decoder=False, layers="encoder.layer", lora_targets=ENCODER_LORA_TARGETS),
        "roberta": Family("roberta", decoder=False, layers="encoder.layer", lora_targets=ENCODER_LORA_TARGETS),
        **{t: _llama_like(t) for t in ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text")},
        # GPT-2's projections are transformers' Conv1D (weight stored in x out), which LoRALinear takes.
        "gpt2": Family(
            "gpt2",
            decoder=True,
            layers="h",
            lora_targets={"attention_output": "attn.c_proj", "intermediate": "mlp.c_fc", "output": "mlp.c_proj"},
            fused="attn.c_attn",
            attention="attn",
            mlp="mlp",
        ),
        "gpt_neox": Family(
            "gpt_neox",
            decoder=True,
            layers="layers",
            lora_targets={
                "attention_output": "attention.dense",
                "intermediate": "mlp.dense_h_to_4h",
                "output": "mlp.dense_4h_to_h",
            },
            fused="attention.query_key_value",
            attention="attention",
            mlp="mlp",
            cache_arg="layer_past",
        ),
    }
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)
DECODER_MODEL_TYPES: tuple[str, ...] = tuple(t for t, f in FAMILIES.items() if f.decoder)

#: PEFT options that decoder layers cannot take yet, by what a message calls them.
DECODER_UNSUPPORTED: Mapping[str, str] = MappingProxyType(
    {
        "gated": "UniPELT gates",
        "layer_switch": "Adaptable Adapters' layer switches",
        "adamix": "AdaMix",
    }
)
#: What decoders take, for the messages of a PEFT configuration and of a search space.
_DECODER_SUPPORTED = (
    "serial and parallel adapters (peft=sa, peft=pa), prefix-tuning (peft=prefix), LoRA (peft=lora) "
    "and their combinations (e.g. peft=mam), full fine-tuning (peft=fft) and the task head alone (peft=head_only)"
)


DECODER_SPACE_SUPPORTED = (
    "spaces of serial and parallel adapters, prefix-tuning and LoRA, alone or combined (e.g. space=autopeft, "
    "space=lora)"
)


def family_of(model_type: str | None) -> Family:
    """The :class:`Family` of ``model_type``.

    Raises:
        ConfigError: If AutoPEFT does not support it, listing the supported families.

    """
    if model_type not in FAMILIES:
        raise ConfigError(
            f"backbone architecture {model_type!r} is not supported; supported families: "
            f"{allowed_list(SUPPORTED_MODEL_TYPES)} (add one in autopeft/peft/families.py)"
        )
    return FAMILIES[model_type]


def is_decoder(model_type: str | None) -> bool:
    """Whether ``model_type`` is a supported decoder family (False for encoders and unknowns)."""
    return model_type in FAMILIES and FAMILIES[model_type].decoder


def check_decoder_modules(
    modules: Iterable[str], model_type: str | None, backbone: str, *, supported: str = _DECODER_SUPPORTED
) -> None:
    """Refuse PEFT modules that decoder layers cannot take yet, in one line.

    Args:
        modules: Keys of :data:`DECODER_UNSUPPORTED` (and others, which pass) that a PEFT
            configuration or a search space uses.
        model_type: The backbone's family; encoders pass whatever the modules.
        backbone: The backbone config name, for the message.
        supported: What the message offers instead (a search space offers spaces).

    Raises:
        ConfigError: Naming the first unsupported module, the family and what it takes.

    """
    if not is_decoder(model_type):
        return
    for module in modules:
        if module in DECODER_UNSUPPORTED:
            raise ConfigError(
                f"{DECODER_UNSUPPORTED[module]}: not supported on decoder backbones yet (backbone {backbone!r} "
                f"is {model_type!r}); supported there: {supported}"
            )


def lora_targets_of(model_type: str | None) -> Mapping[str, str]:
    """LoRA target name -> projection path inside a layer, for ``model_type`` (encoders' when unknown)."""
    family = FAMILIES.get(model_type) if model_type is not None else None
    return family.lora_targets if family is not None else ENCODER_LORA_TARGETS


def check_lora_targets(targets: Iterable[str], model_type: str | None) -> None:
    """Refuse a LoRA target that ``model_type``'s layers do not have, in one line.

    Raises:
        ConfigError: Naming the first such target and the family's targets.

    """
    known = lora_targets_of(model_type)
    family = FAMILIES.get(model_type) if model_type is not None else None
    for target in targets:
        if target in known:
            continue
        if family is None or not family.decoder:
            raise ConfigError(f"peft.lora_targets has {target!r}; allowed: {allowed_list(known)}")
        why = ""
        if family.fused and target in ("query", "key", "value"):
            why = f" ({model_type} fuses query, key and value into one projection, {family.fused})"
        raise ConfigError(
            f"peft.lora_targets has {target!r}, which {model_type!r} layers do not have{why}; "
            f"allowed: {allowed_list(known)}"
        )
