"""Natively written PEFT modules and their injection into encoder and decoder backbones.

Serial and parallel adapters, prefix-tuning, LoRA, UniPELT gates, Adaptable Adapters'
layer switches and AdaMix's mixtures of adapters.
"""

from autopeft.peft.config import BackboneShape, PeftSpec, describe_layers, peft_from_config, validate_spec
from autopeft.peft.families import DECODER_MODEL_TYPES, SUPPORTED_MODEL_TYPES
from autopeft.peft.inject import freeze, inject_peft, layer_switches

__all__ = [
    "DECODER_MODEL_TYPES",
    "SUPPORTED_MODEL_TYPES",
    "BackboneShape",
    "PeftSpec",
    "describe_layers",
    "freeze",
    "inject_peft",
    "layer_switches",
    "peft_from_config",
    "validate_spec",
]
