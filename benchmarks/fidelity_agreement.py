"""Low- vs full-fidelity agreement: whether one epoch ranks configurations as full training does.

AutoPEFT's search scores every candidate after one training epoch (the paper's low fidelity)
and retrains only the chosen ones at full fidelity (20 epochs, early stopping 10). That is
sound only if the one-epoch score ranks configurations roughly as the full training would.
This benchmark measures it on the offline stand-in: the same ``--n`` random configurations of
the AutoPEFT space on MiniLM are trained at low fidelity (``--low-epochs``) and at a cut-down
full fidelity (``--full-epochs`` with early stopping ``--patience``, on the same data), and it
reports the Spearman and Kendall rank correlations of their scores with bootstrap 95%
intervals (resampling configurations), plus a noise ceiling: the rank correlation of the low
fidelity with itself under another training seed (``--repeat-seed``), since no proxy can agree
with the full training better than the proxy agrees with itself.

Every training goes through the project's own path (``autopeft.training.train.train_and_evaluate`` via
the search's :class:`~autopeft.training.objective.TrainingObjective`) and every finished one is appended
to ``<run dir>/results.jsonl`` (the search's resumable store), so a killed run continues where
it stopped when started again with the same arguments.

Example (the committed result, on the 2-core CPU machine)::

    python benchmarks/fidelity_agreement.py --run-dir outputs/bench/fidelity_agreement

Writes ``benchmarks/results/fidelity_agreement.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from scipy import stats  # noqa: E402

from autopeft.io import atomic_write_json, atomic_write_text  # noqa: E402
from autopeft.runs.store import ResultsStore  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.space import Point, SearchSpace  # noqa: E402
from autopeft.training.backbones import load_backbone  # noqa: E402
from autopeft.training.objective import TrainingObjective  # noqa: E402
from autopeft.training.train import TrainingJob, train_and_evaluate  # noqa: E402
from benchmarks.common import compose_cfg  # noqa: E402

#: The demo's setting (MiniLM, Rotten Tomatoes stand-in, batch 8, lr 1e-3: see
#: conf/experiment/demo.yaml for why one epoch at the paper's lr 1e-4 would not move the
#: adapters on this little data), scored on ``--eval`` validation and as many test examples.
BASE_OVERRIDES = [
    "experiment=none",
    "task=rotten_tomatoes",
    "backbone=minilm",
    "space=autopeft",
    "data.max_length=48",
    "trainer.batch_size=8",
    "trainer.lr=1e-3",
    "trainer.progress_bar=false",
    "trainer.save_weights=false",
]
STORE_KEYS = ("key", "index", "fidelity", "train_seed", "status")
RESULTS = ROOT / "benchmarks" / "results"


def sample_points(space: SearchSpace, n: int, seed: int) -> list[Point]:
    """``n`` distinct configurations, none of them 'nothing inserted', drawn uniformly from the space."""
    generator = random.Random(seed)
    points: dict[str, Point] = {}
    while len(points) < n:
        (point,) = space.sample(generator, 1)
        canonical = space.canonical(point)
        if canonical != space.head_only():
            points.setdefault(json.dumps(canonical.to_dict(), sort_keys=True), canonical)
    return list(points.values())


#: Arguments that change what a stored result means; a run directory holds one setting only.
SETTING_ARGS = ("n", "seed", "repeat_seed", "train", "eval", "low_epochs", "full_epochs", "patience")


def check_same_settings(run_dir: Path, args: argparse.Namespace) -> None:
    """Record the settings on first use; refuse to resume a directory made with other settings."""
    manifest = run_dir / "benchmark.json"
    settings = {key: getattr(args, key) for key in SETTING_ARGS}
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        differ = [f"--{k.replace('_', '-')} {saved.get(k)} (now {v})" for k, v in settings.items() if saved.get(k) != v]
        if differ:
            raise SystemExit(
                f"error: {run_dir} was made with other settings: {', '.join(differ)}; use another --run-dir"
            )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(manifest, settings)


def runs(args: argparse.Namespace) -> list[tuple[str, int, int, int]]:
    """Every (fidelity, epochs, patience, train seed) the benchmark trains each configuration at."""
    plan = [("low", args.low_epochs, 0, args.seed), ("full", args.full_epochs, args.patience, args.seed)]
    if args.repeat_seed is not None:
        plan.append(("low", args.low_epochs, 0, args.repeat_seed))
    return plan


def train_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[Point], SearchSpace, DictConfig]:
    """Train every configuration at every fidelity that the store does not hold yet."""
    overrides = [
        *BASE_OVERRIDES,
        f"data.max_train_samples={args.train}",
        f"data.max_eval_samples={args.eval}",
        f"seed={args.seed}",
    ]
    cfg = compose_cfg(overrides)
    backbone = load_backbone(cfg.backbone, weights=False)
    space = SearchSpace.from_config(cfg.space, backbone.shape)
    points = sample_points(space, args.n, args.seed)
    run_dir = Path(args.run_dir)
    check_same_settings(run_dir, args)
    store = ResultsStore(run_dir / "results.jsonl", required_keys=STORE_KEYS)
    records = store.load()
    done = {r["key"] for r in records}
    objective = TrainingObjective(TrainingJob.from_config(cfg), space, backbone.num_params, run_dir)
    for fidelity, epochs, patience, train_seed in runs(args):
        for index, point in enumerate(points):
            key = f"{fidelity}/seed{train_seed}/{index:03d}"
            if key in done:
                continue
            job = objective.job_for(point).updated(
                {
                    "seed": train_seed,
                    "fidelity.name": fidelity,
                    "fidelity.epochs": epochs,
                    "fidelity.early_stopping_patience": patience or None,
                }
            )
            started = time.perf_counter()
            record = train_and_evaluate(job, run_dir / "evals" / key)
            ok = record["status"] == "ok"
            row = {
                "key": key,
                "index": index,
                "fidelity": fidelity,
                "epochs": epochs,
                "patience": patience or None,
                "train_seed": train_seed,
                "point": point.to_dict(),
                "configuration": space.describe(point),
                "param_percent": space.param_percent(point, backbone.num_params),
                "status": record["status"],
                "validation": record["score"] if ok else None,
                "test": record["metrics"]["test"][record["main_metric"]] if ok else None,
                "best_epoch": record.get("best_epoch"),
                "epochs_trained": record.get("epochs_trained"),
                "seconds": time.perf_counter() - started,
                "train_seconds": record.get("train_seconds"),
            }
            store.append(row)
            records.append(row)
            print(
                f"{key}: {row['configuration']} ({row['param_percent']:.3f}%): "
                f"val {row['validation']} test {row['test']} in {row['seconds']:.0f} s",
                flush=True,
            )
    return records, points, space, cfg


def bootstrap_interval(
    x: list[float], y: list[float], statistic: Any, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic(x, y)`` over configurations resampled with replacement."""
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    values = []
    for _ in range(resamples):
        idx = torch.randint(0, n, (n,), generator=generator).tolist()
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            values.append(float(statistic(xs, ys)))
    if not values:  # every resample had a constant side: no interval
        return math.nan, math.nan
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


