"""Exports: save a trained configuration, load it with one call, get the same predictions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, open_dict
from safetensors.torch import load_file, save_file

import autopeft.export.save as export_save
from autopeft.data.cache import cap_rows
from autopeft.data.splits import load_raw_splits
from autopeft.errors import ConfigError
from autopeft.export.format import EXPORT_FORMAT_VERSION, ExportError
from autopeft.export.load import load_export
from autopeft.export.predictor import Predictor
from autopeft.export.save import save_export
from autopeft.io import sha256_file
from autopeft.settings import TrainingSettings
from autopeft.space import SearchSpace
from autopeft.training.backbones import shape_of
from autopeft.training.objective import TrainingObjective
from autopeft.training.train import TrainingJob, build, train_and_evaluate

#: Every module kind at once: serial and parallel adapters, prefix-tuning and LoRA.
ALL_MODULES = ("peft.pa_size=4", "peft.prefix_len=2", "peft.lora_rank=2")
NEW_SENTENCES = ["a gripping, beautifully acted film", "dull, slow and far too long", "meh " * 40]


def _spy_on_saves(monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    """Record the in-memory model each export is written from."""
    models: list[torch.nn.Module] = []
    real = export_save.save_export

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Path:
        models.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(export_save, "save_export", spy)
    return models


def _in_memory_scores(model: torch.nn.Module, predictor: Predictor, inputs: list[Any]) -> torch.Tensor:
    """The in-memory model's outputs on the predictor's own batches (same tokens, same padding)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(**batch).float() for batch in predictor._batches(inputs, 32)])


def _built_export(cfg: DictConfig, path: Path, **kwargs: Any) -> tuple[torch.nn.Module, Path]:
    """An untrained model built as training builds it (seeded), exported without training."""
    torch.manual_seed(cfg.seed)
    model = build(TrainingJob.from_config(cfg)).model.eval()
    with torch.no_grad():  # move the head off its initialisation so a wrong load would show
        model.head.out.bias.add_(0.25)
    return model, save_export(model, cfg, path, **kwargs)


def test_trained_export_reloads_with_identical_outputs_and_scores(
    tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = _spy_on_saves(monkeypatch)
    cfg = tiny_cfg("mode=train", *ALL_MODULES)
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path / "run")
    assert record["status"] == "ok" and record["export"] == str(tmp_path / "run" / "export")
    (model,) = models

    predictor = load_export(tmp_path / "run")  # a run directory, an export folder or its json all work
    assert not predictor.model.training
    assert torch.equal(predictor.scores(NEW_SENTENCES), _in_memory_scores(model, predictor, NEW_SENTENCES))
    labels = predictor.predict(NEW_SENTENCES)
    assert set(labels) <= {"negative", "positive"} and len(labels) == 3
    assert torch.allclose(predictor.predict_proba(NEW_SENTENCES).sum(-1), torch.ones(3))

    # The held-out split, capped as training capped it, scores exactly what the record says.
    task = predictor.task
    test_rows = list(cap_rows(load_raw_splits(task, cfg.data.data_seed)["test"], cfg.data.max_eval_samples, 0))
    ids = [predictor.label_names.index(p) for p in predictor.predict(test_rows, cfg.trainer.eval_batch_size)]
    accuracy = sum(i == row["label"] for i, row in zip(ids, test_rows, strict=True)) / len(test_rows)
    assert accuracy == pytest.approx(record["metrics"]["test"]["accuracy"], abs=1e-6)

    manifest = json.loads((tmp_path / "run" / "export" / "autopeft.json").read_text())
    assert manifest["format_version"] == EXPORT_FORMAT_VERSION
    assert manifest["scores"]["metrics"] == record["metrics"] and manifest["main_metric"] == "accuracy"
    assert manifest["data"] == {"max_length": cfg.data.max_length}
    assert manifest["label_names"] == ["negative", "positive"]
    assert {"torch", "transformers", "autopeft", "python"} <= set(manifest["versions"])
    # Only the trainable tensors are stored: PEFT modules of every kind and the head.
    stored = load_file(tmp_path / "run" / "export" / "weights.safetensors")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(stored) == trainable and sum(t.numel() for t in stored.values()) == record["params"]["trainable_params"]
    for part in ("lora_a", "serial.down", "parallel.up", "prefix_encoder.mlp", "head.out"):
        assert any(part in name for name in stored), part


