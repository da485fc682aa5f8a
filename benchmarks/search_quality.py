"""Search-quality benchmark: AutoPEFT BO vs random search vs NSGA-II on tabulated configurations.

Step 1, ``tabulate``: evaluate a few hundred random configurations of the space once, at low
fidelity, with the real training path (a random search of ``--n`` evaluations, resumable).
The resulting table is committed under ``benchmarks/data/``.

Step 2, ``replay``: run each searcher restricted to the tabulated configurations, looking
results up instead of training, for several seeds at an equal budget, and report the
hypervolume after 25/50/100 evaluations (as a fraction of the hypervolume of the whole table)
as a Markdown table and a PNG.

Examples::

    python benchmarks/search_quality.py tabulate --n 300 --run-dir outputs/bench/tabulate
    python benchmarks/search_quality.py replay --seeds 5 --budget 100 --n-init 20

Run from the repository root. Tabulating on CPU takes ~7 s per configuration with the
defaults below (MiniLM, 500 training examples); replaying 5 seeds x 3 searchers takes
minutes per seed for BO (one NUTS fit per batch of ``--batch-size`` proposals).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from autopeft.bo.pareto import hypervolume, is_success, objective_matrix  # noqa: E402
from autopeft.experiments.search import run_search  # noqa: E402
from autopeft.io import atomic_write_json, atomic_write_text  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.space import Point  # noqa: E402
from benchmarks.common import compose_cfg  # noqa: E402

DEFAULT_TABLE = ROOT / "benchmarks" / "data" / "minilm_rotten_tomatoes_low_fidelity.jsonl"

#: How the table is evaluated: the demo's MiniLM + Rotten Tomatoes setting on 500 training
#: examples, scored on 1,000 held-out examples (binomial standard error about 0.015). Under
#: ``data.protocol=paper`` the score is the dev-split accuracy after the epoch, and no separate
#: test pass is run (it would double the cost of an evaluation).
TABULATE_OVERRIDES = [
    "search=random",
    "search.progress=false",
    "data.protocol=paper",
    "data.max_train_samples=500",
    "data.max_eval_samples=1000",
    "data.max_length=48",
    "trainer.batch_size=8",
    "trainer.lr=1e-3",
    "trainer.progress_bar=false",
]

#: Fields kept in the committed table.
TABLE_KEYS = ("index", "point", "configuration", "status", "score", "param_percent", "seconds", "seed", "reason")

METHODS = ("bo", "random", "nsga2")
CHECKPOINTS = (25, 50, 100)


#: Files of a table build's run directory that are committed next to the table, so a build
#: stopped in one session (or on one machine) is continued in the next with ``--restore``.
BUILD_FILES = ("search.json", "proposals.jsonl", "results.jsonl")


def tabulate(args: argparse.Namespace) -> None:
    """Evaluate ``--n`` random configurations (resumable) and write the table.

    With ``--write-only`` nothing is evaluated: the table (and its meta, marked incomplete when
    fewer than ``--n`` evaluations are done) is written from what the run directory holds, and
    the run directory's store is copied next to the table for ``--restore``.
    """
    overrides = [*TABULATE_OVERRIDES, f"search.n_init={args.n}", "search.n_iter=0", f"seed={args.seed}"]
    # Worker processes change only how fast the table fills, not what it holds (the parallel
    # block is outside the resume fingerprint, and every evaluation reseeds from the run seed).
    overrides += [f"search.parallel.workers={args.workers}", "search.parallel.executor=process"]
    cfg = compose_cfg(overrides)
    run_dir = Path(args.run_dir)
    table = Path(args.table)
    build = table.with_suffix(".build")
    if args.restore and not (run_dir / "search.json").exists() and build.is_dir():
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in BUILD_FILES:
            shutil.copyfile(build / name, run_dir / name)
        print(f"restored {run_dir} from {build}")
    started = time.perf_counter()
    if args.write_only:
        from autopeft.runs.store import ResultsStore
        from autopeft.space import SearchSpace
        from autopeft.training.backbones import load_backbone

        backbone = load_backbone(cfg.backbone, weights=False)
        result = {
            "records": sorted(ResultsStore(run_dir / "results.jsonl").load(), key=lambda r: r["index"]),
            "space": SearchSpace.from_config(cfg.space, backbone.shape),
            "backbone_params": backbone.num_params,
        }
    else:
        result = run_search(cfg, run_dir, resume=(run_dir / "search.json").exists())
    rows = [{k: r.get(k) for k in TABLE_KEYS} for r in result["records"]]
    atomic_write_text(table, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    meta = {
        "overrides": [o for o in overrides if o != "search.n_iter=0"],
        "task": cfg.task.name,
        "backbone": cfg.backbone.name,
        "space": result["space"].to_json_dict(),
        "backbone_params": result["backbone_params"],
        "evaluations": len(rows),
        "target": args.n,
        "complete": len(rows) >= args.n,
        "failed": sum(not is_success(r) for r in rows),
        "seconds_training_total": sum(r["seconds"] for r in rows),
    }
    if not args.write_only:
        meta["seconds_this_session"] = time.perf_counter() - started
    atomic_write_json(table.with_suffix(".meta.json"), meta)
    build.mkdir(parents=True, exist_ok=True)
    for name in BUILD_FILES:
        shutil.copyfile(run_dir / name, build / name)
    state = "complete" if meta["complete"] else f"incomplete: {len(rows)} of {args.n}"
    print(f"wrote {table} ({len(rows)} configurations, {meta['failed']} failed; {state}) and {build}/")


class TableObjective:
    """Looks a configuration's result up in the table instead of training it."""

    def __init__(self, rows: list[dict[str, Any]], space: Any, seconds: float = 0.0) -> None:
        self.space = space
        self.by_point = {space.canonical(Point.from_dict(r["point"])): r for r in rows}
        self.seconds = seconds  # simulated training time, so parallel replays complete out of order

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        """The tabulated result of ``point`` (every candidate the searchers may propose is in the table)."""
        row = self.by_point[self.space.canonical(point)]
        if self.seconds:
            # Durations vary with the configuration, as real trainings do: completion order then
            # differs from proposal order, which is what pipelined BO must cope with.
            key = json.dumps(self.space.canonical(point).to_dict(), sort_keys=True).encode()
            time.sleep(self.seconds * (0.5 + zlib.crc32(key) % 1000 / 1000))
        return {k: row.get(k) for k in ("status", "score", "reason", "param_percent", "seconds")}