def agreement(x: list[float], y: list[float]) -> dict[str, Any]:
    """Spearman and Kendall correlations of two score lists, with bootstrap 95% intervals."""

    def spearman(a: list[float], b: list[float]) -> float:
        return math.nan if len(set(a)) < 2 or len(set(b)) < 2 else float(stats.spearmanr(a, b).statistic)

    def kendall(a: list[float], b: list[float]) -> float:
        return math.nan if len(set(a)) < 2 or len(set(b)) < 2 else float(stats.kendalltau(a, b).statistic)

    return {
        "n": len(x),
        "spearman": spearman(x, y),
        "spearman_ci95": bootstrap_interval(x, y, spearman),
        "kendall": kendall(x, y),
        "kendall_ci95": bootstrap_interval(x, y, kendall),
    }


def top_k_overlap(x: list[float], y: list[float], k: int) -> int:
    """How many of the k best configurations by ``y`` are among the k best by ``x``."""
    best_x = set(sorted(range(len(x)), key=lambda i: -x[i])[:k])
    best_y = set(sorted(range(len(y)), key=lambda i: -y[i])[:k])
    return len(best_x & best_y)


def summarise(records: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Pair each configuration's low- and full-fidelity scores and measure their agreement."""

    def scores(fidelity: str, seed: int, split: str) -> dict[int, float]:
        return {
            r["index"]: r[split]
            for r in records
            if r["fidelity"] == fidelity and r["train_seed"] == seed and r["status"] == "ok" and r[split] is not None
        }

    low = scores("low", args.seed, "validation")
    full_val = scores("full", args.seed, "validation")
    full_test = scores("full", args.seed, "test")
    both = sorted(set(low) & set(full_val) & set(full_test))
    out: dict[str, Any] = {
        "configurations": len(both),
        "failed": sum(r["status"] != "ok" for r in records),
        "low_vs_full_validation": agreement([low[i] for i in both], [full_val[i] for i in both]),
        "low_vs_full_test": agreement([low[i] for i in both], [full_test[i] for i in both]),
        # Configurations that end at the column's floor (here the majority-class rate: training
        # collapsed) agree trivially across fidelities; the rest show how well one epoch ranks
        # configurations that learn.
        "learning_only_low_vs_full_test": _learning_only(low, full_test, both),
        "top5_overlap_low_vs_full_test": top_k_overlap([low[i] for i in both], [full_test[i] for i in both], 5),
        "score_range": {
            "low": [min(low[i] for i in both), max(low[i] for i in both)],
            "full_test": [min(full_test[i] for i in both), max(full_test[i] for i in both)],
        },
        "seconds": {
            fid: sum(r["seconds"] for r in records if r["fidelity"] == fid and r["train_seed"] == args.seed)
            for fid in ("low", "full")
        },
        "mean_epochs_trained_full": sum(
            r["epochs_trained"] or 0 for r in records if r["fidelity"] == "full" and r["status"] == "ok"
        )
        / max(1, sum(r["fidelity"] == "full" and r["status"] == "ok" for r in records)),
    }
    if args.repeat_seed is not None:
        again = scores("low", args.repeat_seed, "validation")
        pair = sorted(set(low) & set(again))
        if len(pair) > 2:
            out["low_seed_vs_low_seed"] = agreement([low[i] for i in pair], [again[i] for i in pair])
    return out


def _learning_only(low: dict[int, float], full: dict[int, float], both: list[int]) -> dict[str, Any] | None:
    """Agreement over the configurations above the floor (lowest score, +0.005) at both fidelities."""
    floor_low, floor_full = min(low[i] for i in both) + 0.005, min(full[i] for i in both) + 0.005
    kept = [i for i in both if low[i] > floor_low and full[i] > floor_full]
    if len(kept) < 3:
        return None
    return {**agreement([low[i] for i in kept], [full[i] for i in kept]), "collapsed": len(both) - len(kept)}


def _interval(result: dict[str, Any], name: str) -> str:
    low, high = result[f"{name}_ci95"]
    return f"{result[name]:.2f} [{low:.2f}, {high:.2f}]"


def write_report(summary: dict[str, Any], records: list[dict[str, Any]], args: argparse.Namespace, cfg: Any) -> None:
    """The Markdown table and the JSON of the committed result."""
    rows = [
        ("one epoch vs full training, validation score", summary["low_vs_full_validation"]),
        ("one epoch vs full training, held-out test score", summary["low_vs_full_test"]),
    ]
    if summary.get("learning_only_low_vs_full_test"):
        learning = summary["learning_only_low_vs_full_test"]
        rows.append(
            (
                f"one epoch vs full training, test score, without the {learning['collapsed']} configurations "
                "at the floor (majority class) at either fidelity",
                learning,
            )
        )
    if "low_seed_vs_low_seed" in summary:
        rows.append(("one epoch vs one epoch, another training seed (noise ceiling)", summary["low_seed_vs_low_seed"]))
    lines = [
        "# Low- vs full-fidelity agreement",
        "",
        f"{summary['configurations']} random configurations of the AutoPEFT space (seed {args.seed}) on MiniLM, "
        f"task {cfg.task.name}: {args.train} training examples, {args.eval} validation and {args.eval} test "
        f"examples, batch 8, lr 1e-3, max length 48. Low fidelity: {args.low_epochs} epoch. Full fidelity: "
        f"{args.full_epochs} epochs with early stopping {args.patience} (the paper's 20/10 cut to fit a CPU "
        f"session; {summary['mean_epochs_trained_full']:.1f} epochs run on average), best epoch restored. "
        f"Correlations with bootstrap 95% intervals over configurations (2,000 resamples).",
        "",
        "| pair of scores | Spearman | Kendall | n |",
        "|:--|--:|--:|--:|",
        *[f"| {name} | {_interval(r, 'spearman')} | {_interval(r, 'kendall')} | {r['n']} |" for name, r in rows],
        "",
        f"Of the 5 best configurations by the full training's test score, "
        f"{summary['top5_overlap_low_vs_full_test']} are among the 5 best after one epoch. Score ranges: one epoch "
        f"{summary['score_range']['low'][0]:.3f}–{summary['score_range']['low'][1]:.3f}, full training (test) "
        f"{summary['score_range']['full_test'][0]:.3f}–{summary['score_range']['full_test'][1]:.3f}. Training time "
        f"on this machine: {summary['seconds']['low']:.0f} s at low fidelity, {summary['seconds']['full']:.0f} s at "
        f"full fidelity.",
        "",
        "| # | configuration | % params | 1 epoch (val) | full (val) | full (test) |",
        "|--:|:--|--:|--:|--:|--:|",
    ]
    by_key = {(r["fidelity"], r["train_seed"], r["index"]): r for r in records}
    for index in range(args.n):
        low, full = by_key.get(("low", args.seed, index)), by_key.get(("full", args.seed, index))
        if low is None or full is None:
            continue

        def cell(value: float | None) -> str:
            return "failed" if value is None else f"{value:.3f}"

        lines.append(
            f"| {index} | {low['configuration']} | {low['param_percent']:.3f} | {cell(low['validation'])} | "
            f"{cell(full['validation'])} | {cell(full['test'])} |"
        )
    lines += [
        "",
        f"Made by `python benchmarks/fidelity_agreement.py --n {args.n} --train {args.train} --eval {args.eval} "
        f"--full-epochs {args.full_epochs} --patience {args.patience}` on {os.cpu_count()} CPU cores.",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "fidelity_agreement.md", "\n".join(lines))
    atomic_write_json(RESULTS / "fidelity_agreement.json", {"arguments": vars(args), **summary})
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Train (resumably), then summarise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="configurations (at least 20 for a useful correlation)")
    parser.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    parser.add_argument("--repeat-seed", type=int, default=1, help="second low-fidelity training seed (noise ceiling)")
    parser.add_argument("--train", type=int, default=400, help="training examples")
    parser.add_argument("--eval", type=int, default=500, help="validation and test examples each")
    parser.add_argument("--low-epochs", type=int, default=1)
    parser.add_argument("--full-epochs", type=int, default=5)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--run-dir", default="outputs/bench/fidelity_agreement")
    args = parser.parse_args(argv)
    if args.n < 3:
        parser.error(f"--n={args.n}: a rank correlation needs at least 3 configurations (20+ to be useful)")
    quiet_libraries()
    records, _, _, cfg = train_all(args)
    write_report(summarise(records, args), records, args, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
