"""The AutoPEFT configuration search space (paper §2.1, Table 6).

A configuration is one Boolean insertion mask over the backbone's layers, shared by every
module, plus one size per searched module: the serial-adapter bottleneck D_SA, the
parallel-adapter bottleneck D_PA, the prefix length L_PT and, in the extended space, the LoRA
rank r. Each size is drawn from a discrete list of choices in which 0 switches the module
off. By default the choices come from halving the hidden size D_h down to 1, so the space
adapts to any backbone: 11 choices for D_h = 768 (BERT-base), 12 for 1024, 10 for 384.

The space is built from the Hydra ``space`` node by :meth:`SearchSpace.from_config`; its
points (:class:`Point`) decode to a :class:`~autopeft.peft.PeftSpec` with
:meth:`SearchSpace.to_peft` and encode to the unit cube for a GP surrogate with
:meth:`SearchSpace.encode`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import torch

from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean
from autopeft.peft.config import BackboneShape, PeftSpec, peft_from_config, resolve_lora_targets, validate_spec
from autopeft.peft.families import DECODER_SPACE_SUPPORTED, check_decoder_modules, check_lora_targets, lora_group_of

#: Searchable modules in their canonical order (the order of the encoding's size columns).
#: ``lora`` is one rank for every target; ``lora_attn`` and ``lora_mlp`` are the ranks of the
#: attention (query/key/value/output) and MLP (gate/up/down) projection groups, searched apart
#: as decoder LoRA users tune them; ``dora`` is an on/off choice (DoRA instead of LoRA).
MODULES: tuple[str, ...] = ("sa", "pa", "prefix", "lora", "lora_attn", "lora_mlp", "dora")

#: The :class:`PeftSpec` field each inserting module's size sets.
MODULE_FIELDS: dict[str, str] = {"sa": "sa_size", "pa": "pa_size", "prefix": "prefix_len", "lora": "lora_rank"}

#: Group-rank modules -> the ``peft.lora_rank_pattern`` group key their size sets.
GROUP_RANK_MODULES: dict[str, str] = {"lora_attn": "attention", "lora_mlp": "mlp"}

#: Modules that insert nothing themselves but switch an option of the LoRA projections (0 or 1).
FLAG_MODULES: dict[str, str] = {"dora": "use_dora"}

#: Modules that put LoRA projections into the layers.
LORA_MODULES: tuple[str, ...] = ("lora", *GROUP_RANK_MODULES)

#: Rank choices of the group-rank modules, before the backbone's bound (see :func:`rank_choices`).
LLM_RANKS: tuple[int, ...] = (4, 8, 16, 32, 64)

#: Keys of the ``space`` node.
SPACE_KEYS: tuple[str, ...] = ("name", "modules", "layer_selection", "fixed", "choices")

# ``fixed`` may hold any PeftSpec field except those a point decides (layers and sizes) or that
# make no sense for a searched configuration (its name is given by to_peft, and full fine-tuning
# cannot be combined with PEFT modules).
# DoRA and the rank pattern are what the flag and group-rank modules set, so a space searches them.
_FIXED_KEYS: tuple[str, ...] = tuple(
    f.name
    for f in fields(PeftSpec)
    if f.name not in {"name", "layers", "full_finetune", "lora_rank_pattern", "use_dora", *MODULE_FIELDS.values()}
)


def default_choices(hidden_size: int) -> tuple[int, ...]:
    """Size choices for a module: 0 (off) plus ``hidden_size`` halved repeatedly down to 1.

    Integer halving keeps every choice a whole number, e.g. 768 -> 384, ..., 6, 3, 1.

    Args:
        hidden_size: D_h of the backbone.

    Returns:
        ``(0, 1, ..., hidden_size)`` sorted ascending without duplicates.

    Raises:
        ConfigError: If ``hidden_size`` is not a positive integer.

    """
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ConfigError(f"hidden_size={hidden_size!r} must be a positive integer")
    sizes = set()
    size = hidden_size
    while size > 0:
        sizes.add(size)
        size //= 2
    return (0, *sorted(sizes))


def rank_choices(hidden_size: int) -> tuple[int, ...]:
    """Rank choices of a projection group: 0 (off) and :data:`LLM_RANKS` up to D_h / 4.

    The ranks LLM LoRA recipes use (4 to 64), bounded by a quarter of the hidden size so that an
    update stays low-rank on a small backbone: (0, 4, 8, 16) for D_h = 64, all of them from
    D_h = 256 (Qwen2.5-0.5B's 896, Llama-3.2-1B's 2048).

    Raises:
        ConfigError: If ``hidden_size`` is not a positive integer.

    """
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ConfigError(f"hidden_size={hidden_size!r} must be a positive integer")
    ranks = tuple(r for r in LLM_RANKS if r <= hidden_size // 4) or (min(LLM_RANKS[0], hidden_size),)
    return (0, *ranks)


def module_default_choices(module: str, hidden_size: int) -> tuple[int, ...]:
    """Default choices of ``module``: halving (:func:`default_choices`), group ranks, or off/on for a flag."""
    if module in FLAG_MODULES:
        return (0, 1)
    if module in GROUP_RANK_MODULES:
        return rank_choices(hidden_size)
    return default_choices(hidden_size)


@dataclass(frozen=True)
class Point:
    """One configuration of a :class:`SearchSpace` (hashable, so it can key a cache of results).

    Attributes:
        mask: One insertion decision per backbone layer, shared by all modules.
        sizes: ``(module, size)`` pairs for the space's searched modules, in canonical order
            (``sa``, ``pa``, ``prefix``, ``lora``); 0 switches a module off.

    """

    mask: tuple[bool, ...]
    sizes: tuple[tuple[str, int], ...]

    @property
    def size_dict(self) -> dict[str, int]:
        """The sizes as a ``{module: size}`` dict."""
        return dict(self.sizes)

    def size_of(self, module: str) -> int:
        """The size of ``module``, 0 when the module is not searched in this point's space."""
        return self.size_dict.get(module, 0)

    @property
    def layers(self) -> tuple[int, ...]:
        """Indices of the layers whose mask bit is on."""
        return tuple(i for i, bit in enumerate(self.mask) if bit)

    @property
    def is_head_only(self) -> bool:
        """True when no module is inserted anywhere (every size is 0, or the mask is empty).

        Flags (``dora``) insert nothing by themselves, so they do not count.
        """
        return not any(self.mask) or not any(size for module, size in self.sizes if module not in FLAG_MODULES)

    @property
    def has_lora(self) -> bool:
        """Whether some LoRA module (``lora``, ``lora_attn``, ``lora_mlp``) has a rank above 0."""
        return any(size for module, size in self.sizes if module in LORA_MODULES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"mask": [bool, ...], "sizes": {module: size}}``."""
        return {"mask": list(self.mask), "sizes": self.size_dict}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Point:
        """Inverse of :meth:`to_dict` (e.g. after a JSON round trip).

        Sizes are put in canonical module order, so the result does not depend on the order of
        the dict's keys. Whether the point belongs to a particular space is checked by
        :meth:`SearchSpace.check`.

        Raises:
            ConfigError: If ``data`` lacks ``mask`` or ``sizes`` or names an unknown module.

        """
        check_known_keys(data, ("mask", "sizes"), "point")
        if "mask" not in data or "sizes" not in data:
            raise ConfigError(f"a point needs both 'mask' and 'sizes'; got keys {allowed_list(data)}")
        sizes = dict(data["sizes"])
        for module in sizes:
            _check_module_name(module, "point.sizes")
        ordered = tuple((m, int(sizes[m])) for m in MODULES if m in sizes)
        return cls(mask=tuple(bool(b) for b in data["mask"]), sizes=ordered)


@dataclass(frozen=True)
class SearchSpace:
    """A discrete PEFT configuration space over one backbone.

    Build it with :meth:`from_config`; constructing it directly runs the same checks.

    Attributes:
        name: Label of the space (the config file it came from).
        shape: The backbone the space is defined on (its D_h bounds every size).
        modules: Searched modules, a subset of :data:`MODULES` in canonical order.
        layer_selection: Whether the insertion mask is searched; if false every layer is on.
        choices: ``(module, sizes)`` pairs, one per searched module, each sorted, starting at 0.
        fixed: ``(PeftSpec field, value)`` pairs held constant for every point.

    """

    name: str
    shape: BackboneShape
    modules: tuple[str, ...]
    layer_selection: bool = True
    choices: tuple[tuple[str, tuple[int, ...]], ...] = ()
    fixed: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        """Validate everything a config could get wrong, naming the bad value."""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"space.name={self.name!r} must be a non-empty string")
        if not isinstance(self.layer_selection, bool):
            raise ConfigError(f"space.layer_selection={self.layer_selection!r} must be true or false")
        _check_modules(self.modules)
        _check_module_combination(self.name, self.modules)
        if tuple(m for m, _ in self.choices) != self.modules:
            raise ConfigError(
                f"space choices are given for {[m for m, _ in self.choices]} but the searched modules are "
                f"{list(self.modules)}; give one list of choices per module, in canonical order"
            )
        for module, options in self.choices:
            _check_choices(module, options, self.shape)
        # Building the fixed part once validates its values (e.g. a LoRA target name) early.
        _ = self._fixed_spec

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], shape: BackboneShape) -> SearchSpace:
        """Build the space from the Hydra ``space`` node.

        Args:
            cfg: The ``space`` node (an OmegaConf DictConfig or a plain mapping) with keys
                ``name``, ``modules``, ``layer_selection``, optional ``fixed`` (PeftSpec fields
                held constant) and optional ``choices`` (``{module: [0, ...]}`` overrides of the
                halving default).
            shape: The backbone the space is searched on.

        Raises:
            ConfigError: On an unknown key or module, a module the backbone's family cannot take
                (decoders take no UniPELT gates, layer switches or AdaMix), or a choice outside ``[0, D_h]``, naming the
                bad value and what is allowed.

        """
        values = _to_plain(cfg)
        if not isinstance(values, Mapping):
            raise ConfigError(f"space must be a mapping with keys {allowed_list(SPACE_KEYS)}; got {values!r}")
        check_known_keys(values, SPACE_KEYS, "space")
        for key in ("name", "modules", "layer_selection"):
            if key not in values:
                raise ConfigError(f"space.{key} is missing; the space node needs {allowed_list(SPACE_KEYS[:3])}")
        raw_modules = values["modules"]
        if isinstance(raw_modules, str) or not isinstance(raw_modules, Sequence):
            raise ConfigError(f"space.modules={raw_modules!r} must be a list drawn from {allowed_list(MODULES)}")
        _check_modules(raw_modules)
        # Every point of the space must train on this backbone: refuse the space, not its first point.
        check_decoder_modules(raw_modules, shape.model_type, shape.name, supported=DECODER_SPACE_SUPPORTED)
        # Canonical order, whatever order the file lists them in: it fixes the encoding's columns.
        modules = tuple(m for m in MODULES if m in raw_modules)

        overrides = values.get("choices") or {}
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"space.choices={overrides!r} must map module names to lists of sizes")
        for module in overrides:
            if module not in modules:
                raise ConfigError(
                    f"space.choices.{module} is not a searched module{did_you_mean(module, modules)}; "
                    f"allowed: {allowed_list(modules)}"
                )
        choices = tuple(
            (m, _choice_tuple(m, overrides[m]) if m in overrides else module_default_choices(m, shape.hidden_size))
            for m in modules
        )

        fixed = values.get("fixed") or {}
        if not isinstance(fixed, Mapping):
            raise ConfigError(f"space.fixed={fixed!r} must map PeftSpec fields to values")
        check_known_keys(fixed, _FIXED_KEYS, "space.fixed")
        if any(m in LORA_MODULES for m in modules) and shape.is_decoder:
            # The fixed spec has LoRA off, so its own check lets a decoder's missing target through.
            try:
                check_lora_targets(
                    resolve_lora_targets(fixed.get("lora_targets", PeftSpec.lora_targets), shape), shape.model_type
                )
            except ConfigError as err:
                raise ConfigError(f"space.fixed of space {values['name']!r}: {err}") from err
        fixed_pairs = tuple(
            (key, tuple(value) if isinstance(value, list) else value) for key, value in sorted(fixed.items())
        )
        return cls(
            name=values["name"],
            shape=shape,
            modules=modules,
            layer_selection=values["layer_selection"],
            choices=choices,
            fixed=fixed_pairs,
        )

    # ------------------------------------------------------------------ sizes of the space

    @property
    def num_layers(self) -> int:
        """Number of backbone layers (the length of every point's mask)."""
        return self.shape.num_layers

    @property
    def module_choices(self) -> dict[str, tuple[int, ...]]:
        """``{module: choices}`` for the searched modules, in canonical order."""
        return dict(self.choices)

    @property
    def mask_dims(self) -> int:
        """Number of searched mask bits: ``num_layers`` with layer selection, else 0."""
        return self.num_layers if self.layer_selection else 0

    @property
    def dims(self) -> int:
        """Length of the encoding: the searched mask bits, then one column per module."""
        return self.mask_dims + len(self.modules)

    @property
    def size(self) -> int:
        """Number of points, exactly: ``2^mask_dims * prod(|choices|)`` (5,451,776 for BERT-base)."""
        return 2**self.mask_dims * math.prod(len(options) for _, options in self.choices)

    @property
    def num_configurations(self) -> int:
        """Number of distinct configurations: :attr:`size` with every head-only point counted once.

        Every point that inserts nothing (an empty mask, or every size 0) trains the same model
        (see :meth:`canonical`), so the distinct configurations are the non-empty masks times the
        size combinations with at least one module on, plus one head-only configuration:
        ``(masks - 1) * (prod(|choices|) - 1) + 1`` with layer selection, ``prod(|choices|)``
        without (11 for the SA space on BERT-base, 40,951 for SA-Layer). A flag (``dora``)
        multiplies only the combinations that have LoRA.
        """
        masks = 2**self.mask_dims - 1 if self.layer_selection else 1
        inserting = math.prod(len(o) for m, o in self.choices if m not in FLAG_MODULES)
        without_lora = math.prod(len(o) for m, o in self.choices if m not in FLAG_MODULES and m not in LORA_MODULES)
        flags = math.prod(len(o) for m, o in self.choices if m in FLAG_MODULES)
        # A flag only changes configurations that have LoRA (see canonical).
        with_lora = inserting - without_lora
        return masks * (with_lora * flags + without_lora - 1) + 1

    # ------------------------------------------------------------------ points

    def point(self, mask: Sequence[bool] | None = None, **sizes: int) -> Point:
        """Build a point by hand: ``space.point(sa=48, prefix=6)`` (mask: every layer on).

        Args:
            mask: Insertion mask; defaults to every layer on (required without layer selection).
            **sizes: Size per searched module; modules left out are 0 (off).

        Raises:
            ConfigError: If the result is not in the space.

        """
        unknown = [m for m in sizes if m not in self.modules]
        if unknown:
            raise ConfigError(
                f"module {unknown[0]!r} is not searched in space {self.name!r}; allowed: {allowed_list(self.modules)}"
            )
        bits = tuple(bool(b) for b in mask) if mask is not None else (True,) * self.num_layers
        return self.check(Point(mask=bits, sizes=tuple((m, int(sizes.get(m, 0))) for m in self.modules)))

    def head_only(self) -> Point:
        """The canonical "no PEFT module" point: every size 0, every mask bit on (see :meth:`canonical`)."""
        return Point(mask=(True,) * self.num_layers, sizes=tuple((m, 0) for m in self.modules))

    def check(self, point: Point) -> Point:
        """Return ``point`` if it belongs to this space.

        Raises:
            ConfigError: Naming what is wrong: mask length, a fixed mask bit, a module or a size.

        """
        if len(point.mask) != self.num_layers:
            raise ConfigError(
                f"point mask has {len(point.mask)} bits but space {self.name!r} on {self.shape.name!r} "
                f"has {self.num_layers} layers"
            )
        if not self.layer_selection and not all(point.mask):
            raise ConfigError(f"space {self.name!r} does not search layers: every mask bit must be on")
        if tuple(m for m, _ in point.sizes) != self.modules:
            raise ConfigError(
                f"point sizes are for modules {[m for m, _ in point.sizes]} but space {self.name!r} "
                f"searches {list(self.modules)}"
            )
        for (module, size), (_, options) in zip(point.sizes, self.choices, strict=True):
            if size not in options:
                raise ConfigError(
                    f"point size {module}={size} is not a choice of space {self.name!r}; "
                    f"allowed: {allowed_list(options)}"
                )
        return point

    def contains(self, point: Point) -> bool:
        """Whether ``point`` belongs to this space."""
        try:
            self.check(point)
        except ConfigError:
            return False
        return True

    def canonical(self, point: Point) -> Point:
        """The representative of ``point``'s class of equivalent configurations.

        Every point that inserts nothing (all sizes 0, or an empty mask) trains only the task
        head, so they are all the same configuration; they map to :meth:`head_only` (all sizes 0,
        every mask bit on). Every bit on is chosen because it is in every space, with or
        without layer selection, and matches ``conf/peft/head_only.yaml`` (``layers: all``).
        A flag (``dora``) on a point without LoRA changes nothing and is set to its first choice.
        Any other point is its own canonical form: with the shared mask and at least one module
        on, different points give different models. A search can deduplicate on
        ``canonical(p)`` to avoid evaluating the same configuration twice.
        """
        self.check(point)
        if point.is_head_only:
            return self.head_only()
        if not point.has_lora and any(m in FLAG_MODULES for m in self.modules):
            first = dict(self.choices)
            sizes = tuple((m, first[m][0] if m in FLAG_MODULES else size) for m, size in point.sizes)
            return Point(mask=point.mask, sizes=sizes)
        return point

    def sample(self, generator: torch.Generator | random.Random, n: int) -> list[Point]:
        """Draw ``n`` points uniformly from the space (duplicates possible).

        Each mask bit is on with probability 1/2 independently, and each size is uniform over
        its choices, which is the uniform distribution over the space's points.

        Args:
            generator: A seeded ``torch.Generator`` or ``random.Random``; the same seed gives
                the same points.
            n: Number of points.

        """
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        if isinstance(generator, random.Random):
            rows = [
                (
                    [generator.random() < 0.5 for _ in range(self.mask_dims)],
                    [generator.randrange(len(options)) for _, options in self.choices],
                )
                for _ in range(n)
            ]
        elif isinstance(generator, torch.Generator):
            bits = torch.randint(0, 2, (n, self.mask_dims), generator=generator).bool().tolist()
            indices = [
                torch.randint(0, len(options), (n,), generator=generator).tolist() for _, options in self.choices
            ]
            rows = [(bits[i], [column[i] for column in indices]) for i in range(n)]
        else:
            raise TypeError(f"generator must be a torch.Generator or random.Random, not {type(generator).__name__}")
        return [self._from_indices(bits, idx) for bits, idx in rows]

    def iter_points(self, limit: int = 100_000) -> Iterator[Point]:
        """Every point of a small space (e.g. the SA-only enumeration of Figure 7).

        Raises:
            ValueError: If the space has more than ``limit`` points.

        """
        if self.size > limit:
            raise ValueError(f"space {self.name!r} has {self.size} points, more than limit={limit}")
        for bits in itertools.product((False, True), repeat=self.mask_dims):
            for idx in itertools.product(*(range(len(options)) for _, options in self.choices)):
                yield self._from_indices(list(bits), list(idx))

    def enumerate_configurations(self) -> list[Point]:
        """Every distinct configuration once, in canonical form, ascending in parameter count.

        A pure function of the space (ties in :meth:`param_count` are broken by the sizes, then
        by the mask), so an enumerated search proposes the same sequence in every run and on
        every resume. The head-only configuration (0 parameters) comes first. Builds
        :attr:`num_configurations` points: meant for small spaces (e.g. the SA space of Figure 7).
        """
        masks = (
            [m for m in itertools.product((False, True), repeat=self.mask_dims) if any(m)]
            if self.layer_selection
            else [()]
        )
        points = [self.head_only()]
        flag_columns = [j for j, (m, _) in enumerate(self.choices) if m in FLAG_MODULES]
        lora_columns = [j for j, (m, _) in enumerate(self.choices) if m in LORA_MODULES]
        for idx in itertools.product(*(range(len(options)) for _, options in self.choices)):
            if not any(i for j, i in enumerate(idx) if j not in flag_columns):
                continue  # every module off: the head-only configuration, already listed
            if not any(idx[j] for j in lora_columns) and any(idx[j] for j in flag_columns):
                continue  # a flag without LoRA: the same configuration as with the flag at its first choice
            points += [self._from_indices(list(bits), list(idx)) for bits in masks]
        return sorted(points, key=self.enumeration_key)

    def enumeration_key(self, point: Point) -> tuple[int, tuple[int, ...], tuple[bool, ...]]:
        """Sort key of :meth:`enumerate_configurations`: parameter count, sizes, then mask."""
        return (self.param_count(point), tuple(size for _, size in point.sizes), point.mask)

    def neighbours(self, point: Point) -> list[Point]:
        """Points one step away: one mask bit flipped, or one size moved to an adjacent choice.

        Bits are only flipped with layer selection. All neighbours are in the space, distinct
        from ``point`` and from each other (mask flips first, then sizes down/up per module).
        """
        self.check(point)
        out: list[Point] = []
        for layer in range(self.mask_dims):
            mask = list(point.mask)
            mask[layer] = not mask[layer]
            out.append(Point(mask=tuple(mask), sizes=point.sizes))
        for j, ((module, size), (_, options)) in enumerate(zip(point.sizes, self.choices, strict=True)):
            index = options.index(size)
            for step in (-1, 1):
                if 0 <= index + step < len(options):
                    sizes = list(point.sizes)
                    sizes[j] = (module, options[index + step])
                    out.append(Point(mask=point.mask, sizes=tuple(sizes)))
        return out

    # ------------------------------------------------------------------ encoding for the GP

    def encode(self, points: Sequence[Point]) -> torch.Tensor:
        """Points as rows of a float64 ``(n, dims)`` tensor in ``[0, 1]`` for a GP surrogate.

        Columns: the searched mask bits as 0/1, then each module's size as its ordinal index in
        its choices divided by ``len(choices) - 1``. Ordinal rather than raw size because the
        sizes are ordered but roughly geometric (each choice doubles the last): raw values would
        crowd every small size near 0 and let the few largest dominate a stationary kernel,
        while ordinal indices put each doubling one equal step apart.
        """
        rows = []
        for point in points:
            self.check(point)
            bits = [float(b) for b in point.mask[: self.mask_dims]]
            ords = [
                options.index(size) / max(1, len(options) - 1)  # a fixed flag ([1]) is one 0 column
                for (_, size), (_, options) in zip(point.sizes, self.choices, strict=True)
            ]
            rows.append(bits + ords)
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), self.dims)

    def decode(self, X: torch.Tensor) -> list[Point]:
        """Inverse of :meth:`encode` for any real values, e.g. a relaxed acquisition optimum.

        Values are clipped to ``[0, 1]``; a mask bit is on when its value is >= 0.5 and each size
        is the choice at the nearest ordinal index. ``decode(encode(p)) == p`` for every point.

        Args:
            X: ``(n, dims)`` or ``(dims,)`` tensor.

        """
        X = torch.as_tensor(X, dtype=torch.float64)
        if X.dim() == 1:
            X = X.unsqueeze(0)
        if X.dim() != 2 or X.shape[1] != self.dims:
            raise ValueError(f"X must have shape (n, {self.dims}) for space {self.name!r}; got {tuple(X.shape)}")
        X = X.clamp(0.0, 1.0)
        bits = (X[:, : self.mask_dims] >= 0.5).tolist()
        columns = [
            torch.round(X[:, self.mask_dims + j] * (len(options) - 1)).long().tolist()
            for j, (_, options) in enumerate(self.choices)
        ]
        return [self._from_indices(bits[i], [column[i] for column in columns]) for i in range(X.shape[0])]

    # ------------------------------------------------------------------ what a point means

    def to_peft(self, point: Point, name: str = "autopeft") -> PeftSpec:
        """The :class:`PeftSpec` of ``point``: the fixed fields, its mask as layers, its sizes.

        Modules the space does not search are off. The result passes
        :func:`~autopeft.peft.validate_spec` on the space's backbone.
        """
        self.check(point)
        spec = self._fixed_spec
        sizes = {MODULE_FIELDS[m]: size for m, size in point.sizes if m in MODULE_FIELDS}
        values = {f.name: getattr(spec, f.name) for f in fields(PeftSpec)}
        values.update(name=name, layers=point.layers, **sizes)
        groups = {GROUP_RANK_MODULES[m]: size for m, size in point.sizes if m in GROUP_RANK_MODULES}
        if groups:
            values["lora_rank_pattern"] = tuple(sorted(groups.items()))
        # A flag acts on LoRA projections only: without LoRA the point is its flag-off configuration.
        values.update({FLAG_MODULES[m]: bool(size) and point.has_lora for m, size in point.sizes if m in FLAG_MODULES})
        return validate_spec(PeftSpec(**values), self.shape)

    def param_count(self, point: Point) -> int:
        """The paper's count of fine-tuned parameters (appendix A), computed without a model.

        ``2 * D * D_h`` per inserted layer for SA and PA, ``2 * L_PT * D_h`` for prefix-tuning and
        ``2 * r * D_h`` per LoRA target; equal to :func:`autopeft.peft.params.paper_param_count` of
        :meth:`to_peft` (kept here so a search can price many candidates cheaply).
        """
        self.check(point)
        d_h = self.shape.hidden_size
        per_layer = sum(self._weights[m] * size for m, size in point.sizes)
        return 2 * d_h * per_layer * sum(point.mask)

    def param_count_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`param_count` of encoded points, vectorised (the deterministic objective of the BO).

        Decodes like :meth:`decode` (mask bit on at >= 0.5, size at the nearest ordinal index),
        so ``param_count_tensor(encode(ps))[i] == param_count(ps[i])`` exactly.

        Args:
            X: ``(..., dims)`` encodings.

        Returns:
            ``(..., 1)`` float64 counts.

        """
        X = torch.as_tensor(X, dtype=torch.float64).clamp(0.0, 1.0)
        if self.mask_dims:
            layers_on = (X[..., : self.mask_dims] >= 0.5).sum(dim=-1, keepdim=True).to(torch.float64)
        else:
            layers_on = torch.full((*X.shape[:-1], 1), float(self.num_layers), dtype=torch.float64, device=X.device)
        per_layer = torch.zeros_like(layers_on)
        for j, (module, options) in enumerate(self.choices):
            table = torch.tensor(options, dtype=torch.float64, device=X.device)
            index = torch.round(X[..., self.mask_dims + j] * (len(options) - 1)).long()
            per_layer = per_layer + self._weights[module] * table[index].unsqueeze(-1)
        return 2.0 * self.shape.hidden_size * per_layer * layers_on

    def param_percent(self, point: Point, backbone_params: int) -> float:
        """:meth:`param_count` as a percentage of the backbone's pretrained parameters."""
        if backbone_params <= 0:
            raise ValueError(f"backbone_params={backbone_params} must be > 0")
        return 100.0 * self.param_count(point) / backbone_params

    def describe(self, point: Point) -> str:
        """The point in words, e.g. ``"SA 48 + PT 6 on layers 4–11"``."""
        return self.to_peft(point).describe()

    def to_json_dict(self) -> dict[str, Any]:
        """The space as a JSON-ready dict (what ``run.py mode=space`` prints).

        ``size`` counts points, ``configurations`` the distinct ones (:attr:`num_configurations`).
        """
        return {
            "name": self.name,
            "backbone": self.shape.name,
            "modules": list(self.modules),
            "layer_selection": self.layer_selection,
            "num_layers": self.num_layers,
            "hidden_size": self.shape.hidden_size,
            "choices": {m: list(options) for m, options in self.choices},
            "fixed": {k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed},
            "dims": self.dims,
            "size": self.size,
            "configurations": self.num_configurations,
        }

    def from_indices(self, bits: Sequence[bool], indices: Sequence[int]) -> Point:
        """The point with searched mask ``bits`` and choice index ``indices[i]`` for module ``i``."""
        return self._from_indices(bits, indices)

    # ------------------------------------------------------------------ helpers

    def _from_indices(self, bits: Sequence[bool], indices: Sequence[int]) -> Point:
        """Point from searched mask bits and one choice index per module."""
        mask = tuple(bool(b) for b in bits) if self.layer_selection else (True,) * self.num_layers
        sizes = tuple((m, options[i]) for (m, options), i in zip(self.choices, indices, strict=True))
        return Point(mask=mask, sizes=sizes)

    @cached_property
    def _weights(self) -> dict[str, int]:
        """Per searched module, the projections (D_h-wide units) one unit of its size prices.

        ``2 * D_h * size * weight`` per inserted layer: 1 for SA, PA and prefix (paper appendix A),
        the number of LoRA targets for ``lora``, the targets in the group for a group rank, and 0
        for a flag, which the paper's count leaves out like biases.
        """
        targets = self._fixed_spec.lora_targets
        weights = {"sa": 1, "pa": 1, "prefix": 1, "lora": len(targets)}
        for module, group in GROUP_RANK_MODULES.items():
            weights[module] = sum(1 for t in targets if lora_group_of(t) == group)
        weights.update(dict.fromkeys(FLAG_MODULES, 0))
        return {m: weights[m] for m in self.modules}

    @cached_property
    def _fixed_spec(self) -> PeftSpec:
        """The fixed fields as a validated PeftSpec (all modules off, every layer); built once."""
        try:
            return peft_from_config({"name": self.name, "layers": "all", **dict(self.fixed)}, self.shape)
        except ConfigError as err:
            raise ConfigError(f"space.fixed of space {self.name!r}: {err}") from err


