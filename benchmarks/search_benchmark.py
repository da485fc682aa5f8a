"""Search benchmark over the whole space: whether BO beats the simple rules at equal budget, paired.

A table of a few hundred real evaluations cannot tell searchers apart: a 100-evaluation budget
already sees a large part of it. This benchmark builds a *surrogate world* from the real table
instead, and searches the whole space in it:

1. **The world.** A model of a different family from the GP, gradient-boosted trees
   (scikit-learn's ``HistGradientBoostingRegressor``), is fitted to the real low-fidelity table
   (:mod:`benchmarks.search_quality` ``tabulate``; MiniLM on the Rotten Tomatoes stand-in). Its
   5-fold cross-validated rank correlation with the real scores is reported. Its prediction for
   every configuration of the space (all 62,938 distinct ones of MiniLM's AutoPEFT space) is
   the world's true score, so the true Pareto front is known exactly.
2. **Noise of the measured size.** Each evaluation returns the true score plus Gaussian noise
   whose standard deviation is the scatter of the real scores around the model's
   out-of-fold predictions (``--noise-sd`` to override). The noise of a configuration is a
   function of the seed and the configuration, so every method sees the same noisy value for
   the same configuration in the same seed (paired comparisons).
3. **The searchers**, through the project's real search loop (:func:`autopeft.experiments.search.run_search`,
   resumable run directories), BO's acquisition optimised by the real local search over the
   discrete space: AutoPEFT's BO (``--surrogate``), BO with a model-free constant surrogate (what
   the acquisition alone contributes), random search, random stratified on log % params,
   cheapest-first and NSGA-II. Every method starts from the same initial design for a seed.
4. **The measure.** Hypervolume regret: 1 - HV(true scores of the evaluated configurations) /
   HV(true front), after each evaluation, on the linear % params axis and on the log10 axis
   (the paper's plots), against one fixed reference point per axis. Paired differences to BO
   with 95% t-intervals over seeds, and wall-clock seconds per run.

Examples (from the repository root)::

    python benchmarks/search_benchmark.py --setting small --seeds 10     # 20 initial + 180
    python benchmarks/search_benchmark.py --setting paper --seeds 10     # 100 initial + 100 (Figure 6)
    python benchmarks/search_benchmark.py --report-only                  # tables from finished runs

Writes ``benchmarks/results/search_benchmark_<setting>.md`` / ``.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from autopeft.bo.objectives import ParamAxis  # noqa: E402
from autopeft.bo.pareto import hypervolume  # noqa: E402
from autopeft.experiments.search import run_search  # noqa: E402
from autopeft.io import atomic_write_json, atomic_write_text  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.space import Point, SearchSpace  # noqa: E402
from benchmarks.common import compose_cfg, t_interval  # noqa: E402
from benchmarks.search_quality import DEFAULT_TABLE  # noqa: E402

#: Method name -> (search group, extra overrides). ``bo`` gets ``--surrogate`` added.
METHODS: dict[str, tuple[str, list[str]]] = {
    "bo": ("bo", []),
    "bo_constant": ("bo", ["search.surrogate.kind=constant"]),
    "random": ("random", []),
    "stratified": ("stratified", []),
    "cheapest": ("cheapest", []),
    "nsga2": ("nsga2", []),
}

LABELS = {
    "bo": "AutoPEFT BO",
    "bo_constant": "BO, constant (model-free) surrogate",
    "random": "random search",
    "stratified": "random, stratified on log % params",
    "cheapest": "cheapest-first",
    "nsga2": "NSGA-II (Optuna)",
}

#: The bo method's surrogate unless ``--surrogate`` says otherwise (its reports carry no surrogate tag).
DEFAULT_SURROGATE = "saas_map"

#: Initial design and budget of each setting (``smoke``: the tests' seconds-long check).
SETTINGS = {"small": (20, 200), "paper": (100, 200), "smoke": (5, 15)}

CHECKPOINTS = (20, 50, 80, 100, 150, 200)
AXES = ("linear", "log")


# ---------------------------------------------------------------------------------- the world


def space_of(cfg: DictConfig) -> SearchSpace:
    """The search space the table was built in."""
    from autopeft.training.backbones import shape_of

    return SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))


def features(space: SearchSpace, points: list[Point], backbone_params: int) -> Any:
    """Tree-model inputs: the space's encoding plus log10 % params (a known function of a point)."""
    import numpy as np

    X = space.encode(points).numpy()
    percent = np.array([space.param_percent(p, backbone_params) for p in points])
    return np.column_stack([X, np.log10(np.maximum(percent, 1e-4))])


