"""Embedding throughput: the study's per-pair loop against `tagcons embed`, same model, same inputs.

The inputs copy the reference table's structure (2,022 pairs over 172 images and 1,375 texts; the
reference CSV is used when it lies beside the project, else a synthetic table of the same shape),
with every image a 1080x1080 PNG or JPEG. Models are full-size CLIP / SigLIP architectures with random
weights (speed does not depend on the values), saved with save_pretrained and loaded through the
same `--backbone DIR` path users take.

(a) the study's way: for every pair, open the image, one processor call, one full model call.
    It is timed on the first --study-pairs pairs and scaled to the whole table (its cost per pair is
    constant: every pair repeats the same work).
(b) `tagcons embed` end to end (unique images and texts, batched, DataLoader workers), into a new cache.

    python benchmarks/embed_throughput.py                       # CLIP ViT-B/32, ViT-L/14 and SigLIP 2 B/16
    python benchmarks/embed_throughput.py --models vit-b-32 --study-pairs 50
    python benchmarks/embed_throughput.py --runtime onnx   # (b) with ONNX Runtime (exported before timing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tagcons.embed.backbones import load_backbone  # noqa: E402
from tagcons.embed.extractor import EmbedConfig, run_embed  # noqa: E402
from tagcons.embed.tiny import build_tiny_tokenizer  # noqa: E402
from tagcons.runtime import (  # noqa: E402
    embed_workers,
    resolve_device,
    resolve_dtype,
)

REFERENCE = HERE.parent.parent / "shared" / "data" / "combined_data.csv"
ARCHITECTURES = {
    "vit-b-32": dict(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            patch_size=32,
            image_size=224,
        ),
        projection_dim=512,
    ),
    "vit-l-14": dict(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_attention_heads=16,
            num_hidden_layers=24,
            patch_size=14,
            image_size=224,
        ),
        projection_dim=768,
    ),
    # SigLIP 2 B/16 at 224 px (google/siglip2-base-patch16-224): the Gemma vocabulary of 256,000 tokens,
    # texts padded to the model's fixed 64 tokens (the SigLIP family's rule).
    "siglip2-b-16": dict(
        family="siglip",
        text_config=dict(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, vocab_size=256000
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            patch_size=16,
            image_size=224,
        ),
    ),
}


def build_checkpoint(name: str, directory: Path) -> Path:
    """A random-weight model of the named size and family, saved as users save theirs."""
    if ARCHITECTURES[name].get("family") == "siglip":
        return _build_siglip(name, directory)
    from transformers import CLIPConfig, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    spec = ARCHITECTURES[name]
    tokenizer = build_tiny_tokenizer()  # byte-level: longer sequences than CLIP's BPE, so texts cost a bit more
    text = dict(
        spec["text_config"],
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPModel(
        CLIPConfig(text_config=text, vision_config=spec["vision_config"], projection_dim=spec["projection_dim"])
    )
    tokenizer.model_max_length = 77
    path = directory / name
    model.save_pretrained(path)
    Processor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _build_siglip(name: str, directory: Path) -> Path:
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    spec = ARCHITECTURES[name]
    tokenizer = build_tiny_tokenizer()
    tokenizer.model_max_length = 64
    text = dict(spec["text_config"], max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=spec["vision_config"]))
    path = directory / name
    model.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_inputs(directory: Path) -> tuple[Path, Path, dict]:
    """Pairs CSV + 1080x1080 images in the reference table's structure."""
    frame, source = study_table()
    images = directory / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    keys = list(dict.fromkeys(frame["Image Filename"]))
    for key in keys:
        _photo_like(rng).save(images / key, **({"quality": 90} if key.lower().endswith((".jpg", ".jpeg")) else {}))
    pairs = directory / "pairs.csv"
    frame.to_csv(pairs, index=False)
    facts = dict(
        source=source,
        pairs=len(frame),
        images=len(keys),
        texts=int(frame["Hashtag"].nunique()),
        image_size="1080x1080",
        image_formats=sorted({Path(k).suffix for k in keys}),
    )
    return pairs, images, facts


def study_table():
    """(pairs frame, where it came from): the reference table when it lies beside the project, else one of its shape."""
    import pandas as pd

    if REFERENCE.is_file():
        return pd.read_csv(REFERENCE, encoding="utf-8-sig")[["Image Filename", "Hashtag", "Score"]], "reference table"
    return _synthetic_table(), "synthetic table of the reference's shape"


def _synthetic_table():
    import pandas as pd

    rng = np.random.default_rng(1)
    images = [f"cat{i % 8}_{i:03d}.{'png' if i % 2 else 'jpg'}" for i in range(172)]
    texts = [f"#태그{i}" for i in range(1375)]
    rows = [(images[i % 172], texts[i % 1375], int(rng.integers(1, 6))) for i in range(2022)]
    return pd.DataFrame(rows, columns=["Image Filename", "Hashtag", "Score"])


