"""mode=pipeline: the plan of every paper experiment, its validation, and real end-to-end smoke runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from autopeft.errors import ConfigError
from autopeft.experiments.pipeline import (
    STAGE_KINDS,
    Baseline,
    base_overrides,
    check_stage,
    expand_baselines,
    hydra_composer,
    pipeline_settings,
    plan_stages,
    run_pipeline,
)
from autopeft.experiments.retrain import pick_setting

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = hydra_composer(ROOT / "conf")

#: Every experiment that runs as one pipeline, and its stage counts with the paper's settings
#: (searches, transfers, baseline trainings).
PIPELINE_EXPERIMENTS = {
    "glue_transfer": (1, 8, 8 * 8 * 5),
    "per_task": (4, 4, (1 + 4 * 6) * 4),
    "superglue": (1, 4, 8 * 4 * 5),
    "roberta_large": (1, 6, 4 * 6 * 5),
    "transferability": (4, 16, 0),
    "layer_selection": (1, 4, 3 * 4 * 5),
    "headline": (1, 2, 8 * 2 * 3),  # ours (issue 26), not the paper's: MiniLM, 8 presets, 2 tasks, 3 seeds
}

#: Experiments that retrain each search's front on its own task before picking (retrain.pick=retrained).
RETRAINED_PICK = {"glue_transfer", "superglue", "headline"}


def _counts(stages: list) -> tuple[int, int, int]:
    return tuple(sum(s.kind == kind for s in stages) for kind in ("search", "transfer", "baseline"))


@pytest.mark.parametrize(("experiment", "counts"), PIPELINE_EXPERIMENTS.items())
def test_paper_experiment_plans_have_the_papers_shape(experiment: str, counts: tuple[int, int, int]) -> None:
    cfg = COMPOSE([f"experiment={experiment}"])
    assert cfg.mode == "pipeline"
    stages = plan_stages(pipeline_settings(cfg), list(cfg.retrain.seeds), Path("/run"), pick_setting(cfg.retrain))
    assert _counts(stages) == counts
    fronts = [s.path for s in stages if s.kind == "front"]
    assert fronts == ([f"front/{t}" for t in cfg.pipeline.search_tasks] if experiment in RETRAINED_PICK else [])
    assert len({s.path for s in stages}) == len(stages), "two stages would share a directory"
    # The headline retrains on the paper's 20 epochs with a shorter patience (conf/fidelity/full_es5.yaml).
    assert cfg.fidelity.name == "low" and cfg.pipeline.retrain_fidelity == (
        "full_es5" if experiment == "headline" else "full"
    )


@pytest.mark.parametrize("experiment", PIPELINE_EXPERIMENTS)
def test_every_smoke_stage_composes_and_validates_offline(experiment: str, cache_dir: Path) -> None:
    """The rot detector: every stage of every experiment's smoke version is a valid offline config."""
    overrides = [f"experiment={experiment}", "debug=smoke", f"data.cache_dir={cache_dir}"]
    cfg = COMPOSE(overrides)
    settings = pipeline_settings(cfg)
    stages = plan_stages(settings, list(cfg.retrain.seeds), Path("/run"), pick_setting(cfg.retrain))
    assert stages and all(s.kind in STAGE_KINDS for s in stages)
    assert any(s.kind == "front" for s in stages) == (experiment in RETRAINED_PICK)
    for stage in stages:
        stage_cfg = COMPOSE([*overrides, *stage.overrides])
        assert stage_cfg.backbone.source != "hub", f"{experiment}: stage '{stage.label}' needs the hub"
        check_stage(stage_cfg)


@pytest.mark.parametrize(
    ("experiment", "budget", "pick"),
    [
        ("glue_transfer", 0.76, "retrained"),  # §5: "using only 0.76% of parameters, AutoPEFT^RTE ..."
        ("superglue", 0.76, "retrained"),  # Table 3 transfers Table 1's AutoPEFT^RTE
        ("roberta_large", 0.03, "search_score"),  # Table 9's caption: AutoPEFT^RTE (to QNLI) has 0.03%
        ("transferability", 1.5, "search_score"),  # ours: the paper gives no budget for Figure 5
    ],
)
def test_paper_experiments_compose_with_the_papers_budget_and_pick(
    compose_cfg: Callable[..., DictConfig], experiment: str, budget: float, pick: str
) -> None:
    cfg = compose_cfg(f"experiment={experiment}")
    assert (cfg.retrain.select, cfg.retrain.budget_percent, cfg.retrain.pick) == ("budget", budget, pick)
    assert cfg.retrain.retrained_front is None  # a pipeline points each transfer at its own front stage
    smoke = compose_cfg(f"experiment={experiment}", "debug=smoke")
    assert (smoke.retrain.budget_percent, smoke.retrain.pick) == (100.0, pick)