@dataclass
class World:
    """True scores of every configuration, and what the model of the real table is worth."""

    points: list[Point]
    truth: dict[Point, float]
    percent: dict[Point, float]
    cv_spearman: float
    cv_spearman_ci: tuple[float, float]
    residual_sd: float
    binomial_sd: float
    table_rows: int
    table_score_sd: float


def build_world(table: Path, space: SearchSpace, backbone_params: int, eval_examples: int) -> World:
    """Fit gradient-boosted trees to the real table and predict every configuration of the space."""
    import numpy as np
    from scipy import stats
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    rows = [json.loads(line) for line in table.read_text().splitlines()]
    rows = [r for r in rows if r.get("status") == "ok" and r.get("score") is not None]
    points = [Point.from_dict(r["point"]) for r in rows]
    y = np.array([float(r["score"]) for r in rows])
    X = features(space, points, backbone_params)
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, random_state=0)
    folds = KFold(n_splits=5, shuffle=True, random_state=0)
    oof = cross_val_predict(model, X, y, cv=folds)
    rho = float(stats.spearmanr(oof, y).statistic)
    # Bootstrap interval over rows for the cross-validated rank correlation.
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(2000):
        idx = rng.integers(0, len(y), len(y))
        boots.append(stats.spearmanr(oof[idx], y[idx]).statistic)
    low, high = np.nanpercentile(boots, [2.5, 97.5])
    model.fit(X, y)
    everything = space.enumerate_configurations()
    predicted = model.predict(features(space, everything, backbone_params))
    mean = float(y.mean())
    return World(
        points=everything,
        truth={p: float(v) for p, v in zip(everything, predicted, strict=True)},
        percent={p: space.param_percent(p, backbone_params) for p in everything},
        cv_spearman=rho,
        cv_spearman_ci=(float(low), float(high)),
        residual_sd=float(np.std(y - oof)),
        binomial_sd=math.sqrt(mean * (1 - mean) / eval_examples),
        table_rows=len(rows),
        table_score_sd=float(y.std()),
    )


def world_of_table(table: Path) -> tuple[World, SearchSpace, dict[str, Any]]:
    """The world fitted to ``table``, the space it was built in, and the table's meta."""
    meta = json.loads(table.with_suffix(".meta.json").read_text())
    space = space_of(compose_cfg([o for o in meta["overrides"] if not o.startswith(("search", "seed"))]))
    eval_examples = int(next(o.split("=")[1] for o in meta["overrides"] if o.startswith("data.max_eval_samples")))
    return build_world(table, space, meta["backbone_params"], eval_examples), space, meta


class NoisyWorldObjective:
    """Evaluates a configuration in the world: true score plus noise fixed by (seed, configuration)."""

    def __init__(
        self, world: World, space: SearchSpace, noise_sd: float, seed: int, simulated_seconds: float = 0.0
    ) -> None:
        self.world, self.space, self.noise_sd, self.seed = world, space, noise_sd, seed
        self.simulated_seconds = simulated_seconds

    def _digest(self, point: Point) -> bytes:
        key = json.dumps(self.space.canonical(point).to_dict(), sort_keys=True)
        return hashlib.sha256(f"{self.seed}:{key}".encode()).digest()

    def noise(self, point: Point) -> float:
        """The same draw for the same configuration and seed, whichever method asks."""
        generator = torch.Generator().manual_seed(int.from_bytes(self._digest(point)[:8], "little"))
        return float(torch.randn((), generator=generator, dtype=torch.float64)) * self.noise_sd

    def duration(self, point: Point) -> float:
        """Simulated training time: ``simulated_seconds`` x 0.5-1.5, fixed per configuration.

        Real trainings differ in length, so parallel evaluations finish out of proposal order.
        """
        return self.simulated_seconds * (0.5 + int.from_bytes(self._digest(point)[8:12], "little") / 2**32)

    def __call__(self, point: Point, index: int) -> dict[str, Any]:
        """A result record's fields, as :class:`autopeft.training.objective.TrainingObjective` returns them."""
        canonical = self.space.canonical(point)
        truth = self.world.truth[canonical]
        if self.simulated_seconds:
            time.sleep(self.duration(point))
        return {
            "status": "ok",
            "score": truth + self.noise(point),
            "true_score": truth,
            "reason": None,
            "param_percent": self.world.percent[canonical],
            "seconds": 0.0,
        }


