"""Generation exports: every tiny decoder family's LoRA (and a DoRA) loads in peft as the family's
``AutoModelForCausalLM`` with our next-token logits and our greedy tokens; the merged weights load
as a plain causal LM that generates the same; an untied LM head travels with the adapter exactly
when ``from_pretrained`` would not give it; ``load_export(...).predict`` writes the greedy answers
training's validation scores and picks the likeliest of given candidates; the model card's
generation snippet writes those answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
import transformers
from omegaconf import DictConfig
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

from autopeft.data.generation import GenerationCollator, make_generation_encoder
from autopeft.export import card as card_module
from autopeft.export.load import load_export
from autopeft.export.predictor import Predictor
from autopeft.export.save import save_export
from autopeft.tasks.registry import task_from_config
from autopeft.training.model import AutoPeftModel
from autopeft.training.offline_tokenizer import standin_bpe_tokenizer
from tests.export.libraries import base_backbone, exported
from tests.helpers import TINY_DECODERS

#: A round trip through another library: the same arithmetic, in another order.
ATOL = 1e-5

#: Prompts and answers of different lengths, so that batches are padded on both sides.
ROWS = [
    {"prompt": "reverse: a b c d e =", "answer": " e d c b a", "choices": [" a b c d e", " e d c b a", " e d c a b"]},
    {"prompt": "reverse: f g =", "answer": " g f", "choices": [" f g", " g f", " f f"]},
    {"prompt": "reverse: h a b c =", "answer": " c b a h", "choices": [" c b a h", " h a b c", " c a b h"]},
]

#: Families whose tiny config ties the LM head to the input embeddings (the others have their own).
TIED = ("tiny_gemma", "tiny_gemma2", "tiny_gemma3", "tiny_gpt2")

#: (backbone, DoRA): every decoder family with LoRA, and DoRA on GPT-2's Conv1D projections.
CASES = [
    *[(name, False) for name in TINY_DECODERS],
    ("tiny_gpt2", True),
]


def _cfg(tiny_cfg: Callable, backbone: str, *extra: str, dora: bool = False, task: str = "reverse") -> DictConfig:
    """A generation run on ``backbone``: LoRA (or DoRA) on every projection at rank 4."""
    return tiny_cfg(
        "mode=train",
        f"backbone={backbone}",
        f"task={task}",
        "peft=dora" if dora else "peft=lora",
        "peft.sa_size=0",
        "peft.lora_targets=all",
        "peft.lora_rank=4",
        *extra,
    )


def _batch(model: AutoPeftModel, cfg: DictConfig, tokenizer: Any) -> dict[str, Any]:
    """:data:`ROWS` as training batches them: prompt and answer padded on the right, prompts on the left."""
    task = task_from_config(cfg.task)
    encode = make_generation_encoder(task, tokenizer, int(cfg.data.max_length))
    encoded = encode({key: [row[key] for row in ROWS] for key in (task.label_column, *task.text_columns)})
    batch = GenerationCollator(tokenizer)([{k: v[i] for k, v in encoded.items()} for i in range(len(ROWS))])
    assert (batch["attention_mask"] == 0).any() and (batch["prompt_mask"] == 0).any()  # padded both ways
    return batch


def _until_eos(rows: list[list[int]], eos: int) -> list[list[int]]:
    """Each row's tokens before its first EOS (transformers' generate pads finished rows after it)."""
    return [row[: row.index(eos)] if eos in row else row for row in rows]


def _logit_diff(theirs: torch.nn.Module, model: AutoPeftModel, batch: dict[str, Any]) -> float:
    """Max abs difference of next-token logits over the real tokens of the right-padded batch."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        got = theirs(input_ids=ids, attention_mask=mask).logits.float()
        expected = model.eval()(ids, mask).float()
    real = mask.bool()  # padding's logits are nobody's prediction
    return (got[real] - expected[real]).abs().max().item()


