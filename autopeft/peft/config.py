"""The one PEFT configuration object: which modules, how large, in which layers.

A :class:`PeftSpec` is what the search space decodes to and what training consumes. It is
built from the Hydra ``peft`` node by :func:`peft_from_config`, which resolves ``layers: all``
against the backbone and fails early on any value the backbone does not allow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from autopeft.errors import ConfigError, allowed_list, check_known_keys

#: Linear projections of a BERT/RoBERTa layer that LoRA can adapt, by config name.
LORA_TARGETS: dict[str, str] = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}


@dataclass(frozen=True)
class BackboneShape:
    """The backbone facts a PEFT configuration is validated against.

    Attributes:
        name: Backbone config name, for messages.
        hidden_size: D_h, the hidden size of the encoder.
        num_layers: Number of Transformer layers.
        num_heads: Number of attention heads (prefix keys/values are split across them).

    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int


@dataclass(frozen=True)
class PeftSpec:
    """A complete PEFT configuration (sizes of 0 switch a module off).

    One insertion mask (``layers``) is shared by all modules, as in the AutoPEFT search space.

    Attributes:
        name: A label (the preset it came from); not used for behaviour.
        layers: Sorted indices of the layers that receive the enabled modules.
        sa_size: Serial-adapter bottleneck D_SA (after the FFN output, ReLU).
        pa_size: Parallel-adapter bottleneck D_PA (parallel to the FFN).
        pa_scale: Scaling of the parallel adapter's output (4 in the paper, after He et al.).
        prefix_len: Prefix length L_PT (prefix keys and values per inserted layer).
        prefix_bottleneck: Hidden size of the prefix MLP reparameterisation (800 in the paper).
        lora_rank: LoRA rank r.
        lora_alpha: LoRA scaling numerator (update scaled by alpha / r).
        lora_targets: Projections LoRA adapts; keys of :data:`LORA_TARGETS`.
        lora_dropout: Dropout on the LoRA input.
        adapter_dropout: Dropout inside the serial and parallel adapters' bottleneck.
        full_finetune: Train every backbone weight (no PEFT module may be on).

    """

    name: str = "custom"
    layers: tuple[int, ...] = ()
    sa_size: int = 0
    pa_size: int = 0
    pa_scale: float = 4.0
    prefix_len: int = 0
    prefix_bottleneck: int = 800
    lora_rank: int = 0
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = ("query", "value")
    lora_dropout: float = 0.0
    adapter_dropout: float = 0.0
    full_finetune: bool = False

    @property
    def active_layers(self) -> tuple[int, ...]:
        """Layers that actually receive a module (empty when every module is off)."""
        any_module = self.sa_size or self.pa_size or self.prefix_len or self.lora_rank
        return self.layers if any_module else ()

    def describe(self) -> str:
        """The configuration in words, e.g. ``"SA 48 + PT 6 on layers 4–11"``."""
        if self.full_finetune:
            return "full fine-tuning"
        parts = [
            f"{label} {size}"
            for label, size in (("SA", self.sa_size), ("PA", self.pa_size), ("PT", self.prefix_len))
            if size
        ]
        if self.lora_rank:
            parts.append(f"LoRA r{self.lora_rank} ({'/'.join(self.lora_targets)})")
        if not parts or not self.layers:
            return "head only (frozen backbone)"
        return f"{' + '.join(parts)} on {describe_layers(self.layers)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["layers"] = list(self.layers)
        out["lora_targets"] = list(self.lora_targets)
        return out


def describe_layers(layers: Sequence[int]) -> str:
    """Compress layer indices into ranges: ``[0,1,2,5]`` -> ``"layers 0–2, 5"``."""
    if not layers:
        return "no layers"
    runs: list[tuple[int, int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], layer)
        else:
            runs.append((layer, layer))
    text = ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in runs)
    return f"layer {text}" if len(layers) == 1 else f"layers {text}"


_SPEC_KEYS = {f.name for f in fields(PeftSpec)}


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"peft.{key}={value!r} must be an integer")
    return value