def test_the_retrained_pick_plans_each_fronts_retraining_before_the_transfers() -> None:
    plain = plan_stages(_settings(), [0, 1], Path("/r"))
    assert not any(s.kind == "front" for s in plain)
    assert not any(o.startswith("retrain.retrained_front") for s in plain for o in s.overrides)
    stages = plan_stages(_settings(), [0, 1], Path("/r"), pick="retrained")
    assert [s.kind for s in stages][:4] == ["search", "search", "front", "front"]
    assert _counts(stages) == _counts(plain)
    front = stages[2]
    assert front.path == "front/a" and front.overrides[:3] == ("task=a", "mode=retrain", "fidelity=full")
    assert "retrain.select=front" in front.overrides and "retrain.pick=search_score" in front.overrides
    assert "retrain.from='/r/search/a'" in front.overrides
    for stage in stages:
        if stage.kind == "transfer":
            source = stage.path.split("/")[1].split("_to_")[0]
            assert f"retrain.retrained_front='/r/front/{source}'" in stage.overrides


def test_a_pipeline_with_the_retrained_pick_records_the_rule_and_candidates(tmp_path: Path, cache_dir: Path) -> None:
    """Fake runners: the plan, the order, the overrides each stage gets and pipeline.json."""
    overrides = ["experiment=glue_transfer", "debug=smoke", f"data.cache_dir={cache_dir}", "pipeline.baselines=[]"]
    overrides.append("pipeline.transfer_tasks=[snli_binary,rotten_tomatoes]")
    cfg = COMPOSE(overrides)
    calls: list[tuple[str, str, dict]] = []
    pick = {"rule": "retrained", "budget_percent": 100.0, "picked": 3, "candidates": [{"index": 3}]}

    def search(stage_cfg: DictConfig, stage_dir: Path) -> dict:
        calls.append(("search", stage_dir.relative_to(tmp_path).as_posix(), {}))
        return {"state": {"evaluations": 5, "front_size": 2}}

    def retrain(stage_cfg: DictConfig, stage_dir: Path) -> list[dict]:
        retrain_node = OmegaConf.to_container(stage_cfg.retrain)
        calls.append(("retrain", stage_dir.relative_to(tmp_path).as_posix(), retrain_node))
        chosen = retrain_node["pick"] == "retrained"
        return [
            {"configuration": "x", "mean": 0.5, "sd": 0.0, "seeds": 1, "failed": 0, "pick": pick if chosen else None}
        ]

    runners = {"search": search, "retrain": retrain, "train": None, "report": lambda c, d: {}}
    run_pipeline(cfg, tmp_path, overrides, runners, COMPOSE)
    assert [(kind, path) for kind, path, _ in calls] == [
        ("search", "search/snli_binary"),
        ("retrain", "front/snli_binary"),
        ("retrain", "transfer/snli_binary_to_snli_binary"),
        ("retrain", "transfer/snli_binary_to_rotten_tomatoes"),
    ]
    front, transfer = calls[1][2], calls[2][2]
    assert (front["select"], front["pick"], front["retrained_front"]) == ("front", "search_score", None)
    assert (transfer["select"], transfer["pick"]) == ("budget", "retrained")
    assert transfer["retrained_front"] == str(tmp_path / "front" / "snli_binary")
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["choice"] == {"select": "budget", "pick": "retrained", "budget_percent": 100.0}
    by_path = {s["path"]: s for s in state["stages"]}
    assert by_path["transfer/snli_binary_to_rotten_tomatoes"]["pick"] == pick
    assert "pick" not in by_path["front/snli_binary"]


def test_layer_selection_compares_at_the_serial_budget() -> None:
    cfg = COMPOSE(["experiment=layer_selection"])
    assert cfg.backbone.name == "bert_large_uncased" and cfg.space.name == "sa_layer"
    # Serial: SA 64 in all 24 layers of BERT-large = 2 * 64 * 1024 * 24 parameters, 0.94% of 335M.
    assert abs(2 * 64 * 1024 * 24 / 335e6 * 100 - cfg.retrain.budget_percent) < 0.01
    names = [b.name for b in pipeline_settings(cfg).baselines]
    assert names == ["Serial", "AdapterDrop", "Adaptable Adapter"]


