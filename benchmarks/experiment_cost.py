"""What each paper experiment costs on one GPU, from its real plan or grid: a transparent estimate.

No GPU was available where this was written, so the cost of the full experiments is computed, not
measured: each experiment's config is composed exactly as ``python run.py experiment=<name>``
composes it, its pipeline is planned (the same stages ``mode=pipeline`` runs), and every training
is costed as (training examples) x (epochs) / (training throughput), plus one surrogate fit per
BO proposal. Every assumption is a command-line flag and is printed with the table:

- training examples: the public train-split sizes of GLUE/SuperGLUE (below), minus the 10%
  carved off for validation;
- epochs: 1 per search evaluation (``fidelity=low``), 20 per retraining or baseline
  (``fidelity=full``; early stopping after 10 epochs without improvement can only shorten it,
  so this is an upper bound);
- throughput: ``--samples-per-second`` for BERT-base (default 1,000: the H100 figure for one
  configuration at batch 32 in bf16 quoted in issue #6), scaled by the parameter ratio for the
  large models; full fine-tuning is ``--fft-slowdown`` times slower (backward through every weight);
- one SAAS-GP fit + acquisition optimisation per BO proposal (``--seconds-per-proposal``, default
  30 s: issue #6's 20-50 s for the paper's NUTS settings).

Usage::

    python benchmarks/experiment_cost.py                       # every pipeline experiment
    python benchmarks/experiment_cost.py --samples-per-second 1500 --front-size 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopeft.data.protocol import protocol_of, scoring  # noqa: E402
from autopeft.experiments.pipeline import hydra_composer, pipeline_settings, plan_stages  # noqa: E402
from autopeft.runtime import register_resolvers  # noqa: E402
from autopeft.space import SearchSpace  # noqa: E402
from autopeft.tasks.registry import TASKS  # noqa: E402
from autopeft.training.backbones import shape_of  # noqa: E402

#: Train-split sizes (examples) of the paper's tasks: GLUE (Wang et al., 2019) and SuperGLUE
#: (Wang et al., 2019b), as published with the datasets.
TRAIN_EXAMPLES = {
    "rte": 2_490,
    "mrpc": 3_668,
    "stsb": 5_749,
    "cola": 8_551,
    "sst2": 67_349,
    "qnli": 104_743,
    "qqp": 363_846,
    "mnli": 392_702,
    "cb": 250,
    "copa": 400,
    "wic": 5_428,
    "boolq": 9_427,
}

#: The offline architecture of each hub backbone (same shape, random weights): the search space
#: of a hub backbone is sized without downloading it.
ARCH_OF = {
    "bert_base_uncased": "bert_base_arch",
    "bert_large_uncased": "bert_large_arch",
    "roberta_large": "roberta_large_arch",
}

#: Encoder parameters relative to BERT-base (109M): compute per example scales with them.
RELATIVE_SIZE = {"bert_base_uncased": 1.0, "bert_large_uncased": 335 / 109, "roberta_large": 355 / 109}

EXPERIMENTS = (
    "glue_transfer",
    "per_task",
    "superglue",
    "roberta_large",
    "transferability",
    "layer_selection",
    "baselines",
    "bo_vs_random",
    "ablation",
    "autopeft_search",
)


def sweep_cells(experiment: str) -> list[list[str]]:
    """The overrides of every cell of a sweep experiment (``hydra.sweeper.params``), or ``[[]]``."""
    import itertools

    from omegaconf import OmegaConf

    params = OmegaConf.select(
        OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml"), "hydra.sweeper.params"
    )
    if not params:
        return [[]]
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(cell) for cell in itertools.product(*axes)]


def _search_seconds(cfg, examples: float, speed: float, args: argparse.Namespace) -> tuple[float, int]:
    n_init, budget = int(cfg.search.n_init), int(cfg.search.n_init + cfg.search.n_iter)
    size = _space_size(cfg)
    if cfg.search.get("enumerate", "auto") == "auto" and size <= n_init:
        return size * examples / speed, size  # enumerated: every configuration once, no proposals
    evaluations = min(budget, size)  # a search stops when the space is exhausted
    proposals = evaluations - n_init if cfg.search.method == "bo" else 0
    return evaluations * examples / speed + proposals * args.seconds_per_proposal, evaluations


def _space_size(cfg) -> int:
    """Distinct configurations of the run's search space, from the backbone's shape alone."""
    backbone = compose_backbone(ARCH_OF.get(str(cfg.backbone.name), str(cfg.backbone.name)))
    return SearchSpace.from_config(cfg.space, shape_of(backbone)).num_configurations


def compose_backbone(name: str) -> Any:
    """The ``backbone`` node of ``conf/backbone/<name>.yaml``."""
    return hydra_composer(ROOT / "conf")([f"backbone={name}"]).backbone


def estimate(experiment: str, args: argparse.Namespace) -> dict[str, float | int | str]:
    """GPU hours of one experiment (every pipeline stage, or every sweep cell) under the flags' assumptions."""
    compose = hydra_composer(ROOT / "conf")

    def train_fraction(cfg: Any, task: str) -> float:
        # data.protocol=paper trains GLUE tasks on the whole train split (the dev split validates);
        # otherwise 10% of train is carved off as the validation split.
        return 1.0 if scoring(TASKS[task].benchmark, protocol_of(cfg.data)) == "best_dev" else 0.9

    full_epochs = 20
    hours = {"search": 0.0, "transfer": 0.0, "baseline": 0.0}
    trainings = 0
    backbone = ""
    for cell in sweep_cells(experiment):
        cfg = compose([f"experiment={experiment}", *cell])
        backbone = str(cfg.backbone.name)
        speed = args.samples_per_second / RELATIVE_SIZE[backbone]
        if cfg.mode == "search":
            examples = TRAIN_EXAMPLES[cfg.task.name] * train_fraction(cfg, cfg.task.name)
            seconds, count = _search_seconds(cfg, examples, speed, args)
            hours["search"] += seconds / 3600
            trainings += count
            continue
        if cfg.mode == "train":
            slowdown = args.fft_slowdown if cfg.peft.full_finetune else 1.0
            epochs = cfg.fidelity.epochs
            examples = TRAIN_EXAMPLES[cfg.task.name] * train_fraction(cfg, cfg.task.name)
            hours["baseline"] += examples * epochs * slowdown / speed / 3600
            trainings += 1
            continue
        pick = str(cfg.retrain.get("pick", "search_score"))
        stages = plan_stages(pipeline_settings(cfg), list(cfg.retrain.seeds), Path("/run"), pick=pick)
        for stage in stages:
            task = next(o.split("=", 1)[1] for o in stage.overrides if o.startswith("task="))
            examples = TRAIN_EXAMPLES[task] * train_fraction(cfg, task)
            if stage.kind == "search":
                seconds, count = _search_seconds(cfg, examples, speed, args)
                trainings += count
            else:
                # A retrained front (retrain.pick=retrained, or select=front) is front_size configurations.
                whole_front = stage.kind == "front" or (cfg.retrain.select == "front" and stage.kind == "transfer")
                configs = args.front_size if whole_front else 1
                runs = configs * (len(cfg.retrain.seeds) if stage.kind in ("front", "transfer") else 1)
                slowdown = args.fft_slowdown if "peft=fft" in stage.overrides else 1.0
                if "peft=adaptable" in stage.overrides:
                    slowdown *= 2  # the Adaptable Adapter trains twice: switches first, then the chosen layers
                seconds = runs * examples * full_epochs * slowdown / speed
                trainings += runs
            hours["transfer" if stage.kind == "front" else stage.kind] += seconds / 3600  # fronts: retrainings
    return {
        "experiment": experiment,
        "backbone": backbone,
        "trainings": trainings,
        "search_h": hours["search"],
        "transfer_h": hours["transfer"],
        "baseline_h": hours["baseline"],
        "total_h": sum(hours.values()),
    }


