"""Generation on decoders: the LM head, the answer-only loss, greedy decoding, choice scoring, the training entry.

The learning test (a tiny decoder learns to reverse strings, and does not with the loss
reversed) is ``tests/training/test_generation_learns.py``; this file checks the parts on
hand-made cases and runs the training entry end to end on smoke-sized data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlamaModel

from autopeft.data.generation import IGNORE, GenerationCollator, make_generation_encoder
from autopeft.errors import ConfigError
from autopeft.experiments.modes import mode_train
from autopeft.peft import peft_from_config
from autopeft.peft.params import parameter_report
from autopeft.tasks.registry import get_task
from autopeft.training.backbones import load_backbone
from autopeft.training.lm_head import HEAD_SEED, LMHead
from autopeft.training.model import AutoPeftModel
from autopeft.training.module import PeftLightningModule
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer
from autopeft.training.train import TrainingJob, train_and_evaluate

#: A few reverse rows, prompts of different lengths so that padding shows.
ROWS = [
    {"prompt": "reverse: a b c d e =", "answer": " e d c b a", "choices": [" a b c d e", " e d c b a", " e d c a b"]},
    {"prompt": "reverse: f g =", "answer": " g f", "choices": [" g f", " f g", " f f"]},
    {"prompt": "reverse: h a b =", "answer": " b a h", "choices": [" h a b", " a b h", " b a h"]},
]


def generation_model(compose_cfg: Callable, backbone: str, *overrides: str, seed: int = 0) -> tuple[AutoPeftModel, Any]:
    """A generation model on ``backbone`` (full fine-tuning unless overridden) and its tokenizer."""
    cfg = compose_cfg(f"backbone={backbone}", "peft=fft", *overrides)
    torch.manual_seed(seed)
    loaded = load_backbone(cfg.backbone)
    return AutoPeftModel(loaded, peft_from_config(cfg.peft, loaded.shape), "generation", 1), loaded.tokenizer


def batch_of(tokenizer: Any, task: str = "reverse_choice", rows: list[dict] = ROWS) -> dict[str, Any]:
    encoded = make_generation_encoder(get_task(task), tokenizer, 64)({k: [r[k] for r in rows] for k in rows[0]})
    features = [{k: v[i] for k, v in encoded.items()} for i in range(len(rows))]
    return GenerationCollator(tokenizer)(features)


def shake(model: AutoPeftModel, std: float = 0.3) -> None:
    """Perturb every weight, so that a random tiny model writes varied tokens instead of one repeated."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * std)


# --------------------------------------------------------------------------- the answer-only loss


def test_the_loss_counts_the_answer_tokens_and_eos_only(compose_cfg: Callable) -> None:
    model, tok = generation_model(compose_cfg, "tiny_llama")
    model.eval()
    batch = batch_of(tok)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    with torch.no_grad():
        logits = model(ids, mask)  # (B, T, vocab)
        loss = model.lm_loss(ids, mask, labels)
    targets = labels[:, 1:]
    answer = targets != IGNORE
    expected = F.cross_entropy(logits[:, :-1][answer], targets[answer])
    torch.testing.assert_close(loss, expected)
    assert int(answer.sum()) == sum(len(r["answer"].split()) + 1 for r in ROWS)  # one token a letter, and EOS
    # Every real position counted instead (prompt tokens included) is a different number.
    everything = F.cross_entropy(logits[:, :-1][mask[:, 1:].bool()], ids[:, 1:][mask[:, 1:].bool()])
    assert not torch.isclose(loss, everything)
    # What stands in the padding does not matter.
    noisy = ids.masked_fill(mask == 0, 7)
    with torch.no_grad():
        torch.testing.assert_close(model.lm_loss(noisy, mask, labels), loss)