def _generated(theirs: torch.nn.Module, batch: dict[str, Any], entry: dict[str, Any]) -> list[list[int]]:
    """transformers' greedy generation from the left-padded prompts, with the manifest's settings."""
    prompts = batch["prompt_ids"]
    with torch.no_grad():
        out = theirs.generate(
            input_ids=prompts,
            attention_mask=batch["prompt_mask"],
            max_new_tokens=entry["max_new_tokens"],
            do_sample=False,
            eos_token_id=entry["eos_token_id"],
            pad_token_id=entry["pad_token_id"],
        )
    return _until_eos(out[:, prompts.shape[1] :].tolist(), entry["eos_token_id"])


def _card_answers(card: str, section: str, model: torch.nn.Module, tokenizer: Any, prompts: list[str]) -> list[str]:
    """Run the generation lines of the model card's ``section`` code block on ``prompts``."""
    block = card.split(section, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = block[block.index("prompts = ") :].replace('["..."]', repr(prompts), 1)
    scope: dict[str, Any] = {"model": model, "tokenizer": tokenizer, "torch": torch}
    exec(code, scope)  # the card's own snippet, run on our model
    return scope["answers"]


@pytest.mark.parametrize(("name", "dora"), CASES)
def test_a_generation_export_loads_in_peft_as_a_causal_lm_with_the_same_logits_and_tokens(
    tiny_cfg: Callable, tmp_path: Path, name: str, dora: bool
) -> None:
    cfg = _cfg(tiny_cfg, name, dora=dora)
    model, path, _ = exported(cfg, tmp_path / "export")
    tied = name in TIED
    assert model.head.tied is tied
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]
    assert entry["written"] and entry["use_dora"] is dora and entry["auto_class"] == "AutoModelForCausalLM"
    # AutoPEFT drew the untied head of a random-weight backbone: peft must restore it.
    assert entry["lm_head_saved"] is not tied
    config = json.loads((path / "peft" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["use_dora"] is dora
    assert config["modules_to_save"] == (None if tied else ["lm_head"])
    prefix = {"tiny_gpt2": "transformer.h", "tiny_gpt_neox": "gpt_neox.layers"}.get(name, "model.layers")
    assert all(re.fullmatch(rf"{re.escape(prefix)}\.[01]\..+", t) for t in config["target_modules"])
    tensors = load_file(path / "peft" / "adapter_model.safetensors")
    assert ("base_model.model.lm_head.weight" in tensors) is not tied

    base = base_backbone(cfg)
    base.model.save_pretrained(tmp_path / "base")  # as the card's BACKBONE note builds it
    causal = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert type(causal).__name__ == entry["model_class"]
    # Gemma 2's final-logit soft-capping is applied by its causal LM's forward, with our cap.
    assert getattr(causal.config, "final_logit_softcapping", None) == model.head.softcap
    assert (model.head.softcap is not None) is (name == "tiny_gemma2")
    peft_model = peft.PeftModel.from_pretrained(causal, str(path / "peft")).eval()
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    adapted = {n for n, m in peft_model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert adapted == {f"base_model.model.{t}" for t in config["target_modules"]}
    batch = _batch(model, cfg, base.tokenizer)
    diff = _logit_diff(peft_model, model, batch)
    print(f"peft causal-LM round trip, {name} {'DoRA' if dora else 'LoRA'}: max abs logit diff {diff:.3g}")
    assert diff < ATOL
    with peft_model.disable_adapter():  # the adapter is what loaded
        assert _logit_diff(peft_model, model, batch) > 1e-3
    ours = model.greedy_decode(
        batch["prompt_ids"], batch["prompt_mask"], entry["max_new_tokens"], entry["eos_token_id"]
    )
    assert any(ours) and _generated(peft_model, batch, entry) == ours
    card = (path / "README.md").read_text()
    assert "AutoModelForCausalLM.from_pretrained(BACKBONE)" in card and "model.generate(" in card
    prompts = [row["prompt"] for row in ROWS]
    answers = _card_answers(card, "### peft", peft_model, base.tokenizer, prompts)
    assert answers == base.tokenizer.batch_decode(ours, skip_special_tokens=True)


def _saved_llama(folder: Path, causal: bool) -> Path:
    """A tiny untied Llama checkpoint with the offline tokenizer: the causal LM (a head), or its base model alone."""
    config = LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    config.vocab_size, config.tie_word_embeddings = 512, False
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 0, 1, 1
    torch.manual_seed(3)
    (LlamaForCausalLM if causal else LlamaModel)(config).save_pretrained(folder)
    standin_bpe_tokenizer().save_pretrained(folder)
    return folder


def test_an_untied_head_travels_with_the_adapter_only_when_from_pretrained_would_not_give_it(
    tiny_cfg: Callable, tmp_path: Path
) -> None:
    """A checkpoint's own head is not copied; a checkpoint saved without one gets AutoPEFT's, which is."""
    checkpoint = _saved_llama(tmp_path / "causal", causal=True)
    cfg = _cfg(tiny_cfg, "custom", f"backbone.name_or_path={checkpoint}")
    model, path, _ = exported(cfg, tmp_path / "export")
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]
    assert not entry["lm_head_saved"] and entry["base_model_name_or_path"] == str(checkpoint)
    assert json.loads((path / "peft" / "adapter_config.json").read_text())["modules_to_save"] is None
    assert not any("lm_head" in key for key in load_file(path / "peft" / "adapter_model.safetensors"))
    assert f"AutoModelForCausalLM.from_pretrained({json.dumps(str(checkpoint))})" in (path / "README.md").read_text()
    peft_model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(checkpoint), str(path / "peft")
    ).eval()
    diff = _logit_diff(peft_model, model, _batch(model, cfg, base_backbone(cfg).tokenizer))
    print(f"peft causal-LM round trip, Llama checkpoint with its own head: max abs logit diff {diff:.3g}")
    assert diff < ATOL

    headless = _saved_llama(tmp_path / "base", causal=False)
    cfg = _cfg(tiny_cfg, "custom", f"backbone.name_or_path={headless}")
    model, path, _ = exported(cfg, tmp_path / "export-headless")
    assert json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]["lm_head_saved"]
    assert json.loads((path / "peft" / "adapter_config.json").read_text())["modules_to_save"] == ["lm_head"]
    peft_model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(headless), str(path / "peft")
    ).eval()
    assert _logit_diff(peft_model, model, _batch(model, cfg, base_backbone(cfg).tokenizer)) < ATOL