def resolve_layers(layers: Any, shape: BackboneShape) -> tuple[int, ...]:
    """Turn ``"all"`` or a list of indices into a sorted tuple, validated against the backbone.

    Raises:
        ConfigError: On an index outside ``[0, num_layers)``, a duplicate, or a bad type.

    """
    if isinstance(layers, str):
        if layers != "all":
            raise ConfigError(f"peft.layers={layers!r} is not allowed; use 'all' or a list of layer indices")
        return tuple(range(shape.num_layers))
    if not isinstance(layers, Sequence):
        raise ConfigError(f"peft.layers={layers!r} must be 'all' or a list of layer indices")
    indices = [_as_int(i, "layers") for i in layers]
    for index in indices:
        if not 0 <= index < shape.num_layers:
            raise ConfigError(
                f"peft.layers contains {index}, outside backbone {shape.name!r} which has "
                f"{shape.num_layers} layers: allowed indices are 0..{shape.num_layers - 1}"
            )
    if len(set(indices)) != len(indices):
        raise ConfigError(f"peft.layers={indices} lists a layer twice")
    return tuple(sorted(indices))


def validate_spec(spec: PeftSpec, shape: BackboneShape) -> PeftSpec:
    """Check every size of ``spec`` against what ``shape`` allows.

    Sizes are bounded by the hidden size D_h, as in the paper's search space (0 = off).

    Returns:
        The same spec, for chaining.

    Raises:
        ConfigError: Naming the bad value and the allowed range or options.

    """
    resolve_layers(list(spec.layers), shape)
    for key in ("sa_size", "pa_size", "prefix_len", "lora_rank"):
        value = _as_int(getattr(spec, key), key)
        if not 0 <= value <= shape.hidden_size:
            raise ConfigError(
                f"peft.{key}={value} is outside what backbone {shape.name!r} allows: "
                f"an integer in [0, {shape.hidden_size}] (0 switches the module off, "
                f"{shape.hidden_size} is its hidden size D_h)"
            )
    unknown = [t for t in spec.lora_targets if t not in LORA_TARGETS]
    if unknown:
        raise ConfigError(f"peft.lora_targets has {unknown[0]!r}; allowed: {allowed_list(LORA_TARGETS)}")
    if spec.lora_rank and not spec.lora_targets:
        raise ConfigError("peft.lora_rank > 0 needs at least one of peft.lora_targets")
    for key in ("pa_scale", "lora_alpha"):
        if not float(getattr(spec, key)) > 0:
            raise ConfigError(f"peft.{key}={getattr(spec, key)} must be > 0")
    if _as_int(spec.prefix_bottleneck, "prefix_bottleneck") < 1:
        raise ConfigError(f"peft.prefix_bottleneck={spec.prefix_bottleneck} must be >= 1")
    for key in ("lora_dropout", "adapter_dropout"):
        if not 0.0 <= float(getattr(spec, key)) < 1.0:
            raise ConfigError(f"peft.{key}={getattr(spec, key)} must be in [0, 1)")
    if spec.full_finetune and spec.active_layers:
        raise ConfigError(
            "peft.full_finetune=true trains the whole backbone and cannot be combined with PEFT modules; "
            "set sa_size, pa_size, prefix_len and lora_rank to 0 (or use peft=fft)"
        )
    return spec


def peft_from_config(cfg: Mapping[str, Any], shape: BackboneShape) -> PeftSpec:
    """Build and validate a :class:`PeftSpec` from the Hydra ``peft`` node.

    Args:
        cfg: The ``peft`` node (an OmegaConf DictConfig or a plain mapping).
        shape: The backbone the configuration will be applied to.

    Raises:
        ConfigError: On an unknown key (typo) or a value the backbone does not allow.

    """
    check_known_keys(cfg, _SPEC_KEYS, "peft")
    values = {key: cfg[key] for key in cfg}
    if "layers" in values:
        values["layers"] = resolve_layers(_plain(values["layers"]), shape)
    if "lora_targets" in values:
        targets = _plain(values["lora_targets"])
        values["lora_targets"] = (targets,) if isinstance(targets, str) else tuple(targets)
    return validate_spec(PeftSpec(**values), shape)


def _plain(value: Any) -> Any:
    """OmegaConf ListConfig -> list, leaving scalars alone."""
    try:
        from omegaconf import ListConfig, OmegaConf

        if isinstance(value, ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    return value
