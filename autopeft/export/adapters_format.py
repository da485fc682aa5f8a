"""The export in the format of AdapterHub's ``adapters`` library (what its ``save_adapter`` writes).

``model = BertAdapterModel.from_pretrained(...); model.load_adapter(folder, set_active=True)``
then predicts what the AutoPEFT export predicts. The folder holds ``adapter_config.json`` and
``pytorch_adapter.bin`` (the adapter) and ``head_config.json`` and ``pytorch_model_head.bin``
(the prediction head), under the names ``save_adapter(..., with_head=True)`` gives them. The
format was read from adapters 1.3.0 (``configuration/adapter_config.py``, ``methods/bottleneck.py``,
``methods/modeling.py``, ``methods/prefix_tuning.py``, ``methods/lora.py``, ``loading.py``,
``heads/base.py``) and is tested by loading it with that version in its own virtualenv (it pins
transformers 4.57, this package needs 5): ``tests/export/test_adapters_roundtrip.py``. Nothing
here imports ``adapters``.

What maps, with F the FFN, x its input, h = F(x) and LN the layer's output LayerNorm:

* **serial adapter** → ``SeqBnConfig`` (Pfeiffer): adapters computes LN(f(LN(h + x)) + h + x)
  with ``original_ln_before=True``, ``residual_before_ln=True``, ``original_ln_after=True``:
  AutoPEFT's ``pfeiffer`` wiring. AutoPEFT's ``houlsby`` wiring (the adapter reads h) is the same
  config with ``original_ln_before=False``; it is not adapters' ``DoubleSeqBnConfig``, which adds a
  second adapter after attention. f = up(ReLU(down(z))): ``non_linearity="relu"``, no extra
  LayerNorms, scaling 1.
* **parallel adapter** → ``ParBnConfig``: LN(h + s f(x) + x) with ``scaling`` = s.
* The bottleneck D is set through ``reduction_factor`` = D_h / D (adapters sizes it as
  ``int(D_h // reduction_factor)``; a factor that floating point would round down is nudged).
* **prefix-tuning** → ``PrefixTuningConfig``: the same reparameterisation (an L_PT x D_h
  embedding ``wte``, Linear → tanh → Linear to n_layers * 2 * D_h in ``control_trans``), the same
  split into layers, keys/values and heads, and prefixes that take no positions; the layers
  without a prefix are in ``leave_out`` and are not counted in n_layers, as in AutoPEFT.
* **LoRA** → ``LoRAConfig`` on ``q``/``k``/``v`` (``attn_matrices``), ``intermediate_lora`` and
  ``output_lora``, the update scaled by alpha / r like AutoPEFT's.
* **the task head** → a flex head with ``layers=2``, ``activation_function="tanh"``,
  ``use_pooler=False``: dropout → dense → tanh → dropout → out on the first token, AutoPEFT's
  ``cls`` head (dropout is off at inference); ``classification`` (``num_labels`` = 1 for
  regression) or ``multiple_choice``.
* Several of these together → one ``ConfigUnion`` under one adapter name, each part with its
  own ``leave_out``.

What does not map (the export then holds no ``adapters/`` folder, see :func:`adapters_folder`):

* **a serial and a parallel adapter together**: adapters allows one bottleneck adapter per
  location and adapter, and both sit on the FFN output (``ConfigUnion`` refuses ``SeqBnConfig``
  with ``ParBnConfig``; given ``leave_out`` it fails when the model is built: "Multiple adapter
  definitions conflict"). AutoPEFT's search space puts both in the same layers, so every
  SA + PA configuration is out; the AutoPEFT authors used a fork with an ``AutoPEFTConfig``.
* **LoRA on** ``attention.output.dense``: ``LoRAConfig`` has no such location;
* **LoRA ranks, alphas or targets that differ between layers**: one ``LoRAConfig`` has one of each;
* **UniPELT gates**: adapters' gates (``use_gating``) average over every position, padding
  included, AutoPEFT's over the real tokens only (:mod:`autopeft.peft.gates`), so a padded batch
  would score differently;
* **AdaMix** and **Adaptable Adapters' switches**: no equivalent;
* **mean pooling**: adapters' heads read the first token (or the pooler);
* **full fine-tuning** and **head-only** models: no adapter to write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autopeft.export.library import LibraryFolder, LoraSite, NotExpressible, cpu_tensor, lora_sites, torch_bytes
from autopeft.peft.inject import encoder_layers
from autopeft.peft.prefix import PrefixEncoder
from autopeft.tasks.spec import TaskSpec
from autopeft.training.model import AutoPeftModel

#: The adapters version this format was written against and tested with, and its transformers pin.
ADAPTERS_VERSION_TESTED = "1.3.0"
ADAPTERS_TRANSFORMERS = "4.57.6"

#: The name the adapter and its head carry (it is part of every tensor name).
ADAPTER_NAME = "autopeft"

#: Every field of adapters' ``BnConfig`` as its ``to_dict`` writes it, at ``SeqBnConfig``'s values.
_BN_FIELDS: dict[str, Any] = {
    "adapter_residual_before_ln": False,
    "cross_adapter": False,
    "dropout": 0.0,
    "factorized_phm_W": True,
    "factorized_phm_rule": False,
    "hypercomplex_nonlinearity": "glorot-uniform",
    "init_weights": "bert",
    "init_weights_seed": None,
    "inv_adapter": None,
    "inv_adapter_reduction_factor": None,
    "is_parallel": False,
    "learn_phm": True,
    "leave_out": [],
    "ln_after": False,
    "ln_before": False,
    "mh_adapter": False,
    "non_linearity": "relu",
    "original_ln_after": True,
    "original_ln_before": True,
    "output_adapter": True,
    "phm_bias": True,
    "phm_c_init": "normal",
    "phm_dim": 4,
    "phm_init_range": 0.0001,
    "phm_layer": False,
    "phm_rank": 1,
    "reduction_factor": 16,
    "residual_before_ln": True,
    "scaling": 1.0,
    "shared_W_phm": False,
    "shared_phm_rule": True,
    "stochastic_depth": 0.0,
    "use_gating": False,
}

#: LoRA targets adapters' ``LoRAConfig`` can adapt: target -> (config switch, ``attn_matrices`` key).
_LORA_LOCATIONS = {
    "query": ("selfattn_lora", "q"),
    "key": ("selfattn_lora", "k"),
    "value": ("selfattn_lora", "v"),
    "intermediate": ("intermediate_lora", None),
    "output": ("output_lora", None),
}

#: AutoPEFT head layer -> index in adapters' two-layer head (dropout, dense, tanh, dropout, out).
_HEAD_INDEX = {"dense": 1, "out": 4}


def reduction_factor(hidden_size: int, bottleneck: int) -> float:
    """The ``reduction_factor`` for which adapters builds a bottleneck of exactly ``bottleneck``.

    adapters sizes the bottleneck as ``int(hidden_size // factor)``; D_h / D can come out a hair
    too large in floating point (so the floor gives D - 1), in which case the factor of D + 0.5 is used.
    """
    factor = hidden_size / bottleneck
    if int(hidden_size // factor) != bottleneck:
        factor = hidden_size / (bottleneck + 0.5)
    if int(hidden_size // factor) != bottleneck:  # pragma: no cover - D + 0.5 always floors to D
        raise ValueError(f"no reduction factor gives a bottleneck of {bottleneck} at hidden size {hidden_size}")
    return factor


def _lora_parts(sites: Sequence[LoraSite]) -> list[str]:
    """What ``LoRAConfig`` cannot represent about ``sites`` (empty when it can)."""
    parts = []
    if any(site.target not in _LORA_LOCATIONS for site in sites):
        parts.append("LoRA on attention.output.dense (adapters' LoRAConfig has no such location)")
    by_layer: dict[int, set[str]] = {}
    for site in sites:
        by_layer.setdefault(site.layer, set()).add(site.target)
    if len({frozenset(t) for t in by_layer.values()}) > 1:
        parts.append("LoRA targets that differ between layers (one LoRAConfig has one set)")
    if len({(site.rank, site.alpha) for site in sites}) > 1:
        parts.append("LoRA ranks or alphas that differ between modules (one LoRAConfig has one r and alpha)")
    if any(site.module.use_dora for site in sites):
        parts.append("DoRA (adapters' LoRAConfig has no magnitude vectors)")
    return parts


def _unsupported(model: AutoPeftModel, sites: Sequence[LoraSite]) -> list[str]:
    """The parts of ``model`` adapters has no faithful equivalent for (empty when it has one for all)."""
    spec = model.spec
    parts = []
    if spec.full_finetune:
        parts.append("full fine-tuning (every backbone weight trains; adapters stores adapters)")
    if spec.adamix_experts:
        parts.append("AdaMix's mixture of adapters")
    elif spec.sa_size and spec.pa_size:
        parts.append(
            "a serial and a parallel adapter in the same layers (adapters allows one bottleneck adapter per "
            "location: ConfigUnion refuses SeqBnConfig with ParBnConfig)"
        )
    if spec.gated:
        parts.append("UniPELT gates (adapters' gates average over padding tokens too, AutoPEFT's over real tokens)")
    if spec.layer_switch:
        parts.append("Adaptable Adapters' layer switches")
    parts.extend(_lora_parts(sites))
    if not parts and not spec.active_layers:
        parts.append("no PEFT module (a head-only model has no adapter to write)")
    if model.head.pooling != "cls":
        parts.append(f"{model.head.pooling} pooling in the head (adapters' heads read the first token)")
    return parts


def _left_out(layers: Sequence[int], num_layers: int) -> list[int]:
    return [i for i in range(num_layers) if i not in set(layers)]


def _configs(model: AutoPeftModel, sites: Sequence[LoraSite]) -> list[dict[str, Any]]:
    """The config dicts (as adapters writes them) of the model's modules, in ConfigUnion order."""
    spec, hidden = model.spec, model.encoder.config.hidden_size
    num_layers = len(encoder_layers(model.encoder))
    left_out = _left_out(spec.active_layers, num_layers)
    configs = []
    if spec.sa_size:
        configs.append(
            {
                **_BN_FIELDS,
                "dropout": float(spec.adapter_dropout),
                "leave_out": left_out,
                # pfeiffer: the adapter reads LN(h + x); houlsby: the raw FFN output h.
                "original_ln_before": spec.sa_placement == "pfeiffer",
                "reduction_factor": reduction_factor(hidden, spec.sa_size),
            }
        )
    if spec.pa_size:
        configs.append(
            {
                **_BN_FIELDS,
                "dropout": float(spec.adapter_dropout),
                "init_weights": "mam_adapter",
                "is_parallel": True,
                "leave_out": left_out,
                "original_ln_before": False,
                "reduction_factor": reduction_factor(hidden, spec.pa_size),
                "scaling": float(spec.pa_scale),  # adapters reads an int here as an unknown scaling kind
            }
        )
    if spec.prefix_len:
        configs.append(
            {
                "architecture": "prefix_tuning",
                "bottleneck_size": int(spec.prefix_bottleneck),
                "cross_prefix": True,
                "dropout": 0.0,
                "encoder_prefix": True,
                "flat": False,
                "init_weights_seed": None,
                "leave_out": left_out,
                "non_linearity": "tanh",
                "prefix_length": int(spec.prefix_len),
                "shared_gating": True,
                "use_gating": False,
            }
        )
    if sites:
        targets = {site.target for site in sites}
        switches = {_LORA_LOCATIONS[t][0] for t in targets}
        configs.append(
            {
                "architecture": "lora",
                "selfattn_lora": "selfattn_lora" in switches,
                "intermediate_lora": "intermediate_lora" in switches,
                "output_lora": "output_lora" in switches,
                "leave_out": _left_out(sorted({site.layer for site in sites}), num_layers),
                "r": sites[0].rank,
                "alpha": sites[0].alpha,
                "dropout": float(spec.lora_dropout),
                "attn_matrices": [_LORA_LOCATIONS[t][1] for t in ("query", "key", "value") if t in targets],
                "composition_mode": "add",
                "init_weights": "lora",
                "init_weights_seed": None,
                "use_gating": False,
                "use_dora": False,
                "vera_d": None,
                "vera_b": None,
                "dtype": None,
            }
        )
    return configs


def _adapter_tensors(model: AutoPeftModel, sites: Sequence[LoraSite]) -> dict[str, torch.Tensor]:
    """The adapter's tensors under the names adapters' ``save_adapter`` gives them."""
    base = model.encoder.base_model_prefix
    spec, name = model.spec, ADAPTER_NAME
    layers = encoder_layers(model.encoder)
    tensors: dict[str, torch.Tensor] = {}
    for index in spec.active_layers if (spec.sa_size or spec.pa_size) else ():
        block = layers[index].output
        stem = f"{base}.encoder.layer.{index}.output.adapters.{name}"
        bottleneck = block.serial if spec.sa_size else block.parallel
        for ours, theirs in (("down", "adapter_down.0"), ("up", "adapter_up")):
            linear = getattr(bottleneck, ours)
            tensors[f"{stem}.{theirs}.weight"] = cpu_tensor(linear.weight)
            tensors[f"{stem}.{theirs}.bias"] = cpu_tensor(linear.bias)
    prefix = model.prefix_encoder
    if isinstance(prefix, PrefixEncoder):
        pool = {"wte.weight": cpu_tensor(prefix.embedding.weight)}
        for i in (0, 2):  # Linear, Tanh, Linear in both
            pool.update({f"control_trans.{i}.{p}": cpu_tensor(getattr(prefix.mlp[i], p)) for p in ("weight", "bias")})
        # The prefix pool is one module reachable from the model and from every layer's attention;
        # save_adapter writes it under each of those names, sharing storage (torch.save stores it once).
        stems = [f"{base}.prefix_tuning.prefix_tunings.{name}.self_prefix"] + [
            f"{base}.encoder.layer.{i}.attention.self.prefix_tuning.pool.prefix_tunings.{name}.self_prefix"
            for i in range(len(layers))
        ]
        tensors.update({f"{stem}.{key}": tensor for stem in stems for key, tensor in pool.items()})
    for site in sites:
        stem = f"{base}.encoder.layer.{site.layer}.{site.path}.loras.{name}"
        tensors[f"{stem}.lora_A"] = cpu_tensor(site.module.lora_a)
        tensors[f"{stem}.lora_B"] = cpu_tensor(site.module.lora_b)
    return tensors


def _head_config(model: AutoPeftModel, task: TaskSpec, label_names: Sequence[str] | None, dropout: float) -> dict:
    common = {"layers": 2, "activation_function": "tanh", "use_pooler": False, "dropout_prob": dropout}
    if task.type == "multiple_choice":
        return {"head_type": "multiple_choice", "num_choices": task.num_labels, "label2id": None, **common}
    num_labels = task.num_labels if task.type == "classification" else 1
    label2id = {str(n): i for i, n in enumerate(label_names)} if label_names and task.type == "classification" else None
    return {"head_type": "classification", "num_labels": num_labels, "label2id": label2id, "bias": True, **common}


def _wrapped(config: Mapping[str, Any], model: AutoPeftModel, model_class: str) -> dict[str, Any]:
    """A config as the saved JSON wraps it: with the model facts adapters checks and its version."""
    return {
        "config": dict(config),
        "hidden_size": int(model.encoder.config.hidden_size),
        "model_class": model_class,
        "model_name": "",
        "model_type": str(model.encoder.config.model_type),
        "name": ADAPTER_NAME,
        # adapters rewrites a LoRA's alpha to its r for versions before 1.1.0 (a scaling fix);
        # naming the tested version keeps the alpha as trained.
        "version": f"adapters.{ADAPTERS_VERSION_TESTED}",
    }


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def adapters_folder(
    model: AutoPeftModel, task: TaskSpec, label_names: Sequence[str] | None, head_dropout: float
) -> LibraryFolder:
    """The adapters folder of ``model`` (see the module docstring for what maps how).

    Args:
        model: The trained model.
        task: Its task (the head's kind).
        label_names: Class names by label id (the head's ``label2id``), or None.
        head_dropout: The head's training dropout (recorded; inference does not use it).

    Returns:
        The folder's files and the facts its loading needs (``details``).

    Raises:
        NotExpressible: Naming every part of the configuration adapters cannot represent.

    """
    sites = lora_sites(model)
    parts = _unsupported(model, sites)
    if parts:
        raise NotExpressible(parts)
    model_type = str(model.encoder.config.model_type)
    model_class = {"bert": "BertAdapterModel", "roberta": "RobertaAdapterModel"}[model_type]
    configs = _configs(model, sites)
    config = configs[0] if len(configs) == 1 else {"architecture": "union", "configs": configs}
    base = model.encoder.base_model_prefix
    head = {
        f"heads.{ADAPTER_NAME}.{index}.{p}": cpu_tensor(getattr(getattr(model.head, ours), p))
        for ours, index in _HEAD_INDEX.items()
        for p in ("weight", "bias")
    }
    files = {
        "adapter_config.json": _json_bytes(_wrapped(config, model, model_class)),
        "pytorch_adapter.bin": torch_bytes(_adapter_tensors(model, sites)),
        "head_config.json": _json_bytes(
            _wrapped(_head_config(model, task, label_names, head_dropout), model, model_class)
        ),
        "pytorch_model_head.bin": torch_bytes(head),
    }
    details = {
        "model_class": model_class,
        "adapter_name": ADAPTER_NAME,
        "base_model_prefix": base,
        "format_tested_with": f"adapters {ADAPTERS_VERSION_TESTED} (transformers {ADAPTERS_TRANSFORMERS})",
        "components": [c.get("architecture") or ("par_bn" if c["is_parallel"] else "seq_bn") for c in configs],
    }
    return LibraryFolder("adapters", files, details)