def _check_module_name(module: Any, where: str) -> None:
    """Fail on a name that is not one of :data:`MODULES`, naming ``where`` it came from."""
    if module not in MODULES:
        raise ConfigError(
            f"{where} has unknown module {module!r}{did_you_mean(str(module), MODULES)}; "
            f"allowed: {allowed_list(MODULES)}"
        )


def _check_module_combination(name: str, modules: Sequence[str]) -> None:
    """One rank for every target (``lora``) and group ranks exclude each other; a flag needs LoRA.

    Raises:
        ConfigError: Naming the space, its modules and what to search instead.

    """
    groups = [m for m in modules if m in GROUP_RANK_MODULES]
    if "lora" in modules and groups:
        raise ConfigError(
            f"space {name!r} searches 'lora' (one rank for every target) together with {allowed_list(groups)} "
            f"(ranks per projection group); search one or the other"
        )
    for flag in FLAG_MODULES:
        if flag in modules and not any(m in LORA_MODULES for m in modules):
            raise ConfigError(
                f"space {name!r} searches {flag!r}, an option of LoRA projections, but no LoRA module; "
                f"add one of {allowed_list(LORA_MODULES)} to space.modules"
            )


def _check_modules(modules: Sequence[Any]) -> None:
    """Fail on an unknown or repeated module name, or an empty list."""
    if not modules:
        raise ConfigError(f"space.modules is empty; list at least one of {allowed_list(MODULES)}")
    for module in modules:
        _check_module_name(module, "space.modules")
    if len(set(modules)) != len(modules):
        raise ConfigError(f"space.modules={list(modules)} lists a module twice")


