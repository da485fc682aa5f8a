"""mode=report: finds runs of every kind under its inputs and writes the paper-shaped table and plots."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from autopeft.errors import ConfigError
from autopeft.experiments.modes import mode_report, mode_retrain, mode_search, mode_train
from autopeft.report.build import build_report
from autopeft.report.collect import find_runs
from tests.bo.conftest import TINY_SEARCH


def _in(cfg: DictConfig, run_dir: Path) -> DictConfig:
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return cfg


@pytest.fixture
def outputs(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """A small outputs tree: one search, two single trainings on two tasks, one retraining over 2 seeds."""
    root = tmp_path / "outputs"
    mode_search(_in(tiny_cfg(*TINY_SEARCH), root / "search" / "s1"))
    mode_train(_in(tiny_cfg("mode=train", "peft=lora"), root / "train" / "lora_rt"))
    mode_train(_in(tiny_cfg("mode=train", "peft=lora", "task=snli_binary"), root / "train" / "lora_snli"))
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([{"name": "sa8", "peft": {"sa_size": 8}}]))
    mode_retrain(_in(tiny_cfg(f"retrain.configs={configs}", "retrain.seeds=[0,1]"), root / "retrain" / "r1"))
    return root


def test_report_tabulates_and_plots_every_kind_of_run(
    outputs: Path, tiny_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = find_runs([outputs])
    assert (len(runs.searches), len(runs.retrains), len(runs.trainings)) == (1, 1, 2)
    capsys.readouterr()
    summary = mode_report(_in(tiny_cfg("mode=report", f"report.runs=[{outputs}]"), tmp_path / "report"))
    assert summary["tasks"] == ["rotten_tomatoes", "snli_binary"]
    rows = {row["configuration"]: row for row in summary["rows"]}
    assert set(rows) == {"lora", "sa8"}
    assert rows["lora"]["avg"] != "–"  # both tasks present
    assert " ± " in rows["sa8"]["rotten_tomatoes"] and rows["sa8"]["snli_binary"] == "–"
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| configuration | rotten_tomatoes | snli_binary | avg | % params |" in table
    assert (tmp_path / "report" / "table.csv").read_text().startswith("configuration,rotten_tomatoes,snli_binary")
    for name in ("fronts.png", "fronts_full.png", "hypervolume.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    assert summary["files"]["fronts_full"] == str(tmp_path / "report" / "fronts_full.png")
    assert "report of 1 searches, 1 retrainings, 2 single trainings" in capsys.readouterr().out


def test_report_inputs_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"report\.runs is empty"):
        build_report([], tmp_path / "out")
    with pytest.raises(ConfigError, match=r"report input '.*/missing' does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no run directory"):
        build_report([tmp_path / "empty"], tmp_path / "out")


# ---------------------------------------------------------------------- fake run directories
# The transfer and distribution tests need many searches and retrainings with chosen scores; they
# write the files the modes write (same keys, same layout) instead of training for minutes.


LOW = {"name": "low", "epochs": 1, "early_stopping_patience": None}
FULL = {"name": "full", "epochs": 20, "early_stopping_patience": 10}


def _search_dir(
    run: Path,
    task: str,
    method: str,
    records: list[dict],
    seed: int = 0,
    n_init: int = 2,
    fidelity: dict = LOW,
    metric: str = "accuracy",
) -> Path:
    run.mkdir(parents=True)
    config = {
        "task": {"name": task},
        "backbone": {"name": "tiny_bert"},
        "space": {"name": "autopeft"},
        "search": {"method": method, "n_init": n_init, "acquisition": {}},
        "fidelity": fidelity,
        "seed": seed,
    }
    (run / "search.json").write_text(json.dumps({"fingerprint": {}, "space": {}, "config": config}))
    lines = []
    for index, (sa, score, percent, phase) in enumerate(records):
        record = {
            "index": index,
            "point": {"mask": [True, True], "sizes": {"sa": sa}},
            "configuration": f"SA {sa}",
            "status": "ok" if score is not None else "diverged",
            "score": score,
            "param_percent": percent,
            "seconds": 0.1,
            "seed": seed,
        }
        if phase is not None:
            record["phase"] = phase
        if score is not None:  # as the objective writes it: a failed evaluation has no metric
            record["main_metric"] = metric
        lines.append(json.dumps(record))
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    return run


def _retrain_dir(run: Path, task: str, rows: list[tuple], **extra: object) -> Path:
    """``rows``: (choice, source, seed, test score, validation score, % params)."""
    run.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "choice": choice,
                "seed": seed,
                "status": "ok",
                "task": task,
                "main_metric": "accuracy",
                "metrics": {"validation": {"accuracy": val}, "test": {"accuracy": test}},
                "params": {"paper_percent": percent},
                "configuration": f"{choice} modules",
                "source": source,
                "search_score": 0.5,
                **extra,
            }
        )
        for choice, source, seed, test, val, percent in rows
    ]
    (run / "retrain.jsonl").write_text("\n".join(lines) + "\n")
    return run


def _training_dir(
    run: Path,
    task: str,
    name: str,
    seed: int,
    test: float,
    percent: float,
    fidelity: dict = FULL,
    metric: str = "accuracy",
    **peft: object,
) -> Path:
    """A ``mode=train`` run directory (``results.json``); its validation score is ``test - 0.05``."""
    run.mkdir(parents=True)
    record = {
        "status": "ok",
        "task": task,
        "backbone": "tiny_bert",
        "peft": {"name": name, "full_finetune": False, **peft},
        "fidelity": fidelity,
        "seed": seed,
        "params": {"paper_percent": percent},
        "metrics": {"validation": {metric: test - 0.05}, "test": {metric: test}},
        "score": test - 0.05,
        "main_metric": metric,
    }
    (run / "results.json").write_text(json.dumps(record))
    return run


def _small_search(run: Path, task: str) -> Path:
    return _search_dir(run, task, "bo", [(8, 0.6, 0.1, "init"), (16, 0.7, 0.2, "init"), (4, 0.65, 0.05, "bo")])


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_transfer_heat_map_cells_come_from_each_source_search_and_target(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    s_a = _small_search(root / "search" / "a", "A")
    s_b = _small_search(root / "search" / "b", "B")
    from_a, from_b = f"{s_a} result 2", f"{s_b} result 1"
    # A's budgeted best on A (2 seeds), and A's front on A in another run: the "best" one is shown
    # even though front-1 scores higher on validation and test.
    _retrain_dir(root / "retrain" / "a_on_a", "A", [("best<=1.0%", from_a, 0, 0.80, 0.7, 0.1)])
    _retrain_dir(root / "retrain" / "a_on_a2", "A", [("best<=1.0%", from_a, 1, 0.84, 0.7, 0.1)])
    _retrain_dir(root / "retrain" / "a_front_on_a", "A", [("front-1", from_a, 0, 0.95, 0.9, 0.1)])
    # No "best": the higher mean validation score wins (front-2), though front-1 is better on test.
    _retrain_dir(
        root / "retrain" / "a_on_b",
        "B",
        [("front-1", from_a, 0, 0.70, 0.60, 0.1), ("front-2", from_a, 0, 0.65, 0.70, 0.2)],
    )
    _retrain_dir(
        root / "retrain" / "b_on_a",
        "A",
        [("best<=1.0%", from_b, s, t, 0.6, 0.2) for s, t in enumerate([0.70, 0.72, 0.74])]
        + [("best<=1.0%", from_b, 0, 0.10, 0.6, 0.2)],  # seed 0 again (a rerun): counted once
    )
    # Names given by retrain.label: the labelled budget pick is preferred to the labelled front.
    _retrain_dir(root / "retrain" / "b_on_b", "B", [("AutoPEFT^B best<=1.0%", from_b, 0, 0.90, 0.8, 0.2)])
    _retrain_dir(root / "retrain" / "b_front_on_b", "B", [("AutoPEFT^B front-1", from_b, 0, 0.99, 0.99, 0.5)])

    summary = build_report([root], tmp_path / "report")

    cells = {(r["searched_on"], r["target_task"]): r for r in _csv_rows(tmp_path / "report" / "transfer.csv")}
    assert set(cells) == {("A (bo)", "A"), ("A (bo)", "B"), ("B (bo)", "A"), ("B (bo)", "B")}
    expected = {  # (configuration, seeds, mean × 100, sd × 100)
        ("A (bo)", "A"): ("best<=1.0%", 2, 82.0, 100 * statistics.stdev([0.80, 0.84])),
        ("A (bo)", "B"): ("front-2", 1, 65.0, 0.0),
        ("B (bo)", "A"): ("best<=1.0%", 3, 72.0, 2.0),
        ("B (bo)", "B"): ("AutoPEFT^B best<=1.0%", 1, 90.0, 0.0),
    }
    for key, (configuration, seeds, mean, sd) in expected.items():
        row = cells[key]
        assert (row["configuration"], int(row["seeds"])) == (configuration, seeds), key
        assert float(row["mean_x100"]) == pytest.approx(mean) and float(row["sd_x100"]) == pytest.approx(sd), key
        assert row["source_task"] == key[0][0] and row["metric"] == "accuracy"
    assert cells[("A (bo)", "A")]["source_run"] == str(s_a) and cells[("A (bo)", "B")]["candidates"] == "2"
    # The summary carries the same rows, for callers that log them (e.g. as a W&B table).
    assert sorted((r["searched_on"], r["target_task"], r["mean_x100"]) for r in summary["transfer"]) == sorted(
        (k[0], k[1], pytest.approx(v[2])) for k, v in expected.items()
    )
    markdown = (tmp_path / "report" / "transfer.md").read_text()
    assert "| searched on | A (accuracy) | B (accuracy) |" in markdown
    assert "| A (bo) | 82.0 ± 2.8 [best<=1.0%] | 65.0 [front-2] |" in markdown
    for name in ("transfer", "transfer_md", "transfer_csv"):
        assert Path(summary["files"][name]).is_file()
    assert (tmp_path / "report" / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # The main table keeps the two searches' "best" configurations apart.
    rows = {row["configuration"]: row for row in summary["rows"]}
    assert rows["best<=1.0% · A (bo)"]["A"] == "82.0 ± 2.8"
    assert rows["best<=1.0% · B (bo)"]["A"] == "72.0 ± 2.0"  # the rerun seed counted once here too
    # Names that only one search produced stay as they are.
    assert rows["front-2"]["B"] == "65.0" and rows["AutoPEFT^B best<=1.0%"]["B"] == "90.0"


def test_transfer_source_fallbacks_and_unknown_sources_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "outputs"
    s_a = _small_search(root / "search" / "a", "A")
    s_b = _small_search(root / "search" / "b", "B")
    # Recorded before the outputs tree was moved: found by the path's tail among the report's searches.
    _retrain_dir(
        root / "retrain" / "moved", "A", [("best<=1.0%", "/old/disk/outputs/search/a result 2", 0, 0.8, 0.7, 0.1)]
    )
    # The recorded source is gone, but the retraining's saved Hydra config names the search.
    hydra = _retrain_dir(root / "retrain" / "hydra", "A", [("best<=1.0%", "/gone/x result 1", 0, 0.6, 0.6, 0.2)])
    (hydra / ".hydra").mkdir()
    (hydra / ".hydra" / "config.yaml").write_text(f"mode: retrain\nretrain:\n  from: {s_b}\n  seeds: [0]\n")
    # The source is gone but the record names its task.
    _retrain_dir(
        root / "retrain" / "named", "A", [("best<=1.0%", "/gone/c result 0", 0, 0.5, 0.5, 0.3)], search_task="C"
    )
    # Unknown: skipped with a warning, still in the main table.
    _retrain_dir(root / "retrain" / "lost", "A", [("front-1", "/gone/zzz result 3", 0, 0.4, 0.4, 0.1)])
    # From a file of configurations: no search at all, skipped without a warning.
    _retrain_dir(root / "retrain" / "file", "A", [("lora", str(tmp_path / "configs.json"), 0, 0.3, 0.3, 0.1)])

    with caplog.at_level(logging.WARNING, logger="autopeft.report"):
        summary = build_report([root], tmp_path / "report")

    cells = {(r["searched_on"], r["target_task"]): r for r in _csv_rows(tmp_path / "report" / "transfer.csv")}
    assert set(cells) == {("A (bo)", "A"), ("B (bo)", "A"), ("C", "A")}
    assert cells[("A (bo)", "A")]["source_run"] == str(s_a) and cells[("A (bo)", "A")]["mean_x100"] == "80.0"
    assert cells[("B (bo)", "A")]["source_run"] == str(s_b) and cells[("B (bo)", "A")]["mean_x100"] == "60.0"
    assert cells[("C", "A")]["source_run"] == "" and cells[("C", "A")]["mean_x100"] == "50.0"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/gone/zzz" in warnings[0] and "left out of the transfer heat map" in warnings[0]
    assert {row["configuration"] for row in summary["rows"]} >= {"front-1", "lora"}


def test_distribution_plots_every_proposer_and_reports_median_params(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    initial = [(8, 0.6, 1.0, "init"), (16, 0.7, 3.0, "init")]
    # BO and random search from the same seed share the initial design: plotted and counted once.
    _search_dir(
        root / "bo",
        "A",
        "bo",
        [
            *initial,
            (4, 0.7, 0.1, "bo"),
            (2, 0.66, 0.3, "bo"),
            (1, 0.64, 0.05, "bo"),
            (3, 0.6, 0.2, "random-fallback"),  # counted with BO: it spent BO's budget
            (64, None, 5.0, "bo"),  # failed: no score, neither plotted nor counted
        ],
    )
    _search_dir(root / "random", "A", "random", [*initial, (32, 0.7, 1.0, "random"), (48, 0.71, 2.0, "random")])
    _search_dir(root / "nsga2", "A", "nsga2", [(6, 0.6, 0.4, "nsga2"), (12, 0.62, 0.6, "nsga2")], seed=1)
    # Written before records had a phase: the first n_init are the initial design.
    _search_dir(root / "old", "B", "bo", [(8, 0.5, 1.0, None), (16, 0.6, 2.0, None), (4, 0.55, 0.5, None)])

    summary = build_report([root], tmp_path / "report")

    medians = {(r["panel"], r["proposer"]): (r["evaluations"], r["median_param_percent"]) for r in summary["proposals"]}
    assert medians == {
        ("A", "init"): (2, pytest.approx(2.0)),
        ("A", "bo"): (4, pytest.approx(0.15)),
        ("A", "random"): (2, pytest.approx(1.5)),
        ("A", "nsga2"): (2, pytest.approx(0.5)),
        ("B", "init"): (2, pytest.approx(1.5)),
        ("B", "bo"): (1, pytest.approx(0.5)),
    }
    written = _csv_rows(tmp_path / "report" / "distribution.csv")
    assert [(r["panel"], r["proposer"], r["evaluations"]) for r in written] == [
        ("A", "init", "2"),
        ("A", "bo", "4"),
        ("A", "nsga2", "2"),
        ("A", "random", "2"),
        ("B", "init", "2"),
        ("B", "bo", "1"),
    ]
    assert Path(summary["files"]["distribution"]).read_bytes()[:4] == b"\x89PNG"
    assert "transfer" not in summary["files"]


@pytest.mark.parametrize("retraining", ["none", "from a file of configurations"])
def test_no_heat_map_without_retrainings_of_a_search(tmp_path: Path, retraining: str) -> None:
    root = tmp_path / "outputs"
    _small_search(root / "search" / "a", "A")
    if retraining != "none":
        _retrain_dir(root / "retrain" / "file", "A", [("lora", str(tmp_path / "configs.json"), 0, 0.3, 0.3, 0.1)])
    summary = build_report([root], tmp_path / "report")
    assert summary["transfer"] == []
    assert not {"transfer", "transfer_md", "transfer_csv"} & set(summary["files"])
    assert not list((tmp_path / "report").glob("transfer*"))
    assert {"fronts", "hypervolume", "distribution"} <= set(summary["files"])
    # No training nor retraining of a search: nothing for the held-out, full-fidelity fronts.
    assert ("fronts_full" in summary["files"]) == (retraining != "none")


# ---------------------------------------------------------------------- fronts.png and fronts_full.png


def _figure4_outputs(root: Path) -> Path:
    """Task A: a low-fidelity search, its front retrained at full fidelity, swept and single baselines."""
    search = _small_search(root / "search" / "a", "A")
    source = f"{search} result 0"
    _retrain_dir(
        root / "retrain" / "front",
        "A",
        [("front-1", source, s, t, 0.7, 0.1) for s, t in enumerate([0.80, 0.82, 0.84])]
        + [("front-2", source, 0, 0.78, 0.7, 0.5), ("front-3", source, 0, 0.90, 0.8, 1.0)],
        fidelity=FULL,
    )
    # front-1 seed 0 again in another retraining run: counted once.
    _retrain_dir(root / "retrain" / "rerun", "A", [("front-1", source, 0, 0.10, 0.7, 0.1)], fidelity=FULL)
    # A low-fidelity retraining of front-3 (e.g. a quick check): not on the full-fidelity panel.
    _retrain_dir(root / "retrain" / "quick", "A", [("front-3", source, 0, 0.50, 0.5, 1.0)], fidelity=LOW)
    base = root / "baselines"
    for seed, test in enumerate([0.70, 0.74]):
        _training_dir(base / "sa6" / f"seed{seed}", "A", "SA sa_size=6", seed, test, 0.1, sa_size=6)
    _training_dir(base / "sa48" / "seed0", "A", "SA sa_size=48", 0, 0.79, 0.8, sa_size=48)
    _training_dir(base / "pa6" / "seed0", "A", "PA pa_size=6", 0, 0.71, 0.1)
    _training_dir(base / "pa48" / "seed0", "A", "PA pa_size=48", 0, 0.77, 0.8)
    _training_dir(base / "lora8" / "seed0", "A", "LoRA lora_rank=8", 0, 0.75, 0.3)  # one size: a single ▲
    _training_dir(base / "mam" / "seed0", "A", "mam", 0, 0.81, 6.0)
    for seed, test in enumerate([0.85, 0.87]):
        _training_dir(base / "fft" / f"seed{seed}", "A", "fft", seed, test, 100.0, full_finetune=True)
    # Trained like the search (1 epoch, though its preset is named differently): on fronts.png only.
    _training_dir(base / "sa_low" / "seed0", "A", "sa", 0, 0.66, 0.9, fidelity={**LOW, "name": "smoke"})
    return root


def test_full_fidelity_fronts_show_held_out_means_families_and_fft(tmp_path: Path) -> None:
    from autopeft.report.series import full_fidelity_series

    root = _figure4_outputs(tmp_path / "outputs")
    panels = full_fidelity_series(find_runs([root]))

    assert set(panels) == {"A"}
    panel = panels["A"]
    assert (panel.task, panel.metric, panel.fidelity.epochs, panel.fidelity.name) == ("A", "accuracy", 20, "full")
    assert panel.fidelity.text() == "full fidelity (20 epochs, early stopping after 10)"
    # One low-fidelity retraining and one 1-epoch single training are left out.
    assert panel.left_out == {"low fidelity (1 epoch)": 1, "smoke fidelity (1 epoch)": 1}

    # (a) the retrained front: held-out means over seeds, grouped by (source search, choice).
    assert list(panel.autopeft) == ["AutoPEFT^A"]
    points = {p.name: p for p in panel.autopeft["AutoPEFT^A"]}
    assert set(points) == {"front-1", "front-2", "front-3"}
    assert points["front-1"].values == pytest.approx([0.80, 0.82, 0.84])  # the rerun seed 0 counted once
    assert points["front-1"].mean == pytest.approx(0.82) and points["front-1"].sd == pytest.approx(0.02)
    assert points["front-3"].mean == pytest.approx(0.90) and points["front-3"].sd == 0.0
    # front-2 (0.5%, 0.78) is dominated by front-1 (0.1%, 0.82): not on the staircase.
    assert [p.name for p in panel.staircase("AutoPEFT^A")] == ["front-1", "front-3"]

    # (b) baselines: the sweeps by family, single ones, full fine-tuning as a horizontal line.
    assert set(panel.sweeps) == {"SA", "PA"}
    assert [p.name for p in panel.sweeps["SA"]] == ["SA sa_size=6", "SA sa_size=48"]
    assert [p.mean for p in panel.sweeps["SA"]] == pytest.approx([0.72, 0.79])
    assert panel.sweeps["SA"][0].sd == pytest.approx(statistics.stdev([0.70, 0.74]))
    assert panel.sweep_fields == {"SA": "sa_size", "PA": "pa_size"}
    assert [p.mean for p in panel.sweeps["PA"]] == pytest.approx([0.71, 0.77])
    assert [p.name for p in panel.singles] == ["LoRA lora_rank=8", "mam"]
    assert [(p.name, p.mean) for p in panel.fft] == [("fft", pytest.approx(0.86))]
    assert panel.fft[0].sd == pytest.approx(statistics.stdev([0.85, 0.87]))
    assert "fft" not in {p.name for p in panel.singles}

    summary = build_report([root], tmp_path / "report")
    assert summary["files"]["fronts_full"] == str(tmp_path / "report" / "fronts_full.png")
    assert (tmp_path / "report" / "fronts_full.png").read_bytes()[:4] == b"\x89PNG"


def test_search_fronts_overlay_only_trainings_at_the_search_fidelity(tmp_path: Path) -> None:
    from autopeft.report.series import search_front_series

    root = _figure4_outputs(tmp_path / "outputs")
    _training_dir(root / "baselines" / "other_task" / "seed0", "B", "sa", 0, 0.6, 0.9, fidelity=LOW)  # no search of B

    panels = search_front_series(find_runs([root]))

    assert set(panels) == {"A"}  # B was not searched: its training is only in fronts_full.png
    panel = panels["A"]
    assert [f.text() for f in panel.fidelities] == ["low fidelity (1 epoch)"]
    assert [r["peft"]["name"] for r in panel.trainings] == ["sa"]  # 1 epoch like the search
    assert panel.trainings[0]["score"] == pytest.approx(0.61)  # its validation score, as the front's
    full = ["SA sa_size=6", "SA sa_size=6", "SA sa_size=48", "PA pa_size=6", "PA pa_size=48", "LoRA lora_rank=8"]
    assert sorted(r["peft"]["name"] for r in panel.left_out) == sorted([*full, "mam", "fft", "fft"])
    assert [[r["param_percent"] for r in front] for _, front in panel.fronts] == [[0.05, 0.2]]
    summary = build_report([root], tmp_path / "report")
    assert (tmp_path / "report" / "fronts.png").read_bytes()[:4] == b"\x89PNG"
    assert {"fronts", "fronts_full"} <= set(summary["files"])


def test_fidelity_compares_the_training_schedule() -> None:
    from autopeft.report.collect import Fidelity

    low = Fidelity.of(LOW)
    assert low.same_schedule(Fidelity.of({"name": "full", "epochs": 1, "early_stopping_patience": None}))
    assert not low.same_schedule(Fidelity.of(FULL))
    assert not Fidelity.of(FULL).same_schedule(Fidelity.of({**FULL, "early_stopping_patience": None}))
    assert low.same_schedule(Fidelity(name="low"))  # epochs unknown: the preset's name decides
    assert not Fidelity().same_schedule(Fidelity())
    assert Fidelity.of(None).text() == "fidelity unknown"


def test_pareto_staircase_keeps_the_non_dominated_points() -> None:
    from autopeft.report.series import SeriesPoint, pareto_staircase

    def point(name: str, percent: float, value: float) -> SeriesPoint:
        return SeriesPoint(name=name, param_percent=percent, values=[value])

    points = [
        point("big", 2.0, 0.9),
        point("worse-and-bigger", 1.5, 0.7),
        point("same-size-lower", 0.5, 0.6),
        point("mid", 0.5, 0.8),
        point("zero", 0.0, 0.5),
        point("equal-score-bigger", 1.0, 0.8),
    ]
    assert [p.name for p in pareto_staircase(points)] == ["zero", "mid", "big"]
    assert pareto_staircase([]) == []


# ---------------------------------------------------------------------- task identity, unsuccessful tasks


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_one_task_name_scored_with_two_metrics_is_two_tasks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two custom datasets that both kept the name ``custom``: a regression search, a classification training."""
    from autopeft.report.collect import scan_tasks
    from autopeft.report.series import full_fidelity_series, proposal_points, search_front_series

    root = tmp_path / "outputs"
    _search_dir(
        root / "search" / "scores",
        "custom",
        "bo",
        [(8, 0.4, 0.1, "init"), (16, 0.5, 0.2, "init"), (4, 0.45, 0.05, "bo")],
        metric="spearman",
    )
    # Trained like the search (1 epoch): before, it was overlaid on the Spearman panel.
    _training_dir(root / "train" / "reviews_low", "custom", "sa", 0, 0.8, 0.9, fidelity=LOW)
    _training_dir(root / "train" / "reviews", "custom", "lora", 0, 0.82, 0.3)
    _training_dir(root / "train" / "scores", "custom", "lora", 0, 0.61, 0.3, metric="spearman")

    with caplog.at_level(logging.WARNING, logger="autopeft.report"):
        summary = build_report([root], tmp_path / "report")

    assert summary["tasks"] == ["custom · accuracy", "custom · spearman"]
    lora = next(row for row in summary["rows"] if row["configuration"] == "lora")
    assert (lora["custom · accuracy"], lora["custom · spearman"]) == ("82.0", "61.0")
    table = (tmp_path / "report" / "table.md").read_text()
    assert "Metrics: custom · accuracy accuracy, custom · spearman spearman." in table
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "task 'custom' was scored with different metrics ('accuracy', 'spearman') in different runs: these are "
        "different tasks, kept apart as 'custom · accuracy', 'custom · spearman'; give each custom task its own "
        "task.name"
    ]
    runs = find_runs([root])
    fronts = search_front_series(runs)
    assert set(fronts) == {"custom · spearman"} and fronts["custom · spearman"].metric == "spearman"
    assert fronts["custom · spearman"].trainings == []  # the accuracy training is another task
    full = full_fidelity_series(runs)
    assert {name: panel.metric for name, panel in full.items()} == {
        "custom · accuracy": "accuracy",
        "custom · spearman": "spearman",
    }
    assert set(proposal_points(runs.searches, scan_tasks(runs).names)) == {"custom · spearman"}