def main() -> None:
    """Print the cost table (Markdown) and the assumptions behind it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-second", type=float, default=1000.0, help="BERT-base training throughput")
    parser.add_argument("--seconds-per-proposal", type=float, default=30.0, help="surrogate fit + acquisition")
    parser.add_argument("--fft-slowdown", type=float, default=2.0, help="full fine-tuning vs PEFT per example")
    parser.add_argument(
        "--front-size", type=int, default=10, help="configurations on a front (select=front, pick=retrained)"
    )
    parser.add_argument("experiments", nargs="*", default=list(EXPERIMENTS))
    args = parser.parse_args()
    register_resolvers()
    rows = [estimate(name, args) for name in args.experiments]
    print(
        f"Estimated GPU hours on one GPU (upper bounds: 20 full-fidelity epochs without early stopping). "
        f"Assumed: BERT-base {args.samples_per_second:,.0f} training samples/s (large models slower by their "
        f"size), full fine-tuning {args.fft_slowdown}x slower, {args.seconds_per_proposal:.0f} s per BO "
        f"proposal, {args.front_size} configurations per front.\n"
    )
    print("| experiment | backbone | trainings | search (h) | transfers (h) | baselines (h) | total (h) |")
    print("|:--|:--|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['experiment']} | {r['backbone']} | {r['trainings']:,} | {r['search_h']:.1f} | "
            f"{r['transfer_h']:.1f} | {r['baseline_h']:.1f} | {r['total_h']:.1f} |"
        )


if __name__ == "__main__":
    main()
