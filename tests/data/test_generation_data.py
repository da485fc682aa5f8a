"""Encoding generation rows (autopeft/data/generation.py): answer-only labels, truncation, padding sides, choices."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from autopeft.data.cache import Tokenisation, tokenize_splits
from autopeft.data.encoding import make_collator, make_encoder
from autopeft.data.generation import IGNORE, GenerationCollator, special_prefix
from autopeft.errors import ConfigError
from autopeft.tasks.registry import get_task
from autopeft.training.offline_tokenizer import EOS, standin_bpe_tokenizer


@pytest.fixture(scope="module")
def tok() -> Any:
    """The offline byte-level BPE of the tiny decoders (no BOS; EOS 1, pad 0)."""
    return standin_bpe_tokenizer(512)


def bos_tokenizer() -> Any:
    """The offline BPE with Llama's convention instead: a BOS before every text, no EOS after it."""
    base = standin_bpe_tokenizer(512)
    inner = Tokenizer.from_str(base.backend_tokenizer.to_str())
    inner.post_processor = processors.TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=EOS, eos_token=EOS, pad_token="<|pad|>")


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_rows(spec: Any, tokenizer: Any, rows: list[dict], max_length: int = 64) -> list[dict]:
    batch = {key: [row[key] for row in rows] for key in rows[0]}
    out = make_encoder(spec, tokenizer, max_length)(batch)
    return [{key: values[i] for key, values in out.items()} for i in range(len(rows))]


ROWS = [
    {"prompt": "reverse: a b c =", "answer": " c b a"},
    {"prompt": "reverse: d e =", "answer": " e d"},
]


def test_labels_cover_the_answer_and_eos_only(tok: Any) -> None:
    spec = get_task("reverse")
    first = encode_rows(spec, tok, ROWS)[0]
    prompt, answer = ids(tok, ROWS[0]["prompt"]), ids(tok, ROWS[0]["answer"])
    assert special_prefix(tok) == []  # the offline BPE appends EOS instead of prepending a BOS
    assert first["input_ids"] == [*prompt, *answer, tok.eos_token_id]
    assert first["labels"] == [IGNORE] * len(prompt) + [*answer, tok.eos_token_id]
    assert first["prompt_length"] == len(prompt) and first["answer"] == " c b a"
    assert first["attention_mask"] == [1] * len(first["input_ids"])


def test_a_bos_tokenizer_gets_its_bos_before_the_prompt() -> None:
    tokenizer = bos_tokenizer()
    assert special_prefix(tokenizer) == [1]
    first = encode_rows(get_task("reverse"), tokenizer, ROWS)[0]
    prompt = ids(tokenizer, ROWS[0]["prompt"])
    assert first["input_ids"][: len(prompt) + 1] == [1, *prompt] and first["prompt_length"] == len(prompt) + 1
    assert first["labels"][: len(prompt) + 1] == [IGNORE] * (len(prompt) + 1)


def test_long_answers_are_cut_without_eos_and_long_prompts_keep_their_end(tok: Any) -> None:
    spec = dataclasses.replace(get_task("reverse"), max_answer_tokens=2)
    first = encode_rows(spec, tok, ROWS)[0]
    assert first["labels"][first["prompt_length"] :] == ids(tok, " c b a")[:2]  # cut: no EOS
    long = [{"prompt": "reverse: " + " ".join("abcdefgh" * 4) + " =", "answer": " x"}]
    row = encode_rows(get_task("reverse"), tok, long, max_length=12)[0]
    answer = [*ids(tok, " x"), tok.eos_token_id]
    assert len(row["input_ids"]) == 12 and row["input_ids"][-len(answer) :] == answer
    prompt = ids(tok, long[0]["prompt"])
    # The prompt keeps its end, which the answer continues.
    assert row["input_ids"][: row["prompt_length"]] == prompt[-row["prompt_length"] :]
    with pytest.raises(ConfigError, match=r"data.max_length=1 leaves no room for a prompt and an answer token"):
        make_encoder(spec, tok, 1)


def test_the_collator_pads_training_inputs_right_and_prompts_left(tok: Any) -> None:
    spec = get_task("reverse")
    assert isinstance(make_collator(spec, tok), GenerationCollator)
    features = encode_rows(spec, tok, ROWS)
    batch = make_collator(spec, tok)(features)
    long, short = features
    width = len(long["input_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, width)
    pad = width - len(short["input_ids"])
    assert batch["input_ids"][1, -pad:].tolist() == [tok.pad_token_id] * pad  # right padding
    assert batch["labels"][1, -pad:].tolist() == [IGNORE] * pad
    assert batch["attention_mask"][1].tolist() == [1] * (width - pad) + [0] * pad
    left = long["prompt_length"] - short["prompt_length"]
    assert batch["prompt_ids"][1].tolist() == [tok.pad_token_id] * left + short["input_ids"][: short["prompt_length"]]
    assert batch["prompt_mask"][1].tolist() == [0] * left + [1] * short["prompt_length"]
    assert batch["answers"] == [" c b a", " e d"]


def test_choices_are_flattened_with_their_rows_and_the_gold_index(tok: Any) -> None:
    spec = get_task("reverse_choice")
    rows = [
        {"prompt": "reverse: a b =", "answer": " b a", "choices": [" a b", " b a"]},
        {"prompt": "reverse: c d e =", "answer": " e d c", "choices": [" e d c", " c d e", " d c e"]},
    ]
    batch = GenerationCollator(tok)(encode_rows(spec, tok, rows))
    assert batch["gold_choice"].tolist() == [1, 0] and batch["choice_rows"].tolist() == [0, 0, 1, 1, 1]
    prompt = ids(tok, rows[1]["prompt"])
    third = batch["choice_labels"][4]
    assert third[third != IGNORE].tolist() == [*ids(tok, " d c e"), tok.eos_token_id]
    assert batch["choice_ids"][4, : len(prompt)].tolist() == prompt
    with pytest.raises(ConfigError, match=r"the answer ' x' is not one of the row's choices"):
        encode_rows(spec, tok, [{**rows[0], "answer": " x"}])


def test_the_cache_stores_generation_rows_and_a_generator_change_misses(tok: Any, tmp_path: Path) -> None:
    spec = dataclasses.replace(
        get_task("reverse"), synthetic={**get_task("reverse").synthetic, "train_size": 30, "test_size": 10}
    )
    tokenisation = Tokenisation(max_length=32)
    data, hit = tokenize_splits(spec, tok, tokenisation, tmp_path)
    assert not hit and len(data["train"]) == 30 and len(data["test"]) == 10
    assert data["train"].features["labels"].feature.dtype == "int64"
    assert tokenize_splits(spec, tok, tokenisation, tmp_path)[1]  # the same spec hits
    other = dataclasses.replace(spec, synthetic={**spec.synthetic, "seed": 1})
    assert not tokenize_splits(other, tok, tokenisation, tmp_path)[1]