def test_choice_scores_sum_each_candidates_log_likelihood(compose_cfg: Callable) -> None:
    model, tok = generation_model(compose_cfg, "tiny_qwen2")
    model.eval()
    batch = batch_of(tok)
    with torch.no_grad():
        scores = model.answer_log_likelihoods(batch["choice_ids"], batch["choice_mask"], batch["choice_labels"])
        logits = model(batch["choice_ids"], batch["choice_mask"]).log_softmax(-1)
    for k in range(len(scores)):
        labels = batch["choice_labels"][k, 1:]
        keep = labels != IGNORE
        expected = logits[k, :-1][keep].gather(-1, labels[keep][:, None]).sum()
        torch.testing.assert_close(scores[k], expected)


# --------------------------------------------------------------------------- greedy decoding


@pytest.mark.parametrize("backbone", ["tiny_llama", "tiny_gpt2", "tiny_gemma2", "tiny_gpt_neox"])
def test_greedy_decoding_is_the_same_cached_uncached_and_unpadded(compose_cfg: Callable, backbone: str) -> None:
    model, tok = generation_model(compose_cfg, backbone)
    shake(model)
    model.eval()
    # Prompts that end differently: a random tied model (Gemma 2's) repeats its last input token.
    rows = [{**row, "prompt": row["prompt"].removesuffix(" =")} for row in ROWS]
    batch = batch_of(tok, rows=rows)
    prompts, mask = batch["prompt_ids"], batch["prompt_mask"]
    assert (mask[:, 0] == 0).any()  # some prompt is left-padded
    cached = model.greedy_decode(prompts, mask, 8, tok.eos_token_id)
    uncached = model.greedy_decode(prompts, mask, 8, tok.eos_token_id, use_cache=False)
    alone = []
    for i in range(len(ROWS)):
        n = int(mask[i].sum())
        alone += model.greedy_decode(prompts[i : i + 1, -n:], mask[i : i + 1, -n:], 8, tok.eos_token_id)
    assert cached == uncached == alone
    assert len({tuple(row) for row in cached}) > 1 and all(len(row) <= 8 for row in cached)


class ScriptedHead(LMHead):
    """An LM head whose argmax follows a script: row 0 writes 5, 6, EOS (then 9s); row 1 writes 7 forever."""

    def __init__(self, vocab: int, eos: int) -> None:
        super().__init__(torch.zeros(vocab, 1), None, None)
        self.eos, self.step = eos, 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], self.weight.shape[0])
        first = [5, 6, self.eos][self.step] if self.step < 3 else 9
        logits[0, first] = 1.0
        logits[1:, 7] = 1.0
        self.step += 1
        return logits


def test_decoding_stops_at_eos_or_at_the_token_budget(compose_cfg: Callable) -> None:
    model, tok = generation_model(compose_cfg, "tiny_llama")
    model.eval()
    model.head = ScriptedHead(512, tok.eos_token_id)
    batch = batch_of(tok, rows=ROWS[:2])
    assert model.greedy_decode(batch["prompt_ids"], batch["prompt_mask"], 5, tok.eos_token_id) == [[5, 6], [7] * 5]
    model.head.step = 0
    assert model.greedy_decode(batch["prompt_ids"][:1], batch["prompt_mask"][:1], 5, tok.eos_token_id) == [[5, 6]]
    assert model.head.step == 3  # every row finished: no step after the EOS


def test_the_module_scores_decodings_and_the_likeliest_choices(compose_cfg: Callable) -> None:
    model, tok = generation_model(compose_cfg, "tiny_llama")
    module = PeftLightningModule(model, get_task("reverse_choice"), lr=1e-3, tokenizer=tok)
    batch = batch_of(tok)
    written = [tok(r["answer"], add_special_tokens=False).input_ids for r in ROWS]
    written[2] = tok(" a b h", add_special_tokens=False).input_ids  # the third row answered wrongly
    model.greedy_decode = lambda *args, **kwargs: written  # type: ignore[method-assign]
    # Candidates of rows 0, 1, 2: the likeliest are 1 (gold), 1 (not gold 0) and 2 (gold).
    scores = torch.tensor([-3.0, -1.0, -2.0, -5.0, -0.5, -9.0, -4.0, -4.5, -0.1])
    model.answer_log_likelihoods = lambda *args, **kwargs: scores  # type: ignore[method-assign]
    module.on_validation_epoch_start()
    module.validation_step(batch, 0)
    assert module._split_metrics() == {"choice_accuracy": pytest.approx(2 / 3), "exact_match": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="its module needs the tokenizer"):
        PeftLightningModule(model, get_task("reverse"), lr=1e-3)


