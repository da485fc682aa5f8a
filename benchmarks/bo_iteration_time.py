"""Time of one BO iteration: SAAS-GP NUTS fit and acquisition optimisation, at n observations.

Uses the BERT-base AutoPEFT space (15 encoded dimensions) and synthetic scores, since the cost of
an iteration depends on the number of observations and the settings, not on where scores came
from. Prints one Markdown table.

Example::

    python benchmarks/bo_iteration_time.py --observations 100 200
    python benchmarks/bo_iteration_time.py --observations 20 --warmup-steps 16 --num-samples 16 --thinning 4
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autopeft.bo.acquisition import AcquisitionSettings, build_acquisition  # noqa: E402
from autopeft.bo.local_search import LocalSearchSettings, optimize_acquisition  # noqa: E402
from autopeft.bo.pareto import objective_matrix, pareto_mask, reference_point  # noqa: E402
from autopeft.bo.surrogate import SurrogateSettings, fit_surrogate  # noqa: E402
from autopeft.peft import BackboneShape  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.space import SearchSpace  # noqa: E402

BERT_BASE = BackboneShape("bert_base_arch", 768, 12, 12)
BERT_BASE_PARAMS = 109_482_240


def one_iteration(n: int, args: argparse.Namespace) -> dict[str, float]:
    """Fit on ``n`` synthetic observations and propose one configuration; return the timings."""
    space = SearchSpace.from_config(
        {"name": "autopeft", "modules": ["sa", "pa", "prefix"], "layer_selection": True}, BERT_BASE
    )
    rng = random.Random(n)
    points = space.sample(rng, n)
    X = space.encode(points)
    gen = torch.Generator().manual_seed(n)
    Y = 0.6 + 0.1 * X[:, 12:13] - 0.05 * X[:, 14:15] + 0.02 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    settings = SurrogateSettings(warmup_steps=args.warmup_steps, num_samples=args.num_samples, thinning=args.thinning)
    fitted = fit_surrogate(X, Y, settings, seed=0)
    records = [
        {"index": i, "score": float(Y[i]), "param_percent": space.param_percent(p, BERT_BASE_PARAMS), "status": "ok"}
        for i, p in enumerate(points)
    ]
    objectives = objective_matrix(records)
    ref = reference_point((None, None), objectives)
    pareto = [p for p, keep in zip(points, pareto_mask(objectives).tolist(), strict=True) if keep]
    started = time.perf_counter()
    acq = build_acquisition(
        fitted.model, X, ref, space, BERT_BASE_PARAMS, AcquisitionSettings(name=args.acquisition), ensemble=True
    )

    def values(candidates: list) -> torch.Tensor:
        with torch.no_grad():
            return acq(space.encode(candidates).unsqueeze(-2))

    seen = {space.canonical(p) for p in points}
    best = optimize_acquisition(values, space, pareto, seen, LocalSearchSettings(), rng)
    return {"fit": fitted.seconds, "acquisition": time.perf_counter() - started, "evals": best.evaluations}


def main() -> None:
    """Time one iteration per requested number of observations."""
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observations", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--warmup-steps", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument("--thinning", type=int, default=16)
    parser.add_argument("--acquisition", default="qnehvi", choices=["qnehvi", "qlognehvi"])
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"One BO iteration on {device}: SAAS-GP NUTS {args.warmup_steps}/{args.num_samples}/{args.thinning}, "
        f"{args.acquisition}, local search 10 restarts x <= 100 evaluations\n"
    )
    print("| observations | NUTS fit (s) | acquisition optimisation (s) | acquisition evaluations |")
    print("|--:|--:|--:|--:|")
    for n in args.observations:
        t = one_iteration(n, args)
        print(f"| {n} | {t['fit']:.1f} | {t['acquisition']:.1f} | {int(t['evals'])} |", flush=True)


if __name__ == "__main__":
    main()
