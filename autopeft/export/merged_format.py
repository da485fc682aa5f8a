"""The export as merged weights: a plain transformers task-model folder with LoRA/DoRA folded in.

``AutoModelForSequenceClassification.from_pretrained(folder)`` (``AutoModelForMultipleChoice``
for an encoder's multiple-choice task, ``AutoModelForCausalLM`` for a generation task) loads it
without peft or AutoPEFT and predicts what the AutoPEFT export predicts;
``AutoTokenizer.from_pretrained(folder)`` loads the tokenizer training used, saved beside it. It
is the same task model the peft folder loads into (:mod:`autopeft.export.peft_format`: BERT's
pooler and classifier, a decoder's ``score`` or causal-LM head), with
every adapted projection's weight replaced by its merged weight
(:meth:`~autopeft.peft.lora.LoRALinear.merged_weight`): W + (alpha / r) B A for LoRA,
(m / ||W + (alpha / r) B A||) (W + (alpha / r) B A) per output feature for DoRA, as peft's
``merge_and_unload`` computes them. Inference then costs what the backbone costs.

A generation run's folder is the family's causal LM instead (``AutoModelForCausalLM``): the
merged backbone and its LM head, written when it is untied (AutoPEFT's seeded fresh head of a
random-weight backbone, the checkpoint's, or a fully fine-tuned one) and tied to the merged input
embeddings otherwise. Its ``generation_config.json`` is AutoPEFT's decoding: greedy, at most the
task's ``max_answer_tokens`` new tokens, stopping at EOS, so ``model.generate(**inputs)`` writes
what the export's ``predict`` writes for the same prompt ids.

Full fine-tuning and head-only models merge too (their weights are the backbone's own plus the
head). What adds computation that no backbone weight can absorb does not: serial and parallel
adapters, prefix-tuning, UniPELT gates, Adaptable Adapters' switches. The config carries the
number of labels, the label names and, on a decoder, the tokenizer's pad token id, by which
transformers' decoder heads find the last real token.

Written into ``<export>/merged/`` by ``save_export(..., merged=True)``, or anywhere by
:func:`save_merged` (e.g. from a loaded export: ``save_merged(p.model, p.task, p.tokenizer, dir)``).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from autopeft.export.library import LibraryFolder, NotExpressible
from autopeft.export.peft_format import (
    generation_details,
    head_tensors,
    num_labels_of,
    task_model_of,
    task_model_parts,
)
from autopeft.peft.lora import LoRALinear
from autopeft.tasks.spec import TaskSpec
from autopeft.training.model import AutoPeftModel

#: The sub-folder of an export that holds the merged model.
MERGED_DIRNAME = "merged"


def _unmergeable(model: AutoPeftModel) -> list[str]:
    """The modules of ``model`` that are not a weight update of a backbone projection."""
    spec = model.spec
    modules = [
        name
        for name, on in (
            ("AdaMix serial adapters" if spec.adamix_experts else "serial adapters", spec.sa_size),
            ("parallel adapters", spec.pa_size),
            ("prefix-tuning", spec.prefix_len),
            ("UniPELT gates", spec.gated),
            ("Adaptable Adapters' layer switches", spec.layer_switch),
        )
        if on
    ]
    if not modules:
        return []
    return [
        f"{', '.join(modules)} (a merged model holds only the backbone's own weights, and these add computation "
        "that no backbone weight can absorb)"
    ]


def merged_state(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict with every LoRA/DoRA projection merged, under the pretrained names.

    A ``LoRALinear`` at ``layers.0.self_attn.q_proj`` contributes ``layers.0.self_attn.q_proj.weight``
    (merged) and its bias; its factors and magnitude are folded in, not listed.
    """
    loras = {name: module for name, module in encoder.named_modules() if isinstance(module, LoRALinear)}
    state = {}
    for key, value in encoder.state_dict().items():
        owner = next((name for name in loras if key.startswith(f"{name}.")), None)
        if owner is not None:
            rest = key[len(owner) + 1 :]
            if not rest.startswith("base."):
                continue  # lora_a, lora_b, lora_magnitude: folded into the weight
            rest = rest.removeprefix("base.")
            if rest == "weight":
                value = loras[owner].merged_weight()
            key = f"{owner}.{rest}"
        state[key] = value.detach().to("cpu", copy=True).contiguous()
    return state


