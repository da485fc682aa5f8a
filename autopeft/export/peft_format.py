"""The export as a Hugging Face ``peft`` adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).

``PeftModel.from_pretrained(base, folder)`` on the backbone loaded as a transformers task model
(``BertForSequenceClassification``, ``RobertaForMultipleChoice``, ...) predicts what the AutoPEFT
export predicts. What maps, checked against peft 0.21.2 (``tuners/lora``, ``utils/other.py``,
``utils/save_and_load.py``) and tested by loading with it (``tests/export/test_libraries.py``):

* **LoRA** → ``LoraConfig``. Both compute ``W x + b + (alpha / r) B A dropout(x)`` with
  ``lora_A`` (r x in) and ``lora_B`` (out x r), no bias, no rsLoRA. ``target_modules`` lists each
  adapted projection by its path from the encoder (``encoder.layer.3.attention.self.query``):
  peft matches a list entry as a name suffix after a dot, so a full path picks exactly that
  module (the bare ``output.dense`` would also match ``attention.output.dense``), and the
  layers that have none are simply not listed. ``r`` / ``lora_alpha`` are the most common
  rank and alpha; every module that differs gets an entry of ``rank_pattern`` /
  ``alpha_pattern``, keyed by its escaped path (peft matches those keys as regular
  expressions anchored at a dot).
* **The task head** → the task model's own head, listed in ``modules_to_save`` so that peft
  stores and restores it. AutoPEFT's head is dense → tanh → dropout → out on the first token's
  state (``cls`` pooling). That is BERT's pooler (dense + tanh) then ``classifier`` in
  ``BertForSequenceClassification`` / ``BertForMultipleChoice``, RoBERTa's ``classifier.dense``
  / ``classifier.out_proj`` in ``RobertaForSequenceClassification`` (its dropout before the
  dense layer is off at inference), and RoBERTa's pooler then ``classifier`` in
  ``RobertaForMultipleChoice``. Multiple-choice models get ``task_type`` null: peft has no
  multiple-choice task type, and its plain ``PeftModel`` passes inputs to the task model.

What does not map (the export then holds no ``peft/`` folder, see :func:`peft_folder`):

* **prefix-tuning**: peft hands prefixes to the model as a key/value cache (``past_key_values``).
  A BERT/RoBERTa encoder then numbers the real tokens' positions from L_PT
  (``BertEmbeddings``: ``position_ids[:, cache_length:]``; RoBERTa adds the cache length to its
  padding-aware positions), while AutoPEFT's prefix keys and values take no positions, so the
  predictions differ; and with transformers 5 peft's sequence-classification prefix path
  refuses BERT-family models outright ("Model does not support past key values"), their
  ``forward`` taking ``cache``. Storing the computed prefix table (``prefix_projection=False``)
  changes neither.
* **serial and parallel adapters** (AdaMix's included) and **Adaptable Adapters' switches**:
  peft has no bottleneck adapters;
* **UniPELT gates**: peft's LoRA has no gate;
* **mean pooling** (sentence-transformers backbones such as the embedded MiniLM): transformers'
  task heads read the first token;
* **full fine-tuning** and **head-only** models: there is no adapter to write.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

from autopeft.export.library import LibraryFolder, LoraSite, NotExpressible, cpu_tensor, lora_sites, safetensors_bytes
from autopeft.tasks.spec import TaskSpec
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
}

#: Every key of a peft checkpoint starts with this (the PeftModel's ``base_model.model``).
_KEY_PREFIX = "base_model.model."


def _unsupported(model: AutoPeftModel, sites: list[LoraSite]) -> list[str]:
    """The parts of ``model`` peft has no faithful equivalent for (empty when it has one for all)."""
    spec = model.spec
    parts = []
    if spec.full_finetune:
        parts.append("full fine-tuning (every backbone weight trains; peft stores adapters)")
    if spec.prefix_len:
        parts.append(
            "prefix-tuning (peft passes prefixes as a key/value cache, which shifts BERT/RoBERTa position ids "
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
    if not parts and not sites:
        parts.append("no PEFT module (a head-only model has no adapter to write)")
    if model.head.pooling != "cls":
        parts.append(f"{model.head.pooling} pooling in the head (transformers' task heads read the first token)")
    if model.encoder.config.model_type not in {key[0] for key in _HEADS}:
        parts.append(f"the {model.encoder.config.model_type!r} architecture")
    return parts


def _lora_config(sites: list[LoraSite], dropout: float) -> dict[str, Any]:
    """``LoraConfig`` fields for ``sites``: exact module paths, the common rank/alpha, the exceptions."""
    paths = {site: f"encoder.layer.{site.layer}.{site.path}" for site in sites}
    rank = Counter(site.rank for site in sites).most_common(1)[0][0]
    alpha = Counter(site.alpha for site in sites).most_common(1)[0][0]
    return {
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(paths.values()),
        "rank_pattern": {re.escape(paths[s]): s.rank for s in sites if s.rank != rank},
        "alpha_pattern": {re.escape(paths[s]): s.alpha for s in sites if s.alpha != alpha},
        "layers_to_transform": None,
        "layers_pattern": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
    }


def _tensors(model: AutoPeftModel, sites: list[LoraSite], head_map: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The checkpoint: LoRA factors and head weights under the names peft's ``save_pretrained`` gives them."""
    base = model.encoder.base_model_prefix
    tensors = {}
    for site in sites:
        stem = f"{_KEY_PREFIX}{base}.encoder.layer.{site.layer}.{site.path}"
        tensors[f"{stem}.lora_A.weight"] = cpu_tensor(site.module.lora_a)
        tensors[f"{stem}.lora_B.weight"] = cpu_tensor(site.module.lora_b)
    for ours, theirs in head_map.items():
        linear = getattr(model.head, ours)
        stem = _KEY_PREFIX + theirs.format(base=base)
        tensors[f"{stem}.weight"] = cpu_tensor(linear.weight)
        tensors[f"{stem}.bias"] = cpu_tensor(linear.bias)
    return tensors


