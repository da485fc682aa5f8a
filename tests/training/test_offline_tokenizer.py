"""The byte-level BPE trained offline on the stand-in text: deterministic, lossless, padded on the right."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from autopeft.errors import ConfigError
from autopeft.training import offline_tokenizer
from autopeft.training.backbones import load_backbone
from autopeft.training.offline_tokenizer import EOS, PAD, SEP, standin_bpe_tokenizer


def test_training_is_deterministic() -> None:
    first = offline_tokenizer._trained(300)
    offline_tokenizer._trained.cache_clear()
    assert offline_tokenizer._trained(300) == first


@pytest.mark.parametrize("text", ["A man is playing a guitar.", "naïve café, 100% 🙂\ttabs\nand lines", "  spaced  "])
def test_text_round_trips(text: str) -> None:
    tokenizer = standin_bpe_tokenizer()
    ids = tokenizer(text)["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id is None
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens_pairs_and_padding() -> None:
    tokenizer = standin_bpe_tokenizer(512)
    assert len(tokenizer) == 512
    assert (tokenizer.convert_ids_to_tokens([0, 1, 2])) == [PAD, EOS, SEP]
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.padding_side) == (PAD, EOS, "right")
    pair = tokenizer("The cat sat.", "A cat")["input_ids"]
    assert pair.count(tokenizer.sep_token_id) == 1 and pair[-1] == tokenizer.eos_token_id
    batch = tokenizer(["hi", "a longer sentence"], padding=True)
    assert set(batch) == {"input_ids", "attention_mask"}  # decoders take no segment ids
    short, long_ = batch["input_ids"]
    n = sum(batch["attention_mask"][0])
    assert short[n - 1] == tokenizer.eos_token_id and set(short[n:]) == {tokenizer.pad_token_id}
    assert len(short) == len(long_) and 0 not in long_


def test_frequent_words_become_single_tokens() -> None:
    tokenizer = standin_bpe_tokenizer()
    assert len(tokenizer.tokenize(" the")) == 1 and len(tokenizer.tokenize(" film")) <= 2


def test_too_small_a_vocabulary_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"backbone.tokenizer.vocab_size=100 must be an integer >= 259"):
        standin_bpe_tokenizer(100)


def test_a_bpe_tokenizer_entry_with_an_unknown_key_is_refused(compose_cfg: Callable) -> None:
    with pytest.raises(ConfigError, match=r"backbone.tokenizer"):
        load_backbone(compose_cfg("backbone=tiny_llama", "+backbone.tokenizer.vocab=9").backbone, weights=False)
