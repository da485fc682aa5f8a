"""The paper's headline at this project's scale: AutoPEFT's configurations against the presets.

The paper's claim (abstract, Table 1, Figure 1) is that the configurations AutoPEFT finds
outperform the hand-designed PEFT methods at the same or fewer parameters, on the task searched
and after transfer. This script runs ``experiment=headline`` (conf/experiment/headline.yaml says
every setting and why) as one resumable pipeline into its own run directory, then reads what it
trained and writes the evidence:

- per task, every row at full fidelity over the same seeds and data: test score mean and 95%
  t-interval, % parameters (the paper's count) and the exact trainable count (with the head);
- the paired difference (same seed) between AutoPEFT's pick and every preset, and the headline
  one: against the best preset at no more parameters than the pick;
- the searched task's whole front retrained (what the pick was chosen from);
- the figure of test score against % parameters on a log axis, like the paper's Figure 1;
- the compute each side spent: the search, the front's retraining and the transfers against the
  presets' trainings (sums of each run's own seconds; the pipeline ran ``--workers`` at once).

Usage::

    python benchmarks/headline.py                  # run or resume outputs/headline, then analyse
    python benchmarks/headline.py --analyse-only   # only read the run directory

A stopped run resumes where it stopped (``python run.py resume=<dir>``); the pipeline refuses to
resume with settings other than the ones it started with. Writes ``<out>.md``, ``<out>.json`` and
``<out>.png`` (default ``benchmarks/results/headline``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, t_interval

#: Display names of the presets (conf/peft/<name>.yaml).
PRESET_NAMES = {
    "fft": "Full fine-tuning",
    "head_only": "Head only (linear probe)",
    "sa": "Serial adapter",
    "pa": "Parallel adapter",
    "prefix": "Prefix-tuning",
    "lora": "LoRA",
    "mam": "MAM adapter",
    "unipelt": "UniPELT",
}

#: Relative slack when comparing % parameters (float noise, not a budget).
PERCENT_SLACK = 1e-9


@dataclass
class Row:
    """One configuration trained at full fidelity over seeds on one task.

    Attributes:
        name: Its row label.
        kind: ``autopeft`` (the pick), ``front`` (a front point retrained) or ``preset``.
        task: The task it trained on.
        configuration: What it is, in words.
        metric: The task's main metric (the score's name).
        percent: % of the backbone's parameters (the paper's count).
        trainable: Exact trainable parameters, including the task head.
        test: Test score per seed.
        validation: Validation score per seed.
        seconds: Training seconds per seed.
        search_score: Its low-fidelity search score (AutoPEFT rows), else None.

    """

    name: str
    kind: str
    task: str
    configuration: str
    percent: float
    trainable: int
    metric: str
    test: dict[int, float] = field(default_factory=dict)
    validation: dict[int, float] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    search_score: float | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one seed's training record."""
        metric = record["main_metric"]
        seed = int(record["seed"])
        self.test[seed] = float(record["metrics"]["test"][metric])
        self.validation[seed] = float(record["metrics"]["validation"][metric])
        self.seconds[seed] = float(record.get("total_seconds") or record.get("train_seconds") or 0.0)


def paired_difference(a: Row, b: Row, names: tuple[str, str] = ("AutoPEFT", "preset")) -> dict[str, Any]:
    """``a - b`` on the seeds both trained: mean, 95% interval, seeds, and a verdict naming the winner.

    Args:
        a: The first row.
        b: The row it is compared with.
        names: What ``a`` and ``b`` are called in the verdict.

    """
    seeds = sorted(set(a.test) & set(b.test))
    differences = [a.test[s] - b.test[s] for s in seeds]
    if not differences:
        return {"seeds": [], "mean": None, "low": None, "high": None, "verdict": "no common seeds"}
    mean, half = t_interval(differences)
    low, high = (None, None) if half is None else (mean - half, mean + half)
    if low is None:
        verdict = "one seed: no interval"
    elif low > 0:
        verdict = f"{names[0]} better"
    elif high < 0:
        verdict = f"{names[1]} better"
    else:
        verdict = "interval includes 0: no difference shown"
    return {"seeds": seeds, "mean": mean, "low": low, "high": high, "verdict": verdict}


def _row_from_record(name: str, kind: str, record: Mapping[str, Any]) -> Row:
    params = record["params"]
    return Row(
        name=name,
        kind=kind,
        task=record["task"],
        configuration=record["configuration"],
        percent=float(params["paper_percent"]),
        trainable=int(params["trainable_params"]),
        metric=str(record["main_metric"]),
        search_score=record.get("search_score"),
    )


