"""Parameter accounting: the paper's count and the exact count of trainable tensors.

The paper (appendix A) counts 2 * D * D_h per inserted layer for serial and parallel
adapters and 2 * L_PT * D_h per inserted layer for prefix-tuning (the deployed prefix, not
the training-time MLP), and reports it as a percentage of the pretrained parameters. For
LoRA we count 2 * r * D_h per adapted projection in the same spirit. The exact count adds
what the formula leaves out: biases, the prefix embedding and MLP, LoRA factors of
non-square projections, and the task head (reported separately).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autopeft.peft import BackboneShape, PeftSpec


def paper_param_count(spec: PeftSpec, shape: BackboneShape, backbone_params: int) -> int:
    """The paper's count of fine-tuned parameters for ``spec`` (full fine-tuning: all of them)."""
    if spec.full_finetune:
        return backbone_params
    d_h = shape.hidden_size
    per_layer = 2 * spec.sa_size * d_h + 2 * spec.pa_size * d_h + 2 * spec.prefix_len * d_h
    if spec.lora_rank:
        per_layer += 2 * spec.lora_rank * d_h * len(spec.lora_targets)
    return per_layer * len(spec.active_layers)


def parameter_report(model: nn.Module, spec: PeftSpec, shape: BackboneShape, backbone_params: int) -> dict[str, Any]:
    """Both counts for a built :class:`~autopeft.model.AutoPeftModel`, as JSON-ready numbers.

    Keys:
        ``paper_params`` / ``paper_percent``: the paper's formula, % of ``backbone_params``.
        ``trainable_params`` / ``trainable_percent``: every tensor that trains, head included.
        ``trainable_peft_params``: trainable tensors outside the head (PEFT modules, or the
            whole encoder for full fine-tuning).
        ``head_params``: the task head.
        ``backbone_params``: the pretrained encoder (pooler included), the denominator.
    """
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in trainable)
    head_params = sum(p.numel() for p in trainable if id(p) in head_ids)
    paper = paper_param_count(spec, shape, backbone_params)
    return {
        "paper_params": paper,
        "paper_percent": 100.0 * paper / backbone_params,
        "trainable_params": trainable_params,
        "trainable_percent": 100.0 * trainable_params / backbone_params,
        "trainable_peft_params": trainable_params - head_params,
        "head_params": head_params,
        "backbone_params": backbone_params,
        "hidden_size": shape.hidden_size,
        "num_layers": shape.num_layers,
        "configuration": spec.describe(),
    }
