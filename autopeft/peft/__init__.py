"""Natively written PEFT modules and their injection into BERT-family encoders.

Serial and parallel adapters, prefix-tuning, LoRA, UniPELT gates, Adaptable Adapters'
layer switches and AdaMix's mixtures of adapters.
"""

from autopeft.peft.config import BackboneShape, PeftSpec, describe_layers, peft_from_config, validate_spec
from autopeft.peft.inject import SUPPORTED_MODEL_TYPES, freeze, inject_peft, layer_switches

__all__ = [
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
