"""Protocol benchmark: how much the study's pairs split flatters models that never see a pixel.

    python benchmarks/protocol.py [--data ../shared/data/combined_data.csv] [--seeds 5]

Runs the shortcut baselines (`fit-head --head text-only`, `--head image-prior`, and text-only with a
one-hot image id, the model issue 9 measured) on the study's real labels under the pairs split (the
study's protocol: no dedupe) and the images split (tagcons' default: no image on both sides, exact
duplicates removed), each repeated with 5 seeds (`--repeats 5`). No images are needed. Reports per
model and split the mean and sd over seeds and the pooled image-clustered 95% interval, and writes
benchmarks/results/protocol.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tagcons.heads import FitHeadConfig, fit_head

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "combined_data.csv"
MODELS = {
    "text_only": ("text-only", {}),
    "image_prior": ("image-prior", {}),
    "text_and_image_id": ("text-only", {"image_onehot": True}),
}
SPLITS = ("pairs", "images")
SHOWN = ("macro_f1", "qwk", "accuracy")


def run(data: Path, model: str, split: str, seeds: int, root: Path) -> dict:
    head, params = MODELS[model]
    config = FitHeadConfig(
        data=data, head=head, head_params=params, split=split, repeats=seeds, out=root / f"{model}_{split}"
    )
    started = time.perf_counter()
    metrics = fit_head(config).metrics
    repeats = metrics["repeats"]
    return {
        "split": split,
        "dedupe": metrics["dedupe"],
        "n_test": metrics["n_test"],
        "n_test_images": metrics["n_test_images"],
        "seeds": repeats["seeds"],
        "mean": {k: repeats["mean"][k] for k in SHOWN},
        "sd": {k: repeats["sd"][k] for k in SHOWN},
        "ci95_pooled": {k: repeats["ci95_pooled"][k] for k in SHOWN},
        "per_seed_macro_f1": [s["macro_f1"] for s in repeats["per_seed"]],
        "majority_macro_f1": metrics["baselines"]["majority"]["macro_f1"],
        "seconds": time.perf_counter() - started,
    }


def table(results: dict) -> str:
    lines = ["| model | split | macro-F1 mean ± sd [pooled 95%] | QWK mean ± sd [pooled 95%] | majority macro-F1 |"]
    lines.append("|---|---|---|---|---|")
    for model, by_split in results.items():
        for split, r in by_split.items():
            cells = [
                f"{r['mean'][k]:.3f} ± {r['sd'][k]:.3f} [{r['ci95_pooled'][k][0]:.3f}, {r['ci95_pooled'][k][1]:.3f}]"
                for k in ("macro_f1", "qwk")
            ]
            lines.append(f"| {model} | {split} | {cells[0]} | {cells[1]} | {r['majority_macro_f1']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "protocol.json"))
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: the study's table is not there; pass --data")
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            model: {split: run(args.data, model, split, args.seeds, Path(tmp)) for split in SPLITS} for model in MODELS
        }
    report = {"data": args.data.name, "seeds": args.seeds, "results": results, "table": table(results)}
    print(report["table"])
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
