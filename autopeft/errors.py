"""Errors that reach the user as one clear line instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and what is allowed.

    ``run.py`` prints these as ``error: <message>`` and exits with status 2, so the message
    must stand on its own without a traceback.
    """


def allowed_list(options: Iterable[Any]) -> str:
    """Render allowed options for an error message, e.g. ``'a', 'b', 'c'``."""
    return ", ".join(repr(o) for o in options)


def shown_value(value: Any) -> str:
    """A config value as the command line spells it: ``null``, ``true``, ``'abc'``, ``3``, ``['a']``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message (libraries' run to many lines), else its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def did_you_mean(value: str, options: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_known_keys(section: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Fail on keys of ``section`` that are not in ``allowed`` (catches config typos).

    Args:
        section: A mapping of config keys (an OmegaConf node or a dict).
        allowed: The keys that ``where`` understands.
        where: The config path shown in the message, e.g. ``"peft"``.

    Raises:
        ConfigError: If a key is unknown; the message suggests the closest allowed key.

    """
    allowed = sorted(allowed)
    for key in section:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {where}.{key}{did_you_mean(key, allowed)}; "
                f"allowed keys of {where}: {allowed_list(allowed)}"
            )
