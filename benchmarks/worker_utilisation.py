"""Do parallel workers wait on the surrogate? Busy fraction and proposal latency of pipelined BO.

On a GPU a low-fidelity evaluation takes seconds, often less than one fit of the paper's NUTS
surrogate. This benchmark runs the real search loop (:func:`autopeft.experiments.search.run_search`, thread
executor) with ``--workers`` concurrent evaluations in the surrogate world of
:mod:`benchmarks.search_benchmark`, each evaluation sleeping ``--eval-seconds`` x 0.5-1.5 (a
simulated GPU training), and reports for each surrogate:

- the fraction of worker time spent evaluating (``busy``; 1.0 means no worker ever waited),
- how long a free worker waited for its next configuration (mean and max),
- how long one proposal took, and how many configurations each proposal produced.

Example (the committed result, on the 2-core CPU machine)::

    python benchmarks/worker_utilisation.py --workers 8 --eval-seconds 3 --budget 100

Writes ``benchmarks/results/worker_utilisation.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autopeft.experiments.search import run_search  # noqa: E402
from autopeft.io import atomic_write_json, atomic_write_text  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from benchmarks.common import compose_cfg  # noqa: E402
from benchmarks.search_benchmark import NoisyWorldObjective, world_of_table  # noqa: E402
from benchmarks.search_quality import DEFAULT_TABLE  # noqa: E402

#: Surrogate name -> overrides of the ``search.surrogate`` node.
SURROGATES = {
    "saas_map": ["search.surrogate.kind=saas_map"],
    "saas_map_warm": ["search.surrogate.kind=saas_map", "search.surrogate.warm_start=true"],
    "gp": ["search.surrogate.kind=gp"],
    "saas_vi": ["search.surrogate.kind=saas_vi"],  # the demo's since 2026-12-07
    "saas": ["search.surrogate.kind=saas"],
    "saas_warm": ["search.surrogate.kind=saas", "search.surrogate.warm_start=true"],
    # The demo's NUTS until 2026-12-07: 64 samples thinned to 8, warm refits of 32
    # steps, JIT-compiled; saas_short is the same without JIT.
    "saas_demo": [
        "search.surrogate.kind=saas",
        "search.surrogate.num_samples=64",
        "search.surrogate.thinning=8",
        "search.surrogate.warm_start=true",
        "search.surrogate.refit_warmup_steps=32",
        "search.surrogate.jit_compile=true",
    ],
    "saas_short": [
        "search.surrogate.kind=saas",
        "search.surrogate.num_samples=64",
        "search.surrogate.thinning=8",
        "search.surrogate.warm_start=true",
        "search.surrogate.refit_warmup_steps=32",
    ],
}


def main(argv: list[str] | None = None) -> None:
    """Run one pipelined search per surrogate and write the table."""
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument(
        "--surrogates", nargs="+", choices=list(SURROGATES), default=["gp", "saas_map", "saas_vi", "saas"]
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--eval-seconds", type=float, default=3.0)
    parser.add_argument("--n-init", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the search process")
    parser.add_argument("--out-dir", default="outputs/bench/worker_utilisation")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = Path(args.table)
    world, space, _ = world_of_table(table)
    rows = []
    for name in args.surrogates:
        overrides = [
            "search=bo",
            "search.progress=false",
            f"search.n_init={args.n_init}",
            f"search.n_iter={args.budget - args.n_init}",
            "search.enumerate=never",
            f"search.parallel.workers={args.workers}",
            "search.parallel.executor=thread",
            f"search.parallel.prefetch={args.prefetch}",
            f"seed={args.seed}",
            *SURROGATES[name],
        ]
        run_dir = Path(args.out_dir) / f"{name}_w{args.workers}_e{args.eval_seconds:g}"
        if (run_dir / "search.json").exists():
            import shutil

            shutil.rmtree(run_dir)  # timings are only meaningful for one uninterrupted session
        objective = NoisyWorldObjective(world, space, world.residual_sd, args.seed, simulated_seconds=args.eval_seconds)
        started = time.perf_counter()
        result = run_search(compose_cfg(overrides), run_dir, objective=objective)
        wall = time.perf_counter() - started
        timings = result["timings"]
        model_based = [p for p in result["proposals"] if p.get("info", {}).get("phase") == "bo"]
        batches = {p["batch"] for p in model_based}
        row = {
            "surrogate": name,
            "evaluations": len(result["records"]),
            "wall_seconds": wall,
            "busy_fraction": timings["busy_fraction"],
            "mean_slot_wait_seconds": timings["mean_slot_wait_seconds"],
            "max_slot_wait_seconds": timings["max_slot_wait_seconds"],
            "mean_proposal_seconds": timings["mean_proposal_seconds"],
            "configurations_per_model_proposal": len(model_based) / len(batches) if batches else 0.0,
            "mean_fit_seconds": statistics.mean(
                [p["info"]["fit_seconds"] for p in model_based if p["info"].get("fit_seconds")] or [0.0]
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_report(rows, args, table, argv)  # after every surrogate: a stopped run keeps what it measured


def write_report(rows: list[dict], args: argparse.Namespace, table: Path, argv: list[str] | None) -> None:
    """Write the Markdown table and JSON of the rows measured so far, and print the table."""
    lines = [
        "# Worker utilisation of pipelined BO",
        "",
        f"{args.workers} workers, each evaluation a simulated {args.eval_seconds:g} s (x 0.5–1.5, fixed per "
        f"configuration) in the surrogate world of `benchmarks/search_benchmark.py` (table `{table.name}`); "
        f"{args.n_init} initial + {args.budget - args.n_init} BO evaluations, prefetch {args.prefetch}, seed "
        f"{args.seed}. The search process ran with {args.threads} torch thread(s) on {os.cpu_count()} CPU cores. "
        "Busy: evaluation time / (workers x wall time). Slot wait: from a worker finishing to its next "
        "configuration starting.",
        "",
        "| surrogate | busy | mean slot wait (s) | max slot wait (s) | mean proposal (s) | mean fit (s) "
        "| configurations per BO proposal | wall (s) |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['surrogate']} | {row['busy_fraction']:.2f} | {row['mean_slot_wait_seconds']:.2f} "
            f"| {row['max_slot_wait_seconds']:.1f} | {row['mean_proposal_seconds']:.2f} "
            f"| {row['mean_fit_seconds']:.2f} "
            f"| {row['configurations_per_model_proposal']:.1f} | {row['wall_seconds']:.0f} |"
        )
    lines += ["", f"Made by `python benchmarks/worker_utilisation.py {' '.join(argv or sys.argv[1:])}`."]
    report = "\n".join(lines) + "\n"
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / "worker_utilisation.md", report)
    atomic_write_json(results / "worker_utilisation.json", {"arguments": vars(args), "rows": rows})
    print(report)


if __name__ == "__main__":
    main()
