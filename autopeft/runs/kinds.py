"""What kind of run a directory holds, told from the files each mode writes there."""

from __future__ import annotations

from pathlib import Path

#: The file that marks each kind of run directory, in the order they are told apart (a pipeline
#: holds no search.json of its own at its top; a search holds no pipeline.json).
RUN_MARKERS: tuple[tuple[str, str], ...] = (
    ("pipeline", "pipeline.json"),
    ("search", "search.json"),
    ("retrain", "retrain.jsonl"),
    ("report", "report.json"),
    ("train", "results.json"),
)

#: The kinds ``resume=`` continues.
RESUMABLE = ("search", "pipeline")


def run_kind(run_dir: Path) -> str | None:
    """The mode whose run ``run_dir`` holds (``"search"``, ``"pipeline"``, ``"train"``, ...), or None.

    Only reads whether marker files exist: telling a directory's kind never writes to it.
    """
    for kind, marker in RUN_MARKERS:
        if (Path(run_dir) / marker).is_file():
            return kind
    return None


def describe_run_dir(run_dir: Path) -> str:
    """What ``run_dir`` is, in words for a refused ``resume=`` (e.g. ``"a mode=train run (results.json), ..."``)."""
    kind = run_kind(run_dir)
    if kind is None:
        markers = " nor ".join(marker for k, marker in RUN_MARKERS if k in RESUMABLE)
        return f"not the run directory of a search or pipeline (it holds neither {markers})"
    if kind in RESUMABLE:
        return f"a {kind} run ({dict(RUN_MARKERS)[kind]})"
    return f"a mode={kind} run ({dict(RUN_MARKERS)[kind]}), not a search or pipeline"