def test_tasks_without_a_successful_evaluation_are_named_and_get_no_empty_panel(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from autopeft.report.series import search_front_series

    only_a = tmp_path / "only_a"
    _small_search(only_a / "search" / "a", "A")
    build_report([only_a], tmp_path / "report_a")

    root = tmp_path / "outputs"
    _small_search(root / "search" / "a", "A")
    _search_dir(root / "search" / "b", "B", "bo", [(8, None, 0.1, "init"), (16, None, 0.2, "init")])
    diverged = root / "train" / "c"
    diverged.mkdir(parents=True)
    (diverged / "results.json").write_text(json.dumps({"status": "diverged", "task": "C", "peft": {"name": "sa"}}))

    with caplog.at_level(logging.WARNING, logger="autopeft.report"):
        summary = build_report([root], tmp_path / "report")

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no successful evaluation of task(s) 'B', 'C' (B: 1 run, C: 1 run): nothing of theirs is in the tables and "
        "plots"
    ]
    assert summary["unsuccessful_tasks"] == ["B", "C"] and summary["tasks"] == []
    panels = search_front_series(find_runs([root]))
    assert panels["B"].unsuccessful == ["b"] and not panels["B"].drawable and panels["A"].drawable
    # fronts.png has A's panel only: as wide as the report of A alone.
    assert _png_width(tmp_path / "report" / "fronts.png") == _png_width(tmp_path / "report_a" / "fronts.png")

    # Nothing succeeded at all: no empty figure is written.
    caplog.clear()
    summary = build_report([root / "search" / "b"], tmp_path / "report_b")
    assert not {"fronts", "hypervolume", "distribution"} & set(summary["files"])
    assert "no successful evaluation of task(s) 'B' (B: 1 run)" in caplog.text