# --------------------------------------------------------------------------- the LM head


def test_a_tied_family_reads_its_input_embeddings(compose_cfg: Callable) -> None:
    model, _ = generation_model(compose_cfg, "tiny_gpt2", "peft=lora", "peft.lora_targets=[attention_output]")
    assert model.head.tied and model.head.matrix() is model.encoder.get_input_embeddings().weight
    assert list(model.head.parameters()) == []  # shared, not counted twice
    cfg = compose_cfg("backbone=tiny_gpt2", "peft=lora", "peft.lora_targets=[attention_output]")
    loaded = load_backbone(cfg.backbone)
    report = parameter_report(model, peft_from_config(cfg.peft, loaded.shape), loaded.shape, loaded.num_params)
    assert report["head_params"] == 0 and report["trainable_params"] == report["trainable_peft_params"]


def test_a_softcapping_family_caps_its_logits(compose_cfg: Callable) -> None:
    model, _ = generation_model(compose_cfg, "tiny_gemma2")
    assert model.head.softcap == 30.0
    hidden = torch.randn(2, 64) * 1e3
    raw = hidden @ model.head.matrix().T
    torch.testing.assert_close(model.head(hidden), torch.tanh(raw / 30.0) * 30.0)


def test_an_untied_random_head_is_frozen_and_the_same_whatever_the_random_state(compose_cfg: Callable) -> None:
    lora, _ = generation_model(compose_cfg, "tiny_llama", "peft=lora", seed=0)
    full, _ = generation_model(compose_cfg, "tiny_llama", seed=5)
    assert not lora.head.tied and lora.head.weight.shape == (512, 64)
    assert not lora.head.weight.requires_grad and full.head.weight.requires_grad  # trains with the whole model only
    torch.testing.assert_close(lora.head.weight, full.head.weight)  # drawn from HEAD_SEED, not the global stream
    expected = torch.randn(512, 64, generator=torch.Generator().manual_seed(HEAD_SEED)) * 0.02
    torch.testing.assert_close(full.head.weight, expected)


def _saved(folder: Path, model: torch.nn.Module) -> Path:
    model.save_pretrained(folder)
    standin_bpe_tokenizer().save_pretrained(folder)
    return folder


def _llama_config() -> LlamaConfig:
    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    config.vocab_size, config.tie_word_embeddings = 512, False
    return config


def test_a_pretrained_untied_head_comes_from_its_checkpoint(
    compose_cfg: Callable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    causal = LlamaForCausalLM(_llama_config())
    folder = _saved(tmp_path / "causal", causal)
    model, _ = generation_model(compose_cfg, "custom", f"backbone.name_or_path={folder}", "peft=lora")
    torch.testing.assert_close(model.head.weight, causal.lm_head.weight)
    torch.testing.assert_close(model.encoder.norm.weight, causal.model.norm.weight)
    # A base model saved alone has no head: a fresh one, said so.
    base = _saved(tmp_path / "base", LlamaModel(_llama_config()))
    with caplog.at_level(logging.WARNING, logger="autopeft.training"):
        model, _ = generation_model(compose_cfg, "custom", f"backbone.name_or_path={base}", "peft=lora")
    assert "has no LM head" in caplog.text and model.head.weight.shape == (512, 64)
    # A tied checkpoint's head is its embeddings.
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=512, n_positions=64))
    folder = _saved(tmp_path / "gpt2", gpt2)
    model, _ = generation_model(compose_cfg, "custom", f"backbone.name_or_path={folder}")
    assert model.head.tied
    torch.testing.assert_close(model.head.matrix(), gpt2.lm_head.weight)