def peft_folder(model: AutoPeftModel, task: TaskSpec, backbone: Mapping[str, Any]) -> LibraryFolder:
    """The peft adapter folder of ``model`` (see the module docstring for what maps how).

    Args:
        model: The trained model.
        task: Its task (the head's kind: classification, regression or multiple choice).
        backbone: The backbone config node (its hub id or path becomes ``base_model_name_or_path``).

    Returns:
        The folder's files and the facts its loading needs (``details``).

    Raises:
        NotExpressible: Naming every part of the configuration peft cannot represent.

    """
    sites = lora_sites(model)
    parts = _unsupported(model, sites)
    if parts:
        raise NotExpressible(parts)
    model_type = str(model.encoder.config.model_type)
    multiple_choice = task.type == "multiple_choice"
    model_class, modules_to_save, head_map = _HEADS[(model_type, multiple_choice)]
    name_or_path = backbone.get("name_or_path") if backbone.get("source") in _LOADABLE_SOURCES else None
    config = {
        "peft_type": "LORA",
        # SEQ_CLS is peft's sequence-classification wrapper (regression included: one output).
        "task_type": None if multiple_choice else "SEQ_CLS",
        "base_model_name_or_path": name_or_path,
        "revision": None,
        "inference_mode": True,
        **_lora_config(sites, float(model.spec.lora_dropout)),
        "modules_to_save": modules_to_save,
    }
    # The task model's num_labels: classes, 1 for regression; a multiple-choice model scores each choice.
    num_labels = {"classification": task.num_labels, "regression": 1}.get(task.type)
    files = {
        "adapter_config.json": (json.dumps(config, indent=2) + "\n").encode("utf-8"),
        "adapter_model.safetensors": safetensors_bytes(_tensors(model, sites, head_map)),
    }
    details = {
        "model_class": model_class,
        "num_labels": num_labels,
        "base_model_name_or_path": name_or_path,
        "format_tested_with": f"peft {PEFT_VERSION_TESTED}",
        "lora_modules": len(sites),
    }
    return LibraryFolder("peft", files, details)