def _ok_lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("status") == "ok"]


def load_rows(run_dir: Path) -> tuple[list[Row], dict[str, Any]]:
    """Every full-fidelity row the pipeline trained, and the facts of its search and pick.

    Returns:
        ``(rows, facts)``: rows of kinds ``autopeft``, ``front`` and ``preset``; facts hold the
        invocation, the pick rule and candidates, the search's evaluations and seconds.

    """
    state = json.loads((run_dir / "pipeline.json").read_text())
    rows: dict[tuple[str, str, str], Row] = {}

    def take(name: str, kind: str, record: Mapping[str, Any]) -> None:
        key = (kind, name, record["task"])
        if key not in rows:
            rows[key] = _row_from_record(name, kind, record)
        rows[key].add(record)

    workers = [o.split("=", 1)[1] for o in state["overrides"] if o.startswith("pipeline.workers=")]
    facts: dict[str, Any] = {
        "overrides": state["overrides"],
        "choice": state.get("choice"),
        "workers": int(workers[-1]) if workers else 1,
        "stages": {},
    }
    for stage in state["stages"]:
        stage_dir = run_dir / stage["path"]
        facts["stages"][stage["path"]] = {k: stage.get(k) for k in ("kind", "status", "seconds", "pick")}
        if stage["kind"] == "baseline":
            path = stage_dir / "results.json"
            record = json.loads(path.read_text()) if path.is_file() else None
            if record and record.get("status") == "ok":
                preset = stage["path"].split("/")[1]
                take(PRESET_NAMES.get(preset, preset), "preset", record)
        elif stage["kind"] in ("transfer", "front"):
            kind = "autopeft" if stage["kind"] == "transfer" else "front"
            for record in _ok_lines(stage_dir / "retrain.jsonl"):
                take(str(record["choice"]), kind, record)
        elif stage["kind"] == "search":
            results = [json.loads(x) for x in (stage_dir / "results.jsonl").read_text().splitlines() if x.strip()]
            facts["search"] = {
                "task": stage["path"].split("/", 1)[1],
                "evaluations": len(results),
                "ok": sum(r.get("status") == "ok" for r in results),
                "seconds": sum(float(r.get("seconds") or 0.0) for r in results),
            }
    return list(rows.values()), facts


def load_also(directories: Sequence[Path]) -> list[Row]:
    """Rows of further retrainings (``mode=retrain`` run directories), one per configuration and task."""
    rows: dict[tuple[str, str], Row] = {}
    for directory in directories:
        records = _ok_lines(directory / "retrain.jsonl")
        if not records:
            raise SystemExit(f"--also {directory}: no finished retraining (retrain.jsonl) there")
        for record in records:
            key = (str(record["configuration"]), record["task"])
            if key not in rows:
                rows[key] = _row_from_record(str(record["choice"]), "also", record)
            rows[key].add(record)
    return list(rows.values())


def best_preset_within(pick: Row, presets: Sequence[Row]) -> Row | None:
    """The preset with the best mean test score among those with no more % parameters than ``pick``."""
    eligible = [p for p in presets if p.percent <= pick.percent * (1 + PERCENT_SLACK) and p.test]
    return max(eligible, key=lambda p: statistics.mean(p.test.values()), default=None)


def analyse(rows: Sequence[Row], facts: Mapping[str, Any]) -> dict[str, Any]:
    """Per task: the rows, the pick's paired differences, and the compute each side spent."""
    tasks = list(dict.fromkeys(r.task for r in rows if r.kind != "front"))
    out: dict[str, Any] = {"tasks": {}, "facts": dict(facts)}
    for task in tasks:
        presets = sorted((r for r in rows if r.task == task and r.kind == "preset"), key=lambda r: r.percent)
        picks = [r for r in rows if r.task == task and r.kind == "autopeft"]
        entry: dict[str, Any] = {
            "metric": next((r.metric for r in [*picks, *presets]), "score"),
            "rows": [],
            "comparisons": [],
        }
        # Whether the setting can tell methods apart at all: each preset against the linear probe.
        probe = next((p for p in presets if p.percent <= 0), None)
        entry["separation"] = [
            {"preset": p.name, "percent": p.percent, **paired_difference(p, probe, names=("preset", "probe"))}
            for p in presets
            if probe is not None and p is not probe
        ]
        for kind in ("front", "also"):
            candidates = sorted((r for r in rows if r.task == task and r.kind == kind), key=lambda r: r.percent)
            entry[kind] = [_against_presets(point, presets) for point in candidates]
        for row in [*picks, *presets]:
            entry["rows"].append(_summary(row))
        for pick in picks:
            best = best_preset_within(pick, presets)
            entry["headline"] = {
                "pick": pick.name,
                "best_preset_within": best.name if best else None,
                **(paired_difference(pick, best) if best else {"verdict": "no preset at no more parameters"}),
            }
            for preset in presets:
                entry["comparisons"].append(
                    {
                        "preset": preset.name,
                        "preset_percent": preset.percent,
                        "no_more_params": preset.percent <= pick.percent * (1 + PERCENT_SLACK),
                        **paired_difference(pick, preset),
                    }
                )
        entry["seconds"] = {
            "autopeft_retraining": sum(sum(r.seconds.values()) for r in picks),
            "presets": sum(sum(r.seconds.values()) for r in presets),
        }
        out["tasks"][task] = entry
    out["seconds"] = {
        "search": (facts.get("search") or {}).get("seconds", 0.0),
        "front_retraining": sum(sum(r.seconds.values()) for r in rows if r.kind == "front"),
        "autopeft_retraining": sum(e["seconds"]["autopeft_retraining"] for e in out["tasks"].values()),
        "presets": sum(e["seconds"]["presets"] for e in out["tasks"].values()),
    }
    return out


