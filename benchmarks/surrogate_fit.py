"""Score-surrogate benchmark: fit time and held-out rank quality of each ``search.surrogate`` option.

The search waits for the surrogate at every proposal: a GPU worker sits idle while the CPU fits
the model and maximises the acquisition. This measures, on a real table of evaluated
configurations (jsonl rows with ``point``, ``score``, ``status``; e.g. the one
``benchmarks/search_quality.py tabulate`` writes), for each surrogate setting and each number
of observations ``n``:

* the fit's wall-clock seconds (``--threads`` torch threads, 1 by default, as a search has);
* the Spearman rank correlation between the posterior mean (averaged over the ensemble for
  the SAAS models) and the true scores of the held-out rows: what the acquisition needs to
  rank candidates; and the held-out RMSE (the constant model has no ranking at all, so its
  Spearman is undefined, but its RMSE is the model-free baseline);
* the time of one proposal: the fit, building qNEHVI on the training rows, and scoring
  ``--candidates`` random configurations of the space; and (cells measured since it was added)
  the time of one real proposal: the fit, then the paper's local search (10 restarts of at most
  100 acquisition evaluations, from the training rows' Pareto set) exactly as a search runs it;
* the paired difference of each setting's Spearman from the paper's NUTS on the same subsets.

Each is averaged over ``--repeats`` random training subsets (seeded; the same subsets for
every setting), with a 95% t-interval. The warm-started settings (``nuts_warm``,
``saas_map_warm``, ...) fit the first ``n - 10`` rows of a subset cold and then refit all ``n``
warm-started (NUTS with ``refit_warmup_steps`` warm-up steps), as a search's next proposal
would; their times are the refit's.

Every finished (setting, n, repeat) cell is saved to the JSON at once, and a rerun skips the
cells it already has (for the same table, threads, candidates and seed), so the benchmark can
be run a few settings at a time (``--settings``) or continued after a kill.

Examples::

    python benchmarks/surrogate_fit.py --settings saas_map gp constant --repeats 5
    python benchmarks/surrogate_fit.py --n 100 --repeats 1 --settings nuts_paper nuts_warm
    python benchmarks/surrogate_fit.py --table benchmarks/data/search_quality_minilm_rotten_tomatoes.jsonl --n 100

Writes ``benchmarks/results/surrogate_fit.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from scipy import stats  # noqa: E402

from autopeft.bo.acquisition import AcquisitionSettings, build_acquisition  # noqa: E402
from autopeft.bo.local_search import LocalSearchSettings, optimize_acquisition  # noqa: E402
from autopeft.bo.pareto import is_success, objective_matrix, reference_point  # noqa: E402
from autopeft.bo.searchers import acquisition_scorer, pareto_points  # noqa: E402
from autopeft.bo.surrogate import FittedSurrogate, SurrogateSettings, fit_surrogate  # noqa: E402
from autopeft.io import atomic_write_json, atomic_write_text, sha256_file  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.space import Point, SearchSpace  # noqa: E402
from benchmarks.common import compose_cfg, t_interval  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
DEFAULT_TABLE = DATA / "minilm_rotten_tomatoes_low_fidelity.jsonl"
#: The older, smaller table (200 configurations, 200 evaluation examples), used when the default is missing.
FALLBACK_TABLE = DATA / "search_quality_minilm_rotten_tomatoes.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
MIN_HELD_OUT = 30
#: Rows the warm-started setting's first (cold) fit has fewer than its refit.
WARM_GAP = 10


@dataclass(frozen=True)
class Setting:
    """One surrogate setting of the benchmark."""

    name: str
    label: str
    surrogate: SurrogateSettings
    warm: bool = False  # cold fit at n - WARM_GAP, then the timed warm refit at n


PAPER = SurrogateSettings(kind="saas", warmup_steps=256, num_samples=128, thinning=16)
SETTINGS = {
    s.name: s
    for s in (
        Setting("nuts_paper", "SAAS GP, NUTS 256/128/16 (paper)", PAPER),
        Setting("nuts_jit", "SAAS GP, NUTS 256/128/16, jit_compile", replace(PAPER, jit_compile=True)),
        Setting(
            "nuts_warm",
            "SAAS GP, NUTS 256/128/16, warm-started refit with 64 warm-up steps",
            replace(PAPER, warm_start=True, refit_warmup_steps=64),
            warm=True,
        ),
        Setting(
            "nuts_warm_jit",
            "SAAS GP, NUTS 256/128/16, jit_compile, warm-started refit with 64 warm-up steps",
            replace(PAPER, jit_compile=True, warm_start=True, refit_warmup_steps=64),
            warm=True,
        ),
        Setting(
            "nuts_fast",
            "SAAS GP, NUTS 256/64/8, jit_compile, warm-started refit with 32 warm-up steps (the earlier demo's)",
            replace(PAPER, num_samples=64, thinning=8, jit_compile=True, warm_start=True, refit_warmup_steps=32),
            warm=True,
        ),
        Setting(
            "nuts_short",
            "SAAS GP, NUTS 256/32/4, jit_compile, warm-started refit with 16 warm-up steps",
            replace(PAPER, num_samples=32, thinning=4, jit_compile=True, warm_start=True, refit_warmup_steps=16),
            warm=True,
        ),
        Setting(
            "nuts_demo",
            "SAAS GP, NUTS 256/64/8, warm-started refit with 32 warm-up steps (no JIT)",
            replace(PAPER, num_samples=64, thinning=8, warm_start=True, refit_warmup_steps=32),
            warm=True,
        ),
        Setting(
            "nuts_official",
            "SAAS GP, NUTS 128/64/4 (official code)",
            SurrogateSettings(kind="saas", warmup_steps=128, num_samples=64, thinning=4),
        ),
        Setting(
            "saas_vi",
            "SAAS GP, variational posterior (full-covariance normal, 150 Adam steps, 4 draws; the demo's)",
            SurrogateSettings(kind="saas_vi"),
        ),
        Setting("saas_map", "ensemble MAP SAAS GP (4 taus)", SurrogateSettings(kind="saas_map")),
        Setting(
            "saas_map_warm",
            "ensemble MAP SAAS GP (4 taus), warm-started refit",
            SurrogateSettings(kind="saas_map", warm_start=True),
            warm=True,
        ),
        Setting("gp", "MAP GP (SingleTaskGP)", SurrogateSettings(kind="gp")),
        Setting("constant", "constant (no model)", SurrogateSettings(kind="constant")),
    )
}


def resolve_table(requested: str | None) -> Path:
    """The table to use: ``--table``, else the default, else (saying so) the older 200-row one."""
    if requested is not None:
        table = Path(requested)
        if not table.is_file():
            raise SystemExit(f"error: --table {table} does not exist")
        return table
    if DEFAULT_TABLE.is_file():
        return DEFAULT_TABLE
    if not FALLBACK_TABLE.is_file():
        raise SystemExit(f"error: neither {DEFAULT_TABLE} nor {FALLBACK_TABLE} exists; pass --table")
    print(
        f"note: {DEFAULT_TABLE.relative_to(ROOT)} is missing (benchmarks/search_quality.py tabulate writes it); "
        f"using the older 200-row table {FALLBACK_TABLE.relative_to(ROOT)}",
        flush=True,
    )
    return FALLBACK_TABLE


def load_table(table: Path) -> tuple[list[dict[str, Any]], dict[str, Any], SearchSpace]:
    """The table's successful rows, its ``.meta.json`` and the search space it was drawn from."""
    from autopeft.training.backbones import shape_of

    meta_path = table.with_suffix(".meta.json")
    if not meta_path.is_file():
        raise SystemExit(f"error: {meta_path} is missing: the space of {table} comes from it")
    meta = json.loads(meta_path.read_text())
    # The table's own overrides, minus the ones that chose its (random) search, give its config.
    overrides = [o for o in meta.get("overrides", []) if not o.startswith("search")]
    cfg = compose_cfg(overrides)
    if (cfg.backbone.name, cfg.task.name) != (meta["backbone"], meta["task"]):
        raise SystemExit(
            f"error: {meta_path}'s overrides compose {cfg.backbone.name} on {cfg.task.name}, "
            f"but the table is {meta['backbone']} on {meta['task']}"
        )
    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    built = space.to_json_dict()
    # Compare what the table recorded; settings added to the space since (new keys of ``fixed``)
    # do not change its encoding.
    differ = [
        k
        for k, v in meta["space"].items()
        if k in built and (built[k] != v if not isinstance(v, dict) else {x: built[k].get(x) for x in v} != v)
    ]
    if differ:
        raise SystemExit(f"error: the composed space differs from {meta_path}'s in {differ}")
    rows = [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
    ok = [r for r in rows if is_success(r)]
    print(f"table {table}: {len(rows)} rows, {len(ok)} successful; space {space.name} ({space.dims} dims)", flush=True)
    return ok, meta, space


def subset(count: int, n: int, seed: int, repeat: int) -> list[int]:
    """A seeded permutation of the row indices: repeat ``repeat`` trains on the first ``n``, holds out the rest."""
    order = list(range(count))
    random.Random(f"surrogate_fit:{seed}:{n}:{repeat}").shuffle(order)
    return order


def posterior_mean(fitted: FittedSurrogate, X: torch.Tensor, ensemble: bool) -> torch.Tensor:
    """``(m,)`` posterior mean at ``X``, averaged over the ensemble (SAAS samples or taus)."""
    with torch.no_grad():
        posterior = fitted.model.posterior(X)
        mean = posterior.mixture_mean if ensemble else posterior.mean
    return mean.reshape(-1)


def run_cell(
    setting: Setting,
    rows: list[dict[str, Any]],
    space: SearchSpace,
    backbone_params: int,
    n: int,
    repeat: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Fit one setting on one training subset; held-out quality and proposal time."""
    order = subset(len(rows), n, args.seed, repeat)
    train, held = [rows[i] for i in order[:n]], [rows[i] for i in order[n:]]
    X = space.encode([Point.from_dict(r["point"]) for r in train])
    Y = torch.tensor([[float(r["score"])] for r in train], dtype=torch.float64)
    X_held = space.encode([Point.from_dict(r["point"]) for r in held])
    Y_held = torch.tensor([float(r["score"]) for r in held], dtype=torch.float64)
    cold_seconds = None
    if setting.warm:
        cold = fit_surrogate(X[: n - WARM_GAP], Y[: n - WARM_GAP], setting.surrogate, seed=repeat)
        cold_seconds = cold.seconds
        fitted = fit_surrogate(X, Y, setting.surrogate, seed=repeat + 1, warm_start=cold.state)
    else:
        fitted = fit_surrogate(X, Y, setting.surrogate, seed=repeat)
    ensemble = setting.surrogate.is_ensemble
    mean = posterior_mean(fitted, X_held, ensemble)
    constant_prediction = bool((mean == mean[0]).all())
    rho = None if constant_prediction else float(stats.spearmanr(mean.numpy(), Y_held.numpy()).statistic)
    rmse = float(((mean - Y_held) ** 2).mean().sqrt())

    # One proposal's acquisition part, as the searcher builds it: qNEHVI on the training rows.
    started = time.perf_counter()
    ref = reference_point((None, None), objective_matrix(train))
    acq = build_acquisition(
        fitted.model,
        X,
        ref,
        space,
        backbone_params,
        AcquisitionSettings(),
        ensemble=ensemble,
        seed=repeat,
    )
    candidates = space.encode(space.sample(random.Random(f"candidates:{args.seed}:{repeat}"), args.candidates))
    with torch.no_grad():
        for chunk in candidates.split(args.chunk):
            acq(chunk.unsqueeze(-2))
    acquisition_seconds = time.perf_counter() - started

    # One real proposal's acquisition part: the paper's local search, as BayesianSearcher runs it.
    started = time.perf_counter()
    acq = build_acquisition(
        fitted.model, X, ref, space, backbone_params, AcquisitionSettings(), ensemble=ensemble, seed=repeat
    )
    seen = {space.canonical(Point.from_dict(r["point"])) for r in train}
    best = optimize_acquisition(
        acquisition_scorer(acq, space),
        space,
        pareto_points(train),
        seen,
        LocalSearchSettings(),
        random.Random(f"local:{args.seed}:{repeat}"),
    )
    local_search_seconds = time.perf_counter() - started
    return {
        "setting": setting.name,
        "n": n,
        "repeat": repeat,
        "held_out": len(held),
        "fit_seconds": fitted.seconds,
        "cold_fit_seconds": cold_seconds,
        "acquisition_seconds": acquisition_seconds,
        "proposal_seconds": fitted.seconds + acquisition_seconds,
        "local_search_seconds": local_search_seconds,
        "local_search_evaluations": best.evaluations,
        "local_proposal_seconds": fitted.seconds + local_search_seconds,
        "spearman": rho,
        "rmse": rmse,
        **context(args),
    }


def context(args: argparse.Namespace) -> dict[str, Any]:
    """What makes cells comparable: a rerun reuses only cells with the same values."""
    return {
        "table_sha256": args.table_sha256,
        "threads": args.threads,
        "candidates": args.candidates,
        "seed": args.seed,
    }


def cell_text(values: list[float | None], digits: int) -> str:
    """``mean ± half-width`` of the known values (– when there are none)."""
    known = [v for v in values if v is not None]
    if not known:
        return "–"
    mean, half = t_interval(known)
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (setting, n), in the benchmark's order."""
    out = []
    for name, setting in SETTINGS.items():
        for n in sorted({c["n"] for c in cells if c["setting"] == name}):
            group = [c for c in cells if c["setting"] == name and c["n"] == n]
            row: dict[str, Any] = {"setting": name, "label": setting.label, "n": n, "repeats": len(group)}
            for key in (
                "fit_seconds",
                "proposal_seconds",
                "local_proposal_seconds",
                "spearman",
                "rmse",
                "cold_fit_seconds",
            ):
                known = [c[key] for c in group if c.get(key) is not None]
                row[key] = dict(zip(("mean", "ci95"), t_interval(known), strict=True)) if known else None
            differences = paired_spearman_differences(cells, name, n)
            row["spearman_minus_paper"] = (
                dict(zip(("mean", "ci95"), t_interval(differences), strict=True)) if differences else None
            )
            row["held_out"] = group[0]["held_out"]
            out.append(row)
    return out


def paired_spearman_differences(cells: list[dict[str, Any]], name: str, n: int) -> list[float]:
    """Per repeat, ``name``'s held-out Spearman minus the paper NUTS's on the same training subset."""
    if name == "nuts_paper":
        return []
    paper = {c["repeat"]: c["spearman"] for c in cells if c["setting"] == "nuts_paper" and c["n"] == n}
    return [
        c["spearman"] - paper[c["repeat"]]
        for c in cells
        if c["setting"] == name and c["n"] == n and c["spearman"] is not None and paper.get(c["repeat"]) is not None
    ]


def report(summary: list[dict[str, Any]], cells: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The Markdown table."""
    machine, table = header["machine"], header["table"]
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    lines = [
        "# Score surrogates: fit time and held-out rank quality",
        "",
        f"Table `{table['path']}` ({table['rows']} successful rows, {table['backbone']} on {table['task']}, "
        f"space {table['space']}: {table['dims']} encoded dims). Each cell: mean ± 95% t-interval over "
        "random training subsets of n rows (the same subsets for every setting); held-out = the other rows. "
        f"Proposal = fit + building qNEHVI (128 QMC samples) + scoring {header['candidates']} random "
        "configurations; local-search proposal = fit + qNEHVI maximised by the paper's local search "
        "(10 restarts, at most 100 evaluations each), as a search proposes (– for cells measured before "
        "it was added). Spearman is of the posterior mean (ensemble-averaged) against the held-out scores; "
        "the constant model predicts one value, so it has none. Δ Spearman: the setting's minus the paper "
        "NUTS's on the same subsets (paired), mean ± 95% t-interval.",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['processor']}), torch threads {machine['torch_threads']}; "
        f"{versions}.",
        "",
        "| setting | n | repeats | fit s | proposal s | local-search proposal s | held-out Spearman "
        "| Δ Spearman vs paper NUTS | held-out RMSE |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in summary:
        group = [c for c in cells if c["setting"] == row["setting"] and c["n"] == row["n"]]
        label = row["label"]
        if row["cold_fit_seconds"] is not None:
            label += f" (cold fit at n-{WARM_GAP}: {cell_text([c['cold_fit_seconds'] for c in group], 2)} s)"
        lines.append(
            f"| {label} | {row['n']} | {row['repeats']} | {cell_text([c['fit_seconds'] for c in group], 2)} "
            f"| {cell_text([c['proposal_seconds'] for c in group], 2)} "
            f"| {cell_text([c.get('local_proposal_seconds') for c in group], 2)} "
            f"| {cell_text([c['spearman'] for c in group], 3)} "
            f"| {cell_text(paired_spearman_differences(cells, row['setting'], row['n']), 3)} "
            f"| {cell_text([c['rmse'] for c in group], 4)} |"
        )
    return "\n".join(lines) + "\n"


def header_of(args: argparse.Namespace, table: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict:
    """Machine, library versions and table: what the numbers depend on."""
    import botorch
    import gpytorch
    import pyro

    try:
        table_name = str(table.resolve().relative_to(ROOT))
    except ValueError:
        table_name = str(table)
    return {
        "machine": {
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "botorch": botorch.__version__,
            "gpytorch": gpytorch.__version__,
            "pyro": pyro.__version__,
        },
        "table": {
            "path": table_name,
            "sha256": args.table_sha256,
            "rows": len(rows),
            "backbone": meta["backbone"],
            "task": meta["task"],
            "space": meta["space"]["name"],
            "dims": meta["space"]["dims"],
        },
        "candidates": args.candidates,
        "settings": {name: {"label": s.label, **asdict(s.surrogate)} for name, s in SETTINGS.items()},
    }


def main() -> None:
    """Run the requested cells (skipping saved ones) and write the table and JSON."""
    quiet_libraries()
    # Pyro's JIT goes through torch.jit.trace, which newer torch flags as deprecated.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*is deprecated.*")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=None, help=f"jsonl table (default {DEFAULT_TABLE.relative_to(ROOT)})")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 200], help="training rows")
    parser.add_argument("--repeats", type=int, default=5, help="random training subsets per n")
    parser.add_argument("--settings", "--kinds", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a search fits with one)")
    parser.add_argument("--candidates", type=int, default=1000, help="random configurations scored per proposal")
    parser.add_argument("--chunk", type=int, default=250, help="candidates per acquisition call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="recompute the chosen cells even if saved")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    table = resolve_table(args.table)
    args.table_sha256 = sha256_file(table)
    rows, meta, space = load_table(table)
    out_dir = Path(args.out_dir)
    json_path = out_dir / "surrogate_fit.json"
    saved = json.loads(json_path.read_text()).get("cells", []) if json_path.is_file() else []
    cells = list(saved)
    ns = []
    for n in args.n:
        if len(rows) - n < MIN_HELD_OUT:
            print(f"skipping n={n}: it leaves {len(rows) - n} held-out rows (fewer than {MIN_HELD_OUT})", flush=True)
        elif n <= WARM_GAP:
            print(f"skipping n={n}: too few rows to fit", flush=True)
        else:
            ns.append(n)
    header = header_of(args, table, rows, meta)

    def key(c: dict[str, Any]) -> tuple:
        return (c["setting"], c["n"], c["repeat"], *(c[k] for k in context(args)))

    def write() -> None:
        current = [c for c in cells if all(c[k] == v for k, v in context(args).items())]
        summary = summarise(current)
        atomic_write_json(json_path, {**header, "summary": summary, "cells": cells})
        atomic_write_text(out_dir / "surrogate_fit.md", report(summary, current, header))

    for name in args.settings:
        for n in ns:
            for repeat in range(args.repeats):
                probe = {"setting": name, "n": n, "repeat": repeat, **context(args)}
                done = [c for c in cells if key(c) == key(probe)]
                if done and not args.force:
                    continue
                cells = [c for c in cells if key(c) != key(probe)]
                cell = run_cell(SETTINGS[name], rows, space, int(meta["backbone_params"]), n, repeat, args)
                cells.append(cell)
                write()  # after every cell: a killed run keeps what it finished
                rho = "–" if cell["spearman"] is None else f"{cell['spearman']:.3f}"
                print(
                    f"{name:>14} n={n} repeat {repeat}: fit {cell['fit_seconds']:.2f}s, "
                    f"proposal {cell['proposal_seconds']:.2f}s, local-search proposal "
                    f"{cell['local_proposal_seconds']:.2f}s ({cell['local_search_evaluations']} evaluations), "
                    f"Spearman {rho}, RMSE {cell['rmse']:.4f}",
                    flush=True,
                )
    write()
    print((out_dir / "surrogate_fit.md").read_text())
    print(f"wrote {out_dir / 'surrogate_fit.md'} and {json_path}")


if __name__ == "__main__":
    main()
