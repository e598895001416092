"""Fine-tuning step throughput and peak memory for full-size CLIP ViT-B/32 and ViT-L/14.

Random weights (CLIPConfig with the real sizes; no download) and random batches, through the same
`Trainer.micro_step` + `Trainer.update` that `tagcons finetune` runs, with the recipe's freezing,
parameter groups and schedule. Each case runs in its own process so peak memory is that case's.

    python benchmarks/finetune_step.py                      # CPU cases (+ CUDA cases if a GPU is visible)
    python benchmarks/finetune_step.py --steps 3 --batch-size 32 --models b32 l14

Writes benchmarks/results/finetune_step.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "finetune_step.json"
SIZES = {  # (vision hidden, layers, heads, patch), (text hidden, layers, heads), projection
    "b32": dict(vision=(768, 12, 12, 32), text=(512, 12, 8), projection=512, name="ViT-B/32"),
    "l14": dict(vision=(1024, 24, 16, 14), text=(768, 12, 12), projection=768, name="ViT-L/14"),
}
TEXT_TOKENS = 16  # a hashtag is short; the loader pads to the batch's longest text


def build_clip(key: str):
    from transformers import CLIPConfig, CLIPModel

    size = SIZES[key]
    (vh, vl, vn, patch), (th, tl, tn) = size["vision"], size["text"]
    config = CLIPConfig(
        vision_config=dict(
            hidden_size=vh,
            intermediate_size=4 * vh,
            num_hidden_layers=vl,
            num_attention_heads=vn,
            patch_size=patch,
            image_size=224,
        ),
        text_config=dict(
            hidden_size=th,
            intermediate_size=4 * th,
            num_hidden_layers=tl,
            num_attention_heads=tn,
            max_position_embeddings=77,
            vocab_size=49408,
        ),
        projection_dim=size["projection"],
    )
    return CLIPModel(config)


def make_trainer(key: str, recipe: str, device: torch.device, precision: str, checkpointing: bool, batch: int):
    from tagcons.finetune.config import FinetuneConfig, resolve
    from tagcons.finetune.loop import Trainer, make_optimizer, make_precision, make_schedule
    from tagcons.finetune.model import FinetuneModel, freeze

    config = resolve(
        FinetuneConfig(
            data="-",
            images="-",
            backbone=key,
            out="-",
            recipe=recipe,
            batch_size=batch,
            grad_accum=1,
            precision=precision,
            grad_checkpointing=checkpointing,
        )
    )
    model = FinetuneModel(build_clip(key), config.hidden, config.dropout)
    freeze(model.clip, config.unfreeze_vision, config.unfreeze_text)
    if checkpointing:
        model.clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    optimizer = make_optimizer(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = Trainer(
        model,
        optimizer,
        make_schedule(optimizer, config, 100),
        make_precision(precision, device),
        torch.nn.CrossEntropyLoss(),
        1,
        config.grad_clip,
        device,
    )
    return trainer, trainable, sum(p.numel() for p in model.parameters())


def random_batch(batch: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "pixel_values": torch.randn(batch, 3, 224, 224, generator=generator),
        "input_ids": torch.randint(0, 49406, (batch, TEXT_TOKENS), generator=generator),
        "attention_mask": torch.ones(batch, TEXT_TOKENS, dtype=torch.long),
        "labels": torch.randint(0, 5, (batch,), generator=generator),
    }


def run_case(
    key: str, recipe: str, device_name: str, precision: str, checkpointing: bool, batch: int, steps: int
) -> dict:
    """One warm-up step, then `steps` timed steps (forward, backward, clip, optimiser, schedule)."""
    device = torch.device(device_name)
    trainer, trainable, total = make_trainer(key, recipe, device, precision, checkpointing, batch)
    data = random_batch(batch)
    trainer.model.train()
    trainer.micro_step(data)
    trainer.update()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.micro_step(data)
        trainer.update()
    _sync(device)
    seconds = time.perf_counter() - started
    result = {
        "model": SIZES[key]["name"],
        "recipe": recipe,
        "device": device_name,
        "precision": trainer.precision.name,
        "grad_checkpointing": checkpointing,
        "batch_size": batch,
        "steps": steps,
        "seconds_per_step": seconds / steps,
        "samples_per_s": batch * steps / seconds,
        "params_total": total,
        "params_trainable": trainable,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cases(args) -> list[list[str]]:
    plan = [[m, r, "cpu", "fp32", "0"] for m in args.models for r in args.recipes]
    if torch.cuda.is_available():
        plan += [[m, r, "cuda", "bf16", c] for m in args.models for r in args.recipes for c in ("0", "1")]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["b32", "l14"], choices=sorted(SIZES))
    parser.add_argument("--recipes", nargs="+", default=["robust", "paper"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)  # model recipe device precision checkpointing
    args = parser.parse_args()
    if args.case:
        key, recipe, device, precision, ckpt = args.case
        steps = args.gpu_steps if device == "cuda" else args.steps
        print(json.dumps(run_case(key, recipe, device, precision, ckpt == "1", args.batch_size, steps)))
        return
    rows = _merge(_previous_rows(), [_subprocess(case, args) for case in cases(args)])
    payload = {
        "machine": {
            "platform": platform.platform(),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(table(rows))


def _previous_rows() -> list[dict]:
    """Rows of earlier runs (other models or recipes) stay in the file; a rerun case replaces its row."""
    return json.loads(RESULTS.read_text())["results"] if RESULTS.is_file() else []


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    def key(row):
        return tuple(row.get(k) for k in ("model", "recipe", "device", "precision", "grad_checkpointing", "batch_size"))

    fresh = {key(r) for r in new if "error" not in r}
    return [r for r in old if "error" not in r and key(r) not in fresh] + new


def _subprocess(case: list[str], args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--case",
        *case,
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--gpu-steps",
        str(args.gpu_steps),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"case": case, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), file=sys.stderr)
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| model | recipe | device | precision | ckpt | batch | samples/s | s/step | trainable M "
        "| peak RSS GiB | peak GPU GiB |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {' '.join(r['case'])} | error: {r['error']} |")
            continue
        gpu = f"{r['peak_gpu_gib']:.1f}" if "peak_gpu_gib" in r else "-"
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['device']} | {r['precision']} | {int(r['grad_checkpointing'])} "
            f"| {r['batch_size']} | {r['samples_per_s']:.2f} | {r['seconds_per_step']:.1f} "
            f"| {r['params_trainable'] / 1e6:.1f} | {r['peak_rss_gib']:.1f} | {gpu} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
