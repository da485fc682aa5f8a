"""The export as a Hugging Face ``peft`` adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).

``PeftModel.from_pretrained(base, folder)`` on the backbone loaded as a transformers task model
(``BertForSequenceClassification``, ``RobertaForMultipleChoice``, ``LlamaForSequenceClassification``,
...) predicts what the AutoPEFT export predicts. What maps, checked against peft 0.21.2
(``tuners/lora``, ``utils/other.py``, ``utils/save_and_load.py``) and tested by loading with it
(``tests/export/test_libraries.py``, ``tests/export/test_decoder_peft_export.py``):

* **LoRA** → ``LoraConfig``. Both compute ``W x + b + (alpha / r) B A dropout(x)`` with
  ``lora_A`` (r x in) and ``lora_B`` (out x r), no bias, no rsLoRA. ``target_modules`` lists each
  adapted projection by its path: from the encoder on BERT/RoBERTa
  (``encoder.layer.3.attention.self.query``), from the task model on decoders, base model prefix
  included (``model.layers.0.self_attn.q_proj``, GPT-2's ``transformer.h.0.attn.c_proj``,
  GPT-NeoX's ``gpt_neox.layers.0.attention.dense``). peft matches a list entry as a name suffix
  after a dot, so a full path picks exactly that module (the bare ``output.dense`` would also
  match ``attention.output.dense``), and the layers that have none are simply not listed.
  ``r`` / ``lora_alpha`` are the most common rank and alpha; every module that differs (per-layer
  and per-group ranks, ``lora_alpha_rule: rank_multiple``) gets an entry of ``rank_pattern`` /
  ``alpha_pattern``, keyed by its escaped path (peft matches those keys as regular expressions
  anchored at a dot). GPT-2's projections are transformers' ``Conv1D`` (weight in x out):
  ``fan_in_fan_out: true``, with the factors in the same (r x in, out x r) shapes.
* **DoRA** → ``use_dora: true``, each magnitude vector under peft's key
  ``<module>.lora_magnitude_vector``; the arithmetic is peft's (:mod:`autopeft.peft.lora`),
  ``Conv1D`` included.
* **The task head** → the task model's own head, listed in ``modules_to_save`` so that peft
  stores and restores it. An encoder's head is dense → tanh → dropout → out on the first token's
  state (``cls`` pooling). That is BERT's pooler (dense + tanh) then ``classifier`` in
  ``BertForSequenceClassification`` / ``BertForMultipleChoice``, RoBERTa's ``classifier.dense``
  / ``classifier.out_proj`` in ``RobertaForSequenceClassification`` (its dropout before the
  dense layer is off at inference), and RoBERTa's pooler then ``classifier`` in
  ``RobertaForMultipleChoice``. Multiple-choice models get ``task_type`` null: peft has no
  multiple-choice task type, and its plain ``PeftModel`` passes inputs to the task model. A
  decoder's head (``LastTokenHead.score``, bias-free, on the last real token) is the
  ``score`` of the family's ``*ForSequenceClassification``, which reads the last token whose id
  is not ``config.pad_token_id``: the same token under right padding as long as the pad id
  never occurs inside a real sequence, which is checked on the tokenizer (a tokenizer that pads
  with an EOS it also appends is refused). The pad id is recorded (``pad_token_id`` in the
  manifest's ``libraries.peft``): load the task model with it, as the model card shows, since a
  hub config may have none (Llama's).

* **Generation** (decoders) → ``task_type: "CAUSAL_LM"`` on the family's ``*ForCausalLM``
  (``AutoModelForCausalLM``), whose LM head is AutoPEFT's (:mod:`autopeft.training.lm_head`):
  the same matrix, and Gemma 2's ``final_logit_softcapping`` applied in the same place, by its
  ``forward``. The target paths are those of sequence classification: every ``*ForCausalLM`` keeps
  its base model under the same attribute (``model``, ``transformer``, ``gpt_neox``). A head tied
  to the input embeddings is the base model's own, so nothing more is saved. An untied head
  goes to ``modules_to_save`` (``lm_head`` in every family: transformers 5 renamed GPT-NeoX's
  ``embed_out``) when AutoPEFT built it, i.e. when ``AutoModelForCausalLM.from_pretrained``
  would not give it: the seeded fresh head of a random-weight backbone or of a checkpoint saved
  without one, or a head that trained (full fine-tuning, which peft refuses anyway). An untied
  head read frozen from the checkpoint is what ``from_pretrained`` loads, and is not copied. The
  manifest records the class (``model_class``, ``auto_class``), whether the head travels
  (``lm_head_saved``) and how AutoPEFT decodes (:func:`generation_details`). Position ids: AutoPEFT
  counts real tokens only; ``from_pretrained``'s model numbers 0..T-1, the same on right-padded
  real tokens, and ``generate`` numbers left-padded prompts by their real tokens as AutoPEFT's
  greedy decoding does.

What does not map (the export then holds no ``peft/`` folder, see :func:`peft_folder`):

* **prefix-tuning**: peft hands prefixes to the model as a key/value cache (``past_key_values``).
  The model then numbers the real tokens' positions from L_PT (BERT's
  ``position_ids[:, cache_length:]``, RoBERTa's padding-aware positions plus the cache length, a
  decoder's rotary or learned positions after the cache), while AutoPEFT's prefix keys and values
  take no positions, so the predictions differ; and with transformers 5 peft's
  sequence-classification prefix path refuses BERT-family models outright ("Model does not
  support past key values"), their ``forward`` taking ``cache``. Storing the computed prefix
  table (``prefix_projection=False``) changes neither.
* **serial and parallel adapters** (AdaMix's included) and **Adaptable Adapters' switches**:
  peft has no bottleneck adapters;
* **UniPELT gates**: peft's LoRA has no gate;
* **mean pooling** (sentence-transformers backbones such as the embedded MiniLM, or a decoder
  with ``pooling: mean``): transformers' task heads read the first (encoders) or last (decoders)
  token;
* **multiple choice on a decoder**: transformers has no ``*ForMultipleChoice`` for decoders;
* **full fine-tuning** and **head-only** models: there is no adapter to write (the merged export,
  :mod:`autopeft.export.merged_format`, writes them as plain transformers folders).
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
import transformers

from autopeft.data.generation import eos_id, special_prefix
from autopeft.export.library import LibraryFolder, LoraSite, NotExpressible, cpu_tensor, lora_sites, safetensors_bytes
from autopeft.peft import PeftSpec
from autopeft.tasks.spec import TaskSpec
from autopeft.training.lm_head import _untied_weight
from autopeft.training.model import AutoPeftModel

#: The peft version this format was written against and tested with.
PEFT_VERSION_TESTED = "0.21.2"

#: Backbone sources whose ``name_or_path`` transformers' ``from_pretrained`` reads as it is.
_LOADABLE_SOURCES = ("hub", "path", "auto")

#: (model_type, multiple choice) -> (task model class, head module paths saved by peft, tensor map).
#: The tensor map sends AutoPEFT head tensors to the task model's parameter names; ``{base}`` is
#: the encoder's attribute (``bert``/``roberta``).
_HEADS: dict[tuple[str, bool], tuple[str, list[str], dict[str, str]]] = {
    ("bert", False): (
        "BertForSequenceClassification",
        ["pooler", "classifier"],
        {"dense": "{base}.pooler.dense", "out": "classifier"},
    ),
    ("bert", True): (
        "BertForMultipleChoice",
        ["pooler", "classifier"],
        {"dense": "{base}.pooler.dense", "out": "classifier"},
    ),
    ("roberta", False): (
        "RobertaForSequenceClassification",
        ["classifier"],
        {"dense": "classifier.dense", "out": "classifier.out_proj"},
    ),
    ("roberta", True): (
        "RobertaForMultipleChoice",
        ["pooler", "classifier"],
        {"dense": "{base}.pooler.dense", "out": "classifier"},
    ),
    # Decoders: the family's sequence-classification model, whose bias-free ``score`` reads the last
    # non-pad token (AutoModelForSequenceClassification picks these classes from config.model_type).
    **{
        (model_type, False): (model_class, ["score"], {"score": "score"})
        for model_type, model_class in {
            "llama": "LlamaForSequenceClassification",
            "qwen2": "Qwen2ForSequenceClassification",
            "qwen3": "Qwen3ForSequenceClassification",
            "mistral": "MistralForSequenceClassification",
            "gemma": "GemmaForSequenceClassification",
            "gemma2": "Gemma2ForSequenceClassification",
            "gemma3_text": "Gemma3TextForSequenceClassification",
            "gpt2": "GPT2ForSequenceClassification",
            "gpt_neox": "GPTNeoXForSequenceClassification",
        }.items()
    },
}

#: Decoder family (``config.model_type``) -> its causal-LM model, which a generation export loads as
#: (``AutoModelForCausalLM`` picks the same class from ``config.model_type``).
_CAUSAL_LMS: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
}

#: In a head map, the key that stands for the head module itself (an untied LM head's matrix).
LM_HEAD = ""

#: Every key of a peft checkpoint starts with this (the PeftModel's ``base_model.model``).
_KEY_PREFIX = "base_model.model."


def _module_parts(spec: PeftSpec) -> list[str]:
    """The modules of ``spec`` peft has no faithful equivalent for."""
    parts = []
    if spec.prefix_len:
        parts.append(
            "prefix-tuning (peft passes prefixes as a key/value cache, which shifts the real tokens' positions "
            "by the prefix length; with transformers 5 its prefix path refuses BERT-family models)"
        )
    if spec.sa_size:
        parts.append(("AdaMix " if spec.adamix_experts else "") + "serial adapters (peft has no bottleneck adapters)")
    if spec.pa_size:
        parts.append("parallel adapters (peft has no bottleneck adapters)")
    if spec.gated:
        parts.append("UniPELT gates (peft's LoRA has no gate)")
    if spec.layer_switch:
        parts.append("Adaptable Adapters' layer switches")
    return parts


def task_model_parts(model: AutoPeftModel, multiple_choice: bool, tokenizer: Any) -> list[str]:
    """What keeps ``model``'s head from being its family's transformers task model (empty when nothing).

    Shared by the peft folder and the merged export (:mod:`autopeft.export.merged_format`), which
    both load as that task model.

    Args:
        model: The trained model.
        multiple_choice: Whether its task is multiple choice.
        tokenizer: The tokenizer training used (a decoder's pad token is checked on it).

    """
    model_type = model.encoder.config.model_type
    if model.task_type == "generation":
        # The causal LM reads every position and finds nothing by the pad id: only the class matters.
        return [] if model_type in _CAUSAL_LMS else [f"generation on the {model_type!r} architecture"]
    parts = []
    expected = "last" if model.decoder else "cls"
    if model.head.pooling != expected:
        parts.append(
            f"{model.head.pooling} pooling in the head (transformers' task heads read the "
            f"{'last real' if model.decoder else 'first'} token)"
        )
    if (model_type, multiple_choice) not in _HEADS:
        if model.decoder and multiple_choice:
            parts.append(
                f"multiple choice on a {model_type!r} decoder (transformers has no decoder *ForMultipleChoice)"
            )
        else:
            parts.append(f"the {model_type!r} architecture")
    if model.decoder:
        parts.extend(_pad_parts(tokenizer))
    return parts


def _pad_parts(tokenizer: Any) -> list[str]:
    """Why transformers' decoder heads would not find AutoPEFT's last real token (empty when they would).

    They take the last token whose id is not the pad id; AutoPEFT takes the last token of the
    attention mask. Under right padding both are the same token unless the pad id also occurs in
    real sequences (a tokenizer that pads with the EOS it appends to every sequence).
    """
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        return ["a decoder tokenizer without a pad token (transformers' decoder heads find the last real token by it)"]
    real = tokenizer("a b", "c")["input_ids"] + tokenizer("a b")["input_ids"]
    if pad in real:
        return [
            f"a tokenizer whose pad token (id {pad}, {tokenizer.pad_token!r}) also occurs in real sequences, as an "
            "EOS that pads does: transformers' decoder heads read the last token that is not the pad token, "
            "AutoPEFT's head the last one of the attention mask"
        ]
    return []


def _unsupported(model: AutoPeftModel, sites: list[LoraSite], multiple_choice: bool, tokenizer: Any) -> list[str]:
    """The parts of ``model`` peft has no faithful equivalent for (empty when it has one for all)."""
    spec = model.spec
    parts = ["full fine-tuning (every backbone weight trains; peft stores adapters)"] if spec.full_finetune else []
    parts.extend(_module_parts(spec))
    if not parts and not sites:
        parts.append("no PEFT module (a head-only model has no adapter to write)")
    return parts + task_model_parts(model, multiple_choice, tokenizer)


def _paths(model: AutoPeftModel, sites: list[LoraSite]) -> dict[LoraSite, str]:
    """Each site's ``target_modules`` entry: from the encoder on BERT/RoBERTa, from the task model on decoders."""
    prefix = f"{model.encoder.base_model_prefix}." if model.decoder else ""
    return {site: prefix + site.module_path for site in sites}


def _lora_config(model: AutoPeftModel, sites: list[LoraSite]) -> dict[str, Any]:
    """``LoraConfig`` fields for ``sites``: exact module paths, the common rank/alpha, the exceptions."""
    paths = _paths(model, sites)
    rank = Counter(site.rank for site in sites).most_common(1)[0][0]
    alpha = Counter(site.alpha for site in sites).most_common(1)[0][0]
    return {
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": float(model.spec.lora_dropout),
        "target_modules": sorted(paths.values()),
        "rank_pattern": {re.escape(paths[s]): s.rank for s in sites if s.rank != rank},
        "alpha_pattern": {re.escape(paths[s]): s.alpha for s in sites if s.alpha != alpha},
        "layers_to_transform": None,
        "layers_pattern": None,
        "bias": "none",
        # One flag for every module: GPT-2's projections are all Conv1D, no other family has any.
        "fan_in_fan_out": any(site.module.fan_in_fan_out for site in sites),
        "use_rslora": False,
        "use_dora": any(site.module.use_dora for site in sites),
        "init_lora_weights": True,
    }


def _tensors(model: AutoPeftModel, sites: list[LoraSite], head_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The checkpoint: LoRA factors, DoRA magnitudes and head weights under peft's own key names."""
    base = model.encoder.base_model_prefix
    tensors = {}
    for site in sites:
        stem = f"{_KEY_PREFIX}{base}.{site.module_path}"
        tensors[f"{stem}.lora_A.weight"] = cpu_tensor(site.module.lora_a)
        tensors[f"{stem}.lora_B.weight"] = cpu_tensor(site.module.lora_b)
        if site.module.lora_magnitude is not None:
            tensors[f"{stem}.lora_magnitude_vector"] = cpu_tensor(site.module.lora_magnitude)
    tensors.update(head_tensors(model, head_map, _KEY_PREFIX))
    return tensors


def head_tensors(model: AutoPeftModel, head_map: Mapping[str, str], prefix: str = "") -> dict[str, torch.Tensor]:
    """The head's tensors under the task model's names (``prefix`` + ``classifier.weight``, ``lm_head.weight``, ...).

    A key :data:`LM_HEAD` of ``head_map`` is the head itself: an untied LM head's matrix, which has no bias.
    """
    base = model.encoder.base_model_prefix
    tensors = {}
    for ours, theirs in head_map.items():
        stem = prefix + theirs.format(base=base)
        if ours == LM_HEAD:
            tensors[f"{stem}.weight"] = cpu_tensor(model.head.matrix())
            continue
        linear = getattr(model.head, ours)
        tensors[f"{stem}.weight"] = cpu_tensor(linear.weight)
        if linear.bias is not None:  # a decoder's score has none
            tensors[f"{stem}.bias"] = cpu_tensor(linear.bias)
    return tensors


def _causal_lm_of(model: AutoPeftModel) -> tuple[str, str]:
    """``(class name, LM head path)`` of the family's causal LM, read off one built on the meta device.

    The head's path is the module ``get_output_embeddings`` returns (``lm_head`` in every family
    transformers 5 has; GPT-NeoX's ``embed_out`` is renamed when its checkpoints load). The base
    model must sit under the attribute ``base_model_prefix`` names, as the LoRA target paths assume.
    """
    config = model.encoder.config
    model_class = _CAUSAL_LMS[str(config.model_type)]
    with torch.device("meta"):
        causal = getattr(transformers, model_class)(copy.deepcopy(config))
    base = getattr(causal, model.encoder.base_model_prefix, None)
    if type(base) is not type(model.encoder):
        raise ValueError(
            f"{model_class} does not hold a {type(model.encoder).__name__} at .{model.encoder.base_model_prefix}"
        )
    head = causal.get_output_embeddings()
    return model_class, next(name for name, module in causal.named_modules() if module is head)


def task_model_of(model: AutoPeftModel, task: TaskSpec) -> tuple[str, list[str], dict[str, str]]:
    """(task model class, head modules, head tensor map) of ``model`` on ``task`` (see :data:`_HEADS`).

    A generation model's task model is its family's causal LM. Its head module is listed, and
    mapped, when the head is untied (a tied head is the input embedding matrix the base model
    holds); :func:`peft_folder` then keeps it only when peft must restore it (:func:`saves_lm_head`).
    """
    if task.type == "generation":
        model_class, head = _causal_lm_of(model)
        if model.head.tied:
            return model_class, [], {}
        return model_class, [head], {LM_HEAD: head}
    return _HEADS[(str(model.encoder.config.model_type), task.type == "multiple_choice")]


def saves_lm_head(model: AutoPeftModel, backbone: Mapping[str, Any]) -> bool:
    """Whether an untied LM head differs from what ``AutoModelForCausalLM.from_pretrained`` of the backbone gives.

    It does when AutoPEFT built it, a fresh head drawn from :data:`~autopeft.training.lm_head.HEAD_SEED`
    (random-weight backbones, and checkpoints saved without a head, which ``from_pretrained`` would
    fill with other random values), and when it trained (full fine-tuning). A frozen head read from
    the checkpoint is the checkpoint's.
    """
    head = model.head
    if head.tied:
        return False
    if head.weight.requires_grad or backbone.get("source") not in _LOADABLE_SOURCES:
        return True
    # A checkpoint without a head got the seeded draw (lm_head.build_lm_head); a stored head never equals it.
    fresh = _untied_weight(model.encoder.config, head.weight)
    return bool(torch.equal(fresh, head.weight.detach()))


def num_labels_of(task: TaskSpec) -> int | None:
    """The task model's ``num_labels``: classes, 1 for regression, None for multiple choice (one score per choice)."""
    return {"classification": task.num_labels, "regression": 1}.get(task.type)


def peft_folder(
    model: AutoPeftModel, task: TaskSpec, backbone: Mapping[str, Any], tokenizer: Any = None
) -> LibraryFolder:
    """The peft adapter folder of ``model`` (see the module docstring for what maps how).

    Args:
        model: The trained model.
        task: Its task (the head's kind: classification, regression, multiple choice or generation).
        backbone: The backbone config node (its hub id or path becomes ``base_model_name_or_path``;
            its source tells whether a generation model's untied LM head is the checkpoint's).
        tokenizer: The tokenizer training used; needed for a decoder, whose pad token the task
            model must know (and, for generation, the EOS and the ids before each prompt).

    Returns:
        The folder's files and the facts its loading needs (``details``).

    Raises:
        NotExpressible: Naming every part of the configuration peft cannot represent.
        ValueError: On a decoder without ``tokenizer``.

    """
    if model.decoder and tokenizer is None:
        raise ValueError("peft_folder needs the tokenizer of a decoder (its pad token id goes into the export)")
    sites = lora_sites(model)
    multiple_choice = task.type == "multiple_choice"
    parts = _unsupported(model, sites, multiple_choice, tokenizer)
    if parts:
        raise NotExpressible(parts)
    model_class, modules_to_save, head_map = task_model_of(model, task)
    generation = task.type == "generation"
    if generation and not saves_lm_head(model, backbone):
        modules_to_save, head_map = [], {}  # the checkpoint's own head, which from_pretrained loads
    name_or_path = backbone.get("name_or_path") if backbone.get("source") in _LOADABLE_SOURCES else None
    config = {
        "peft_type": "LORA",
        # SEQ_CLS is peft's sequence-classification wrapper (regression included: one output);
        # CAUSAL_LM its causal-LM one, which passes generate() through.
        "task_type": "CAUSAL_LM" if generation else None if multiple_choice else "SEQ_CLS",
        "base_model_name_or_path": name_or_path,
        "revision": None,
        "inference_mode": True,
        **_lora_config(model, sites),
        # None, not []: peft's own configs write null for "no module to save".
        "modules_to_save": modules_to_save or None,
    }
    files = {
        "adapter_config.json": (json.dumps(config, indent=2) + "\n").encode("utf-8"),
        "adapter_model.safetensors": safetensors_bytes(_tensors(model, sites, head_map)),
    }
    details = {
        "model_class": model_class,
        "num_labels": num_labels_of(task),
        "base_model_name_or_path": name_or_path,
        "format_tested_with": f"peft {PEFT_VERSION_TESTED}",
        "lora_modules": len(sites),
        "use_dora": config["use_dora"],
    }
    if generation:
        # What the user loads the base as, and whether the adapter carries the LM head.
        details.update(auto_class="AutoModelForCausalLM", lm_head_saved=bool(head_map))
        details.update(generation_details(task, tokenizer))
    elif model.decoder:
        # The task model finds the last real token by this id; a hub config may lack it (Llama's).
        details["pad_token_id"] = int(tokenizer.pad_token_id)
    return LibraryFolder("peft", files, details)


def generation_details(task: TaskSpec, tokenizer: Any) -> dict[str, Any]:
    """What generating as AutoPEFT does needs besides the model: the manifest's facts for the model card.

    ``prompt_prefix_ids`` are the ids put before each prompt (a BOS), which is tokenised without
    special tokens (a tokenizer that appends EOS would otherwise end the prompt with it);
    ``max_new_tokens`` is the task's answer budget, EOS included; ``pad_token_id`` pads prompts on
    the left (the EOS when the tokenizer has no pad token, as AutoPEFT's collator pads).
    """
    eos = eos_id(tokenizer)
    pad = tokenizer.pad_token_id
    return {
        "pad_token_id": int(pad if pad is not None else eos),
        "eos_token_id": eos,
        "prompt_prefix_ids": special_prefix(tokenizer),
        "max_new_tokens": int(task.max_answer_tokens),
    }