@pytest.mark.parametrize(("name", "dora"), [("tiny_llama", True), ("tiny_gemma2", False)])
def test_merged_generation_weights_load_as_a_plain_causal_lm_that_generates_the_same(
    tiny_cfg: Callable, tmp_path: Path, name: str, dora: bool
) -> None:
    """Llama's untied head (AutoPEFT's) is written; Gemma 2's is tied to the merged embeddings and soft-capped."""
    cfg = _cfg(tiny_cfg, name, dora=dora)
    model, path, _ = exported(cfg, tmp_path / "export")
    save_export(model, cfg, path, merged=True)
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["merged"]
    assert entry["written"] and entry["auto_class"] == "AutoModelForCausalLM" and entry["merged_lora_modules"] > 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(path / "merged").eval()
    assert type(merged).__name__ == entry["model_class"]
    assert not any("lora" in n for n, _ in merged.named_parameters())  # a plain model
    tied = merged.get_output_embeddings().weight.data_ptr() == merged.get_input_embeddings().weight.data_ptr()
    assert tied is model.head.tied
    tokenizer = transformers.AutoTokenizer.from_pretrained(path / "merged")
    batch = _batch(model, cfg, tokenizer)
    diff = _logit_diff(merged, model, batch)
    print(f"merged causal-LM round trip, {name} {'DoRA' if dora else 'LoRA'}: max abs logit diff {diff:.3g}")
    assert diff < ATOL
    eos = entry["eos_token_id"]
    ours = model.greedy_decode(batch["prompt_ids"], batch["prompt_mask"], entry["max_new_tokens"], eos)
    # generation_config.json holds AutoPEFT's decoding: generate() needs the prompts alone.
    with torch.no_grad():
        out = merged.generate(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"])
    assert any(ours) and _until_eos(out[:, batch["prompt_ids"].shape[1] :].tolist(), eos) == ours
    prompts = [row["prompt"] for row in ROWS]
    card = (path / "README.md").read_text()
    expected = tokenizer.batch_decode(ours, skip_special_tokens=True)
    assert _card_answers(card, "### transformers, merged weights", merged, tokenizer, prompts) == expected
    assert load_export(path).predict(prompts) == expected


def test_predict_writes_the_greedy_answers_validation_scores(
    tiny_cfg: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tiny_cfg, "tiny_llama")
    model, path, _ = exported(cfg, tmp_path / "export")
    predictor = load_export(path)
    tokenizer = predictor.tokenizer
    batch = _batch(model, cfg, tokenizer)
    # What training's validation writes (PeftLightningModule._collect_generation) with the in-memory model.
    eos = tokenizer.eos_token_id
    ids = model.greedy_decode(batch["prompt_ids"], batch["prompt_mask"], predictor.task.max_answer_tokens, eos)
    expected = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert len(set(expected)) == len(ROWS)  # distinct answers: a row mix-up would show
    prompts = [row["prompt"] for row in ROWS]
    assert predictor.predict(prompts) == expected
    assert predictor.predict(prompts, batch_size=1) == expected  # padding does not change an answer
    assert predictor.predict([{"prompt": p, "answer": "ignored"} for p in prompts]) == expected
    real_prompts = [row[m.bool()].tolist() for row, m in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]
    assert [f["input_ids"] for f in predictor.encode(prompts)] == real_prompts
    # The task's answer budget bounds the answer; a shorter budget writes its beginning.
    short = Predictor(model, replace(predictor.task, max_answer_tokens=2), tokenizer, predictor.max_length)
    assert short.predict(prompts) == tokenizer.batch_decode([row[:2] for row in ids], skip_special_tokens=True)
    # A model that writes token 5 twice, then EOS, then 6 forever: the answer stops at EOS, which it omits.
    steps = iter(range(100))

    def head(hidden: torch.Tensor) -> torch.Tensor:
        token = (5, 5, eos)[step] if (step := next(steps)) < 3 else 6
        return torch.nn.functional.one_hot(torch.full(hidden.shape[:-1], token), 512).float()

    monkeypatch.setattr(predictor.model.head, "forward", head)
    assert predictor.predict(prompts) == [tokenizer.decode([5, 5])] * len(ROWS)
    with pytest.raises(TypeError, match="pass a list of inputs"):
        predictor.predict(prompts[0])
    with pytest.raises(ValueError, match=r"input 1 is 3; generation task 'reverse' takes a prompt string"):
        predictor.predict(["reverse: a =", 3])
    with pytest.raises(ValueError, match=r"input 0 lacks column\(s\) 'prompt'"):
        predictor.predict([{"question": "reverse: a ="}])
    with pytest.raises(ValueError, match="'reverse' is a generation task: predict"):
        predictor.scores(prompts)


def test_predict_picks_the_likeliest_candidate_as_choice_accuracy_scores(tiny_cfg: Callable, tmp_path: Path) -> None:
    cfg = _cfg(tiny_cfg, "tiny_gpt2", task="reverse_choice")
    model, path, _ = exported(cfg, tmp_path / "export")
    predictor = load_export(path)
    task, tokenizer = predictor.task, predictor.tokenizer
    assert task.choice_columns == ("choices",)
    # Training's choice scoring, on the in-memory model: each candidate's summed log-likelihood.
    encoded = make_generation_encoder(task, tokenizer, predictor.max_length)(
        {key: [row[key] for row in ROWS] for key in ("prompt", "answer", "choices")}
    )
    batch = GenerationCollator(tokenizer)([{k: v[i] for k, v in encoded.items()} for i in range(len(ROWS))])
    with torch.no_grad():
        scores = model.answer_log_likelihoods(batch["choice_ids"], batch["choice_mask"], batch["choice_labels"])
    picks = [int(scores[batch["choice_rows"] == r].argmax()) for r in range(len(ROWS))]
    expected = [row["choices"][k] for row, k in zip(ROWS, picks, strict=True)]
    assert predictor.predict([{"prompt": r["prompt"], "choices": r["choices"]} for r in ROWS]) == expected
    assert predictor.predict([(r["prompt"], *r["choices"]) for r in ROWS]) == expected
    # The pick is a candidate's text, not its place: reversed candidates give the same picks.
    assert predictor.predict([(r["prompt"], *r["choices"][::-1]) for r in ROWS]) == expected
    # Without candidates the same task writes its greedy answer; both kinds mix in one call, in order.
    greedy = tokenizer.batch_decode(
        model.greedy_decode(batch["prompt_ids"], batch["prompt_mask"], task.max_answer_tokens, tokenizer.eos_token_id),
        skip_special_tokens=True,
    )
    mixed = [
        ROWS[0]["prompt"],
        {"prompt": ROWS[1]["prompt"], "choices": ROWS[1]["choices"]},
        {"prompt": ROWS[2]["prompt"]},
    ]
    assert predictor.predict(mixed) == [greedy[0], expected[1], greedy[2]]
    assert predictor.encode([(ROWS[1]["prompt"], " g f")])[0]["choice_ids"] == [encoded["choice_ids"][1][1]]
    with pytest.raises(ValueError, match="input 0 has no candidate answers"):
        predictor.predict([{"prompt": "reverse: a b =", "choices": []}])


def test_generation_with_modules_peft_lacks_is_refused_for_them_not_for_pooling(
    tiny_cfg: Callable, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_cfg, "tiny_llama", "peft.sa_size=4")
    _, path, _ = exported(cfg, tmp_path / "export")
    entry = json.loads((path / "autopeft.json").read_text())["libraries"]["peft"]
    assert not entry["written"] and "serial adapters (peft has no bottleneck adapters)" in entry["reason"]
    assert "pooling" not in entry["reason"] and not (path / "peft").exists()


def test_the_cards_generation_snippet_puts_the_prefix_first_and_pads_on_the_left() -> None:
    """A tokenizer with a BOS prefix (Llama's, Gemma's): the snippet's prompt ids start with it, padded on the left."""
    entry = {"prompt_prefix_ids": [1], "pad_token_id": 0, "eos_token_id": 1, "max_new_tokens": 4}
    lines = card_module._generation_lines(entry, settings=True)
    tokenizer = standin_bpe_tokenizer()
    calls: list[dict[str, torch.Tensor]] = []

    class Recorder:
        def generate(self, **inputs: torch.Tensor) -> torch.Tensor:
            calls.append(inputs)
            return torch.cat([inputs["input_ids"], torch.full((len(inputs["input_ids"]), 1), 7)], dim=1)

    prompts = ["reverse: a b c =", "reverse: d ="]
    code = "\n".join(lines).replace('["..."]', repr(prompts), 1)
    scope: dict[str, Any] = {"model": Recorder(), "tokenizer": tokenizer, "torch": torch}
    exec(code, scope)  # the card's own snippet
    ids = [[1, *tokenizer(p, add_special_tokens=False)["input_ids"]] for p in prompts]
    width = max(map(len, ids))
    assert calls[0]["input_ids"].tolist() == [[0] * (width - len(i)) + i for i in ids]
    assert calls[0]["attention_mask"].tolist() == [[0] * (width - len(i)) + [1] * len(i) for i in ids]
    assert calls[0]["max_new_tokens"] == 4 and calls[0]["do_sample"] is False
    assert scope["answers"] == [tokenizer.decode([7])] * 2
