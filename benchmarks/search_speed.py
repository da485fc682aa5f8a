r"""Search-speed benchmark: the sequential search against concurrent, pipelined evaluations.

Runs the same search (same seed, hence the same initial design) once per mode and prints one
table: mode, evaluations, wall clock, device busy % (GPU utilisation sampled with ``nvidia-smi``
every 0.5 s while the search runs; on a machine without a GPU, CPU utilisation from
``/proc/stat`` instead, and the column says which), evaluations per minute, seconds per BO
proposal (surrogate fit + acquisition optimisation, as the search process spent them) and the
final hypervolume (every mode measured against one reference point: the sequential run's).

The paper's setting on one GPU (issue #6: BERT-base architecture, an RTE-sized task, 1 epoch per
evaluation, batch 32, paper NUTS settings, 100 + 100 evaluations)::

    python benchmarks/search_speed.py --backbone bert_base_arch --task snli_binary \\
        --max-train-samples 2490 --max-length 128 --batch-size 32 --n-init 100 --n-iter 100 \\
        --modes sequential parallel --workers 8

A tiny CPU run (what its test does)::

    python benchmarks/search_speed.py --backbone tiny_bert --n-init 4 --n-iter 2 --nuts 8 8 2 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autopeft.bo.pareto import hypervolume, is_success, objective_matrix  # noqa: E402
from autopeft.experiments.pipeline import hydra_composer  # noqa: E402
from autopeft.experiments.search import run_search  # noqa: E402
from autopeft.runtime import quiet_libraries, register_resolvers  # noqa: E402

MODES = ("sequential", "parallel")


class BusySampler:
    """Samples device utilisation in a background thread: GPU via nvidia-smi, else CPU via /proc/stat."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self.kind = "GPU" if torch.cuda.is_available() and shutil.which("nvidia-smi") else "CPU"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        """Mean utilisation in % over the samples (NaN without samples)."""
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")

    def _run(self) -> None:
        previous = _cpu_times() if self.kind == "CPU" else None
        while not self._stop.wait(self.interval):
            if self.kind == "GPU":
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.split()
                if out:
                    self.samples.append(sum(float(v) for v in out) / len(out))
            else:
                current = _cpu_times()
                busy = (current[0] - previous[0]) / max(current[1] - previous[1], 1)
                self.samples.append(100.0 * busy)
                previous = current


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def overrides_for(args: argparse.Namespace, mode: str) -> list[str]:
    """The run config of one mode: identical except ``search.parallel``."""
    warmup, samples, thinning = args.nuts
    out = [
        "experiment=none",
        f"backbone={args.backbone}",
        f"task={args.task}",
        "fidelity=low",
        "search=bo",
        f"search.n_init={args.n_init}",
        f"search.n_iter={args.n_iter}",
        "search.progress=false",
        f"search.surrogate.warmup_steps={warmup}",
        f"search.surrogate.num_samples={samples}",
        f"search.surrogate.thinning={thinning}",
        f"data.max_train_samples={args.max_train_samples}",
        f"data.max_eval_samples={args.max_eval_samples}",
        f"data.max_length={args.max_length}",
        f"trainer.batch_size={args.batch_size}",
        "trainer.progress_bar=false",
        f"seed={args.seed}",
    ]
    if mode == "parallel":
        out += [f"search.parallel.workers={args.workers}", f"search.parallel.prefetch={args.prefetch}"]
    else:
        out += ["search.parallel.workers=1"]
    return out + list(args.override)


def run_mode(args: argparse.Namespace, mode: str, out_dir: Path) -> dict[str, Any]:
    """Run one mode's search from scratch and measure it."""
    cfg = hydra_composer(ROOT / "conf")(overrides_for(args, mode))
    run_dir = out_dir / mode
    shutil.rmtree(run_dir, ignore_errors=True)
    with BusySampler() as sampler:
        started = time.perf_counter()
        result = run_search(cfg, run_dir)
        wall = time.perf_counter() - started
    proposals = [p for p in result["proposals"] if p["info"].get("phase") == "bo"]
    fits = sum(p["info"].get("fit_seconds", 0.0) + p["info"].get("acq_seconds", 0.0) for p in proposals)
    return {
        "mode": mode if mode == "sequential" else f"parallel ({result['timings']['workers']} workers)",
        "records": result["records"],
        "evaluations": len(result["records"]),
        "wall": wall,
        "busy": sampler.mean,
        "busy_kind": sampler.kind,
        "per_minute": 60 * len(result["records"]) / wall,
        "per_proposal": fits / len(proposals) if proposals else float("nan"),
        "ref": result["state"]["ref_point"],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every requested mode and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--task", default="snli_binary")
    parser.add_argument("--n-init", type=int, default=10)
    parser.add_argument("--n-iter", type=int, default=10)
    parser.add_argument("--max-train-samples", type=int, default=512)
    parser.add_argument("--max-eval-samples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--nuts", type=int, nargs=3, default=[256, 128, 16], metavar=("WARMUP", "SAMPLES", "THIN"))
    parser.add_argument("--workers", default="auto", help="parallel mode: an integer or 'auto' (from GPU memory)")
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every mode")
    args = parser.parse_args(argv)
    register_resolvers()
    quiet_libraries()
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="search_speed_"))
    rows = [run_mode(args, mode, out_dir) for mode in args.modes]
    ref = torch.tensor(rows[0]["ref"], dtype=torch.float64) if rows[0]["ref"] else None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(
        f"\nSearch speed: {args.backbone} on {args.task} ({args.max_train_samples} training examples, 1 epoch, "
        f"batch {args.batch_size}), {args.n_init} + {args.n_iter} evaluations, NUTS {tuple(args.nuts)}; {device}\n"
    )
    print(
        f"| mode | evaluations | wall clock (s) | {rows[0]['busy_kind']} busy % | evaluations / min "
        "| s per BO proposal | hypervolume |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        ok = [r for r in row["records"] if is_success(r)]
        hv = hypervolume(objective_matrix(ok), ref) if ref is not None and ok else float("nan")
        row["hypervolume"] = hv
        print(
            f"| {row['mode']} | {row['evaluations']} | {row['wall']:.1f} | {row['busy']:.0f} | "
            f"{row['per_minute']:.2f} | {row['per_proposal']:.2f} | {hv:.4f} |"
        )
    if len(rows) > 1:
        print(f"\nspeed-up of {rows[1]['mode']} over sequential: {rows[0]['wall'] / rows[1]['wall']:.2f}x")
    print(f"runs: {out_dir}")
    return rows


if __name__ == "__main__":
    main()