# ---------------------------------------------------------------------------------- measuring


class Axis:
    """One scale of the parameter objective (:class:`ParamAxis`), its fixed reference point and the true front's HV."""

    def __init__(self, name: str, world: World, space: SearchSpace, backbone_params: int) -> None:
        self.name = name
        self.param_axis = ParamAxis.for_space(name, space, backbone_params)
        Y = self.objectives([world.truth[p] for p in world.points], [world.percent[p] for p in world.points])
        # Just beyond the worst true score and the largest % params, so every configuration counts.
        self.ref = torch.tensor([float(Y[:, 0].min()) - 0.01, float(Y[:, 1].min()) - 0.01], dtype=torch.float64)
        self.best = hypervolume(Y, self.ref)

    def objectives(self, scores: list[float], percents: list[float]) -> torch.Tensor:
        """``[score, axis(% params)]``, both maximised."""
        x = self.param_axis.transform(torch.tensor(percents, dtype=torch.float64))
        return torch.stack([torch.tensor(scores, dtype=torch.float64), x], dim=-1).reshape(len(scores), 2)

    def regret_trace(self, records: list[dict[str, Any]]) -> list[float]:
        """1 - HV / HV(true front) after each evaluation, on the true scores of what was evaluated."""
        scores: list[float] = []
        percents: list[float] = []
        out = []
        for record in records:
            scores.append(float(record["true_score"]))
            percents.append(float(record["param_percent"]))
            out.append(1.0 - hypervolume(self.objectives(scores, percents), self.ref) / self.best)
        return out


def true_front(world: World) -> list[tuple[float, float, str]]:
    """The world's Pareto front: (true score, % params, configuration), ascending % params."""
    from botorch.utils.multi_objective.pareto import is_non_dominated

    Y = torch.tensor([[world.truth[p], -world.percent[p]] for p in world.points], dtype=torch.float64)
    mask = is_non_dominated(Y).tolist()
    front = [(world.truth[p], world.percent[p], p) for p, keep in zip(world.points, mask, strict=True) if keep]
    return sorted(front, key=lambda t: t[1])


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences over seeds."""
    mean, half = t_interval(differences)
    if half is None:
        return mean, float("nan"), float("nan")
    return mean, mean - half, mean + half


# ---------------------------------------------------------------------------------- running


def method_overrides(method: str, args: argparse.Namespace, seed: int, n_init: int, budget: int) -> list[str]:
    """The ``python run.py`` overrides of one method's search in the world."""
    group, extra = METHODS[method]
    overrides = [
        f"search={group}",
        "search.progress=false",
        f"search.n_init={n_init}",
        f"search.n_iter={budget - n_init}",
        "search.enumerate=never",
        f"search.batch_size={args.batch_size}",
        f"seed={seed}",
        *extra,
    ]
    if args.param_objective:
        overrides.append(f"search.param_objective={args.param_objective}")
    if method == "bo":
        overrides += [f"search.surrogate.kind={args.surrogate}", *args.bo_override]
    if method == "nsga2":
        overrides.append(f"search.nsga2.population_size={args.population}")
    return overrides