class HypervolumeScale:
    """Hypervolume of records on one scale of the parameter axis, as a fraction of the table's.

    ``linear`` is what the search optimises (% params as is). ``log`` measures the front where
    the paper plots it, on log10 % params (0% placed half a decade below the smallest positive
    value), so that the low-parameter end of the front weighs as much as the high end.
    """

    def __init__(self, name: str, table: list[dict[str, Any]]) -> None:
        self.name = name
        ok = [r for r in table if is_success(r)]
        positive = [r["param_percent"] for r in ok if r["param_percent"] > 0]
        self.floor = min(positive) / math.sqrt(10) if positive else 1e-6
        Y = self.objectives(ok)
        # Just below the worst score and just above the largest % params in the table, so every
        # tabulated configuration can add hypervolume; one reference for every method.
        self.ref = torch.tensor([float(Y[:, 0].min()) - 0.01, float(Y[:, 1].min()) - 0.01], dtype=torch.float64)
        self.best = hypervolume(Y, self.ref)

    def objectives(self, records: list[dict[str, Any]]) -> torch.Tensor:
        """``[score, -x]`` with x the % params on this scale."""
        Y = objective_matrix(records)
        if self.name == "log":
            Y[:, 1] = -torch.log10(torch.clamp(-Y[:, 1], min=self.floor))
        return Y

    def trace(self, records: list[dict[str, Any]]) -> list[float]:
        """Fraction of the table's hypervolume reached after each evaluation."""
        out, ok = [], []
        for record in records:
            if is_success(record):
                ok.append(record)
            out.append(hypervolume(self.objectives(ok), self.ref) / self.best if ok else 0.0)
        return out


