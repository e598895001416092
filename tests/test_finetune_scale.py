"""Fine-tuning on a scale that does not start at 1 (0-3): score -> class column of the targets, of the losses
and of --init-head; and the shortcut baselines of a fine-tuning run, fitted on its fit side only.

One short run (tiny backbone, one epoch) on the planted colour set rescored 0-3 serves the tests that need one.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from test_finetune_run import config, planted

from tagcons.data.pairs import load_pairs
from tagcons.distributed import setup
from tagcons.embed.backbones import load_backbone
from tagcons.embed.tiny import build_tiny
from tagcons.evaluate.provenance import read_side_keys, table_keys
from tagcons.finetune import run_finetune
from tagcons.finetune.config import resolve
from tagcons.finetune.data import Collate, LoaderSettings, TokenTable, eval_loader
from tagcons.finetune.loop import collect_outputs, make_precision
from tagcons.finetune.model import FinetuneModel
from tagcons.finetune.partition import load_partition
from tagcons.finetune.probe import fit_linear_probe, load_init_head
from tagcons.heads.baselines import ImagePriorHead, TextOnlyHead, shortcut_baselines
from tagcons.labels import ScoreScale, class_weights

SCALE = ScoreScale(0, 3)
LOW_TAGS = ("red", "yellow")  # a mismatched tag scores 1 for these, 0 for the others


def rescore(pairs) -> None:
    """Planted 5 (the tag names the colour) -> 3; a mismatch -> 1 or 0 by tag: scores 0, 1 and 3 of 0-3."""
    frame = pd.read_csv(pairs)
    tag_is_low = frame["Hashtag"].str.lstrip("#").isin(LOW_TAGS)
    frame["Score"] = np.where(frame["Score"] == 5, 3, np.where(tag_is_low, 1, 0))
    frame.to_csv(pairs, index=False)


class BaselineSpy:
    """The (image, text) pairs each shortcut baseline was fitted on."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.fitted = {}
        for name, head in (("text_only", TextOnlyHead), ("image_prior", ImagePriorHead)):
            patch.setattr(head, "fit", self._spied(name, head.fit))

    def _spied(self, name, fit):
        def spied(head, X, y, groups=None):
            self.fitted.setdefault(name, set()).update(zip(X.images, X.texts))
            return fit(head, X, y, groups)

        return spied


@pytest.fixture(scope="module")
def zero_based_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_0_3")
    pairs, images = planted(root, per_colour=5)
    rescore(pairs)
    settings = config(pairs, images, root / "run", epochs=1, batch_size=16, scale=str(SCALE), val_size=0.2)
    with pytest.MonkeyPatch.context() as patch:
        spy = BaselineSpy(patch)
        result = run_finetune(settings)
    return {"result": result, "settings": settings, "pairs": pairs, "images": images, "spy": spy}


def _sides(run) -> dict:
    """The run's pair table (0-3) and the rows of each side it recorded."""
    table = load_pairs(run["pairs"], scale=str(SCALE))
    keys, recorded = table_keys(table), read_side_keys(run["result"].run_dir)
    return {"table": table, **{side: np.flatnonzero(np.isin(keys, list(recorded[side]))) for side in ("fit", "test")}}


def test_training_and_validation_targets_are_each_scores_column_on_a_zero_based_scale(zero_based_run):
    """The recorded fit-side loss is the cross-entropy against column(score) = score - 0, not score - 1."""
    result, settings = zero_based_run["result"], resolve(zero_based_run["settings"])
    dist, cpu = setup("cpu"), torch.device("cpu")
    try:
        partition = load_partition(settings, dist)
        backbone = load_backbone("tiny")
        tokens = TokenTable.build(partition.table.texts, backbone)
        collate = Collate(partition.table, settings.images, backbone.image_processor, tokens)
        first = partition.fit[:12]
        batch = collate(list(first))  # the training batches' targets
        assert np.array_equal(np.asarray(SCALE.labels)[batch["labels"].numpy()], partition.table.labels[first])
        loader = eval_loader(partition.fit, collate, LoaderSettings(16, 0, 42, 0, 1))
        rows, logits = collect_outputs(result.model, loader, make_precision("fp32", cpu), cpu, dist, "fit")
    finally:
        dist.close()
    assert logits.shape[1] == SCALE.n_classes
    scores = partition.table.labels[rows].astype(np.int64)
    assert set(scores.tolist()) == {0, 1, 3}
    weight = torch.tensor(class_weights(partition.table.labels[partition.fit], SCALE.labels), dtype=torch.float32)
    targets = torch.from_numpy(np.searchsorted(SCALE.labels, scores))  # the column of each score on 0-3
    loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), targets, weight=weight))
    assert result.history["train_loss"][-1] == pytest.approx(loss, rel=1e-4)


def test_finetune_baselines_are_fitted_on_the_fit_side_only(zero_based_run):
    run = zero_based_run
    sides = _sides(run)
    table = sides["table"]
    fit_pairs = set(zip(table.images[sides["fit"]], table.texts[sides["fit"]]))
    test_pairs = set(zip(table.images[sides["test"]], table.texts[sides["test"]]))
    assert set(run["spy"].fitted) == {"text_only", "image_prior"}
    for name, fitted in run["spy"].fitted.items():
        assert fitted == fit_pairs and not fitted & test_pairs, name
    fit, test = table.subset(sides["fit"]), table.subset(sides["test"])
    y_fit, y_test = fit.labels.astype(int), test.labels.astype(int)
    expected = shortcut_baselines(fit, y_fit, test, y_test, run["settings"].seed, SCALE.labels)
    recorded = run["result"].metrics["baselines"]
    for name in ("majority", "text_only", "image_prior"):
        for metric in ("accuracy", "macro_f1", "qwk", "mae"):
            assert recorded[name][metric] == pytest.approx(expected[name][metric], abs=1e-9, nan_ok=True), name


def test_linear_probe_and_init_head_map_scores_to_their_columns_on_a_zero_based_scale(tmp_path):
    from tagcons.heads import make_head
    from tagcons.heads.base import on_scale

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 3], 20)  # score 2 absent: its column keeps (almost) no probability
    features = rng.normal(size=(60, 128)).astype(np.float32) + np.eye(128, dtype=np.float32)[labels] * 4
    weight, bias = fit_linear_probe(features, labels, None, seed=0, score_scale=SCALE)
    columns = (torch.as_tensor(features) @ weight.T + bias).argmax(1).numpy()
    assert np.mean(np.asarray(SCALE.labels)[columns] == labels) > 0.95
    for kind, params in (("logreg", {"C": 1.0}), ("mlp", {"max_epochs": 1})):
        head = make_head(kind, params=params).fit(features, labels)
        head.save(tmp_path / kind)
        torch.manual_seed(0)
        model = FinetuneModel(build_tiny()[0], n_classes=SCALE.n_classes)
        load_init_head(model, tmp_path / kind, SCALE)
        ours = torch.softmax(model.head.eval()(torch.from_numpy(features)), dim=1).detach().double().numpy()
        assert np.allclose(ours, on_scale(head.predict_proba(features), head.classes_, SCALE.labels), atol=1e-4), kind