def run_dir_of(out: Path, method: str, seed: int, args: argparse.Namespace) -> Path:
    """One run's directory; BO's is named by its surrogate and extra overrides, so several can be compared."""
    name = method
    if method == "bo":
        # e.g. bo-saas_map or bo-saas_map+surrogate.warm_start=true
        extra = "+".join(o.removeprefix("search.") for o in args.bo_override)
        name = f"bo-{args.surrogate}" + (f"+{extra}" if extra else "")
    return out / "runs" / f"{name}_seed{seed}"


def run_one(
    method: str, seed: int, args: argparse.Namespace, world: World, space: SearchSpace, out: Path
) -> tuple[list[dict[str, Any]], float]:
    """Run (or finish) one search; returns its records and the seconds all its sessions took."""
    n_init, budget = SETTINGS[args.setting]
    cfg = compose_cfg(method_overrides(method, args, seed, n_init, budget))
    run_dir = run_dir_of(out, method, seed, args)
    timing = run_dir / "benchmark_seconds.json"
    earlier = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    started = time.perf_counter()
    objective = NoisyWorldObjective(world, space, args.noise_sd, seed)
    result = run_search(cfg, run_dir, resume=(run_dir / "search.json").exists(), objective=objective)
    elapsed = earlier + time.perf_counter() - started
    atomic_write_json(timing, {"seconds": elapsed})
    return sorted(result["records"], key=lambda r: r["index"]), elapsed


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, build the world, run the searches, write the report."""
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default=str(DEFAULT_TABLE), help="real low-fidelity table (jsonl)")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="small")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--surrogate", default=DEFAULT_SURROGATE, help="search.surrogate.kind of the bo method")
    parser.add_argument("--bo-override", nargs="*", default=[], help="more overrides for the bo method")
    parser.add_argument("--param-objective", default=None, choices=("linear", "log"), help="search.param_objective")
    parser.add_argument("--batch-size", type=int, default=1, help="search.batch_size (BO proposals per fit)")
    parser.add_argument("--population", type=int, default=20, help="NSGA-II population size")
    parser.add_argument("--noise-sd", type=float, default=None, help="default: the measured residual sd")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default="outputs/bench/search_benchmark")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--report-only", action="store_true", help="report the finished runs, run nothing")
    parser.add_argument(
        "--merge-results",
        action="store_true",
        help="also report the seeds outside this run that the results JSON already holds (same setting and world)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    world, space, meta = world_of_table(Path(args.table))
    args.noise_given = args.noise_sd is not None
    if args.noise_sd is None:
        args.noise_sd = world.residual_sd
    print(
        f"world: {len(world.points)} configurations; trees fitted to {world.table_rows} real evaluations, "
        f"5-fold CV Spearman {world.cv_spearman:.2f} [{world.cv_spearman_ci[0]:.2f}, {world.cv_spearman_ci[1]:.2f}]; "
        f"noise sd {args.noise_sd:.4f} (residual {world.residual_sd:.4f}, binomial part {world.binomial_sd:.4f}) "
        f"({time.perf_counter() - started:.0f}s)",
        flush=True,
    )
    axes = [Axis(name, world, space, meta["backbone_params"]) for name in AXES]
    out = Path(args.out_dir) / (f"{args.setting}_{args.param_objective or 'default'}" + noise_tag(args))
    traces: dict[str, dict[str, dict[int, list[float]]]] = {a: {m: {} for m in args.methods} for a in AXES}
    seconds: dict[str, dict[int, float]] = {m: {} for m in args.methods}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.merge_results:
        merge_previous_results(args, world, traces, seconds, set(seeds))
    for seed in seeds:  # seed-major: an interrupted benchmark has every method for the seeds it finished
        for method in args.methods:
            run_dir = run_dir_of(out, method, seed, args)
            if args.report_only and not (run_dir / "benchmark_seconds.json").exists():
                continue
            records, elapsed = run_one(method, seed, args, world, space, out)
            seconds[method][seed] = elapsed
            for axis in axes:
                traces[axis.name][method][seed] = axis.regret_trace(records)
            print(
                f"seed {seed} {method:>11}: regret after {len(records)} "
                + ", ".join(f"{a.name} {traces[a.name][method][seed][-1]:.4f}" for a in axes)
                + f" ({elapsed:.0f}s)",
                flush=True,
            )
        if not args.report_only:  # after every seed, so a stopped benchmark has reported what it finished
            write_report(args, meta, world, axes, traces, seconds, Path(args.results_dir))
    report = write_report(args, meta, world, axes, traces, seconds, Path(args.results_dir))
    print(report)


def noise_tag(args: argparse.Namespace) -> str:
    """``_noise<sd>`` when the noise was set on the command line (another world: other runs, another report)."""
    return f"_noise{args.noise_sd:g}" if args.noise_given else ""


def results_stem(args: argparse.Namespace) -> str:
    """File name (without suffix) of the report of this setting, search axis, BO surrogate and noise."""
    axis = f"_{args.param_objective}" if args.param_objective else ""
    surrogate = f"_{args.surrogate}" if args.surrogate != DEFAULT_SURROGATE else ""
    return f"search_benchmark_{args.setting}{axis}{surrogate}{noise_tag(args)}"


def merge_previous_results(
    args: argparse.Namespace,
    world: World,
    traces: dict[str, dict[str, dict[int, list[float]]]],
    seconds: dict[str, dict[int, float]],
    skip: set[int],
) -> None:
    """Add the traces of earlier seeds from the results JSON, so a run of more seeds extends it.

    The earlier seeds are only taken when they were made in the same world (table, noise) with the
    same BO settings; otherwise this stops with an error rather than mix two benchmarks.
    """
    path = Path(args.results_dir) / f"{results_stem(args)}.json"
    if not path.exists():
        raise SystemExit(f"error: --merge-results: {path} does not exist")
    earlier = json.loads(path.read_text())
    mine = run_description(args)
    theirs = {**mine, **earlier.get("run", {})}  # reports from before "run" was written hold only the world
    checks = {
        "setting": (earlier["setting"], args.setting),
        "world table": (earlier["world"]["table"], Path(args.table).name),
        "world noise sd": (round(earlier["world"]["noise_sd"], 10), round(args.noise_sd, 10)),
        "world CV Spearman": (round(earlier["world"]["cv_spearman"], 10), round(world.cv_spearman, 10)),
        **{key: (theirs[key], mine[key]) for key in mine},
    }
    differ = {name: pair for name, pair in checks.items() if pair[0] != pair[1]}
    if differ:
        raise SystemExit(
            f"error: --merge-results: {path} was made differently: "
            + "; ".join(f"{name} {a!r} there, {b!r} here" for name, (a, b) in differ.items())
        )
    for axis, by_method in earlier["traces"].items():
        for method, by_seed in by_method.items():
            if method in traces[axis]:
                for seed, trace in by_seed.items():
                    if int(seed) not in skip:
                        traces[axis][method][int(seed)] = trace
    for method, by_seed in earlier["seconds"].items():
        if method in seconds:
            for seed, value in by_seed.items():
                if int(seed) not in skip:
                    seconds[method][int(seed)] = value
    print(f"merged seeds {sorted(int(s) for s in earlier['seeds'] if int(s) not in skip)} from {path}", flush=True)


def run_description(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that make two benchmark runs comparable (stored in the JSON, checked on merging)."""
    return {
        "surrogate": args.surrogate,
        "bo_override": list(args.bo_override),
        "batch_size": args.batch_size,
        "population": args.population,
    }