@pytest.mark.parametrize(
    ("task", "inputs"),
    [
        ("snli_binary", [("A man plays a guitar.", "A person makes music."), ("A dog runs.", "A cat sleeps.")]),
        ("vader_movies", ["wonderful", "awful"]),
        (
            "copa",
            [
                ("The man broke his toe. What was the cause?", "He dropped a hammer.", "He got a hole in his sock."),
                {
                    "premise": "The man broke his toe.",
                    "question": "cause",
                    "choice1": "He dropped a hammer.",
                    "choice2": "He got a hole in his sock.",
                },
            ],
        ),
    ],
)
def test_pair_regression_and_multiple_choice_exports(
    tiny_cfg: Callable, tmp_path: Path, task: str, inputs: list[Any]
) -> None:
    cfg = tiny_cfg("mode=train", f"task={task}", "peft.lora_rank=2")
    model, path = _built_export(cfg, tmp_path / "export")
    predictor = load_export(path)
    scores = predictor.scores(inputs)
    assert torch.equal(scores, _in_memory_scores(model, predictor, inputs))
    predictions = predictor.predict(inputs)
    if task == "vader_movies":
        assert scores.shape == (2,) and predictions == pytest.approx(scores.tolist())
        with pytest.raises(ValueError, match="regression"):
            predictor.predict_proba(inputs)
    elif task == "copa":
        # A row of source columns goes through the task's template: the same tokens as the tuple.
        assert scores.shape == (2, 2) and torch.equal(scores[0], scores[1]) and predictions[0] in (0, 1)
    else:
        assert set(predictions) <= {"entailment", "not_entailment"}
        with pytest.raises(ValueError, match="pair"):
            predictor.predict(["a single sentence"])


