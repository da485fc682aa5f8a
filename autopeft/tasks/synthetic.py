"""Synthetic generation tasks made from a seed: no file is shipped, every split is drawn on demand.

The ``reverse`` generator (the ``reverse`` and ``reverse_choice`` tasks) writes short strings of
letters and asks for them reversed (or copied), one letter a token::

    prompt "reverse: d a c b ="   answer " b c a d"

The letters are separated by spaces because the offline byte-level BPE tokenizer of the tiny
decoders (:mod:`autopeft.training.offline_tokenizer`) has a token for each space-and-letter pair
but merges bare letters into unpredictable chunks (``abcdefgh`` -> ``ab c d e f gh``), which would
make reversing a task about the tokenizer instead of about the model. The answer starts with the
space that separates it from the prompt, as answers follow prompts in running text; exact match
strips it (:func:`autopeft.tasks.metrics.normalise_answer`).

Every string occurs in one split only (train, validation and test are drawn together without
repetition), so the test score measures reversing unseen strings, not recall. With ``choices`` =
k >= 2 every row also lists k candidate answers, the gold one among k - 1 distractors (the copy,
rotations, shuffles, other strings of the same length), for scoring by answer log-likelihood.
The same options and seed give the same rows on every machine (Python's ``random.Random``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from typing import Any

from autopeft.errors import ConfigError, allowed_list, check_known_keys, did_you_mean

#: Bump when the rows a generator makes for given options change, so tokenised caches are rebuilt.
GENERATOR_VERSION = 1

#: The operations the ``reverse`` generator asks for.
OPERATIONS = ("reverse", "copy")

#: The options of the ``reverse`` generator and their defaults.
REVERSE_DEFAULTS: dict[str, Any] = {
    "operation": "reverse",
    "train_size": 2000,
    "validation_size": 200,
    "test_size": 200,
    "seed": 0,
    "min_length": 3,
    "max_length": 6,
    "alphabet": "abcdefgh",
    "choices": 0,
}

#: Generator name -> its options with their defaults.
GENERATORS: dict[str, dict[str, Any]] = {"reverse": REVERSE_DEFAULTS}

#: The columns a generator's rows have (``choices`` only with ``choices`` >= 2).
PROMPT, ANSWER, CHOICES = "prompt", "answer", "choices"

#: Above this many possible strings, distinct strings are drawn by rejection instead of enumerated.
_ENUMERATE_UP_TO = 200_000


def _fail(task: str, key: str, message: str) -> None:
    raise ConfigError(f"task {task!r}: task.synthetic.{key} {message}")


def _int(task: str, options: Mapping[str, Any], key: str, low: int) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(task, key, f"must be an integer >= {low}, got {value!r}")
    return value


def check_options(task: str, generator: str, options: Any) -> dict[str, Any]:
    """The generator's options, defaults filled in, after checking every one.

    Args:
        task: The task's name (for messages).
        generator: The generator's name (``TaskSpec.path`` of a synthetic task).
        options: ``TaskSpec.synthetic``: a mapping of the generator's options (missing ones take
            the defaults).

    Raises:
        ConfigError: One line naming the bad option, its value and what is allowed.

    """
    if generator not in GENERATORS:
        raise ConfigError(
            f"task {task!r}: task.path={generator!r} names no synthetic generator"
            f"{did_you_mean(generator, GENERATORS)}; allowed: {allowed_list(GENERATORS)}"
        )
    if not isinstance(options, Mapping):
        raise ConfigError(f"task {task!r}: task.synthetic must be a mapping of generator options, got {options!r}")
    try:
        check_known_keys(options, GENERATORS[generator], "task.synthetic")
    except ConfigError as err:
        raise ConfigError(f"task {task!r}: {err}") from None
    merged = {**GENERATORS[generator], **options}
    if merged["operation"] not in OPERATIONS:
        _fail(
            task,
            "operation",
            f"is {merged['operation']!r}{did_you_mean(str(merged['operation']), OPERATIONS)}; "
            f"allowed: {allowed_list(OPERATIONS)}",
        )
    for key in ("train_size", "validation_size", "test_size"):
        _int(task, merged, key, 1)
    _int(task, merged, "seed", 0)
    shortest = _int(task, merged, "min_length", 1)
    longest = _int(task, merged, "max_length", shortest)
    alphabet = merged["alphabet"]
    if (
        not isinstance(alphabet, str)
        or len(set(alphabet)) != len(alphabet)
        or len(alphabet) < 2
        or any(c.isspace() for c in alphabet)
    ):
        _fail(task, "alphabet", f"must be a string of at least 2 distinct non-space characters, got {alphabet!r}")
    choices = merged["choices"]
    if isinstance(choices, bool) or not isinstance(choices, int) or choices == 1 or choices < 0:
        _fail(task, "choices", f"must be 0 (free generation) or an integer >= 2 (multiple choice), got {choices!r}")
    if choices > len(alphabet) ** shortest:
        _fail(
            task,
            "choices",
            f"is {choices}, more than the {len(alphabet) ** shortest} strings of min_length {shortest} "
            f"over {alphabet!r} that could serve as distinct choices",
        )
    total = merged["train_size"] + merged["validation_size"] + merged["test_size"]
    space = _space_size(len(alphabet), shortest, longest)
    if total > space:
        _fail(
            task,
            "train_size",
            f"+ validation_size + test_size = {total} distinct strings, but only {space} strings of "
            f"length {shortest}..{longest} over {alphabet!r} exist; lower the sizes or lengthen the strings",
        )
    return merged


def _space_size(letters: int, shortest: int, longest: int) -> int:
    return sum(letters**n for n in range(shortest, longest + 1))


def _distinct_strings(options: Mapping[str, Any], count: int, rng: random.Random) -> list[str]:
    """``count`` different strings, in a seeded order, each of a length drawn uniformly.

    The length comes first, so that short strings are not drowned by the many more long ones;
    a length whose strings are all taken drops out of the draw. A length with few strings is
    enumerated and dealt from a shuffled pool; one with many is drawn letter by letter, a taken
    string drawn again (rarely: at most half of such a length's strings can be taken, since a
    pool is used whenever the count asked for comes near its size).
    """
    alphabet = options["alphabet"]
    sizes = {n: len(alphabet) ** n for n in range(options["min_length"], options["max_length"] + 1)}
    pools: dict[int, list[str]] = {}
    taken: dict[int, set[str]] = {n: set() for n in sizes}
    out: list[str] = []
    while len(out) < count:
        open_lengths = [n for n in sizes if len(taken[n]) < sizes[n]]
        length = rng.choice(open_lengths)
        if sizes[length] <= _ENUMERATE_UP_TO and (length in pools or 2 * count >= sizes[length]):
            if length not in pools:
                pool = ["".join(letters) for letters in itertools.product(alphabet, repeat=length)]
                rng.shuffle(pool)
                pools[length] = [text for text in pool if text not in taken[length]]
            text = pools[length].pop()
        else:
            text = "".join(rng.choice(alphabet) for _ in range(length))
            if text in taken[length]:
                continue
        taken[length].add(text)
        out.append(text)
    return out


def _spaced(letters: str) -> str:
    return " ".join(letters)


def _distractors(gold: str, source: str, k: int, alphabet: str, rng: random.Random) -> list[str]:
    """``k`` strings of ``gold``'s length, all different from it and from each other."""
    candidates = [source, *(gold[i:] + gold[:i] for i in range(1, len(gold)))]
    shuffled = list(gold)
    rng.shuffle(shuffled)
    candidates.append("".join(shuffled))
    rng.shuffle(candidates)
    out: list[str] = []
    for text in candidates:
        if text != gold and text not in out and len(out) < k:
            out.append(text)
    while len(out) < k:  # palindromes and short strings: other strings of the same length
        text = "".join(rng.choice(alphabet) for _ in range(len(gold)))
        if text != gold and text not in out:
            out.append(text)
    return out


