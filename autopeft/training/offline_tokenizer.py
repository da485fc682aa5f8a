"""A small byte-level BPE tokenizer trained on the embedded stand-in text, for offline decoders.

The random-weight decoders (``conf/backbone/tiny_*.yaml``) need a tokenizer that never comes
from the hub. This one is trained with the ``tokenizers`` library on the ``train.jsonl`` text
of the stand-in tasks shipped in ``autopeft/resources/standins``: byte-level, so every string
round-trips (no unknown token), with a vocabulary small enough for a tiny embedding table.
Training is deterministic (same files, same order; ties between merges are broken by the
pair, not by thread timing) and takes about 0.2 s; the result is kept per process.

Special tokens: ``<|pad|>`` (0, the pad token decoders usually lack), ``<|endoftext|>`` (1,
BOS and EOS) and ``<|sep|>`` (2, between a pair's segments). Every sequence ends with
``<|endoftext|>``, so a last-token head reads a token that has seen the whole input. Padding
is on the right: a causal model's real tokens never attend to the pads after them and keep
their positions, so a padded example's states equal its unpadded ones.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from autopeft.errors import ConfigError

PAD, EOS, SEP = "<|pad|>", "<|endoftext|>", "<|sep|>"
#: Smallest vocabulary that holds the 256 byte symbols and the special tokens.
MIN_VOCAB = 256 + 3
#: Text fields of the stand-in rows the tokenizer learns from.
_TEXT_FIELDS = ("sentence", "premise", "hypothesis")
#: Every n-th text of the stand-ins: about 4,000 sentences, ample for a few hundred merges and
#: five times faster to train on than all 33,000.
_STRIDE = 8


def _standin_text() -> list[str]:
    """Every ``_STRIDE``-th text field of the stand-in tasks' training rows, in a fixed order."""
    root = resources.files("autopeft") / "resources" / "standins"
    lines = []
    for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
        with (root / task / "train.jsonl").open(encoding="utf-8") as handle:
            for row in map(json.loads, handle):
                lines.extend(str(row[k]) for k in _TEXT_FIELDS if k in row)
    return lines[::_STRIDE]


@lru_cache(maxsize=4)
def _trained(vocab_size: int) -> str:
    """The trained tokenizer's JSON definition (a string: callers get fresh, independent copies)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, SEP],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_standin_text(), trainer=trainer)
    eos, sep = tokenizer.token_to_id(EOS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {EOS}:0",
        pair=f"$A:0 {SEP}:0 $B:1 {EOS}:1",
        special_tokens=[(EOS, eos), (SEP, sep)],
    )
    return tokenizer.to_str()


def standin_bpe_tokenizer(vocab_size: int = 512) -> Any:
    """A fast tokenizer trained on the stand-in text (see the module docstring).

    Args:
        vocab_size: Size of the vocabulary, special tokens included; at most the model's
            ``vocab_size``.

    Raises:
        ConfigError: If ``vocab_size`` cannot hold the byte alphabet and the special tokens.

    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ConfigError(
            f"backbone.tokenizer.vocab_size={vocab_size!r} must be an integer >= {MIN_VOCAB} "
            "(the 256 byte symbols and 3 special tokens)"
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained(vocab_size)),
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        sep_token=SEP,
        padding_side="right",
        # Decoders take no segment ids: the collator must not produce token_type_ids.
        model_input_names=["input_ids", "attention_mask"],
    )
