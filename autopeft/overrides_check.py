"""Command-line overrides checked before Hydra acts on them, so a typo gets one line with a suggestion.

Hydra reports a wrong config group option (``task=rotten_tomato``) in 5-24 lines without the
closest match, and a misspelt key (``serch.n_iter=3``) with the advice to add ``+serch.n_iter=3``,
which would only create a second, unused key. ``run.py`` calls :func:`check_overrides` before
Hydra starts; it raises :class:`~autopeft.errors.ConfigError` with one line that names the bad
value or key, the closest match and the allowed ones, so nothing is written and no traceback shown.

What it checks:

* every option of a config group override (``task=rte``, ``hydra/launcher=parallel``,
  ``backbone@x=...``, each value of a sweep ``-m task=rte,cb`` or ``choice(...)``) against the
  group's configs on Hydra's own search path (``conf/`` plus Hydra's and its plugins' groups);
* every key override (``search.n_iter=3``, ``+x=1``, ``~x``) by composing the config once with the
  command line's group overrides and applying each key override to it as Hydra would. This costs
  about 0.15-0.2 s, so it only happens when a key is not a plain value of ``conf/run.yaml`` itself
  (``mode=``, ``seed=``, ``output_root=``, ``hydra.run.dir=`` need no composition).

Anything it cannot judge (syntax errors, ``--config-name``, glob sweeps) is left to Hydra, and so is
the whole command line if the check itself fails (it uses Hydra internals: its argument parser and
``ConfigLoaderImpl._apply_overrides_to_config``, so that it judges overrides exactly as Hydra does).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from autopeft.errors import ConfigError, allowed_list, did_you_mean, first_line, shown_value

#: The config folder and primary config ``run.py`` hands to ``@hydra.main``.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "run"

#: At most this many compositions per command line (each ~0.15-0.2 s): the first value of every
#: sweep, plus other values of swept groups whose keys are overridden (``-m peft=sa,lora peft.x=1``).
MAX_COMPOSITIONS = 2

#: How the project words the shape of mappings whose defaults do not show it (all-null values);
#: the same words as the check that would reject the value later (``autopeft.bo.pareto.parse_ref_point``).
SHAPES = {
    "search.acquisition.ref_point": (
        "{score: <number|null>, param_percent: <number|null>} "
        "(the worst acceptable score and the largest acceptable % params)"
    ),
}


def check_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR, config_name: str = CONFIG_NAME) -> None:
    """Fail in one line on a config group option or key on the command line that does not exist.

    Args:
        argv: The command line after the program name (flags such as ``-m`` and ``--cfg job``
            included; they are parsed with Hydra's own argument parser).
        conf_dir: The primary config folder.
        config_name: The primary config's name.

    Raises:
        ConfigError: For an unknown group option (with the closest option and the allowed ones), an
            unknown key (with the closest existing key path and the keys allowed there, never the
            advice to add it with ``+``), a value of the wrong shape for its key, or any other
            problem composing the config (Hydra's message, first line).

    """
    try:
        _check(argv, conf_dir, config_name)
    except ConfigError:
        raise
    except Exception:  # a fault of this check itself must not stop a run: Hydra still checks everything
        return


def _check(argv: Sequence[str], conf_dir: Path, config_name: str) -> None:
    """:func:`check_overrides` without its safety net (the tests call this, to see the check's own faults)."""
    args = _hydra_args(argv)
    if args is None or args.help or args.hydra_help or args.shell_completion:
        return  # Hydra's help and completion compose nothing from the overrides the user means to run
    if args.config_path or args.config_name or args.config_dir or args.experimental_rerun:
        return  # another primary config or search path: Hydra checks it
    overrides = _parse(args.overrides)
    if overrides is None:
        return  # a syntax error: Hydra's own message says where
    repo = _repository(conf_dir)
    groups = [o for o in overrides if _is_group(o, repo)]
    for override in groups:
        _check_group_override(override, repo)
    keys = [o for o in overrides if not _is_group(o, repo)]
    for override in keys:
        _check_unknown_group(override, repo)
    if not any(_needs_composition(o, conf_dir / f"{config_name}.yaml") for o in keys):
        return
    _check_keys(groups, keys, conf_dir, config_name, multirun=bool(args.multirun))


def _hydra_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """The command line as ``@hydra.main`` parses it, or None where argparse refuses it (Hydra reports)."""
    from hydra._internal.utils import get_args_parser

    with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage message is Hydra's to print
        try:
            return get_args_parser().parse_args(list(argv))
        except SystemExit:
            return None


def _parse(lines: Sequence[str]) -> list[Any] | None:
    """Hydra's parsed overrides, or None when one of them is not valid override syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(list(lines))
    except Exception:  # OverrideParseException and anything else the grammar raises: Hydra's to report
        return None


def _repository(conf_dir: Path) -> Any:
    """Hydra's config repository over ``conf_dir``, Hydra's own configs and its plugins' (``hydra/launcher=joblib``)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path

    return ConfigRepository(config_search_path=create_config_search_path(f"file://{conf_dir}"))


def _is_group(override: Any, repo: Any) -> bool:
    """Whether Hydra treats ``override`` as a config group override (its rule: a group, not a dict value)."""
    return repo.group_exists(override.key_or_group) and not isinstance(override.value(), dict)


def _options(override: Any) -> list[Any] | None:
    """The values an override takes: one, each of a sweep or list, or None when they cannot be listed."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        return None  # glob(...) selects among the existing options by pattern
    if override.is_sweep_override():
        try:
            return list(override.sweep_iterator())
        except Exception:  # interval(...) and other sweeps that only a sweeper enumerates
            return None
    return [override.value()]


def _group_label(override: Any) -> str:
    """The group as typed, without ``+``/``~``: ``task``, ``hydra/launcher``, ``backbone@x``."""
    return override.get_key_element().lstrip("+~")


def _check_group_override(override: Any, repo: Any) -> None:
    """Each option of a group override must be one of the group's configs."""
    if override.is_delete() or override.is_force_add():
        return  # deletions name the current option; ++group is refused by Hydra in one line
    group = override.key_or_group
    allowed = sorted(repo.get_group_options(group))
    for value in _options(override) or []:
        for option in value if isinstance(value, list) else [value]:  # group=[a,b] selects several
            if option is None:
                leave_out = f"leave {_group_label(override)}= out for its default"
                raise ConfigError(
                    f"{_group_label(override)}=null is not an option of {group}; allowed: {allowed_list(allowed)} "
                    f"({leave_out})"
                )
            if str(option) not in allowed:
                raise ConfigError(
                    f"{_group_label(override)}={str(option)!r} is not an option of {group}"
                    f"{did_you_mean(str(option), allowed)}; allowed: {allowed_list(allowed)}"
                )


def _all_groups(repo: Any, parent: str = "") -> list[str]:
    """Every config group path on the search path: ``task``, ``hydra/launcher``, ..."""
    from hydra.core.object_type import ObjectType

    found = []
    for name in repo.get_group_options(parent, results_filter=ObjectType.GROUP):
        path = f"{parent}/{name}" if parent else name
        found += [path, *_all_groups(repo, path)]
    return found


def _check_unknown_group(override: Any, repo: Any) -> None:
    """A ``/`` in the key or an ``@package`` means a group was meant: name the closest one."""
    key = override.key_or_group
    if "/" not in key and override.package is None:
        return
    groups = _all_groups(repo)
    parent = key.rpartition("/")[0]
    siblings = sorted(g for g in groups if g.rpartition("/")[0] == parent) if parent in groups else []
    shown = siblings or sorted(g for g in groups if not g.startswith("hydra/") and g != "hydra")
    raise ConfigError(
        f"{override.input_line}: there is no config group {key!r}{did_you_mean(key, groups)}; "
        f"groups{f' in {parent}' if siblings else ''}: {allowed_list(shown)}"
    )


def _needs_composition(override: Any, primary: Path) -> bool:
    """Whether a key override can only be checked on the composed config.

    A plain value of the primary config itself (``mode``, ``seed``, ``output_root``,
    ``hydra.run.dir``) exists whatever the groups choose, so changing it needs no composition.
    """
    from omegaconf import DictConfig, OmegaConf

    if not override.is_delete() and not override.is_add() and not override.is_force_add():
        node: Any = _load_primary(primary)
        for part in override.key_or_group.split("."):
            if not isinstance(node, DictConfig) or part not in node:
                return True
            node = node._get_node(part)
        return OmegaConf.is_dict(node) or OmegaConf.is_list(node)
    return True


_PRIMARY: dict[Path, Any] = {}


def _load_primary(path: Path) -> Any:
    """The primary config file as written (no defaults applied), read once."""
    from omegaconf import OmegaConf

    if path not in _PRIMARY:
        _PRIMARY[path] = OmegaConf.load(path)
    return _PRIMARY[path]


def _cells(groups: Sequence[Any], keys: Sequence[Any]) -> Iterator[tuple[list[str], str]]:
    """Group override lines to compose with, and how to name that cell in a message.

    The first value of every sweep always; then, up to :data:`MAX_COMPOSITIONS`, each other value
    of a swept group whose own keys are overridden (``-m peft=sa,lora peft.lora_rank=4``: the
    ``peft=sa`` cell has no ``lora_rank``).
    """
    first: list[str] = []
    swept: list[tuple[int, Any, list[Any]]] = []
    for override in groups:
        options = _options(override) if override.is_sweep_override() else None
        if not override.is_sweep_override():
            first.append(override.input_line)
        elif options:  # choice sweep: compose with its first value
            first.append(f"{override.get_key_element()}={_as_text(options[0])}")
            swept.append((len(first) - 1, override, options))
    yield first, ""
    heads = {o.key_or_group.split(".")[0] for o in keys}
    count = 1
    for index, override, options in swept:
        if override.key_or_group not in heads:
            continue
        for option in options[1:]:
            if count >= MAX_COMPOSITIONS:
                return
            count += 1
            line = f"{override.get_key_element()}={_as_text(option)}"
            yield [*first[:index], line, *first[index + 1 :]], f" (with {line})"


def _as_text(value: Any) -> str:
    """A group option as the command line spells it."""
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def _check_keys(groups: Sequence[Any], keys: Sequence[Any], conf_dir: Path, config_name: str, multirun: bool) -> None:
    """Compose the config for each cell and apply the key overrides to it one by one, as Hydra will."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    # job_name: what @hydra.main names the job (the script), so hydra.job.* resolves as in the run.
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3", job_name=config_name):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        for cell, where in _cells(groups, keys):
            try:
                cfg = hydra.compose_config(config_name, cell, run_mode=mode, validate_sweep_overrides=False)
            except (HydraException, OmegaConfBaseException, ValueError) as err:
                raise ConfigError(f"{first_line(err)}{where}") from None
            for override in keys:
                _apply_key_override(override, cfg, where, conf_dir)


def _apply_key_override(override: Any, cfg: Any, where: str, conf_dir: Path) -> None:
    """Apply ``override`` (each value of a sweep) to ``cfg`` as Hydra does, or fail in one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not override.is_sweep_override():
        _apply_one(override, cfg, where, conf_dir)
        return
    values = None
    with contextlib.suppress(Exception):  # interval(...) sweeps: only the key can be checked
        values = list(override.sweep_string_iterator())
    if not values:
        problem = _missing(cfg, override.key_or_group)
        if problem:
            raise ConfigError(_unknown_key_message(cfg, override.key_or_group, problem, where, conf_dir))
        return
    parser = OverridesParser.create()
    singles = [parser.parse_override(f"{override.get_key_element()}={value}") for value in values]
    # Each cell starts from the same config: a value that replaces a mapping or list, or is one,
    # is applied to a copy (~8 ms) so that the next value meets the node as it was.
    structural = _snapshot(_node_or_none(cfg, override.key_or_group)) is not None or any(
        isinstance(single.value(), dict | list) for single in singles
    )
    for single in singles[1:]:
        _apply_one(single, copy.deepcopy(cfg) if structural else cfg, where, conf_dir)
    _apply_one(singles[0], cfg, where, conf_dir)  # the first value stays, as in the first cell


def _apply_one(override: Any, cfg: Any, where: str, conf_dir: Path) -> None:
    """Apply one single-valued key override to ``cfg`` with Hydra's own code; explain a failure."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    key = override.key_or_group
    # Looked at before applying: a failed update can leave a half-changed node behind (seed.x=1
    # turns seed into {}), which would spoil the explanation.
    problem = _missing(cfg, key)
    node = _node_or_none(cfg, key) if problem is None else None
    exists = node is not None and not node._is_none()  # as written: hydra.run.dir only resolves in a run
    pristine = _snapshot(node)
    try:
        ConfigLoaderImpl._apply_overrides_to_config([override], cfg)
    except (HydraException, OmegaConfBaseException) as err:
        if override.is_add() and exists:
            raise ConfigError(
                f"{override.input_line} adds a key, but {key} exists: change it with "
                f"{override.input_line[1:]} (or replace it with +{override.input_line})"
            ) from None
        if problem:
            raise ConfigError(_unknown_key_message(cfg, key, problem, where, conf_dir)) from None
        if override.is_delete():  # ~key=value of another value, ~key of a null
            raise ConfigError(f"{override.input_line}{where}: {first_line(err)}") from None
        raise ConfigError(_shape_message(override, pristine, err, where)) from None


def _snapshot(node: Any) -> dict[str, Any] | list[Any] | None:
    """A mapping's or list's contents as plain Python (interpolations as written), else None."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(node) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]
    return None


def _node_or_none(cfg: Any, key: str) -> Any:
    """The node at ``key`` (not its resolved value: interpolations stay as written), or None."""
    node: Any = cfg
    for part in key.split("."):
        node = _child(node, part)
        if node is None:
            return None
    return node


class _Gap(NamedTuple):
    """Where a key path leaves the config."""

    parent: str  #: the longest existing prefix ('' for the top level)
    keys: list[str] | None  #: the keys there; None when the parent holds a value, not a mapping
    held: Any  #: that value, when ``keys`` is None


def _missing(cfg: Any, key: str) -> _Gap | None:
    """Where ``key`` leaves the config, or None when the whole path exists."""
    from omegaconf import DictConfig

    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth])
        child = _child(node, part)
        if child is not None:
            node = child
            continue
        if not isinstance(node, DictConfig):
            return _Gap(parent, None, node._value() if hasattr(node, "_value") else node)
        # Hydra's own settings are a top-level key too, but no typo of an app key means them.
        return _Gap(parent, sorted(str(k) for k in node if depth or k != "hydra" or parts[0] == "hydra"), None)
    return None


def _child(node: Any, part: str) -> Any:
    """The node below ``node`` named ``part`` (a key, or an index of a list), else None."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig) and part in node:
        return node._get_node(part)
    if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
        return node._get_node(int(part))
    return None


def _suggest(cfg: Any, key: str) -> str | None:
    """The existing key path closest to ``key``, correcting each misspelt part in turn, else None.

    ``serch.n_itr`` -> ``search.n_iter``; None as soon as some part has no close match.
    """
    node: Any = cfg
    fixed = []
    for part in key.split("."):
        child = _child(node, part)
        if child is None:
            keys = [str(k) for k in node] if hasattr(node, "keys") else []
            close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
            if not close:
                return None
            part, child = close[0], _child(node, close[0])
        fixed.append(part)
        node = child
    return ".".join(fixed)


def _unknown_key_message(cfg: Any, key: str, problem: _Gap, where: str, conf_dir: Path) -> str:
    """``unknown key serch.n_iter (did you mean 'search.n_iter'?); allowed top-level keys: ...``.

    Under a config group's node the message names the chosen option, and the options that do have
    the key (``logger.wandb.mode`` exists with ``logger=wandb``, not with the default ``logger=csv``).
    """
    from omegaconf import OmegaConf

    parent, known, held = problem
    guess = _suggest(cfg, key)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    head, _, below = key.partition(".")
    chosen = OmegaConf.select(cfg, f"hydra.runtime.choices.{head}", default=None) if below else None
    with_choice = f" with {head}={chosen}" if isinstance(chosen, str) else ""
    if with_choice and where == f" ({with_choice.strip()})":
        where = ""  # the sweep's cell is the choice the message names anyway
    others = _options_with_key(conf_dir, head, below, skip=chosen) if with_choice else []
    elsewhere = (
        f"; {' and '.join(f'{head}={o}' for o in others)} {'has' if len(others) == 1 else 'have'} it" if others else ""
    )
    if known is None:
        return f"unknown key {key}{where}: {parent} holds {shown_value(held)}{with_choice}, not keys{elsewhere}"
    there = f"keys of {parent}{with_choice}" if parent else "top-level keys"
    return f"unknown key {key}{hint}{where}; allowed {there}: {allowed_list(known)}{elsewhere}"


def _options_with_key(conf_dir: Path, group: str, path: str, skip: str | None) -> list[str]:
    """The options of a ``conf/`` group whose own file sets ``path`` (read as written, defaults aside)."""
    from omegaconf import OmegaConf

    found = []
    for file in sorted((conf_dir / group).glob("*.yaml")):
        if file.stem == skip:
            continue
        try:
            node = OmegaConf.load(file)
        except Exception:  # an unreadable option is Hydra's to report when it is chosen
            continue
        if _missing(node, path) is None:
            found.append(file.stem)
    return found


def _shape_message(override: Any, before: dict[str, Any] | list[Any] | None, err: Exception, where: str) -> str:
    """``key=value must be a mapping {...}`` / ``must be a list``: the key exists but holds another shape.

    Args:
        override: The override that failed.
        before: What the key held before it, as plain Python when a mapping or a list (else None).
        err: Hydra's or OmegaConf's error.
        where: `` (with group=option)`` for a sweep's cell, else empty.

    """
    key = override.key_or_group
    shown = f"{override.get_key_element().lstrip('+')}={shown_value(override.value())}"
    if isinstance(before, dict):
        shape = SHAPES.get(key) or "{" + ", ".join(f"{k}: {_placeholder(v)}" for k, v in before.items()) + "}"
        first = next(iter(before), "<key>")
        return f"{shown} must be a mapping {shape}{where}; set one key with {key}.{first}=..."
    if isinstance(before, list):
        return f"{shown} must be a list, like its default {key}={shown_value(before)}{where}"
    cause = err.__cause__ or err
    return f"{shown} cannot be set{where}: {first_line(cause)}"


def _placeholder(value: Any) -> str:
    """What a mapping's key holds, for a shape message: ``<number>``, ``<text>``, ``{...}``."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list):
        return "[...]"
    if isinstance(value, bool):
        return "<true|false>"
    if isinstance(value, int | float):
        return "<number>"
    if isinstance(value, str):
        return "<text>"
    return "<value|null>"