def _choice_tuple(module: str, options: Any) -> tuple[int, ...]:
    """A choices override as a tuple of ints (range and order are checked by _check_choices)."""
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise ConfigError(f"space.choices.{module}={options!r} must be a list of integer sizes")
    for value in options:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"space.choices.{module} has {value!r}, which is not an integer size")
    return tuple(options)


def _check_choices(module: str, options: tuple[int, ...], shape: BackboneShape) -> None:
    """Choices must lie in [0, D_h], start with 0 (off), ascend strictly and offer a real size.

    A flag (``dora``) takes 0 (off) and 1 (on): ``[0, 1]`` searches it, ``[1]`` or ``[0]`` fixes it.
    """
    if module in FLAG_MODULES:
        if not options or list(options) != sorted(set(options)) or not set(options) <= {0, 1}:
            raise ConfigError(
                f"space.choices.{module}={list(options)} is not allowed; allowed: [0, 1] (searched), [1] or [0] (fixed)"
            )
        return
    for value in options:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= shape.hidden_size:
            raise ConfigError(
                f"space.choices.{module} has {value!r}, outside what backbone {shape.name!r} allows: "
                f"an integer in [0, {shape.hidden_size}] (0 switches the module off, "
                f"{shape.hidden_size} is its hidden size D_h)"
            )
    if 0 not in options:
        raise ConfigError(f"space.choices.{module}={list(options)} must contain 0 (the module switched off)")
    if list(options) != sorted(set(options)):
        raise ConfigError(
            f"space.choices.{module}={list(options)} must be sorted ascending without duplicates, "
            f"e.g. {sorted(set(options))}"
        )
    if len(options) < 2:
        raise ConfigError(f"space.choices.{module}={list(options)} needs at least one size besides 0")


def _to_plain(cfg: Any) -> Any:
    """An OmegaConf node as plain dicts and lists (anything else is returned unchanged)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
