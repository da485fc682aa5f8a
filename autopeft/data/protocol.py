"""The evaluation protocol (``data.protocol``): which split selects epochs and which one is reported.

Two protocols, one config value (``conf/data/full.yaml``):

- ``heldout`` (the default): validation is carved from train (``task.dev_fraction``) or is the
  task's own validation file; epochs are selected (early stopping, best-epoch restore) on it and
  the score reported as *test* is measured on a split the selection never saw: the official dev
  split for GLUE/SuperGLUE (their test labels are hidden), the test file for the stand-ins.
- ``paper``: as the paper's §4 ("we report the best GLUE dev set performance", following Ben
  Zaken et al., 2022): training uses the whole train split, validation *is* the split ``heldout``
  reports (the official dev split), and the reported score is the best dev-set score over epochs,
  i.e. a number selected on the very split it is reported on. For SuperGLUE the paper says
  otherwise (Table 3: "We split 10% of the training set as the new validation set, and report ...
  on the evaluation set"), so under ``paper`` SuperGLUE tasks keep the held-out split policy.
  The stand-ins and custom tasks follow the GLUE rule: their test split (file or carve-out) plays
  the official dev split's role; a separate validation file of theirs is then not used.

Every training record carries ``protocol``, ``scoring`` (:data:`SCORINGS`) and
``selected_on_reported_split``; the reports say which protocol produced each number through
:func:`scores_text` / :func:`scores_caption`. This module is light (no torch, no datasets) so the
report modules can import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from autopeft.errors import ConfigError, allowed_list, did_you_mean

#: The values of ``data.protocol``.
PROTOCOLS = ("paper", "heldout")
#: Today's behaviour; also what a record written before ``data.protocol`` existed used.
DEFAULT_PROTOCOL = "heldout"

#: What a record's ``metrics.test`` is, by its ``scoring``.
SCORINGS = {
    "best_dev": "the best score over epochs on the split epochs were selected on (the official dev split)",
    "heldout": "the score at the selected epoch on a split the selection never saw",
}


def check_protocol(value: Any) -> str:
    """Return ``value`` if it is a protocol.

    Raises:
        ConfigError: Naming the bad value and the allowed ones, in one line.

    """
    if value not in PROTOCOLS:
        raise ConfigError(
            f"data.protocol={value!r} is not a protocol{did_you_mean(str(value), PROTOCOLS)}; "
            f"allowed: {allowed_list(PROTOCOLS)}"
        )
    return str(value)


def protocol_of(data_cfg: Mapping[str, Any] | None) -> str:
    """The checked ``protocol`` of a ``data`` config node (the default when the key is absent).

    Configs saved before the key existed (resumed searches, finished sweep cells) lack it; they
    ran the held-out protocol.
    """
    value = (data_cfg or {}).get("protocol")
    return check_protocol(DEFAULT_PROTOCOL if value is None else value)


def scoring(benchmark: str, protocol: str) -> str:
    """``best_dev`` or ``heldout``: what ``protocol`` makes of a task of ``benchmark``.

    ``paper`` selects on and reports the official dev split, except for SuperGLUE, where the
    paper's Table 3 carves 10% of train as validation and reports the evaluation set (which is
    the held-out rule).
    """
    check_protocol(protocol)
    return "best_dev" if protocol == "paper" and benchmark != "superglue" else "heldout"


def record_scoring(record: Mapping[str, Any]) -> tuple[str, str]:
    """``(protocol, scoring)`` of a training record; records from before the field are held-out."""
    protocol = record.get("protocol") or DEFAULT_PROTOCOL
    return str(protocol), str(record.get("scoring") or "heldout")


def scores_text(protocol: str, scoring_name: str) -> str:
    """One phrase saying what a score is and which protocol produced it (for captions and tables)."""
    if scoring_name == "best_dev":
        return f"best dev-set score over epochs, selected on the reported split (protocol={protocol})"
    if protocol == "paper":
        return (
            "held-out official dev split, epochs selected on 10% carved from train "
            "as the paper's Table 3 does for SuperGLUE (protocol=paper)"
        )
    return (
        "held-out split: the official dev split (test file for stand-ins), "
        f"never used for selection (protocol={protocol})"
    )


def scores_caption(kinds_by_task: Mapping[str, Iterable[tuple[str, str]]]) -> str:
    """A caption line saying, per task, what the scores are; it says so when protocols are mixed.

    Args:
        kinds_by_task: Per task, the :func:`record_scoring` of each record its numbers come from.

    Returns:
        ``"Scores: <text>."`` when every number is of one kind; otherwise ``"Scores mix protocols:
        <tasks>: <text>; ..."`` (or ``"Scores differ by task: ..."`` when one protocol scores tasks
        differently, as ``paper`` does GLUE and SuperGLUE), one entry per kind; ``""`` for none.

    """
    tasks_by_kind: dict[tuple[str, str], list[str]] = {}
    for task, kinds in kinds_by_task.items():
        for kind in dict.fromkeys(kinds):
            tasks_by_kind.setdefault(kind, []).append(task)
    if not tasks_by_kind:
        return ""
    if len(tasks_by_kind) == 1:
        return f"Scores: {scores_text(*next(iter(tasks_by_kind)))}."
    head = "Scores mix protocols" if len({p for p, _ in tasks_by_kind}) > 1 else "Scores differ by task"
    parts = [f"{', '.join(sorted(tasks))}: {scores_text(*kind)}" for kind, tasks in sorted(tasks_by_kind.items())]
    return f"{head}: " + "; ".join(parts) + "."


def scores_label(kinds: Iterable[tuple[str, str]]) -> str:
    """A short label for a plot axis or title: what the scores are, ``MIXED protocols`` when they mix."""
    short = {"best_dev": "best dev-set score over epochs", "heldout": "held-out split"}
    unique = sorted(set(kinds))
    text = ", ".join(f"{short.get(s, s)} (protocol={p})" for p, s in unique)
    return f"MIXED protocols: {text}" if len({p for p, _ in unique}) > 1 else text


__all__ = [
    "DEFAULT_PROTOCOL",
    "PROTOCOLS",
    "SCORINGS",
    "check_protocol",
    "protocol_of",
    "record_scoring",
    "scores_caption",
    "scores_label",
    "scores_text",
    "scoring",
]