def reverse_rows(options: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of the ``reverse`` generator's three splits (see the module docstring).

    Args:
        options: Checked options (:func:`check_options`).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``; each row has ``prompt`` and
        ``answer``, and ``choices`` (the gold answer among them) when ``choices`` >= 2.

    """
    rng = random.Random(options["seed"])
    sizes = {"train": options["train_size"], "validation": options["validation_size"], "test": options["test_size"]}
    strings = _distinct_strings(options, sum(sizes.values()), rng)
    # Short lengths run out first in the draw: shuffled, every split gets the same mix of lengths.
    rng.shuffle(strings)
    operation, k = options["operation"], options["choices"]
    rows: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for split, size in sizes.items():
        rows[split] = []
        for text in strings[start : start + size]:
            gold = text[::-1] if operation == "reverse" else text
            row: dict[str, Any] = {PROMPT: f"{operation}: {_spaced(text)} =", ANSWER: f" {_spaced(gold)}"}
            if k:
                options_ = _distractors(gold, text, k - 1, options["alphabet"], rng)
                options_.insert(rng.randrange(k), gold)
                row[CHOICES] = [f" {_spaced(c)}" for c in options_]
            rows[split].append(row)
        start += size
    return rows


def synthetic_rows(task: str, generator: str, options: Any) -> dict[str, list[dict[str, Any]]]:
    """The rows of every split of a synthetic task, drawn from its generator and options.

    Raises:
        ConfigError: On an unknown generator or a bad option (:func:`check_options`).

    """
    checked = check_options(task, generator, options)
    return _MAKERS[generator](checked)


#: Generator name -> the function that draws its rows (its options: :data:`GENERATORS`).
_MAKERS = {"reverse": reverse_rows}