def _task_config(
    model: AutoPeftModel, task: TaskSpec, model_class: str, tokenizer: Any, label_names: Sequence[str] | None
) -> Any:
    """The backbone's config made the task model's: class, labels, and a decoder's pad token id."""
    config = copy.deepcopy(model.encoder.config)
    config.architectures = [model_class]
    if task.type == "generation":
        # The causal LM reads no pad id; generate() pads prompts with it (the EOS when there is none).
        config.pad_token_id = generation_details(task, tokenizer)["pad_token_id"]
        return config
    num_labels = num_labels_of(task)
    if num_labels is not None:
        config.num_labels = num_labels
    if label_names and task.type == "classification":
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
    if model.decoder:
        config.pad_token_id = int(tokenizer.pad_token_id)
    return config


def _output_key(task_model: nn.Module) -> str:
    """The state-dict key of a causal LM's output matrix (``lm_head.weight``)."""
    head = task_model.get_output_embeddings()
    return next(name for name, module in task_model.named_modules() if module is head) + ".weight"


def _greedy_generation_config(task_model: Any, details: dict[str, Any]) -> None:
    """Make ``task_model.generate()``'s defaults AutoPEFT's decoding: greedy, the task's budget, EOS, pad."""
    generation = task_model.generation_config
    generation.do_sample = False
    generation.num_beams = 1
    generation.max_new_tokens = details["max_new_tokens"]
    generation.eos_token_id = details["eos_token_id"]
    generation.pad_token_id = details["pad_token_id"]


def merged_folder(
    model: AutoPeftModel, task: TaskSpec, tokenizer: Any, label_names: Sequence[str] | None = None
) -> LibraryFolder:
    """The merged export of ``model`` as a folder's files (see the module docstring).

    Args:
        model: The trained model.
        task: Its task.
        tokenizer: The tokenizer training used (saved with the model; a decoder's pad id is read from it).
        label_names: Class names by label id, for the config's ``id2label``.

    Returns:
        ``config.json``, ``model.safetensors`` and the tokenizer's files, with the facts loading needs.

    Raises:
        NotExpressible: Naming every part of the configuration a plain task model cannot hold.

    """
    multiple_choice = task.type == "multiple_choice"
    parts = _unmergeable(model) + task_model_parts(model, multiple_choice, tokenizer)
    if parts:
        raise NotExpressible(parts)
    generation = task.type == "generation"
    model_class, _, head_map = task_model_of(model, task)
    config = _task_config(model, task, model_class, tokenizer, label_names)
    base = model.encoder.base_model_prefix
    state = {f"{base}.{key}": value for key, value in merged_state(model.encoder).items()}
    state.update(head_tensors(model, head_map))
    # Built on the meta device (no second copy of the weights), then given the merged tensors.
    with torch.device("meta"):
        task_model = getattr(transformers, model_class)(config)
    if generation and model.head.tied:
        # The state holds the input embeddings once; tying points the LM head at them again.
        result = task_model.load_state_dict(state, strict=False, assign=True)
        if result.unexpected_keys or set(result.missing_keys) != {_output_key(task_model)}:
            raise RuntimeError(f"the merged state does not fit {model_class}: {result}")
        task_model.tie_weights()
    else:
        task_model.load_state_dict(state, strict=True, assign=True)
    if generation:
        _greedy_generation_config(task_model, generation_details(task, tokenizer))
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        task_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                files[path.relative_to(tmp).as_posix()] = path.read_bytes()
    auto_class = (
        "AutoModelForCausalLM"
        if generation
        else "AutoModelForMultipleChoice"
        if multiple_choice
        else "AutoModelForSequenceClassification"
    )
    details = {
        "model_class": model_class,
        "auto_class": auto_class,
        "num_labels": num_labels_of(task),
        "format_tested_with": f"transformers {transformers.__version__}",
        "merged_lora_modules": sum(isinstance(m, LoRALinear) for m in model.encoder.modules()),
    }
    if generation:
        details.update(generation_details(task, tokenizer))
    elif model.decoder:
        details["pad_token_id"] = config.pad_token_id
    return LibraryFolder(MERGED_DIRNAME, files, details)


def save_merged(
    model: AutoPeftModel, task: TaskSpec, tokenizer: Any, path: str | Path, label_names: Sequence[str] | None = None
) -> Path:
    """Write the merged export of ``model`` into the folder ``path`` (created) and return it.

    Raises:
        NotExpressible: As :func:`merged_folder`.

    """
    path = Path(path)
    for name, data in merged_folder(model, task, tokenizer, label_names).files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path