def _photo_like(rng) -> Image.Image:
    """Smooth gradients plus noise: PNG sizes like a photo's, not like a flat colour's."""
    y, x = np.mgrid[0:1080, 0:1080] / 1080.0
    base = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(100, 255, size=3)
    noise = rng.normal(0, 12, size=(1080, 1080, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def time_study_loop(checkpoint: Path, pairs: Path, images: Path, n_pairs: int, device, dtype) -> dict:
    """The study's loop: per pair, open + one processor call + one full model call."""
    import pandas as pd

    backbone = load_backbone(str(checkpoint))
    model = backbone.model.to(device=device, dtype=dtype)
    frame = pd.read_csv(pairs).head(n_pairs)
    started = time.perf_counter()
    with torch.inference_mode():
        for key, text in zip(frame["Image Filename"], frame["Hashtag"]):
            image = Image.open(images / key).convert("RGB")
            pixels = backbone.image_processor(images=image, return_tensors="pt")["pixel_values"]
            tokens = backbone.tokenize([str(text)])  # the family's padding rule, as the study would need
            model(**{k: v.to(device) for k, v in tokens.items()}, pixel_values=pixels.to(device, dtype))
    seconds = time.perf_counter() - started
    return dict(pairs_timed=len(frame), seconds=seconds, seconds_per_pair=seconds / len(frame))


def time_tagcons(
    checkpoint: Path,
    pairs: Path,
    images: Path,
    out: Path,
    batch_size: int,
    workers: int,
    device: str,
    dtype: str,
    runtime: str = "torch",
) -> dict:
    if runtime != "torch":  # the one-off export is not part of the steady-state figure
        from tagcons.embed.onnx_runtime import ensure_exported

        ensure_exported(load_backbone(str(checkpoint)), runtime)
    started = time.perf_counter()
    summary = run_embed(
        EmbedConfig(
            data=pairs,
            images=images,
            backbone=str(checkpoint),
            out=out,
            batch_size=batch_size,
            workers=workers,
            device=device,
            dtype=dtype,
            runtime=runtime,
        )
    )
    seconds = time.perf_counter() - started
    return dict(
        seconds=seconds,
        images=summary.images_new,
        texts=summary.texts_new,
        images_per_second=summary.images_per_second,
        texts_per_second=summary.texts_per_second,
        image_phase_seconds=summary.image_seconds,
        text_phase_seconds=summary.text_seconds,
    )


def benchmark_model(name: str, work: Path, inputs, args) -> dict:
    pairs, images, facts = inputs
    checkpoint = build_checkpoint(name, work)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    study = time_study_loop(checkpoint, pairs, images, args.study_pairs, device, dtype)
    study["extrapolated_seconds"] = study["seconds_per_pair"] * facts["pairs"]
    ours = time_tagcons(
        checkpoint,
        pairs,
        images,
        work / f"{name}.h5",
        args.batch_size,
        args.workers,
        args.device,
        args.dtype,
        args.runtime,
    )
    speedup = study["extrapolated_seconds"] / ours["seconds"]
    print(
        f"{name}: study loop {study['seconds_per_pair'] * 1000:.0f} ms/pair -> {study['extrapolated_seconds']:.0f} s "
        f"for {facts['pairs']} pairs; tagcons embed {ours['seconds']:.1f} s "
        f"({ours['images_per_second']:.1f} img/s, {ours['texts_per_second']:.1f} txt/s); speedup {speedup:.1f}x"
    )
    return dict(
        model=name,
        device=str(device),
        dtype=str(dtype).replace("torch.", ""),
        study=study,
        tagcons=ours,
        speedup=speedup,
        workers=args.workers,
        runtime=args.runtime,
        load_average=os.getloadavg(),
    )


def save_figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["model"] + ("" if _row_key(r)[1] == "torch" else f"\n{_row_key(r)[1]}") for r in results]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [r["study"]["extrapolated_seconds"] for r in results], 0.4, label="study loop (per pair)")
    ax.bar(x + 0.2, [r["tagcons"]["seconds"] for r in results], 0.4, label="tagcons embed")
    for i, r in enumerate(results):
        ax.text(i + 0.2, r["tagcons"]["seconds"], f"{r['speedup']:.1f}x", ha="center", va="bottom")
    ax.set_xticks(x, names)
    ax.set_ylabel("seconds for 2,022 pairs")
    ax.set_title(f"Embedding the reference table ({results[0]['device']}, {results[0]['dtype']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--study-pairs", type=int, default=60, help="pairs timed for the study's loop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="decode workers [embed's own choice]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx", "onnx-int8"], help="(b)'s runtime")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "embed_throughput.json")
    args = parser.parse_args()
    args.workers = embed_workers(args.workers, resolve_device(args.device).type)  # the command's own choice
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="tagcons-bench-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("TAGCONS_ONNX_HOME", str(work / "onnx-home"))  # --runtime onnx: exports go too
        inputs = build_inputs(work)
        results = [benchmark_model(name, work, inputs, args) for name in args.models]
    results = _merge_with_earlier(args.out, results)
    report = dict(
        benchmark="embed_throughput",
        inputs=inputs[2],
        machine=_machine(),
        settings=vars(args) | {"out": None},
        results=results,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    save_figure(results, args.out.with_suffix(".png"))
    print(f"saved {args.out} and {args.out.with_suffix('.png')}")


def _merge_with_earlier(path: Path, results: list[dict]) -> list[dict]:
    """Keep the rows of models this run did not measure (each row records its own settings)."""
    if not path.is_file():
        return results
    measured = {_row_key(r) for r in results}
    earlier = [r for r in json.loads(path.read_text()).get("results", []) if _row_key(r) not in measured]
    return sorted(earlier + results, key=lambda r: (list(ARCHITECTURES).index(r["model"]), _row_key(r)[1]))


def _row_key(row: dict) -> tuple[str, str]:
    return row["model"], row.get("runtime", "torch")  # rows saved before --runtime existed are torch's


def _machine() -> dict:
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(
        cpu_cores=os.cpu_count(),
        gpu=gpu,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        platform=platform.platform(),
    )


if __name__ == "__main__":
    main()
