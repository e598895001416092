"""Protocol benchmark: how much the study's pairs split flatters models that never see a pixel, split
apart from what the exact duplicate rows add.

    nice python benchmarks/protocol.py [--data ../shared/data/combined_data.csv] [--seeds 5]

Runs the shortcut baselines (`fit-head --head text-only`, `--head image-prior`, and text-only with a
one-hot image id, the model issue 9 measured) on the study's real labels under every cell of split x
dedupe: the pairs split (the study's protocol, no dedupe by default) and the images split (tagcons'
default: no image on both sides, exact duplicate rows removed by default), each with `--dedupe none`
and `--dedupe exact`, each repeated with 5 seeds (`--repeats 5`). No images are needed. Reports per
model and cell the mean and sd over seeds and the pooled image-clustered 95% interval, then the two
effects: the split's (pairs minus images at a fixed dedupe) and the duplicates' (none minus exact at a
fixed split), each as a difference of seed means with its standard error over the seeds (the cells are
tested on different rows, so there is no paired interval). Writes benchmarks/results/protocol.json;
docs/protocol.md shows the table.
"""

from __future__ import annotations

import argparse
import json
import math
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
DEDUPES = ("none", "exact")
SHOWN = ("macro_f1", "qwk", "accuracy")


def cell(split: str, dedupe: str) -> str:
    return f"{split}/{dedupe}"


def run(data: Path, model: str, split: str, dedupe: str, seeds: int, root: Path) -> dict:
    head, params = MODELS[model]
    out = root / f"{model}_{split}_{dedupe}"
    config = FitHeadConfig(data=data, head=head, head_params=params, split=split, dedupe=dedupe, repeats=seeds, out=out)
    started = time.perf_counter()
    metrics = fit_head(config).metrics
    repeats = metrics["repeats"]
    return {
        "split": split,
        "dedupe": metrics["dedupe"],
        "n_duplicates_removed": metrics["n_duplicates_removed"],
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


def difference(a: dict, b: dict, metric: str = "macro_f1") -> dict:
    """Mean of a minus mean of b over the seeds, with the standard error of that difference over the seeds."""
    n_a, n_b = len(a["seeds"]), len(b["seeds"])
    se = math.sqrt(a["sd"][metric] ** 2 / n_a + b["sd"][metric] ** 2 / n_b)
    return {"difference": a["mean"][metric] - b["mean"][metric], "se": se}


def effects(by_cell: dict) -> dict:
    """The split's effect at each dedupe and the duplicates' effect at each split, on macro-F1."""
    return {
        **{
            f"split (pairs - images), dedupe {d}": difference(by_cell[cell("pairs", d)], by_cell[cell("images", d)])
            for d in DEDUPES
        },
        **{
            f"duplicates (none - exact), {s} split": difference(by_cell[cell(s, "none")], by_cell[cell(s, "exact")])
            for s in SPLITS
        },
        "README's comparison (pairs/none - images/exact)": difference(
            by_cell[cell("pairs", "none")], by_cell[cell("images", "exact")]
        ),
    }


def _interval_cell(r: dict, metric: str) -> str:
    low, high = r["ci95_pooled"][metric]
    return f"{r['mean'][metric]:.3f} ± {r['sd'][metric]:.3f} [{low:.3f}, {high:.3f}]"


def table(results: dict) -> str:
    lines = ["| model | split | dedupe none: macro-F1 | dedupe exact: macro-F1 | none: QWK | exact: QWK |"]
    lines.append("|---|---|---|---|---|---|")
    for model, by_cell in results.items():
        for split in SPLITS:
            none, exact = by_cell[cell(split, "none")], by_cell[cell(split, "exact")]
            cells = [_interval_cell(r, m) for m in ("macro_f1", "qwk") for r in (none, exact)]
            lines.append(f"| {model} | {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effects_table(all_effects: dict) -> str:
    names = list(next(iter(all_effects.values())))
    lines = ["| macro-F1 difference (± se over seeds) | " + " | ".join(all_effects) + " |"]
    lines.append("|---" * (len(all_effects) + 1) + "|")
    for name in names:
        values = [f"{e[name]['difference']:+.3f} ± {e[name]['se']:.3f}" for e in all_effects.values()]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "protocol.json"))
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: the study's table is not there; pass --data")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            model: {cell(s, d): run(args.data, model, s, d, args.seeds, Path(tmp)) for s in SPLITS for d in DEDUPES}
            for model in MODELS
        }
    all_effects = {model: effects(by_cell) for model, by_cell in results.items()}
    report = {
        "data": args.data.name,
        "seeds": args.seeds,
        "results": results,
        "effects_macro_f1": all_effects,
        "table": table(results),
        "effects_table": effects_table(all_effects),
        "seconds": time.perf_counter() - started,
    }
    print(report["table"], report["effects_table"], sep="\n\n")
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
