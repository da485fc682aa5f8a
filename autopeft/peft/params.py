"""Parameter accounting: the paper's count and the exact count of trainable tensors.

The paper (appendix A) counts 2 * D * D_h per inserted layer for serial and parallel
adapters and 2 * L_PT * D_h per inserted layer for prefix-tuning (the deployed prefix, not
the training-time MLP), and reports it as a percentage of the pretrained parameters. For
LoRA we count 2 * r * D_h per adapted projection in the same spirit (on a decoder too, where a
key/value projection under grouped-query attention or an MLP projection is not square: the
exact count holds their true widths). Prefix-tuning on a decoder keeps the formula's
2 * L_PT * D_h too, although under grouped-query attention its deployed keys and values are
narrower (2 * L_PT * kv_heads * head_dim: half of it on the tiny GQA configs, 2/14 of it on
Qwen2.5-0.5B), so that one formula prices every backbone's points alike; the exact count follows
the real tensors. The exact count adds
what the formula leaves out: biases, the prefix embedding and MLP, LoRA factors of
non-square projections, and the task head (reported separately).

Gates and switches are outside the paper's count, like biases: it stays the module formula,
so that the baselines are priced the way the search space prices its points. UniPELT's gates
(D_h + 1 each: one per adapter, one per prefix-tuned layer, one per LoRA projection) and
Adaptable Adapters' switches (2 logits per layer) are in the exact count and also reported on
their own (``gate_params``, ``switch_params``). For an Adaptable Adapters spec with
``adaptable_layers: k`` the paper count is that of the model it deploys, the adapters of the
k selected layers; the exact count is that of the stage-1 model, which trains adapters and
switches in every candidate layer.

AdaMix (``adamix_experts`` = M) trains M adapter experts per layer but deploys one: at
inference the experts are averaged into a single adapter of bottleneck ``sa_size``
(:mod:`autopeft.peft.adamix`). The paper count is therefore that of the deployed adapter,
2 * D * D_h per layer like any serial adapter (the AdaMix paper's own accounting: AdaMix
"matches the same computational cost and the number of tunable parameters as the underlying
PEFT method", its abstract says); the exact count is what trains,
every expert included (M down-projections and one shared up-projection in the preset).
``adamix_params`` reports the experts on their own and ``adamix_deployed_params`` the merged
adapters with their biases.

DoRA (``use_dora``) adds to each adapted projection a magnitude vector, one value per output
feature of that projection (its true width: a grouped-query key/value projection's is narrower
than D_h, an MLP up-projection's wider). The paper count leaves the magnitudes out, as it leaves
out biases: it stays 2 r D_h per projection, so LoRA and DoRA of the same ranks are priced
alike. The exact count holds them (they train), and ``dora_params`` reports them on their own
(with DoRA alone, the low-rank factors are ``trainable_peft_params - dora_params``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autopeft.peft import BackboneShape, PeftSpec
from autopeft.peft.adamix import MixtureOfAdapters, mixtures
from autopeft.peft.gates import Gate
from autopeft.peft.lora import LoRALinear
from autopeft.peft.switch import LayerSwitch


def paper_param_count(spec: PeftSpec, shape: BackboneShape, backbone_params: int) -> int:
    """The paper's count of fine-tuned parameters for ``spec`` (full fine-tuning: all of them)."""
    if spec.full_finetune:
        return backbone_params
    d_h = shape.hidden_size
    per_layer = 2 * spec.sa_size * d_h + 2 * spec.pa_size * d_h + 2 * spec.prefix_len * d_h
    layers = len(spec.active_layers) if per_layer else 0
    if spec.layer_switch and spec.adaptable_layers and layers:
        layers = spec.adaptable_layers  # the budget after selection, not the stage-1 candidates
    # LoRA: 2 r D_h per adapted projection, each with its own rank (lora_rank_pattern). DoRA's
    # magnitude vectors are outside the formula, like biases; the exact count has them.
    lora = sum(2 * rank * d_h for rank in spec.lora_ranks().values())
    return per_layer * layers + lora


def _params_of(model: nn.Module, kind: type[nn.Module]) -> int:
    """Trainable parameters inside modules of type ``kind`` (gates, switches)."""
    return sum(p.numel() for m in model.modules() if isinstance(m, kind) for p in m.parameters() if p.requires_grad)


def parameter_report(model: nn.Module, spec: PeftSpec, shape: BackboneShape, backbone_params: int) -> dict[str, Any]:
    """Both counts for a built :class:`~autopeft.training.model.AutoPeftModel`, as JSON-ready numbers.

    Keys:
        ``paper_params`` / ``paper_percent``: the paper's formula, % of ``backbone_params``.
        ``trainable_params`` / ``trainable_percent``: every tensor that trains, head included.
        ``trainable_peft_params``: trainable tensors outside the head (PEFT modules, or the
            whole encoder for full fine-tuning).
        ``head_params``: the task head.
        ``backbone_params``: the pretrained encoder (pooler included), the denominator.
        ``gate_params`` / ``switch_params``: UniPELT gates and layer switches, only when the
            spec has them (included in the trainable counts, not in the paper's).
        ``adamix_params`` / ``adamix_deployed_params``: with AdaMix, every trained expert (in
            the trainable counts) and the merged adapters inference uses (biases included).
        ``dora_params``: with DoRA, the magnitude vectors (one value per output feature of each
            adapted projection; in the trainable counts, not in the paper's).
        ``model_type``, ``num_heads``, ``num_kv_heads``, ``intermediate_size``: a decoder's
            family, attention and MLP shape (decoders only).
    """
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in trainable)
    head_params = sum(p.numel() for p in trainable if id(p) in head_ids)
    paper = paper_param_count(spec, shape, backbone_params)
    extras = {}
    if spec.gated:
        extras["gate_params"] = _params_of(model, Gate)
    if spec.layer_switch:
        extras["switch_params"] = _params_of(model, LayerSwitch)
    if spec.adamix_experts:
        extras["adamix_params"] = _params_of(model, MixtureOfAdapters)
        extras["adamix_deployed_params"] = sum(m.deployed_params() for m in mixtures(model))
    if spec.use_dora:
        extras["dora_params"] = sum(
            m.lora_magnitude.numel()
            for m in model.modules()
            if isinstance(m, LoRALinear) and m.lora_magnitude is not None and m.lora_magnitude.requires_grad
        )
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
        **_decoder_shape(shape),
        "configuration": spec.describe(),
        **extras,
    }


def _decoder_shape(shape: BackboneShape) -> dict[str, Any]:
    """A decoder's attention and MLP shape, which its LoRA counts depend on (nothing for encoders).

    Under grouped-query attention the key and value projections are narrower than D_h
    (``num_kv_heads`` x head size), so their LoRA factors are smaller than the paper's square
    2 r D_h; the report says the shape that the exact count follows.
    """
    if not shape.is_decoder:
        return {}
    return {
        "model_type": shape.model_type,
        "num_heads": shape.num_heads,
        "num_kv_heads": shape.kv_heads,
        "intermediate_size": shape.intermediate_size,
    }