# ---------------------------------------------------------------------------------- reporting


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, low, high = paired_interval(values)
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]" if len(values) > 1 else f"{mean:.4f}"


def evaluations_to_reach(trace: list[float], target: float) -> int | None:
    """First evaluation count whose regret is at most ``target`` (None: never within the budget)."""
    return next((k + 1 for k, value in enumerate(trace) if value <= target), None)


def write_report(
    args: argparse.Namespace,
    meta: dict[str, Any],
    world: World,
    axes: list[Axis],
    traces: dict[str, dict[str, dict[int, list[float]]]],
    seconds: dict[str, dict[int, float]],
    results_dir: Path,
) -> str:
    """Markdown tables (regret, paired differences, evaluations to match random) plus JSON and a plot."""
    n_init, budget = SETTINGS[args.setting]
    methods = [m for m in args.methods if traces[AXES[0]][m]]
    complete = sorted(set.intersection(*(set(traces[AXES[0]][m]) for m in methods))) if methods else []
    checkpoints = [c for c in CHECKPOINTS if c <= budget]
    bo_axis = args.param_objective or "linear"
    bo_extra = f" ({', '.join(args.bo_override)})" if args.bo_override else ""
    lines = [
        f"# Search benchmark: whole-space surrogate world, setting `{args.setting}` "
        f"({n_init} initial + {budget - n_init} searched)",
        "",
        f"World: gradient-boosted trees fitted to {world.table_rows} real low-fidelity evaluations "
        f"({meta['backbone']} on {meta['task']}, table `{Path(args.table).name}`); 5-fold cross-validated Spearman "
        f"with the real scores {world.cv_spearman:.2f} [{world.cv_spearman_ci[0]:.2f}, {world.cv_spearman_ci[1]:.2f}] "
        f"(bootstrap 95%). The true front is computed over all {len(world.points)} configurations. Each evaluation "
        f"returns the true score plus Gaussian noise, sd {args.noise_sd:.4f} "
        + ("(set with --noise-sd; " if args.noise_given else "(the scatter of the real scores around the trees; ")
        + f"that scatter {world.residual_sd:.4f}, its binomial part {world.binomial_sd:.4f}; "
        f"real scores' sd {world.table_score_sd:.4f}), "
        "the same draw for the same configuration and seed in every method.",
        "",
        f"Seeds {complete[0] if complete else '-'}–{complete[-1] if complete else '-'} ({len(complete)} with every "
        f"method); the same {n_init} initial configurations for every method in a seed. BO: surrogate "
        f"`{args.surrogate}`{bo_extra}, {args.batch_size} proposal(s) per fit, acquisition optimised by the local "
        f"search over the space; search axis `{bo_axis}`. NSGA-II population {args.population}. Regret: "
        "1 - HV / HV(true front) of the true scores of every configuration evaluated, against one fixed "
        "reference per axis (lower is better). Intervals: 95% t over seeds.",
        "",
    ]
    summary: dict[str, Any] = {"setting": args.setting, "seeds": complete, "axes": {}}
    for axis in axes:
        by_method = traces[axis.name]
        lines += [
            f"## {'% params' if axis.name == 'linear' else 'log10 % params'} axis"
            + (" (the axis BO optimises)" if axis.name == bo_axis else ""),
            "",
            "Mean regret [95% interval]:",
            "",
            "| method | " + " | ".join(f"@{c}" for c in checkpoints) + " | seconds per run |",
            "|:--|" + "--:|" * (len(checkpoints) + 1),
        ]
        for method in methods:
            cells = [_cell([by_method[method][s][c - 1] for s in complete]) for c in checkpoints]
            run_seconds = statistics.mean(seconds[method][s] for s in complete) if complete else float("nan")
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + f" | {run_seconds:.0f} |")
        lines += [
            "",
            "Paired difference, other method's regret minus BO's (above 0: BO is better):",
            "",
            "| method | " + " | ".join(f"@{c}" for c in checkpoints) + " |",
            "|:--|" + "--:|" * len(checkpoints),
        ]
        axis_summary: dict[str, Any] = {}
        for method in methods:
            if method == "bo" or "bo" not in methods:
                continue
            cells = []
            for c in checkpoints:
                diffs = [by_method[method][s][c - 1] - by_method["bo"][s][c - 1] for s in complete]
                cells.append(_cell(diffs))
                axis_summary.setdefault(method, {})[c] = paired_interval(diffs) if diffs else None
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        if "bo" in methods and "random" in methods and complete:
            needed = [evaluations_to_reach(by_method["bo"][s], by_method["random"][s][budget - 1]) for s in complete]
            reached = [n for n in needed if n is not None]
            lines += [
                "",
                f"Evaluations BO needs to reach random search's {budget}-evaluation hypervolume (same seed): "
                + ", ".join("never" if n is None else str(n) for n in needed)
                + (
                    f"; median {statistics.median(reached):.0f}, reached in {len(reached)}/{len(needed)} seeds."
                    if reached
                    else "; never reached."
                ),
            ]
            axis_summary["evaluations_to_random_budget"] = needed
        lines.append("")
        summary["axes"][axis.name] = {
            "ref": axis.ref.tolist(),
            "true_front_hv": axis.best,
            "paired": axis_summary,
            "mean_regret": {
                m: {c: statistics.mean(by_method[m][s][c - 1] for s in complete) for c in checkpoints}
                for m in methods
                if complete
            },
        }
    front = true_front(world)
    lines += [
        f"True front: {len(front)} configurations, from {front[0][1]:.4f}% params (score {front[0][0]:.4f}) to "
        f"{front[-1][1]:.3f}% (score {front[-1][0]:.4f}).",
        "",
        "Made by `python benchmarks/search_benchmark.py"
        + (f" --table {args.table}" if Path(args.table) != DEFAULT_TABLE else "")
        + f" --setting {args.setting} --seeds {args.seeds}"
        + (f" --first-seed {args.first_seed}" if args.first_seed else "")
        + (" --methods " + " ".join(args.methods) if list(args.methods) != list(METHODS) else "")
        + (f" --noise-sd {args.noise_sd:g}" if args.noise_given else "")
        + (f" --surrogate {args.surrogate}" if args.surrogate != "saas_map" else "")
        + (" --bo-override " + " ".join(args.bo_override) if args.bo_override else "")
        + (f" --param-objective {args.param_objective}" if args.param_objective else "")
        + (" --merge-results" if args.merge_results else "")
        + f"` on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"{torch.get_num_threads()} torch thread(s).",
    ]
    report = "\n".join(lines) + "\n"
    stem = results_stem(args)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results_dir / f"{stem}.md", report)
    atomic_write_json(
        results_dir / f"{stem}.json",
        {
            **summary,
            "run": run_description(args),
            "world": {
                "table": Path(args.table).name,
                "rows": world.table_rows,
                "cv_spearman": world.cv_spearman,
                "cv_spearman_ci": world.cv_spearman_ci,
                "noise_sd": args.noise_sd,
                "configurations": len(world.points),
            },
            "seconds": seconds,
            "traces": traces,
        },
    )
    _plot(traces, methods, complete, results_dir / f"{stem}.png", n_init, args)
    return report