def test_baseline_entries_expand_sweeps_and_keep_fixed_fields() -> None:
    baselines = expand_baselines(
        [
            "fft",
            {"preset": "sa", "name": "SA", "sweep": {"sa_size": [6, 48]}},
            {"preset": "sa", "peft": {"sa_size": 64}},
        ]
    )
    assert baselines == [
        Baseline("fft", "fft"),
        Baseline("SA sa_size=6", "sa", (("sa_size", 6),)),
        Baseline("SA sa_size=48", "sa", (("sa_size", 48),)),
        Baseline("sa", "sa", (("sa_size", 64),)),
    ]
    assert baselines[1].slug == "SA-sa_size-6"
    entry = {"preset": "adamix", "overrides": ["trainer.lr=4e-4"]}
    stages = [s for s in plan_stages(_settings(baselines=[entry]), [0], Path("/r")) if s.kind == "baseline"]
    assert len(stages) == 3 and all("trainer.lr=4e-4" in s.overrides and "peft=adamix" in s.overrides for s in stages)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["sa", "sa"], "two baselines named 'sa'"),
        ([{"preset": "sa", "sizes": [1]}], "unknown key pipeline.baselines[0].sizes"),
        ([{"name": "x"}], "must be a preset name or a mapping with 'preset'"),
        ([{"preset": "sa", "sweep": {"sa_size": []}}], "sweep.sa_size=[] must be a non-empty list"),
        ([{"preset": "sa", "overrides": ["trainer.lr"]}], "overrides=['trainer.lr'] must be a list of key=value"),
    ],
)
def test_bad_baseline_entries_are_named(entries: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand_baselines(entries)


def _settings(**values: object) -> dict:
    node = {
        "search_tasks": ["a", "b"],
        "transfer_tasks": ["a", "b", "c"],
        "pairs": "all",
        "baselines": ["sa"],
        "retrain_fidelity": "full",
        "label": "AutoPEFT^{task}",
        "report": True,
        **values,
    }
    return pipeline_settings(OmegaConf.create({"pipeline": node}))


def test_pairs_all_transfers_every_search_to_every_target_and_own_only_to_itself() -> None:
    all_pairs = plan_stages(_settings(), [0, 1], Path("/r"))
    assert [s.path for s in all_pairs if s.kind == "transfer"] == [f"transfer/{a}_to_{b}" for a in "ab" for b in "abc"]
    assert _counts(all_pairs) == (2, 6, 3 * 2)
    own = plan_stages(_settings(pairs="own"), [0], Path("/r"))
    assert [s.path for s in own if s.kind == "transfer"] == ["transfer/a_to_a", "transfer/b_to_b"]
    transfer = next(s for s in all_pairs if s.path == "transfer/a_to_c")
    assert "retrain.from='/r/search/a'" in transfer.overrides
    assert "retrain.label='AutoPEFT^A'" in transfer.overrides
    assert "fidelity=full" in transfer.overrides and "task=c" in transfer.overrides


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pairs": "some"}, "pipeline.pairs='some'; allowed: 'all', 'own'"),
        ({"search_tasks": [], "baselines": []}, "both empty: nothing to run"),
        ({"search_tasks": [], "transfer_tasks": []}, "pipeline.baselines need tasks"),
        ({"label": "AutoPEFT"}, "must contain '{task}'"),
        ({"search_tasks": ["a", "a"]}, "lists a task twice"),
        ({"sweeps": 1}, "unknown key pipeline.sweeps"),
        ({"workers": 0}, "pipeline.workers=0 must be an integer >= 1"),
        ({"workers": "2"}, "pipeline.workers='2' must be an integer >= 1"),
    ],
)
def test_bad_pipeline_settings_are_named(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        _settings(**values)


def test_stage_owned_overrides_are_dropped_from_the_invocation() -> None:
    assert base_overrides(
        ["experiment=x", "mode=pipeline", "task=rte", "seed=3", "hydra.run.dir=/d", "debug=smoke", "resume=/d"]
    ) == ["experiment=x", "debug=smoke"]


def test_unknown_task_in_a_plan_is_refused_before_anything_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "experiment=glue_transfer",
            "debug=smoke",
            "pipeline.transfer_tasks=[snli_binary,glue_rte]",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "glue_rte" in result.stderr and "Available options" in result.stderr
    assert not (run_dir / "pipeline.json").exists() and not (run_dir / "search").exists()


def _run_smoke(experiment: str, run_dir: Path, cache_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "run.py",
            f"experiment={experiment}",
            "debug=smoke",
            f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _check_finished(run_dir: Path, result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert state["stages"] and all(s["status"] == "done" for s in state["stages"]), state["stages"]
    table = (run_dir / "report" / "table.md").read_text()
    assert "| configuration |" in table
    return state


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_glue_transfer_smoke_runs_end_to_end_and_resumes_without_redoing_work(tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    state = _check_finished(run_dir, _run_smoke("glue_transfer", run_dir, cache_dir))
    kinds = [s["kind"] for s in state["stages"]]
    assert kinds.count("search") == 1 and kinds.count("transfer") == 3 and kinds.count("baseline") == 8 * 3
    # retrain.pick=retrained: the front retrained on the searched task first, the transfers pick from it.
    assert kinds.count("front") == 1 and kinds.index("front") < kinds.index("transfer")
    front = [json.loads(line) for line in (run_dir / "front/snli_binary/retrain.jsonl").read_text().splitlines()]
    transfer = json.loads(
        (run_dir / "transfer/snli_binary_to_rotten_tomatoes/retrain.jsonl").read_text().splitlines()[0]
    )
    assert transfer["pick"]["rule"] == "retrained" and transfer["pick"]["budget_percent"] == 100.0
    assert {c["index"] for c in transfer["pick"]["candidates"]} == {int(r["source"].split()[-1]) for r in front}
    assert transfer["source"].endswith(f"result {transfer['pick']['picked']}")
    assert state["choice"]["pick"] == "retrained"
    assert (
        "Picked by retrain.pick=retrained"
        in (run_dir / "transfer/snli_binary_to_rotten_tomatoes/retrain.md").read_text()
    )
    table = (run_dir / "report" / "table.md").read_text()
    for row in ("AutoPEFT^SNLI_BINARY", "| fft |", "| mam |", "| unipelt |", "| adamix |"):
        assert row in table
    assert (run_dir / "report" / "transfer.png").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.glob("baselines/*/*/seed0/results.json")}
    assert len(stamps) == 24
    stores = {p: p.read_bytes() for p in run_dir.glob("*/*/retrain.jsonl")}
    assert len(stores) == 4  # the front and the three transfers
    adamix = json.loads((run_dir / "baselines/adamix/snli_binary/seed0/results.json").read_text())
    assert adamix["config"]["trainer"]["lr"] == 4e-4 and adamix["config"]["trainer"]["weight_decay"] == 0.1
    again = subprocess.run(
        [sys.executable, "run.py", f"resume={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    _check_finished(run_dir, again)
    assert again.stdout.count("already finished, skipped") == 24
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {p: p.read_bytes() for p in stores} == stores  # no seed of the front or a transfer retrained


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [e for e in PIPELINE_EXPERIMENTS if e != "glue_transfer"])
def test_every_other_experiment_smoke_runs_end_to_end(experiment: str, tmp_path: Path, cache_dir: Path) -> None:
    run_dir = tmp_path / "run"
    # The headline runs as benchmarks/headline.py runs it: two stages at once in worker processes.
    extra = ["pipeline.workers=2"] if experiment == "headline" else []
    _check_finished(run_dir, _run_smoke(experiment, run_dir, cache_dir, *extra))
    if experiment == "headline":
        out = tmp_path / "headline"
        analysis = subprocess.run(
            [sys.executable, "benchmarks/headline.py", "--analyse-only", "--run-dir", str(run_dir), "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert analysis.returncode == 0, analysis.stderr[-3000:]
        result = json.loads(out.with_suffix(".json").read_text())
        assert set(result["tasks"]) == {"rotten_tomatoes", "vader_movies"}
        for entry in result["tasks"].values():
            assert len(entry["rows"]) == 1 + 8 and entry["headline"]["verdict"]
        assert result["tasks"]["rotten_tomatoes"]["front"] and out.with_suffix(".png").is_file()
        assert (run_dir / "baselines" / "sa" / "rotten_tomatoes" / "seed0" / "stage.log").is_file()


@pytest.mark.slow  # minutes on 2 CPU cores: .ci/run runs it after the default suite
def test_wandb_logs_every_stage_in_one_group_and_the_report_as_tables_and_images(
    tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = _run_smoke(
        "glue_transfer",
        run_dir,
        cache_dir,
        "logger=wandb",
        "pipeline.baselines=[sa]",
        "pipeline.transfer_tasks=[snli_binary]",
    )
    _check_finished(run_dir, result)
    baseline = json.loads((run_dir / "baselines/sa/snli_binary/seed0/results.json").read_text())
    assert baseline["config"]["logger"]["wandb"] == {
        "project": "autopeft",
        "entity": None,
        "group": "glue_transfer",
        "name": "baselines/sa/snli_binary/seed0",
        "tags": ["baseline", "snli_binary"],
        "mode": "offline",
    }
    # One W&B run per stage (and per retrained seed), not one run swallowing the rest.
    for stage in ("search/snli_binary", "transfer/snli_binary_to_snli_binary/runs/*", "baselines/sa/*/seed0"):
        assert len(list(run_dir.glob(f"{stage}/wandb/offline-run-*"))) == 1, stage
    media = list(run_dir.glob("report/wandb/offline-run-*/files/media/**/*.*"))
    assert {p.suffix for p in media} >= {".png", ".json"}, media
    assert sum(p.suffix == ".png" for p in media) >= 3