def replay(args: argparse.Namespace) -> None:
    """Replay every searcher on the table for ``--seeds`` seeds; print and save the HV tables and plot."""
    table = Path(args.table)
    meta = json.loads(table.with_suffix(".meta.json").read_text())
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    scales = [HypervolumeScale("linear", rows), HypervolumeScale("log", rows)]
    ref = scales[0].ref  # the searches' own reference point (linear % params)
    out_dir = Path(args.out_dir)
    traces: dict[str, dict[str, list[list[float]]]] = {s.name: {m: [] for m in args.methods} for s in scales}
    seconds: dict[str, list[float]] = {m: [] for m in args.methods}
    for method in args.methods:
        for seed in range(args.seeds):
            overrides = [
                *[o for o in TABULATE_OVERRIDES if not o.startswith("search")],
                f"search={method}",
                f"search.n_init={args.n_init}",
                f"search.n_iter={args.budget - args.n_init}",
                "search.enumerate=never",  # compare the searchers even when the budget covers the table
                f"search.batch_size={args.batch_size if method == 'bo' else 1}",
                f"search.acquisition.ref_point.score={float(ref[0])}",
                f"search.acquisition.ref_point.param_percent={-float(ref[1])}",
                f"search.surrogate.warmup_steps={args.warmup_steps}",
                f"search.surrogate.num_samples={args.num_samples}",
                f"search.surrogate.thinning={args.thinning}",
                f"seed={seed}",
                f"search.surrogate.kind={args.surrogate}",
                f"search.parallel.workers={args.workers}",
                f"search.parallel.prefetch={args.prefetch}",
            ]
            if method == "nsga2":  # the first generation is the random initial design
                overrides.append(f"search.nsga2.population_size={args.n_init}")
            cfg = compose_cfg(overrides)
            run_dir = out_dir / "runs" / f"{method}_seed{seed}"
            result, elapsed = _run_on_table(cfg, run_dir, rows, args.eval_seconds)
            seconds[method].append(elapsed)
            for scale in scales:
                traces[scale.name][method].append(scale.trace(result["records"]))
            print(
                f"{method:>6} seed {seed}: HV fraction after {len(result['records'])} evaluations "
                + ", ".join(f"{s.name} {traces[s.name][method][-1][-1]:.4f}" for s in scales)
                + f" ({elapsed:.0f}s)",
                flush=True,
            )
    shared = _shared_initial_design(out_dir, args)
    report = _report(traces, seconds, args, meta, scales, shared)
    atomic_write_text(out_dir / "search_quality.md", report)
    _plot(traces, out_dir / "search_quality.png", meta, args)
    atomic_write_json(
        out_dir / "search_quality.json",
        {"traces": traces, "seconds": seconds, "ref": {s.name: s.ref.tolist() for s in scales}},
    )
    print(report)
    print(f"plot: {out_dir / 'search_quality.png'}")


def _shared_initial_design(out_dir: Path, args: argparse.Namespace) -> bool | None:
    """Whether BO and random search started from the same configurations in every seed (None: not both ran)."""
    if not {"bo", "random"} <= set(args.methods):
        return None
    for seed in range(args.seeds):
        designs = []
        for method in ("bo", "random"):
            lines = (out_dir / "runs" / f"{method}_seed{seed}" / "results.jsonl").read_text().splitlines()
            designs.append([json.loads(line)["point"] for line in lines[: args.n_init]])
        if designs[0] != designs[1]:
            return False
    return True


def _run_on_table(
    cfg: DictConfig, run_dir: Path, rows: list[dict[str, Any]], eval_seconds: float = 0.0
) -> tuple[dict, float]:
    """Run (or finish) one search on the table; returns it and the seconds all its sessions took."""
    from autopeft.space import SearchSpace
    from autopeft.training.backbones import shape_of

    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    objective = TableObjective(rows, space, eval_seconds)
    candidates = [Point.from_dict(r["point"]) for r in rows]
    timing = run_dir / "replay_seconds.json"
    earlier = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    started = time.perf_counter()
    resume = (run_dir / "search.json").exists()
    result = run_search(cfg, run_dir, resume=resume, objective=objective, candidates=candidates)
    elapsed = earlier + time.perf_counter() - started
    atomic_write_json(timing, {"seconds": elapsed})
    return result, elapsed


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def _report(
    traces: dict[str, dict[str, list[list[float]]]],
    seconds: dict[str, list[float]],
    args: argparse.Namespace,
    meta: dict[str, Any],
    scales: list[HypervolumeScale],
    shared: bool | None,
) -> str:
    model = "SAAS-GP" if args.surrogate == "saas" else "MAP GP"
    mode = f", {args.workers} workers" if args.workers > 1 else ""
    names = {"bo": f"AutoPEFT BO ({model} + qNEHVI{mode})", "random": "random search", "nsga2": "NSGA-II (Optuna)"}
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    design = {True: " (the same ones for BO and random search)", False: " (drawn independently per method)"}.get(
        shared, ""
    )
    lines = [
        f"Hypervolume reached, as a fraction of the hypervolume of all {meta['evaluations']} tabulated "
        f"configurations ({meta['backbone']} on {meta['task']}, low fidelity), mean ± sd over {args.seeds} seeds. "
        f"{args.n_init} initial random configurations for every method{design}; "
        + (
            f"BO proposes {args.batch_size} at a time"
            if args.workers == 1
            else f"BO keeps {args.workers} evaluations running and {args.prefetch} queued, proposing as each finishes "
            f"(simulated {args.eval_seconds} s per evaluation, 0.5-1.5x)"
        )
        + " (acquisition maximised over the unseen table entries)"
        + (
            f" with NUTS {args.warmup_steps}/{args.num_samples}/{args.thinning}."
            if args.surrogate == "saas"
            else " with a MAP-fitted GP."
        ),
    ]
    for scale in scales:
        axis = "% params" if scale.name == "linear" else "log10 % params"
        lines += [
            "",
            f"**{axis}** (reference point {[round(float(v), 4) for v in scale.ref]})",
            "",
            "| searcher | " + " | ".join(f"HV @ {c}" for c in checkpoints) + " | seconds per run |",
            "|:--|" + "--:|" * (len(checkpoints) + 1),
        ]
        for method in args.methods:
            runs = traces[scale.name][method]
            cells = [_mean_sd([t[c - 1] for t in runs if len(t) >= c]) for c in checkpoints]
            lines.append(f"| {names[method]} | " + " | ".join(cells) + f" | {statistics.mean(seconds[method]):.0f} |")
    return "\n".join(lines) + "\n"