def _against_presets(point: Row, presets: Sequence[Row]) -> dict[str, Any]:
    """Figure 1's claim for one configuration: the paired difference to the best preset at no more parameters."""
    best = best_preset_within(point, presets)
    return {
        **_summary(point),
        "best_preset_within": best.name if best else None,
        "versus_best_preset": paired_difference(point, best) if best else None,
    }


def _summary(row: Row) -> dict[str, Any]:
    mean, half = t_interval(list(row.test.values())) if row.test else (None, None)
    val = statistics.mean(row.validation.values()) if row.validation else None
    return {**asdict(row), "test_mean": mean, "test_half": half, "validation_mean": val, "seeds": sorted(row.test)}


def _score(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {half:.3f}" if half is not None else "")


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def markdown(result: Mapping[str, Any], setting: Sequence[str], plot_name: str) -> str:
    """The result file: setting, per-task tables, paired differences, front, compute."""
    lines = ["# AutoPEFT against the hand-designed PEFT methods at full fidelity (issue 26)", ""]
    lines += ["## What it shows", ""]
    for task, entry in result["tasks"].items():
        headline = entry.get("headline")
        if headline and headline.get("mean") is not None:
            lines.append(
                f"- {task}: {headline['pick']} − {headline['best_preset_within']} (the best preset at no more "
                f"parameters) = {_signed(headline['mean'])} test {entry['metric']}, 95% CI "
                f"[{_signed(headline['low'])}, {_signed(headline['high'])}]: {headline['verdict']}."
            )
        compared = [row for row in entry["front"] if row["versus_best_preset"]]
        if compared:
            verdicts = [row["versus_best_preset"]["verdict"] for row in compared]
            lines.append(
                f"- {task}, the whole front retrained: of its {len(entry['front'])} configurations, "
                f"{verdicts.count('AutoPEFT better')} beat the best preset at no more parameters, "
                f"{verdicts.count('preset better')} lose to it and "
                f"{len(verdicts) - verdicts.count('AutoPEFT better') - verdicts.count('preset better')} are within "
                "noise of it (95% intervals of the paired difference)."
            )
    lines += ["", "## Setting", "", *setting, ""]
    for task, entry in result["tasks"].items():
        metric = f"test {entry['metric']}"
        lines += [f"## {task}", ""]
        lines += [
            f"| configuration | {metric} (mean ± 95% CI) | seeds | % params (paper) | trainable (exact, with head) "
            "| validation (mean) | what it is |",
            "|:--|--:|--:|--:|--:|--:|:--|",
        ]
        for row in entry["rows"]:
            name = f"**{row['name']}**" if row["kind"] == "autopeft" else row["name"]
            lines.append(
                f"| {name} | {_score(row['test_mean'], row['test_half'])} | {len(row['seeds'])} "
                f"| {row['percent']:.3f} | {row['trainable']:,} | {row['validation_mean']:.3f} "
                f"| {row['configuration']} |"
            )
        headline = entry.get("headline")
        if headline:
            lines += [
                "",
                f"**Headline:** {headline['pick']} − {headline['best_preset_within']} (the best preset at no "
                f"more parameters), paired by seed: {_signed(headline.get('mean'))} "
                f"[{_signed(headline.get('low'))}, {_signed(headline.get('high'))}] → {headline['verdict']}.",
            ]
            lines += [
                "",
                "| AutoPEFT − preset | ≤ pick's params | paired difference (95% CI) | verdict |",
                "|:--|:-:|--:|:--|",
            ]
            for c in entry["comparisons"]:
                lines.append(
                    f"| {c['preset']} ({c['preset_percent']:.3f}%) | {'yes' if c['no_more_params'] else 'no'} "
                    f"| {_signed(c['mean'])} [{_signed(c['low'])}, {_signed(c['high'])}] | {c['verdict']} |"
                )
        if entry["separation"]:
            lines += [
                "",
                "Does the setting separate the presets from the linear probe? Preset − probe, paired by seed:",
                "",
            ]
            lines += ["| preset | % params | paired difference (95% CI) | verdict |", "|:--|--:|--:|:--|"]
            for c in entry["separation"]:
                lines.append(
                    f"| {c['preset']} | {c['percent']:.3f} | {_signed(c['mean'])} "
                    f"[{_signed(c['low'])}, {_signed(c['high'])}] | {c['verdict']} |"
                )
        picked = {row["configuration"] for row in entry["rows"] if row["kind"] == "autopeft"}
        if entry["front"]:
            lines += ["", f"The search's front, retrained on {task} (the pick's candidates):", ""]
            lines += _candidates_table(entry["front"], picked)
        if entry.get("also"):
            lines += ["", f"Further configurations of the search retrained on {task} (`--also`: a diagnosis):", ""]
            lines += _candidates_table(entry["also"], picked)
        lines.append("")
    seconds = result["seconds"]
    autopeft = seconds["search"] + seconds["front_retraining"] + seconds["autopeft_retraining"]
    lines += [
        "## Compute",
        "",
        f"Sums of each run's own seconds ({result['facts'].get('workers', 1)} runs at a time shared the machine's "
        "cores, so each took longer than it would alone):",
        "",
        "| part | CPU-run seconds |",
        "|:--|--:|",
        f"| AutoPEFT search ({result['facts'].get('search', {}).get('evaluations', 0)} evaluations, 1 epoch) "
        f"| {seconds['search']:,.0f} |",
        f"| AutoPEFT front retrained (to pick) | {seconds['front_retraining']:,.0f} |",
        f"| AutoPEFT pick retrained on every task | {seconds['autopeft_retraining']:,.0f} |",
        f"| **AutoPEFT total** | **{autopeft:,.0f}** |",
        f"| every preset, every task and seed | {seconds['presets']:,.0f} |",
        "",
        f"![score against % parameters]({plot_name})",
        "",
    ]
    return "\n".join(lines)


def _candidates_table(candidates: Sequence[Mapping[str, Any]], picked: set[str]) -> list[str]:
    lines = [
        "| configuration | % params | trainable (exact) | search score (1 epoch) | validation (mean) "
        "| test (mean ± 95% CI) | − best preset at ≤ its params (95% CI) | picked |",
        "|:--|--:|--:|--:|--:|--:|:--|:-:|",
    ]
    for row in candidates:
        search = "–" if row["search_score"] is None else f"{row['search_score']:.3f}"
        versus = row["versus_best_preset"]
        against = (
            f"{row['best_preset_within']}: {_signed(versus['mean'])} "
            f"[{_signed(versus['low'])}, {_signed(versus['high'])}]"
            if versus
            else "no preset"
        )
        lines.append(
            f"| {row['configuration']} | {row['percent']:.3f} | {row['trainable']:,} | {search} "
            f"| {row['validation_mean']:.3f} | {_score(row['test_mean'], row['test_half'])} | {against} "
            f"| {'✓' if row['configuration'] in picked else ''} |"
        )
    return lines


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Figure 1 at our scale: test score against % parameters (log axis), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        entry = result["tasks"][task]
        # Retrained search configurations: the front as a line, the --also ones as markers.
        for kind, style, color, size, label in (
            ("front", "o-", "0.6", 4, "AutoPEFT front, retrained"),
            ("also", "^", "tab:green", 6, "further search configurations, retrained"),
        ):
            points = [r for r in entry.get(kind, []) if r["test_mean"] is not None and r["percent"] > 0]
            if points:
                ax.plot(
                    [r["percent"] for r in points],
                    [r["test_mean"] for r in points],
                    style,
                    color=color,
                    markersize=size,
                    label=label,
                )
        for row in entry["rows"]:
            if row["test_mean"] is None:
                continue
            if row["percent"] <= 0:  # the linear probe has no PEFT parameters: a reference line
                ax.axhline(row["test_mean"], color="0.3", linestyle="--", linewidth=1)
                ax.text(0.01, row["test_mean"], f" {row['name']}", transform=ax.get_yaxis_transform(), va="bottom")
                continue
            auto = row["kind"] == "autopeft"
            ax.errorbar(
                row["percent"],
                row["test_mean"],
                yerr=row["test_half"] or 0.0,
                fmt="*" if auto else "s",
                color="tab:red" if auto else "tab:blue",
                markersize=13 if auto else 6,
                capsize=3,
                label=row["name"] if auto else None,
            )
            if not auto:
                ax.annotate(
                    row["name"],
                    (row["percent"], row["test_mean"]),
                    textcoords="offset points",
                    xytext=(5, -10),
                    fontsize=8,
                )
        ax.set_xscale("log")
        ax.set_xlabel("% parameters (log)")
        seeds = max((len(r["seeds"]) for r in entry["rows"]), default=0)
        ax.set_ylabel(f"test {entry['metric']} (mean ± 95% CI, {seeds} seeds)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def setting_lines(run_dir: Path, facts: Mapping[str, Any]) -> list[str]:
    """What the run was, from its own saved config (every stage shares it)."""
    from omegaconf import OmegaConf

    search = facts.get("search") or {}
    config = run_dir / "search" / search.get("task", "") / "search.json"
    cfg = json.loads(config.read_text()).get("config", {}) if config.is_file() else {}
    cfg = OmegaConf.create(cfg)
    lines = [f"- Invocation: `python run.py {' '.join(facts['overrides'])}` (run directory `{run_dir.name}/`)."]
    if cfg:
        lines += [
            f"- Backbone {cfg.backbone.name}; data {cfg.data.max_train_samples} training and "
            f"{cfg.data.max_eval_samples} validation/test examples, {cfg.data.max_length} tokens.",
            f"- Training: batch {cfg.trainer.batch_size}, lr {cfg.trainer.lr_peft} for every PEFT method "
            f"(full fine-tuning {cfg.trainer.lr_fft}), warm-up {cfg.trainer.warmup_ratio}.",
            f"- Search: {cfg.search.n_init} random + {cfg.search.n_iter} BO evaluations at {cfg.fidelity.epochs} "
            f"epoch each, surrogate {cfg.search.surrogate.kind}, space {cfg.space.name}.",
        ]
    choice = facts.get("choice") or {}
    lines.append(
        f"- Pick: retrain.select={choice.get('select')}, pick={choice.get('pick')}, "
        f"budget {choice.get('budget_percent')}% of the backbone's parameters; every row at full fidelity "
        "(conf/fidelity/full_es5.yaml) over the same seeds; the test split is never used for selection."
    )
    return lines


def run_pipeline(run_dir: Path, workers: int) -> int:
    """Start ``experiment=headline`` in ``run_dir``, or resume it there; returns the exit code."""
    command = [sys.executable, "run.py"]
    if (run_dir / "pipeline.json").is_file():
        command += [f"resume={run_dir}"]
    else:
        command += ["experiment=headline", f"hydra.run.dir={run_dir}"]
    command.append(f"pipeline.workers={workers}")
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, check=False).returncode


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the pipeline unless ``--analyse-only``, then write the result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "outputs" / "headline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "headline")
    parser.add_argument("--workers", type=int, default=2, help="pipeline stages at once (default 2: one per core)")
    parser.add_argument("--analyse-only", action="store_true", help="only read what the run directory holds")
    parser.add_argument(
        "--notes",
        type=Path,
        default=None,
        help="a hand-written markdown file (what was measured to explain the result) put after the summary",
    )
    parser.add_argument(
        "--also",
        type=Path,
        nargs="*",
        default=[],
        help="further mode=retrain run directories (same seeds) to compare with the presets, e.g. a diagnosis",
    )
    args = parser.parse_args(argv)
    if not args.analyse_only:
        code = run_pipeline(args.run_dir, args.workers)
        if code != 0:
            raise SystemExit(f"the pipeline stopped with exit code {code}; rerun this command to resume it")
    if not (args.run_dir / "pipeline.json").is_file():
        raise SystemExit(f"{args.run_dir} holds no pipeline.json: run without --analyse-only first")
    rows, facts = load_rows(args.run_dir)
    rows += load_also(args.also)
    result = analyse(rows, facts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_path = args.out.with_suffix(".png")
    plot(result, plot_path)
    text = markdown(result, setting_lines(args.run_dir, facts), plot_path.name)
    if args.notes is not None:
        head, sep, rest = text.partition("\n## Setting")
        text = head.rstrip() + "\n\n" + args.notes.read_text().rstrip() + "\n\n" + sep.lstrip("\n") + rest
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
