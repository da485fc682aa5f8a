"""Natively written PEFT modules (serial/parallel adapters, prefix-tuning, LoRA) and their injection."""

from autopeft.peft.config import BackboneShape, PeftSpec, describe_layers, peft_from_config, validate_spec
from autopeft.peft.inject import SUPPORTED_MODEL_TYPES, freeze, inject_peft

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "BackboneShape",
    "PeftSpec",
    "describe_layers",
    "freeze",
    "inject_peft",
    "peft_from_config",
    "validate_spec",
]
