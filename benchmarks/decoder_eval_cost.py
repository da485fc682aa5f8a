"""What one low-fidelity evaluation of a decoder costs: seconds and peak GPU memory per PEFT preset.

A search on a decoder trains every candidate for one epoch (the paper's low fidelity), so its
budget is set by how long one such evaluation takes and how much GPU memory it needs. This
script measures it on the real shapes with random weights (``qwen2_5_0_5b_arch``,
``llama_3_2_1b_arch``: nothing is downloaded), through the project's own training path
(:func:`autopeft.training.train.train_and_evaluate` on a run config composed from ``conf/``, as
``python run.py mode=train`` would), for each PEFT preset in every layer (``--peft``: LoRA,
serial adapters, ...), in ``--precision`` (default ``bf16-mixed``), with and without
``trainer.gradient_checkpointing`` (``--gradient-checkpointing false true``).

The data is a custom task (``task=custom``) written to a work folder: ``--examples`` training
and ``--eval-examples`` validation and test rows of ``--seq`` or more words each, truncated by
``data.max_length`` to exactly ``--seq`` tokens, so every batch is full length. Each row reports
the whole evaluation (the wall clock of ``train_and_evaluate``: the backbone built, one epoch
with its validation pass, the test pass), the epoch alone (the record's ``train_seconds``), the
training throughput, and ``torch.cuda.max_memory_allocated`` over the evaluation (a random-weight
backbone is initialised on the CPU in every evaluation, as a search does, and that is counted). The first row's
configuration is run once untimed first (CUDA start-up, tokenisation cache), unless
``--no-warmup``. A preset the backbone refuses (serial adapters on decoders, until they are
supported) is a row saying so; an evaluation that runs out of memory is a row with status
``oom`` (``trainer.oom_retry`` is off, so the batch size is the one asked for).

Examples::

    python benchmarks/decoder_eval_cost.py          # GPU: both *_arch decoders, LoRA and SA, seq 256, 2,000 examples
    python benchmarks/decoder_eval_cost.py --gradient-checkpointing false true --batch-size 32
    python benchmarks/decoder_eval_cost.py --tiny   # CPU check: tiny_llama, tiny_qwen2, seq 32, 64 examples

Writes ``benchmarks/results/decoder_eval_cost.{md,json}`` (``--results-dir``; ``--tiny`` writes
nothing unless it is given).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from autopeft.errors import ConfigError  # noqa: E402
from autopeft.io import atomic_write_json, atomic_write_text  # noqa: E402
from autopeft.runtime import quiet_libraries  # noqa: E402
from autopeft.training.train import TrainingJob, train_and_evaluate  # noqa: E402
from benchmarks.common import compose_cfg  # noqa: E402

BACKBONES = ["qwen2_5_0_5b_arch", "llama_3_2_1b_arch"]
TINY_BACKBONES = ["tiny_llama", "tiny_qwen2"]
#: Words of the synthetic rows: common English words, each one token or more for the offline BPE
#: tokenizer, so a row of ``--seq`` words is at least ``--seq`` tokens long.
WORDS = (
    *("the", "film", "was", "good", "and", "bad", "with", "a", "story", "of", "people", "who", "go", "to"),
    *("see", "it", "in", "end", "but", "not", "all", "time", "love", "life", "great", "little", "long"),
    *("music", "action", "comedy", "drama", "world", "young", "family", "old"),
)


def write_task(folder: Path, examples: int, eval_examples: int, seq: int, seed: int = 0) -> list[str]:
    """Write the synthetic task's splits (JSON Lines) and return the Hydra overrides that name them.

    Labels alternate between two classes: the content is immaterial to the cost, and a model
    that sees both classes exercises the whole metric path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    generator = random.Random(seed)
    for split, rows in (("train", examples), ("validation", eval_examples), ("test", eval_examples)):
        lines = [
            json.dumps({"text": " ".join(generator.choices(WORDS, k=seq)), "label": f"class_{i % 2}"})
            for i in range(rows)
        ]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return [
        "task=custom",
        "task.name=decoder_eval_cost",
        f"task.train={folder / 'train.jsonl'}",
        f"task.validation={folder / 'validation.jsonl'}",
        f"task.test={folder / 'test.jsonl'}",
        "task.text=text",
        "task.label=label",
    ]


def overrides_for(
    args: argparse.Namespace, backbone: str, peft: str, checkpointing: bool, task: list[str], work: Path
) -> list[str]:
    """The run config of one row: one epoch over ``--examples`` rows of ``--seq`` tokens."""
    return [
        "experiment=none",
        "mode=train",
        f"backbone={backbone}",
        f"peft={peft}",
        *task,
        "fidelity=low",
        f"data.max_length={args.seq}",
        f"data.max_train_samples={args.examples}",
        f"data.max_eval_samples={args.eval_examples}",
        f"data.cache_dir={work / 'cache'}",
        f"output_root={work / 'outputs'}",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.eval_batch_size={args.eval_batch_size or args.batch_size}",
        f"trainer.precision={args.precision}",
        f"trainer.gradient_checkpointing={str(checkpointing).lower()}",
        "trainer.oom_retry=false",
        "trainer.save_weights=false",
        "trainer.progress_bar=false",
        f"seed={args.seed}",
        *args.override,
    ]


