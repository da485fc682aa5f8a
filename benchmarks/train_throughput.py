"""Training throughput of PEFT configurations against full fine-tuning of the same backbone.

Measures samples/s of the training step (forward, backward, AdamW update over the trainable
tensors; bf16 autocast on a GPU) on synthetic batches of fixed length, so data loading is
excluded. Every configuration runs in the same process, on the same device.

Examples::

    python benchmarks/train_throughput.py                                  # GPU: BERT-base, seq 128, batch 32/256
    python benchmarks/train_throughput.py --backbone tiny_bert --batch-sizes 8 --steps 3   # quick CPU check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from autopeft.peft import peft_from_config
from autopeft.peft.params import parameter_report
from autopeft.runtime import register_resolvers
from autopeft.training.backbones import load_backbone
from autopeft.training.model import AutoPeftModel

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_CONFIGS = {
    "fft": ["peft=fft"],
    "sa48-all": ["peft=sa", "peft.sa_size=48"],
    "lora8-qv": ["peft=lora"],
    "sa48+pt6-top8": ["peft=sa", "peft.sa_size=48", "peft.prefix_len=6", "peft.layers=[4,5,6,7,8,9,10,11]"],
}


def measure(backbone_name: str, overrides: list[str], batch: int, seq: int, steps: int, warmup: int) -> dict:
    """Samples/s of ``steps`` timed training steps after ``warmup`` untimed ones."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"backbone={backbone_name}", *overrides])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    backbone = load_backbone(cfg.backbone)
    spec = peft_from_config(cfg.peft, backbone.shape)
    model = AutoPeftModel(backbone, spec, "classification", 2).to(device).train()
    report = parameter_report(model, spec, backbone.shape, backbone.num_params)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    vocab = min(backbone.model.config.vocab_size, 30522)
    ids = torch.randint(1000, vocab, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(ids, mask).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "configuration": spec.describe(),
        "batch": batch,
        "samples_per_s": batch * steps / seconds,
        "ms_per_step": 1000 * seconds / steps,
        "paper_percent": report["paper_percent"],
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def main() -> None:
    """Parse arguments, measure every configuration and batch size, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="bert_base_arch")
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"from {list(DEFAULT_CONFIGS)}")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    register_resolvers()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for name in args.configs.split(","):
            overrides = DEFAULT_CONFIGS[name]
            if args.backbone == "tiny_bert":  # sizes above 32 do not fit a hidden size of 32
                overrides = [o.replace("=48", "=8").replace("=6", "=2") for o in overrides]
                overrides = [o for o in overrides if not o.startswith("peft.layers")]
            rows.append({"name": name, **measure(args.backbone, overrides, batch, args.seq, args.steps, args.warmup)})
    print(f"device: {device} | backbone: {args.backbone} | seq {args.seq} | {args.steps} timed steps")
    print(f"{'config':<16} {'batch':>5} {'samples/s':>10} {'ms/step':>9} {'vs fft':>7} {'% params':>9} {'peak GiB':>9}")
    for row in rows:
        fft = next((r for r in rows if r["name"] == "fft" and r["batch"] == row["batch"]), None)
        ratio = f"{row['samples_per_s'] / fft['samples_per_s']:.2f}x" if fft else "-"
        mem = f"{row['peak_mem_gib']:.2f}" if row["peak_mem_gib"] is not None else "-"
        print(
            f"{row['name']:<16} {row['batch']:>5} {row['samples_per_s']:>10.1f} {row['ms_per_step']:>9.1f} "
            f"{ratio:>7} {row['paper_percent']:>9.3f} {mem:>9}"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
