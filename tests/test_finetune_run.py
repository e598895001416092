"""End-to-end fine-tuning runs on the tiny backbone (CPU) and a planted colour <-> hashtag set.

Images are solid colours with noise; a pair scores 5 when its hashtag names the image's colour,
else 1. The learning run is shared by several tests (module fixture) to keep the suite fast.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tagcons.data.pairs import load_pairs
from tagcons.data.splits import train_test_split_indices
from tagcons.embed.backbones import load_backbone
from tagcons.embed.features import image_features, text_features
from tagcons.errors import BadInputError
from tagcons.finetune import FinetuneConfig, Hooks, run_finetune
from tagcons.finetune.checkpoint import load_weights
from tagcons.finetune.model import FinetuneModel, freeze

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "mae",
    "qwk",
    "spearman",
    "n_train",
    "n_test",
}


def planted(root: Path, per_colour: int, tags=tuple(COLOURS), seed: int = 0) -> tuple[Path, Path]:
    images = root / "img"
    images.mkdir(parents=True)
    rng, rows = np.random.default_rng(seed), []
    for colour, rgb in COLOURS.items():
        for i in range(per_colour):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / f"{colour}_{i}.png")
            rows += [(f"{colour}_{i}.png", f"#{tag}", 5 if tag == colour else 1) for tag in tags]
    pairs = root / "pairs.csv"
    pd.DataFrame(rows, columns=["Image Filename", "Hashtag", "Score"]).to_csv(pairs, index=False)
    return pairs, images


def config(pairs, images, out, **overrides) -> FinetuneConfig:
    return FinetuneConfig(data=str(pairs), images=str(images), backbone="tiny", out=str(out), workers=0, **overrides)


class Recorder(Hooks):
    """Logs every batch's part and rows, and where epochs ended, in order."""

    def __init__(self):
        super().__init__(on_batch=self.batch, on_epoch_end=self.epoch)
        self.events = []

    def batch(self, part, rows):
        self.events.append((part, set(rows.tolist())))

    def epoch(self, index, history):
        self.events.append(("epoch_end", index))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    root = tmp_path_factory.mktemp("learn")
    pairs, images = planted(root, per_colour=6)
    hooks = Recorder()
    result = run_finetune(
        config(
            pairs, images, root / "run", epochs=6, batch_size=8, lr=1e-3, head_lr=1e-2, unfreeze_vision=1, patience=0
        ),
        hooks,
    )
    return result, hooks, pairs, images


def test_loss_falls_and_the_validation_side_improves(learned):
    result, *_ = learned
    history = result.history
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    # two validation images (8 pairs, 6 of them score 1): accuracy can sit at the majority's 0.75 while
    # the model learns, so the validation loss and QWK are what show it
    assert history["val_loss"][-1] < 0.8 * history["val_loss"][0]
    assert history["val_qwk"][-1] > history["val_qwk"][0]
    # Always answering the majority score has QWK 0; the planted rule is learnt on unseen images.
    assert result.metrics["qwk"] > 0.3