def _free_memory() -> None:
    """Release the previous evaluation's tensors so each row's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train and evaluate one configuration; its status, timings, throughput and peak GPU memory.

    A :class:`ConfigError` (a preset the backbone does not take) becomes a ``refused`` row.
    """
    _free_memory()
    try:
        job = TrainingJob.from_config(compose_cfg(overrides))
        started = time.perf_counter()
        with warnings.catch_warnings():
            # An epoch of fewer batches than trainer.log_every_n_steps (a --tiny run) is expected here.
            warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
            record = train_and_evaluate(job, run_dir)
    except ConfigError as err:
        return {"status": "refused", "reason": str(err)}
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "status": record["status"],
        "reason": record.get("reason"),
        "seconds": seconds,
        "train_seconds": record.get("train_seconds"),
        "samples_per_second": record.get("samples_per_second"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "train_examples": record.get("train_examples"),
        "precision": record.get("precision"),
        "configuration": record.get("configuration"),
        "paper_percent": record.get("params", {}).get("paper_percent"),
        "trainable_params": record.get("params", {}).get("trainable_params"),
        "score": record.get("score"),
    }


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table; a refused or failed row says why in its status cell."""
    lines = [
        "| backbone | peft | checkpointing | status | s / evaluation | s / epoch | train samples/s | peak GPU GiB "
        "| trainable params |",
        "|:--|:--|:--|:--|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        status = row["status"]
        if status != "ok" and row.get("reason"):
            status = f"{status}: {row['reason']}".replace("|", "/")
        lines.append(
            f"| {row['backbone']} | {row['peft']} | {'on' if row['checkpointing'] else 'off'} | {status} "
            f"| {_number(row.get('seconds'), 1)} | {_number(row.get('train_seconds'), 1)} "
            f"| {_number(row.get('samples_per_second'), 1)} | {_number(row.get('peak_gib'), 2)} "
            f"| {_number(row.get('trainable_params'), 0)} |"
        )
    return "\n".join(lines)


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: true or false")
    return value.lower() == "true"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; ``--tiny`` sets the CPU check's defaults for what is not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=None, help=f"default: {' '.join(BACKBONES)}")
    parser.add_argument("--peft", nargs="+", default=["lora", "sa"], help="PEFT presets (conf/peft/), every layer")
    parser.add_argument("--seq", type=int, default=None, help="tokens per example (default 256; --tiny 32)")
    parser.add_argument("--examples", type=int, default=None, help="training examples (default 2000; --tiny 64)")
    parser.add_argument("--eval-examples", type=int, default=None, help="validation and test examples each")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16; --tiny 16")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--gradient-checkpointing", nargs="+", type=_bool, default=[False], metavar="BOOL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-warmup", action="store_true", help="time the first row cold")
    parser.add_argument("--tiny", action="store_true", help="tiny_llama and tiny_qwen2 on the CPU: a quick check")
    parser.add_argument("--work-dir", default=None, help="data, cache and runs (default: a temporary folder)")
    parser.add_argument("--results-dir", default=None, help="default: benchmarks/results (--tiny: none)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every row")
    args = parser.parse_args(argv)
    tiny = {"backbones": TINY_BACKBONES, "seq": 32, "examples": 64, "eval_examples": 32, "batch_size": 16}
    full = {"backbones": BACKBONES, "seq": 256, "examples": 2000, "eval_examples": 256, "batch_size": 16}
    for key, value in (tiny if args.tiny else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.results_dir is None and not args.tiny:
        args.results_dir = str(ROOT / "benchmarks" / "results")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure every backbone x preset x checkpointing setting, print the table, write the results."""
    args = parse_args(argv)
    quiet_libraries()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    with tempfile.TemporaryDirectory(prefix="decoder_eval_cost_") as scratch:
        work = Path(args.work_dir or scratch)
        task = write_task(work / "data", args.examples, args.eval_examples, args.seq, args.seed)
        cells = [
            (backbone, peft, checkpointing)
            for backbone in args.backbones
            for peft in args.peft
            for checkpointing in args.gradient_checkpointing
        ]
        if not args.no_warmup and cells:
            measure(overrides_for(args, *cells[0], task, work), work / "runs" / "warmup")
        rows = []
        for index, (backbone, peft, checkpointing) in enumerate(cells):
            row = {"backbone": backbone, "peft": peft, "checkpointing": checkpointing}
            overrides = overrides_for(args, backbone, peft, checkpointing, task, work)
            row.update(measure(overrides, work / "runs" / str(index)))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    header = (
        f"device: {device} | {args.examples} training examples x {args.seq} tokens, 1 epoch, "
        f"{args.eval_examples} validation + {args.eval_examples} test examples | batch {args.batch_size} | "
        f"{args.precision}"
    )
    report = f"{header}\n\n{table(rows)}\n"
    print(report)
    if args.results_dir:
        results = Path(args.results_dir)
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_text(results / "decoder_eval_cost.md", report)
        settings = {k: v for k, v in vars(args).items() if k not in ("work_dir", "results_dir")}
        atomic_write_json(results / "decoder_eval_cost.json", {"device": device, "settings": settings, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