def _plot(
    traces: dict[str, dict[str, dict[int, list[float]]]],
    methods: list[str],
    seeds: list[int],
    path: Path,
    n_init: int,
    args: argparse.Namespace,
) -> None:
    """Mean regret against evaluations, with 95% bands, one panel per axis."""
    if not seeds:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "bo": "#d62728",
        "bo_constant": "#ff9896",
        "random": "#7f7f7f",
        "stratified": "#2ca02c",
        "cheapest": "#9467bd",
        "nsga2": "#1f77b4",
    }
    fig, panels = plt.subplots(1, len(AXES), figsize=(6.2 * len(AXES), 4.4), squeeze=False)
    for ax, axis in zip(panels[0], AXES, strict=True):
        for method in methods:
            runs = torch.tensor([traces[axis][method][s] for s in seeds], dtype=torch.float64)
            mean = runs.mean(0)
            half = 1.96 * runs.std(0) / math.sqrt(runs.shape[0]) if runs.shape[0] > 1 else torch.zeros_like(mean)
            xs = range(1, runs.shape[1] + 1)
            ax.plot(xs, mean, color=colours[method], label=LABELS[method])
            ax.fill_between(xs, mean - half, mean + half, color=colours[method], alpha=0.15)
        ax.axvline(n_init + 0.5, color="black", lw=0.8, ls=":", label="end of the initial design")
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume regret (log scale)")
        ax.set_title("% params axis" if axis == "linear" else "log10 % params axis", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Search benchmark ({args.setting}: {n_init} initial + {SETTINGS[args.setting][1] - n_init}); "
        f"mean and 95% interval over {len(seeds)} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()