def test_run_directory_matches_fit_head_runs(learned):
    result, *_ = learned
    run = result.run_dir
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["head"] == "finetune" and config_json["recipe"] == "robust"
    assert config_json["backbone"] == "tiny" and config_json["split"] == "images"
    assert (
        config_json["lr"] == 1e-3 and config_json["layer_decay"] == 0.75 and config_json["head_init"] == "linear-probe"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS and len(metrics["history"]["val_qwk"]) == 6
    predictions = pd.read_csv(run / "predictions.csv")
    assert {"image", "text", "true", "pred", "p1", "p5"} <= set(predictions.columns)
    assert len(predictions) == metrics["n_test"]
    assert metrics["calibration"]["temperature"] > 0 and set(metrics["decodings"]) == {"argmax", "expected", "median"}
    assert len(metrics["calibration"]["prior"]) == 5  # the robust recipe's class weights, divided out
    for name in (
        "reliability.png",
        "confusion_matrix.png",
        "training_curves.png",
        "checkpoints/best/model.safetensors",
        "checkpoints/last/state.pt",
        "backbone/config.json",
        "backbone/preprocessor_config.json",
    ):
        assert (run / name).is_file(), name


def test_test_part_is_only_seen_after_training(learned):
    result, hooks, pairs, images = learned
    table = load_pairs(pairs)
    train, test = train_test_split_indices(table.labels, table.images, "images", 0.2, 42)
    last_epoch_end = max(i for i, (part, _) in enumerate(hooks.events) if part == "epoch_end")
    seen_before = set().union(*(rows for part, rows in hooks.events[:last_epoch_end] if part != "epoch_end"))
    assert seen_before <= set(train.tolist()) and not seen_before & set(test.tolist())
    after = hooks.events[last_epoch_end + 1 :]
    # after training: the validation part once more (temperature of the best model), then the test part
    assert [part for part, _ in after][-1] == "test" and {part for part, _ in after} <= {"val", "test"}
    seen_val_after = set().union(*(rows for part, rows in after if part == "val"))
    assert seen_val_after <= set(train.tolist())
    assert set().union(*(rows for part, rows in after if part == "test")) == set(test.tolist())
    assert not set(table.images[test]) & set(table.images[train])


def test_exported_backbone_gives_the_fine_tuned_features(learned):
    result, *_ = learned
    exported = load_backbone(str(result.backbone_dir))
    pixels = torch.rand(3, 3, 64, 64)
    tokens = exported.tokenizer(["#red", "#blue", "#a"], padding=True, return_tensors="pt")
    tuned = result.model.clip.eval()
    with torch.no_grad():
        assert torch.allclose(image_features(exported.model, pixels), image_features(tuned, pixels), atol=1e-5)
        ids, mask = tokens["input_ids"], tokens["attention_mask"]  # older tokenizers add token_type_ids
        assert torch.allclose(text_features(exported.model, ids, mask), text_features(tuned, ids, mask), atol=1e-5)
        assert not torch.allclose(image_features(load_backbone("tiny").model, pixels), image_features(tuned, pixels))


def test_wise_alpha_one_exports_the_best_checkpoint(learned):
    result, *_ = learned
    best = FinetuneModel(load_backbone("tiny").model)
    freeze(best.clip, 1, -1)
    load_weights(result.run_dir / "checkpoints" / "best", best)
    exported = load_file(str(result.backbone_dir / "model.safetensors"))
    for name, tensor in best.clip.state_dict().items():
        assert torch.equal(exported[name], tensor), name


@pytest.fixture
def small(tmp_path):
    return planted(tmp_path, per_colour=3, tags=("red", "blue", "green"))


class Interrupt(Exception):
    pass


def test_paper_recipe_killed_mid_epoch_resumes_to_the_same_result(small, tmp_path):
    pairs, images = small
    common = dict(recipe="paper", epochs=2, val_size=0.25)
    whole = run_finetune(config(pairs, images, tmp_path / "whole", **common))

    ended = []

    def kill_mid_second_epoch(part, rows):  # the second epoch dies after its first batch
        if part == "fit" and ended:
            raise Interrupt

    hooks = Hooks(on_batch=kill_mid_second_epoch, on_epoch_end=lambda epoch, history: ended.append(epoch))
    with pytest.raises(Interrupt):
        run_finetune(config(pairs, images, tmp_path / "cut", **common), hooks)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(BadInputError, match="pass --resume to continue it, --overwrite to replace it"):
        run_finetune(config(pairs, images, tmp_path / "cut", **common))
    resumed = run_finetune(config(pairs, images, tmp_path / "cut", resume=True, **common))
    assert resumed.epochs_run == 2 and resumed.history.keys() == whole.history.keys()
    for key in ("train_loss", "val_loss", "val_qwk"):
        assert np.allclose(resumed.history[key], whole.history[key], atol=1e-5), key
    assert (
        json.loads((tmp_path / "cut" / "metrics.json").read_text()).keys()
        == json.loads((tmp_path / "whole" / "metrics.json").read_text()).keys()
    )
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["head_init"] == "random"
    with pytest.raises(BadInputError, match="other settings"):
        run_finetune(config(pairs, images, tmp_path / "cut", resume=True, **{**common, "lr": 1e-3}))
    with pytest.raises(BadInputError, match="pass one of them"):
        run_finetune(config(pairs, images, tmp_path / "cut", resume=True, overwrite=True, **common))
    (tmp_path / "cut" / "stale.txt").write_text("from the run it replaces")
    replaced = run_finetune(config(pairs, images, tmp_path / "cut", overwrite=True, **common))
    assert replaced.epochs_run == 2 and not (tmp_path / "cut" / "stale.txt").exists()
    assert np.allclose(replaced.history["val_qwk"], whole.history["val_qwk"], atol=1e-5)


DDP_SCRIPT = """
import sys
from tagcons.finetune import FinetuneConfig, run_finetune
pairs, images, out = sys.argv[1:4]
run_finetune(FinetuneConfig(data=pairs, images=images, backbone="tiny", out=out, workers=0, epochs=1,
                            batch_size=4, val_size=0.25, wise_alpha=0.0, device="cpu"))
"""


def test_torchrun_two_processes_gloo_and_wise_alpha_zero(small, tmp_path):
    pairs, images = small
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(pairs),
            str(images),
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    config_json = json.loads((run / "config.json").read_text())
    assert config_json["world_size"] == 2
    table = load_pairs(pairs)
    _, test = train_test_split_indices(table.labels, table.images, "images", 0.2, 42)
    assert metrics["n_test"] == len(test) == len(pd.read_csv(run / "predictions.csv"))
    exported = load_file(str(run / "backbone" / "model.safetensors"))
    for name, tensor in load_backbone("tiny").model.state_dict().items():  # WiSE at 0: the zero-shot weights
        assert torch.equal(exported[name], tensor), name
