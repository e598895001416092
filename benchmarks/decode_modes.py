"""Feature difference between the decode modes, measured on the CPU: does the decode mode change the numbers?

Every path turns the same 1080x1080 JPEG into pixel_values, and the same model turns those into
projected image features; each path is compared with the reference by the cosine between the
features of the same image (and max |pixel_values| difference):

    reference            Pillow full decode + the processor's Pillow backend (transformers'
                         reference preprocessing; what `--decode cpu` gives without torchvision
                         when the image is not reduced)
    cpu                  `--decode cpu`, the default, where torchvision is absent: reduced DCT decode
                         (`load_rgb(min_side=reduced_side(processor))`) + the Pillow backend
    cpu-tv-processor     `--decode cpu` where torchvision is installed (as `--decode gpu` needs):
                         the same reduced decode + the torchvision backend that AutoImageProcessor then picks
    full-tv-processor    Pillow full decode + the torchvision backend (the backend's share alone)
    gpu-on-cpu           `--decode gpu`'s own code on CPU tensors: `torchvision_decoder()` (decode_jpeg,
                         libjpeg-turbo) + `DevicePreprocess` (torch antialiased resize, crop, normalise)

`gpu-on-cpu` is also compared with both `cpu` paths (the rows a cache would mix if the decode mode
were left out of its fingerprint). nvJPEG on a GPU is not measured here: it is a different IDCT
and chroma upsampling (benchmarks/gpu_embed.py measures the GPU against the CPU on a GPU machine).

Images: 1080x1080 JPEGs (quality 90): demo images drawn at 1080 pixels (`tagcons.demo.dataset`)
and photo-like images (benchmarks/decode.py). Models: full-size ViT-B/32 CLIP with random weights
(224-pixel input) and the `tiny` backbone (64 pixels: the harshest downscale). Needs a torchvision
built for the installed torch: run it in .venv-decode (`make test-decode` creates it).

    .venv-decode/bin/python benchmarks/decode_modes.py      # writes results/decode_modes.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from decode import feature_difference, library_version, photo_like, pixel_values, save_report  # noqa: E402
from embed_throughput import build_checkpoint  # noqa: E402

from tagcons.data.images import load_rgb, reduced_side  # noqa: E402
from tagcons.demo.dataset import DemoConfig, image_specs  # noqa: E402
from tagcons.demo.drawing import draw_image  # noqa: E402
from tagcons.embed import gpu_decode  # noqa: E402
from tagcons.embed.backbones import load_backbone  # noqa: E402
from tagcons.embed.features import image_features  # noqa: E402

SIDE = 1080
CPU = torch.device("cpu")


def write_fixture(directory: Path, n_demo: int, n_photo: int) -> list[Path]:
    """Demo scenes drawn at 1080 pixels and photo-like images, all saved as quality-90 JPEGs."""
    paths = []
    for index, spec in enumerate(image_specs(DemoConfig(n_images=n_demo))):
        paths.append(directory / spec.filename.replace(".png", ".jpg"))
        draw_image(spec, SIDE, np.random.default_rng([0, index, 1])).save(paths[-1], quality=90)
    rng = np.random.default_rng(0)
    for index in range(n_photo):
        paths.append(directory / f"photo_{index:03d}.jpg")
        photo_like(rng, SIDE).save(paths[-1], quality=90)
    return paths


def processors(checkpoint: Path) -> dict:
    """The checkpoint's processor in both transformers backends."""
    from transformers import CLIPImageProcessor, CLIPImageProcessorPil  # torchvision backend, Pillow backend

    return {
        "pil": CLIPImageProcessorPil.from_pretrained(checkpoint),
        "tv": CLIPImageProcessor.from_pretrained(checkpoint),
    }


def pixel_paths(processor_by_backend: dict) -> dict:
    """Path name -> function(list of JPEG paths) -> pixel_values [N, 3, H, W] (float32 numpy)."""
    pil, tv = processor_by_backend["pil"], processor_by_backend["tv"]
    min_side = reduced_side(pil)

    def through(processor, **decode_options):
        return lambda paths: np.stack([pixel_values(processor, load_rgb(path, **decode_options)) for path in paths])

    return {
        "reference": through(pil),
        "cpu": through(pil, min_side=min_side),
        "cpu-tv-processor": through(tv, min_side=min_side),
        "full-tv-processor": through(tv),
        "gpu-on-cpu": lambda paths: gpu_path_pixels(tv, paths),
    }


def gpu_path_pixels(processor, paths: list[Path]) -> np.ndarray:
    """`--decode gpu`'s decoder and device preprocessing, run on CPU tensors."""
    decode = gpu_decode.torchvision_decoder()
    datas = [torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in paths]
    preprocess = gpu_decode.DevicePreprocess.from_processor(processor, CPU)
    return np.concatenate([preprocess(decode([data], CPU), torch.float32).numpy() for data in datas])


def features(model, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return image_features(model, torch.from_numpy(pixels)).double().numpy()


def measure(checkpoint: Path, paths: list[Path]) -> dict:
    model = load_backbone(str(checkpoint)).model
    encoded = {}
    for name, to_pixels in pixel_paths(processors(checkpoint)).items():
        pixels = to_pixels(paths)
        encoded[name] = (pixels, features(model, pixels))
    against = {name: feature_difference(pair, encoded["reference"]) for name, pair in encoded.items()}
    mixed = {
        f"gpu-on-cpu vs {cpu}": feature_difference(encoded["gpu-on-cpu"], encoded[cpu])
        for cpu in ("cpu", "cpu-tv-processor")
    }
    return {"against_reference": against, "gpu_against_cpu": mixed}


def model_checkpoints(directory: Path) -> dict:
    tiny = directory / "tiny"
    load_backbone("tiny").save_pretrained(tiny)
    return {"vit-b-32": build_checkpoint("vit-b-32", directory), "tiny": tiny}


def run(args) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_fixture(work, args.demo_images, args.photo_images)
        models = {}
        for name, checkpoint in model_checkpoints(work).items():
            models[name] = measure(checkpoint, paths)
            report_model(name, models[name])
    return dict(
        benchmark="cosine distance between features of the same 1080x1080 JPEGs through each decode mode (CPU)",
        images={"demo": args.demo_images, "photo_like": args.photo_images, "side": SIDE, "jpeg_quality": 90},
        models=models,
        max_cosine_distance_gpu_vs_cpu=max(
            entry["max_cosine_distance"] for model in models.values() for entry in model["gpu_against_cpu"].values()
        ),
        note="nvJPEG (the GPU's own decode) not measured: no GPU; decode_jpeg on the CPU is bit-identical to Pillow",
        python=platform.python_version(),
        torch=torch.__version__,
        torchvision=library_version("torchvision"),
        transformers=library_version("transformers"),
        pillow=Image.__version__,
    )


def report_model(name: str, result: dict) -> None:
    rows = {**result["against_reference"], **result["gpu_against_cpu"]}
    for path, entry in rows.items():
        print(
            f"{name:9s} {path:28s} max cosine distance {entry['max_cosine_distance']:.2e}  "
            f"mean {entry['mean_cosine_distance']:.2e}  max |dpx| {entry['max_abs_pixel_values_difference']:.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-images", type=int, default=12)
    parser.add_argument("--photo-images", type=int, default=12)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "decode_modes.json")
    args = parser.parse_args()
    save_report(run(args), args.out)


if __name__ == "__main__":
    main()