def test_parameter_counting_builds_the_head_on_the_meta_device(compose_cfg: Callable) -> None:
    cfg = compose_cfg("backbone=mistral_7b_arch", "peft=lora", "task=reverse")
    loaded = load_backbone(cfg.backbone, weights=False)
    with torch.device("meta"):
        model = AutoPeftModel(loaded, peft_from_config(cfg.peft, loaded.shape), "generation", 1)
    assert model.head.weight.is_meta and model.head.weight.shape == (32000, 4096)


# --------------------------------------------------------------------------- encoders are refused


def test_generation_on_an_encoder_is_one_line_naming_the_backbone_and_the_decoders(tiny_cfg: Callable) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainingJob.from_config(tiny_cfg("task=reverse"))
    message = str(caught.value)
    assert "\n" not in message
    assert "task 'reverse' is a generation task, which needs a decoder backbone" in message
    assert "backbone 'tiny_bert' is a 'bert' encoder; decoder families: 'llama', 'qwen2'" in message


# --------------------------------------------------------------------------- the training entry, end to end


def test_mode_train_runs_the_reverse_task_with_lora(compose_cfg: Callable, tmp_path: Path) -> None:
    # python run.py mode=train experiment=none backbone=tiny_llama task=reverse peft=lora debug=smoke
    cfg = compose_cfg(
        "mode=train", "experiment=none", "backbone=tiny_llama", "task=reverse", "peft=lora", "debug=smoke"
    )
    record = mode_train(cfg, tmp_path)
    assert record["status"] == "ok" and record["main_metric"] == "exact_match"
    assert record["score"] == record["metrics"]["validation"]["exact_match"]
    assert 0.0 <= record["metrics"]["test"]["exact_match"] <= 1.0
    assert record["params"]["trainable_params"] == record["params"]["trainable_peft_params"] > 0  # LM head frozen
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["score"] == record["score"] and saved["task"] == "reverse"


def test_multiple_choice_generation_trains_and_reports_both_metrics(compose_cfg: Callable, tmp_path: Path) -> None:
    cfg = compose_cfg("experiment=none", "backbone=tiny_qwen2", "task=reverse_choice", "peft=lora", "debug=smoke")
    record = train_and_evaluate(TrainingJob.from_config(cfg), tmp_path)
    assert record["status"] == "ok" and record["main_metric"] == "choice_accuracy"
    assert set(record["metrics"]["test"]) == {"choice_accuracy", "exact_match"}
    assert record["score"] == record["metrics"]["validation"]["choice_accuracy"]


def test_a_custom_generation_file_with_candidate_columns_trains(compose_cfg: Callable, tmp_path: Path) -> None:
    rows = [(f"copy: {a} {b} =", f" {a} {b}") for a in "abcdef" for b in "abcdef"]
    frame = pd.DataFrame({"q": [p for p, _ in rows], "a": [a for _, a in rows]})
    frame["c1"] = [a for _, a in rows]
    frame["c2"] = [" " + a.strip()[::-1] + "x" for _, a in rows]  # never the gold answer
    path = tmp_path / "copies.parquet"
    frame.to_parquet(path)
    cfg = compose_cfg(
        "experiment=none",
        "backbone=tiny_llama",
        "peft=lora",
        "debug=smoke",
        "task=custom",
        f"task.train={path}",
        "task.type=generation",
        "task.text=q",
        "task.label=a",
        "task.choices=[c1,c2]",
        "task.max_answer_tokens=4",
    )
    job = TrainingJob.from_config(cfg)
    assert (job.task.name, job.task.choice_columns, job.task.max_answer_tokens) == ("copies", ("c1", "c2"), 4)
    record = train_and_evaluate(job, tmp_path / "run")
    assert record["status"] == "ok" and set(record["metrics"]["test"]) == {"choice_accuracy", "exact_match"}