def _plot(
    traces: dict[str, dict[str, list[list[float]]]], path: Path, meta: dict[str, Any], args: argparse.Namespace
) -> None:
    """Mean ± sd hypervolume fraction against evaluations, one panel per parameter-axis scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"bo": "#d62728", "random": "#7f7f7f", "nsga2": "#1f77b4"}
    labels = {"bo": "AutoPEFT BO", "random": "random search", "nsga2": "NSGA-II"}
    titles = {"linear": "% params axis (what BO optimises)", "log": "log10 % params axis (as the paper plots)"}
    fig, axes = plt.subplots(1, len(traces), figsize=(6.0 * len(traces), 4.2), squeeze=False)
    for ax, (scale, by_method) in zip(axes[0], traces.items(), strict=True):
        for method in args.methods:
            runs = torch.tensor(by_method[method], dtype=torch.float64)
            mean = runs.mean(0)
            sd = runs.std(0) if runs.shape[0] > 1 else torch.zeros_like(mean)
            xs = range(1, runs.shape[1] + 1)
            ax.plot(xs, mean, color=colours[method], label=labels[method])
            ax.fill_between(xs, mean - sd, mean + sd, color=colours[method], alpha=0.15)
        ax.axvline(args.n_init + 0.5, color="black", lw=0.8, ls=":", label="end of the random initial design")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume (fraction of the whole table's)")
        ax.set_title(titles.get(scale, scale), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        f"Search quality on {meta['evaluations']} tabulated configurations ({meta['backbone']}, {meta['task']}); "
        f"mean ± sd over {args.seeds} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run ``tabulate`` or ``replay``."""
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tab = sub.add_parser("tabulate", help="evaluate random configurations once and write the table")
    tab.add_argument("--n", type=int, default=300)
    tab.add_argument("--seed", type=int, default=0)
    tab.add_argument("--run-dir", default="outputs/bench/tabulate")
    tab.add_argument("--table", default=str(DEFAULT_TABLE))
    tab.add_argument("--write-only", action="store_true", help="write the (partial) table from the run dir")
    tab.add_argument("--restore", action="store_true", help="start from the committed <table>.build/ store")
    tab.add_argument("--workers", type=int, default=1, help="evaluations at once, one process each")
    rep = sub.add_parser("replay", help="replay the searchers on the table")
    rep.add_argument("--table", default=str(DEFAULT_TABLE))
    rep.add_argument("--out-dir", default="outputs/bench/search_quality")
    rep.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    rep.add_argument("--seeds", type=int, default=5)
    rep.add_argument("--budget", type=int, default=100)
    rep.add_argument("--n-init", type=int, default=20)
    rep.add_argument("--batch-size", type=int, default=4, help="BO proposals per surrogate fit")
    rep.add_argument("--warmup-steps", type=int, default=256)
    rep.add_argument("--num-samples", type=int, default=128)
    rep.add_argument("--thinning", type=int, default=16)
    rep.add_argument("--surrogate", default="saas", choices=("saas", "gp"), help="gp: MAP GP (fast)")
    rep.add_argument("--workers", type=int, default=1, help="concurrent evaluations (pipelined BO when > 1)")
    rep.add_argument("--prefetch", type=int, default=1, help="proposals queued beyond the running ones")
    rep.add_argument("--eval-seconds", type=float, default=0.0, help="simulated seconds per evaluation (0.5-1.5x)")
    args = parser.parse_args(argv)
    if args.command == "replay" and args.budget <= args.n_init:
        parser.error(f"--budget={args.budget} must exceed --n-init={args.n_init}")
    (tabulate if args.command == "tabulate" else replay)(args)


if __name__ == "__main__":
    main()
