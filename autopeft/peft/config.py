"""The one PEFT configuration object: which modules, how large, in which layers.

A :class:`PeftSpec` is what the search space decodes to and what training consumes. It is
built from the Hydra ``peft`` node by :func:`peft_from_config`, which resolves ``layers``
(``all``, ``first:N``, ``last:N`` or a list) against the backbone and fails early on any value
the backbone does not allow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.peft.adapters import ADAPTER_INITS, SA_PLACEMENTS
from autopeft.peft.families import (
    LORA_GROUPS,
    check_decoder_modules,
    check_lora_targets,
    is_decoder,
    lora_group_of,
    lora_targets_of,
)

#: How each LoRA projection's alpha follows from ``peft.lora_alpha`` (``peft.lora_alpha_rule``):
#: ``constant`` gives every projection alpha = lora_alpha (the paper's and peft's default, so the
#: update scale alpha / r shrinks as r grows); ``rank_multiple`` gives alpha = lora_alpha x r, so
#: every projection's update scale is lora_alpha whatever its rank (lora_alpha: 2 is the common
#: "alpha = 2r" of LLM recipes), which keeps mixed per-layer ranks on one learning-rate scale.
LORA_ALPHA_RULES: tuple[str, ...] = ("constant", "rank_multiple")


@dataclass(frozen=True)
class BackboneShape:
    """The backbone facts a PEFT configuration is validated against.

    Attributes:
        name: Backbone config name, for messages.
        hidden_size: D_h, the hidden size of the encoder.
        num_layers: Number of Transformer layers.
        num_heads: Number of attention (query) heads (prefix keys/values are split across them).
        model_type: The ``transformers`` family (``bert``, ``llama``, ...); None reads as an encoder.
        num_kv_heads: Key/value heads under grouped-query attention (fewer than ``num_heads``);
            None when every query head has its own (see :attr:`kv_heads`).
        intermediate_size: Width of the feed-forward (MLP) block, when the config states it.

    """

    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    model_type: str | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None

    @property
    def is_decoder(self) -> bool:
        """Whether the backbone is a causal decoder (Llama, Qwen, GPT-2, ...)."""
        return is_decoder(self.model_type)

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``num_kv_heads`` under grouped-query attention, else ``num_heads``."""
        return self.num_kv_heads or self.num_heads

    @property
    def max_module_size(self) -> int:
        """Largest adapter bottleneck or prefix length a preset may ask for: 4 D_h.

        4 D_h is the feed-forward width of every supported BERT/RoBERTa checkpoint (MiniLM 1536,
        BERT-base 3072, BERT-large 4096). A bottleneck wider than the FFN it sits beside is no
        longer parameter-efficient, while published presets do exceed D_h on small encoders
        (the MAM adapter's 512-wide parallel adapter on MiniLM's D_h = 384).
        """
        return 4 * self.hidden_size


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
        lora_targets: Projections LoRA adapts; keys of its family's ``lora_targets``
            (:mod:`autopeft.peft.families`).
        lora_dropout: Dropout on the LoRA input.
        lora_rank_pattern: Ranks that differ from ``lora_rank``, as sorted ``(key, rank)`` pairs;
            a key is a target (``query``), a projection group (``attention`` = query/key/value/
            attention_output, ``mlp`` = gate/intermediate/output), a layer index (``"3"``), or
            ``"<layer>.<target or group>"``. The most specific key wins (see
            :meth:`lora_rank_of`); rank 0 leaves that projection without LoRA.
        lora_alpha_rule: ``constant`` or ``rank_multiple`` (:data:`LORA_ALPHA_RULES`).
        use_dora: DoRA (Liu et al., 2024): each LoRA projection also learns a magnitude vector
            (one value per output feature) and its weight direction is normalised, as in peft's
            ``use_dora=True``.
        adapter_dropout: Dropout inside the serial and parallel adapters' bottleneck.
        sa_placement: How the serial adapter is wired (:mod:`autopeft.peft.adapters`):
            ``"pfeiffer"`` (it reads LN(h + x), as the authors' AdapterHub ``AutoPEFTConfig``
            and Pfeiffer et al. 2020; the default) or ``"houlsby"`` (it reads the raw FFN output h).
        adapter_init: How the serial and parallel adapters start: ``"adapterhub"`` (the
            authors' code: serial N(0, 0.02), parallel zero up-projection; the default) or
            ``"zero_up"`` (zero up-projections: every adapter is an identity at initialisation).
        full_finetune: Train every backbone weight (no PEFT module may be on).
        gated: UniPELT gating (Mao et al., 2022): every module's output is scaled by its own
            learned gate sigma(W_g x + b_g), see :mod:`autopeft.peft.gates`.
        layer_switch: Adaptable Adapters (Moosavi et al., 2022): a learned per-layer switch
            between "adapter on" and "skip"; training then selects layers in two stages
            (:mod:`autopeft.training.adaptable`).
        adaptable_layers: With ``layer_switch``, keep the k layers most likely "on" (to match a
            budget); None keeps every layer whose switch ends "on".
        switch_temperature: Gumbel-softmax temperature of the layer switches.
        adamix_experts: AdaMix (Wang et al., 2022): M > 0 turns the serial adapter (bottleneck
            ``sa_size``) into a mixture of M adapter experts, randomly routed in training and
            averaged into one adapter for inference (:mod:`autopeft.peft.adamix`). Its adapter is
            AdaMix's own: GELU, N(0, 0.02) initialisation, before the FFN output's dropout.
            0 = off.
        adamix_share_up: With AdaMix, one up-projection shared by all experts (ignored when off).
        adamix_share_down: With AdaMix, one down-projection shared by all experts (ignored when off).
        adamix_consistency: Weight of AdaMix's consistency loss, the symmetric KL between the
            outputs of two stochastic forward passes (0 = a single pass); needs AdaMix on.

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
    lora_rank_pattern: tuple[tuple[str, int], ...] = ()
    lora_alpha_rule: str = "constant"
    use_dora: bool = False
    adapter_dropout: float = 0.0
    sa_placement: str = "pfeiffer"
    adapter_init: str = "adapterhub"
    full_finetune: bool = False
    gated: bool = False
    layer_switch: bool = False
    adaptable_layers: int | None = None
    switch_temperature: float = 0.1
    adamix_experts: int = 0
    adamix_share_up: bool = True
    adamix_share_down: bool = False
    adamix_consistency: float = 0.0

    @property
    def lora_on(self) -> bool:
        """Whether some target of some layer gets a LoRA rank above 0 (``lora_rank`` or the pattern)."""
        return bool(self.lora_targets) and (bool(self.lora_rank) or any(rank for _, rank in self.lora_rank_pattern))

    @property
    def active_layers(self) -> tuple[int, ...]:
        """Layers that actually receive a module (empty when every module is off)."""
        if self.sa_size or self.pa_size or self.prefix_len:
            return self.layers
        if not self.lora_on:
            return ()
        return tuple(i for i in self.layers if any(self.lora_rank_of(i, t) for t in self.lora_targets))

    def lora_rank_of(self, layer: int, target: str) -> int:
        """LoRA rank of ``target`` in ``layer``: the most specific ``lora_rank_pattern`` key, else ``lora_rank``.

        Specificity, highest first: ``"<layer>.<target>"``, ``"<layer>.<group>"``, ``"<layer>"``,
        ``"<target>"``, ``"<group>"``. Layers outside :attr:`layers` and targets outside
        :attr:`lora_targets` get 0.
        """
        if layer not in self.layers or target not in self.lora_targets:
            return 0
        pattern = dict(self.lora_rank_pattern)
        group = lora_group_of(target)
        for key in (f"{layer}.{target}", f"{layer}.{group}", str(layer), target, group):
            if key in pattern:
                return pattern[key]
        return self.lora_rank

    def lora_alpha_of(self, rank: int) -> float:
        """The alpha of a LoRA projection of rank ``rank`` under :attr:`lora_alpha_rule`."""
        return float(self.lora_alpha) * rank if self.lora_alpha_rule == "rank_multiple" else float(self.lora_alpha)

    def lora_ranks(self) -> dict[tuple[int, str], int]:
        """Every adapted (layer, target) with its rank > 0, in layer then target order."""
        return {
            (layer, target): rank
            for layer in self.layers
            for target in self.lora_targets
            if (rank := self.lora_rank_of(layer, target))
        }

    def describe(self) -> str:
        """The configuration in words, e.g. ``"SA 48 + PT 6 on layers 4–11"``.

        UniPELT reads ``"SA 48 + PT 10 + LoRA r8 (query/value), each gated, on layers 0–11"``,
        Adaptable Adapters ``"SA 128 in 13 layers chosen by learned switches from layers 0–23"``,
        AdaMix ``"AdaMix SA 48 x4 experts (shared up-projection) on layers 0–11"``.
        """
        if self.full_finetune:
            return "full fine-tuning"
        parts = [
            f"{label} {size}"
            for label, size in (("SA", self.sa_size), ("PA", self.pa_size), ("PT", self.prefix_len))
            if size
        ]
        if self.adamix_experts and self.sa_size:
            parts[0] = f"AdaMix SA {self.sa_size} x{self.adamix_experts} experts{_sharing(self)}"
        if self.lora_on:
            parts.append(_describe_lora(self))
        if not parts or not self.layers:
            return "head only (frozen backbone)"
        modules = " + ".join(parts) + (", each gated," if self.gated else "")
        if self.layer_switch:
            chosen = f"{self.adaptable_layers} layers" if self.adaptable_layers else "the layers"
            return f"{modules} in {chosen} chosen by learned switches from {describe_layers(self.layers)}"
        return f"{modules} on {describe_layers(self.layers)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["layers"] = list(self.layers)
        out["lora_targets"] = list(self.lora_targets)
        out["lora_rank_pattern"] = dict(self.lora_rank_pattern)
        return out


def _describe_lora(spec: PeftSpec) -> str:
    """The LoRA part of :meth:`PeftSpec.describe`.

    ``LoRA r8 (query/value)``, ``DoRA attention r16 + MLP r4 (7 projection types)``, or
    ``LoRA r2–16 (query/value; 1.value 2)``.
    """
    name = "DoRA" if spec.use_dora else "LoRA"
    pattern = dict(spec.lora_rank_pattern)
    if pattern and set(pattern) <= set(LORA_GROUPS):  # ranks per projection group, as llm_lora searches
        groups = [
            f"{group if group == 'attention' else group.upper()} r{pattern.get(group, spec.lora_rank)}"
            for group in LORA_GROUPS
            if pattern.get(group, spec.lora_rank) and any(lora_group_of(t) == group for t in spec.lora_targets)
        ]
        return f"{name} {' + '.join(groups)} ({len(spec.lora_targets)} projection types)"
    if not spec.lora_rank_pattern:
        return f"{name} r{spec.lora_rank} ({'/'.join(spec.lora_targets)})"
    ranks = spec.lora_ranks().values()
    low, high = (min(ranks), max(ranks)) if ranks else (0, 0)
    span = f"r{low}" if low == high else f"r{low}–{high}"
    listed = ", ".join(f"{key} {rank}" for key, rank in spec.lora_rank_pattern)
    return f"{name} {span} ({'/'.join(spec.lora_targets)}; {listed})"


def _sharing(spec: PeftSpec) -> str:
    shared = [name for name, on in (("up", spec.adamix_share_up), ("down", spec.adamix_share_down)) if on]
    return f" (shared {'/'.join(shared)}-projection)" if shared else ""


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


#: The forms ``peft.layers`` accepts, for error messages.
LAYER_FORMS = "'all', 'first:N' or 'last:N' (N in 1..{n}), or a list of layer indices in 0..{last}"


def _layer_forms(shape: BackboneShape) -> str:
    return LAYER_FORMS.format(n=shape.num_layers, last=shape.num_layers - 1)


def _resolve_named(layers: str, shape: BackboneShape) -> tuple[int, ...]:
    """``all``, ``first:N`` (the N lowest layers) or ``last:N`` (the N highest, as in AdapterDrop)."""
    if layers == "all":
        return tuple(range(shape.num_layers))
    where, sep, count = layers.partition(":")
    if not sep or where not in ("first", "last") or not count.strip().isdigit():
        raise ConfigError(f"peft.layers={layers!r} is not allowed; use {_layer_forms(shape)}")
    n = int(count)
    if not 1 <= n <= shape.num_layers:
        raise ConfigError(
            f"peft.layers={layers!r}: N={n} is outside 1..{shape.num_layers} (backbone {shape.name!r} "
            f"has {shape.num_layers} layers); use {_layer_forms(shape)}"
        )
    return tuple(range(n)) if where == "first" else tuple(range(shape.num_layers - n, shape.num_layers))


def resolve_layers(layers: Any, shape: BackboneShape) -> tuple[int, ...]:
    """Turn ``"all"``, ``"first:N"``, ``"last:N"`` or a list of indices into a sorted tuple.

    Raises:
        ConfigError: On an index outside ``[0, num_layers)``, N outside ``1..num_layers``, a
            duplicate, or a bad type; the message lists the allowed forms.

    """
    if isinstance(layers, str):
        return _resolve_named(layers, shape)
    if not isinstance(layers, Sequence):
        raise ConfigError(f"peft.layers={layers!r} must be {_layer_forms(shape)}")
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
    """Check every size and option of ``spec`` against what ``shape`` allows.

    Adapter bottlenecks and prefix lengths are bounded by :attr:`BackboneShape.max_module_size`
    (4 D_h, the FFN width) so that published presets such as the MAM adapter fit small
    backbones; the LoRA rank by D_h, the most a rank of a D_h-wide projection can use. The
    search space (:mod:`autopeft.space`) keeps its own, tighter bounds.

    Returns:
        The same spec, for chaining.

    Raises:
        ConfigError: Naming the bad value and the allowed range or options.

    """
    resolve_layers(list(spec.layers), shape)
    bounds = {
        "sa_size": (shape.max_module_size, "4 D_h, the FFN width of BERT-family layers"),
        "pa_size": (shape.max_module_size, "4 D_h, the FFN width of BERT-family layers"),
        "prefix_len": (shape.max_module_size, "4 D_h, the FFN width of BERT-family layers"),
        "lora_rank": (shape.hidden_size, "the hidden size D_h, the most a rank can use"),
    }
    for key, (bound, why) in bounds.items():
        value = _as_int(getattr(spec, key), key)
        if not 0 <= value <= bound:
            raise ConfigError(
                f"peft.{key}={value} is outside what backbone {shape.name!r} allows: "
                f"an integer in [0, {bound}] (0 switches the module off; {bound} is {why})"
            )
    check_decoder_modules(spec_modules(spec), shape.model_type, shape.name)
    # Only a spec that uses LoRA is held to its family's targets: a decoder's head-only spec keeps
    # the encoder-named default list of the peft node without being refused for it.
    if spec.lora_on or not shape.is_decoder:
        check_lora_targets(spec.lora_targets, shape.model_type)
    if spec.lora_rank and not spec.lora_targets:
        raise ConfigError("peft.lora_rank > 0 needs at least one of peft.lora_targets")
    _validate_lora_pattern(spec, shape)
    for key in ("pa_scale", "lora_alpha"):
        if not float(getattr(spec, key)) > 0:
            raise ConfigError(f"peft.{key}={getattr(spec, key)} must be > 0")
    for key, allowed in (("sa_placement", SA_PLACEMENTS), ("adapter_init", ADAPTER_INITS)):
        if getattr(spec, key) not in allowed:
            raise ConfigError(f"peft.{key}={getattr(spec, key)!r} is not allowed; allowed: {allowed_list(allowed)}")
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
    _validate_layer_switch(spec)
    _validate_adamix(spec)
    return spec


def _validate_lora_pattern(spec: PeftSpec, shape: BackboneShape) -> None:
    """``lora_rank_pattern`` keys name a target, group or layer of ``shape``; ranks fit; rule and DoRA flags."""
    if spec.lora_alpha_rule not in LORA_ALPHA_RULES:
        raise ConfigError(
            f"peft.lora_alpha_rule={spec.lora_alpha_rule!r} is not allowed; allowed: {allowed_list(LORA_ALPHA_RULES)}"
        )
    if not isinstance(spec.use_dora, bool):
        raise ConfigError(f"peft.use_dora={spec.use_dora!r} must be true or false")
    names = (*spec.lora_targets, *LORA_GROUPS)
    allowed = (
        f"a target of peft.lora_targets ({'/'.join(spec.lora_targets) or 'none'}), a group "
        f"({'/'.join(LORA_GROUPS)}), a layer index in 0..{shape.num_layers - 1}, or '<layer>.<target or group>'"
    )
    for key, rank in spec.lora_rank_pattern:
        layer, _, name = key.partition(".") if key[:1].isdigit() else ("", "", key)
        if layer and (not layer.isdigit() or not 0 <= int(layer) < shape.num_layers):
            raise ConfigError(
                f"peft.lora_rank_pattern key {key!r}: layer {layer!r} is not in 0..{shape.num_layers - 1}"
            )
        if name and name not in names:
            raise ConfigError(
                f"peft.lora_rank_pattern key {key!r} is not allowed{did_you_mean(name, names)}; a key is {allowed}"
            )
        value = _as_int(rank, f"lora_rank_pattern.{key}")
        if not 0 <= value <= shape.hidden_size:
            raise ConfigError(
                f"peft.lora_rank_pattern.{key}={value} is outside [0, {shape.hidden_size}] "
                f"(0 switches LoRA off there; {shape.hidden_size} is the hidden size D_h)"
            )
    if spec.use_dora and not spec.lora_on:
        raise ConfigError("peft.use_dora=true needs LoRA on (peft.lora_rank > 0 or a rank in peft.lora_rank_pattern)")
    if spec.use_dora and spec.gated:
        raise ConfigError("peft.use_dora=true cannot be combined with peft.gated=true (UniPELT gates LoRA, not DoRA)")


def spec_modules(spec: PeftSpec) -> list[str]:
    """The modules and options ``spec`` switches on, by their names in :mod:`autopeft.peft.families`."""
    on = {
        "sa": spec.sa_size,
        "pa": spec.pa_size,
        "prefix": spec.prefix_len,
        "lora": spec.lora_on,
        "gated": spec.gated,
        "layer_switch": spec.layer_switch,
        "adamix": spec.adamix_experts,
    }
    return [name for name, value in on.items() if value]


def _validate_adamix(spec: PeftSpec) -> None:
    """AdaMix's options: M experts of the serial adapter, alone on the FFN output block."""
    for key in ("adamix_share_up", "adamix_share_down"):
        if not isinstance(getattr(spec, key), bool):
            raise ConfigError(f"peft.{key}={getattr(spec, key)!r} must be true or false")
    experts = _as_int(spec.adamix_experts, "adamix_experts")
    if experts < 0:
        raise ConfigError(f"peft.adamix_experts={experts} must be >= 0 (0 switches AdaMix off)")
    weight = spec.adamix_consistency
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ConfigError(f"peft.adamix_consistency={weight!r} must be a number >= 0 (0 = no consistency loss)")
    if not experts:
        if weight:
            raise ConfigError(
                f"peft.adamix_consistency={weight} needs peft.adamix_experts > 0 "
                "(it regularises AdaMix's randomly routed experts)"
            )
        return
    if not spec.sa_size or spec.pa_size or spec.gated or spec.layer_switch or spec.adapter_dropout:
        raise ConfigError(
            f"peft.adamix_experts={experts} makes the serial adapter a mixture of adapters: it needs "
            f"sa_size > 0 (the experts' bottleneck) and pa_size = 0, gated = false, layer_switch = false, "
            f"adapter_dropout = 0 (AdaMix's adapters have no inner dropout) (got sa_size={spec.sa_size}, "
            f"pa_size={spec.pa_size}, gated={spec.gated}, layer_switch={spec.layer_switch}, "
            f"adapter_dropout={spec.adapter_dropout})"
        )


def _validate_layer_switch(spec: PeftSpec) -> None:
    """Adaptable Adapters' options: switches gate adapters only, and k fits the candidate layers."""
    for key in ("gated", "layer_switch"):
        if not isinstance(getattr(spec, key), bool):
            raise ConfigError(f"peft.{key}={getattr(spec, key)!r} must be true or false")
    if not float(spec.switch_temperature) > 0:
        raise ConfigError(f"peft.switch_temperature={spec.switch_temperature} must be > 0")
    if not spec.layer_switch:
        if spec.adaptable_layers is not None:
            raise ConfigError(
                f"peft.adaptable_layers={spec.adaptable_layers} needs peft.layer_switch=true "
                "(it is the number of layers the learned switches keep)"
            )
        return
    if not (spec.sa_size or spec.pa_size) or spec.prefix_len or spec.lora_on:
        raise ConfigError(
            "peft.layer_switch=true switches adapters on or off per layer: it needs sa_size or pa_size > 0 "
            f"and prefix_len = lora_rank = 0 (got prefix_len={spec.prefix_len}, lora_rank={spec.lora_rank})"
        )
    if spec.adaptable_layers is not None:
        k = _as_int(spec.adaptable_layers, "adaptable_layers")
        if not 1 <= k <= len(spec.layers):
            raise ConfigError(
                f"peft.adaptable_layers={k} must be an integer in 1..{len(spec.layers)} "
                f"(the number of candidate layers in peft.layers), or null to keep the layers switched on"
            )


#: Size fields that also accept ``"d_h/K"``: the hidden size divided by K, AdapterHub's
#: ``reduction_factor`` (so a preset such as Pfeiffer's D_h/16 is 48 on BERT-base, 64 on BERT-large).
RELATIVE_SIZE_FIELDS = ("sa_size", "pa_size")
_RELATIVE_SIZE = re.compile(r"\s*d_h\s*/\s*(\d+)\s*")


def resolve_size(value: Any, key: str, shape: BackboneShape) -> Any:
    """``"d_h/K"`` -> ``max(1, D_h // K)`` on ``shape`` (AdapterHub's rounding); other values unchanged.

    Raises:
        ConfigError: On a string that is not ``d_h/K`` with K a positive integer.

    """
    if not isinstance(value, str):
        return value
    match = _RELATIVE_SIZE.fullmatch(value)
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"peft.{key}={value!r} must be an integer or 'd_h/K' with K a positive integer "
            f"(e.g. 'd_h/16' = {max(1, shape.hidden_size // 16)} on backbone {shape.name!r})"
        )
    return max(1, shape.hidden_size // int(match.group(1)))


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
    for key in RELATIVE_SIZE_FIELDS:
        if key in values:
            values[key] = resolve_size(values[key], key, shape)
    if "layers" in values:
        values["layers"] = resolve_layers(_plain(values["layers"]), shape)
    if "lora_targets" in values:
        values["lora_targets"] = resolve_lora_targets(_plain(values["lora_targets"]), shape)
    if "lora_rank_pattern" in values:
        values["lora_rank_pattern"] = rank_pattern_pairs(_plain(values["lora_rank_pattern"]))
    return validate_spec(PeftSpec(**values), shape)


def resolve_lora_targets(targets: Any, shape: BackboneShape) -> tuple[str, ...]:
    """``peft.lora_targets`` as a tuple: ``"all"`` is every projection the backbone's family names.

    ``all`` is q/k/v/o and gate/up/down on Llama-style decoders, the attention output and both MLP
    projections on GPT-2 and GPT-NeoX (which fuse q/k/v), all six on BERT/RoBERTa.
    """
    if targets == "all":
        return tuple(lora_targets_of(shape.model_type))
    return (targets,) if isinstance(targets, str) else tuple(targets)


def rank_pattern_pairs(pattern: Any) -> tuple[tuple[str, int], ...]:
    """A ``lora_rank_pattern`` mapping (``{attention: 16, "3.mlp": 4}``) as sorted ``(key, rank)`` pairs.

    Raises:
        ConfigError: If it is not a mapping (keys are checked by :func:`validate_spec`).

    """
    if pattern is None:
        return ()
    if isinstance(pattern, Mapping):
        return tuple(sorted((str(key), value) for key, value in pattern.items()))
    is_pairs = isinstance(pattern, Sequence) and not isinstance(pattern, str)
    if is_pairs and all(isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 for p in pattern):
        return tuple(sorted((str(key), value) for key, value in pattern))  # the stored (key, rank) form
    raise ConfigError(
        f"peft.lora_rank_pattern={pattern!r} must map targets, groups or layers to ranks, "
        "e.g. {attention: 16, mlp: 4}"
    )


def _plain(value: Any) -> Any:
    """OmegaConf ListConfig/DictConfig -> list/dict, leaving scalars alone."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (ListConfig, DictConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    return value
