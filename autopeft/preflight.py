"""Checks that must run before Hydra starts, because Hydra itself acts on them.

Hydra creates the run directory before any of AutoPEFT's code runs, so an output location that
cannot be written would end in a Hydra traceback. ``run.py`` calls :func:`check_output_location`
first and turns the problem into one clear line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from autopeft.errors import ConfigError, shown_value

#: Command-line keys that choose where a run writes, and the default root.
_LOCATION_KEYS = ("output_root", "hydra.run.dir", "hydra.sweep.dir", "resume")


def _root_value(arg: str) -> tuple[bool, object]:
    """``(True, value)`` when ``arg`` sets ``output_root`` (the value as Hydra parses it), else ``(False, None)``.

    A sweep (``output_root=a,b``) or an override Hydra cannot parse is left to Hydra: ``(False, None)``.
    """
    key, sep, _ = arg.partition("=")
    if not sep or key.strip().lstrip("+~") != "output_root":
        return False, None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(arg)
    except Exception:  # Hydra reports its own syntax errors
        return False, None
    if override.is_sweep_override():
        return False, None
    return True, override.value()


def _empty_root(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The setting that leaves the output root without a folder, if any.

    An empty root would put run directories at the top of the file system (``/<mode>/...``); a
    null, boolean, list or mapping one would become a folder named ``None``, ``True`` or ``['a']``.
    """
    for arg in reversed(argv):  # the last override of a key wins, as in Hydra
        sets, value = _root_value(arg)
        if not sets:
            continue
        if isinstance(value, str):
            return None if value.strip() else f"output_root={value!r}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None  # a folder named 3
        return f"output_root={shown_value(value)}"
    root = environ.get("AUTOPEFT_OUTPUT_ROOT")
    if root is not None and not root.strip():
        return f"$AUTOPEFT_OUTPUT_ROOT={root!r}"
    return None


def output_locations(argv: Sequence[str], environ: Mapping[str, str]) -> list[tuple[str, Path]]:
    """``(setting, folder)`` pairs this command line will write into (the default root if none is given)."""
    given = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if sep and key in _LOCATION_KEYS and value and "${" not in value:
            given[key] = Path(value.strip("'\"")).expanduser()
    if "hydra.run.dir" in given or "hydra.sweep.dir" in given or "resume" in given:
        return [(k, v) for k, v in given.items() if k != "output_root"]
    if "output_root" in given:
        return [("output_root", given["output_root"])]
    root = environ.get("AUTOPEFT_OUTPUT_ROOT")
    return [("$AUTOPEFT_OUTPUT_ROOT", Path(root))] if root else [("output_root", Path("outputs"))]


def check_output_location(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> None:
    """Fail early, in one line, when a run could not create or write its output folder.

    Raises:
        ConfigError: Naming the setting, the folder and why it cannot be written, or the setting
            that leaves the output root without a folder (``output_root=``, ``output_root=null``,
            ``output_root=true``, ``output_root=[a]``, an empty ``$AUTOPEFT_OUTPUT_ROOT``).

    """
    environ = os.environ if environ is None else environ
    # Hydra would put an empty root's run directories at the top of the file system (/<mode>/...)
    # and a null, boolean or list one's under a folder named None, True or ['a'].
    empty = _empty_root(argv, environ)
    if empty:
        raise ConfigError(
            f"{empty} names no folder; run output needs one: output_root=<dir> "
            "(default: outputs, or $AUTOPEFT_OUTPUT_ROOT)"
        )
    for setting, folder in output_locations(argv, environ):
        if setting == "resume":
            continue  # a missing resume directory is reported by the mode itself, with more context
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        problem = None
        if not existing.is_dir():
            problem = f"{existing} is a file, not a folder"
        else:
            try:
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as err:
                problem = f"{existing} cannot be written ({err.strerror})"
        if problem:
            raise ConfigError(
                f"{setting}={str(folder)!r} cannot hold run output: {problem}; "
                "choose a writable folder with output_root=<dir> (or $AUTOPEFT_OUTPUT_ROOT)"
            )