def test_corrupt_or_mismatched_files_fail_naming_the_file(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("mode=train", "peft.prefix_len=2")
    _, path = _built_export(cfg, tmp_path / "export")
    weights, manifest_file = path / "weights.safetensors", path / "autopeft.json"
    good_weights, good_manifest = weights.read_bytes(), manifest_file.read_text()

    corrupt = bytearray(good_weights)
    corrupt[len(corrupt) // 2] ^= 0xFF
    weights.write_bytes(bytes(corrupt))
    with pytest.raises(ExportError, match=r"weights\.safetensors.*corrupt"):
        load_export(path)

    def rewrite(tensors: dict[str, torch.Tensor]) -> None:
        # A consistent checksum, so the key check (not the checksum) has to catch it.
        save_file(tensors, str(weights))
        manifest = json.loads(good_manifest)
        manifest["weights"]["sha256"] = sha256_file(weights)
        manifest_file.write_text(json.dumps(manifest))

    weights.write_bytes(good_weights)
    tensors = load_file(str(weights))
    dropped = sorted(tensors)[0]
    rewrite({k: v for k, v in tensors.items() if k != dropped})
    with pytest.raises(ExportError, match=rf"missing 1 tensor\(s\): '{dropped}'"):
        load_export(path)
    rewrite({**tensors, "head.extra.weight": torch.zeros(2)})
    with pytest.raises(ExportError, match=r"unexpected 1 tensor\(s\): 'head\.extra\.weight'"):
        load_export(path)
    rewrite({**tensors, "head.out.bias": torch.zeros(7)})
    with pytest.raises(ExportError, match=r"'head\.out\.bias' has shape \(7,\)"):
        load_export(path)

    weights.write_bytes(good_weights)
    manifest_file.write_text(good_manifest[:50])
    with pytest.raises(ExportError, match=r"autopeft\.json is not a readable export manifest"):
        load_export(path)
    manifest_file.write_text(
        good_manifest.replace(f'"format_version": {EXPORT_FORMAT_VERSION}', '"format_version": 99')
    )
    with pytest.raises(ExportError, match=r"autopeft\.json has export format_version=99"):
        load_export(path)
    with pytest.raises(ExportError, match="no export at"):
        load_export(tmp_path / "nowhere")

    manifest_file.write_text(good_manifest)
    predictor = load_export(path)
    with pytest.raises(TypeError, match="list of inputs"):
        predictor.predict("one sentence")
    with pytest.raises(ValueError, match="input 1"):
        predictor.predict(["fine", {"text": "no such column"}])


def test_a_backbone_that_cannot_be_rebuilt_is_refused_unless_stored(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("mode=train")
    torch.manual_seed(123)  # not the run's seed: the random backbone is not reproducible from the node
    model = build(TrainingJob.from_config(cfg)).model.eval()
    path = save_export(model, cfg, tmp_path / "trainable_only")
    with pytest.raises(ExportError, match="differs from the one the weights were trained on"):
        load_export(path)
    unchecked = load_export(path, verify_backbone=False)  # loads, but its frozen weights are other ones
    assert not torch.equal(unchecked.scores(["hi"]), _in_memory_scores(model, unchecked, ["hi"]))
    whole = load_export(save_export(model, cfg, tmp_path / "whole", include_backbone=True))
    assert torch.equal(whole.scores(["hi"]), _in_memory_scores(model, whole, ["hi"]))


def test_switch_off_and_search_evaluations_write_no_export(tiny_cfg: Callable, tmp_path: Path) -> None:
    record = train_and_evaluate(
        TrainingJob.from_config(tiny_cfg("mode=train", "trainer.save_weights=false")), tmp_path / "off"
    )
    assert record["status"] == "ok" and record["export"] is None and not (tmp_path / "off" / "export").exists()

    cfg = tiny_cfg("trainer.save_weights=true")  # mode=search: even 'true' must not reach evaluations
    assert cfg.mode == "search" and cfg.trainer.save_weights is True
    space = SearchSpace.from_config(cfg.space, shape_of(cfg.backbone))
    result = TrainingObjective(TrainingJob.from_config(cfg), space, 10**6, tmp_path / "search")(space.point(sa=8), 0)
    assert result["status"] == "ok"
    assert (tmp_path / "search" / "evals" / "0000").is_dir()
    assert not list((tmp_path / "search").rglob("autopeft.json"))

    with open_dict(cfg):
        cfg.mode, cfg.trainer.save_weights = "train", "yes"
    with pytest.raises(ConfigError, match=r"trainer\.save_weights='yes'; allowed: true, false, 'peft'"):
        TrainingSettings.from_config(cfg)  # refused with the config, before anything trains


def test_default_exports_peft_runs_but_not_full_fine_tuning(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = tiny_cfg("mode=train")
    assert cfg.trainer.save_weights == "peft"
    assert train_and_evaluate(TrainingJob.from_config(cfg), tmp_path / "sa")["export"] is not None
    fft = train_and_evaluate(
        TrainingJob.from_config(tiny_cfg("mode=train", "peft=fft", "peft.sa_size=0")), tmp_path / "fft"
    )
    assert fft["status"] == "ok" and fft["export"] is None and not (tmp_path / "fft" / "export").exists()
    forced = train_and_evaluate(
        TrainingJob.from_config(tiny_cfg("mode=train", "peft=fft", "peft.sa_size=0", "trainer.save_weights=true")),
        tmp_path / "f2",
    )
    assert forced["export"] is not None


def test_a_version_1_export_loads_with_the_wiring_it_was_trained_with(tiny_cfg: Callable, tmp_path: Path) -> None:
    """Exports written before ``sa_placement`` existed had the serial adapter on h (houlsby)."""
    cfg = tiny_cfg("mode=train", "peft=sa", "peft.sa_placement=houlsby", "peft.adapter_init=zero_up")
    model, path = _built_export(cfg, tmp_path / "export")
    manifest_file = path / "autopeft.json" if path.is_dir() else path
    manifest = json.loads(manifest_file.read_text())
    manifest["format_version"] = 1
    for key in ("sa_placement", "adapter_init"):
        del manifest["peft"][key]
    manifest_file.write_text(json.dumps(manifest))
    predictor = load_export(manifest_file)
    assert predictor.model.spec.sa_placement == "houlsby"
    assert torch.equal(predictor.scores(NEW_SENTENCES), _in_memory_scores(model, predictor, NEW_SENTENCES))
