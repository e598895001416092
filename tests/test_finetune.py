"""Fine-tuning parts that need no training run: head, freezing, groups, probe import, WiSE, checkpoints."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from tagcons.data.pairs import load_pairs
from tagcons.embed.backbones import load_backbone
from tagcons.embed.tiny import build_tiny
from tagcons.errors import BadInputError
from tagcons.finetune import FinetuneConfig, checkpoint, resolve
from tagcons.finetune.data import TokenTable, exclude_unloadable
from tagcons.finetune.export import interpolate
from tagcons.finetune.model import FinetuneModel, freeze, param_groups
from tagcons.finetune.probe import fit_linear_probe, load_init_head


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FinetuneModel(build_tiny()[0])


def test_linear_probe_enters_the_mlp_head_exactly(model):
    weight, bias = torch.randn(5, 128), torch.randn(5)
    model.head.load_linear(weight, bias)
    x = torch.randn(7, 128)
    assert torch.allclose(model.head.eval()(x), x @ weight.T + bias, atol=1e-5)


def test_freeze_keeps_last_vision_blocks_and_never_logit_scale(model):
    counts = freeze(model.clip, unfreeze_vision=1, unfreeze_text=0)
    trains = {name for name, p in model.clip.named_parameters() if p.requires_grad}
    assert counts["text_model"] == 0 and not any(n.startswith("text") for n in trains)
    assert any(n.startswith("vision_model.encoder.layers.1.") for n in trains)
    assert not any(n.startswith("vision_model.encoder.layers.0.") or "embeddings" in n for n in trains)
    assert "visual_projection.weight" in trains and "logit_scale" not in trains
    freeze(model.clip, unfreeze_vision=-1, unfreeze_text=-1)
    assert {n for n, p in model.clip.named_parameters() if not p.requires_grad} == {"logit_scale"}


def test_layer_decay_lowers_the_rate_of_deeper_blocks(model):
    freeze(model.clip, -1, -1)
    groups = param_groups(model, lr=1e-5, head_lr=1e-3, weight_decay=0.1, layer_decay=0.5)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["head.net.0.weight"])] == 1e-3
    assert rate[id(named["clip.visual_projection.weight"])] == pytest.approx(1e-5)
    assert rate[id(named["clip.vision_model.encoder.layers.1.mlp.fc1.weight"])] == pytest.approx(0.5e-5)
    assert rate[id(named["clip.vision_model.encoder.layers.0.mlp.fc1.weight"])] == pytest.approx(0.25e-5)
    assert rate[id(named["clip.vision_model.embeddings.patch_embedding.weight"])] == pytest.approx(0.125e-5)
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert all(p.ndim < 2 for g in no_decay for p in g["params"])


def test_recipes_fill_only_what_is_not_given():
    base = dict(data="p.csv", images="img", backbone="tiny", out="run")
    paper = resolve(FinetuneConfig(**base, recipe="paper", lr=1e-4))
    assert (paper.lr, paper.batch_size, paper.grad_accum, paper.optimizer, paper.schedule) == (
        1e-4,
        8,
        2,
        "adam",
        "step",
    )
    robust = resolve(FinetuneConfig(**base))
    assert robust.lp_init and robust.unfreeze_vision == 2 and robust.grad_clip == 1.0 and robust.head_lr == 1e-3
    for bad, message in (
        (dict(recipe="fast"), "unknown recipe 'fast'"),
        (dict(wise_alpha=1.5), "--wise-alpha 1.5: must be between 0.0 and 1.0"),
        (dict(split="rows"), "--split rows: choose one of"),
        (dict(epochs=0), "--epochs 0: must be at least 1"),
        (dict(precision="int8"), "--precision int8: choose one of"),
    ):
        with pytest.raises(BadInputError, match=message):
            resolve(FinetuneConfig(**{**base, **bad}))


def test_wise_interpolation_endpoints_and_midpoint():
    zero, tuned = {"w": torch.zeros(3), "ids": torch.arange(3)}, {"w": torch.ones(3) * 2, "ids": torch.arange(3) + 1}
    assert torch.equal(interpolate(zero, tuned, 0.0)["w"], zero["w"])
    assert torch.equal(interpolate(zero, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(interpolate(zero, tuned, 0.25)["w"], torch.full((3,), 0.5))
    assert torch.equal(interpolate(zero, tuned, 0.5)["ids"], tuned["ids"])


def test_on_the_fly_probe_separates_planted_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 3, 5], 20)
    features = rng.normal(size=(60, 8)) + np.eye(8)[labels] * 3
    weight, bias = fit_linear_probe(features, labels, None, seed=0)
    pred = (torch.as_tensor(features, dtype=torch.float32) @ weight.T + bias).argmax(1).numpy() + 1
    assert (pred == labels).mean() > 0.95


def test_init_head_from_a_logreg_run_reproduces_its_probabilities(model, tmp_path):
    from tagcons.heads import make_head
    from tagcons.heads.base import on_scale

    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 128)).astype(np.float32)
    y = rng.choice([1, 2, 4, 5], size=80)  # score 3 absent: its column must stay near 0
    head = make_head("logreg", params={"C": 1.0}).fit(X, y)
    head.save(tmp_path)
    assert load_init_head(model, tmp_path) == "logreg"
    ours = torch.softmax(model.head.eval()(torch.from_numpy(X)), dim=1).detach().double().numpy()
    assert np.allclose(ours, on_scale(head.predict_proba(X), head.classes_), atol=1e-4)


def test_init_head_from_an_mlp_run_copies_it(model, tmp_path):
    from tagcons.heads import make_head
    from tagcons.heads.base import on_scale

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(60, 128)).astype(np.float32), rng.choice([1, 3, 5], size=60)
    head = make_head("mlp", params={"max_epochs": 1}).fit(X, y)
    head.save(tmp_path)
    load_init_head(model, tmp_path)
    ours = torch.softmax(model.head.eval()(torch.from_numpy(X)), dim=1).detach().double().numpy()
    assert np.allclose(ours, on_scale(head.predict_proba(X), head.classes_), atol=1e-5)
    with pytest.raises(BadInputError, match="its mlp takes 128 features with 256 hidden units.*--hidden 64"):
        load_init_head(FinetuneModel(build_tiny()[0], hidden=64), tmp_path)


def test_checkpoint_state_loads_weights_only_and_restores_rng(model, tmp_path):
    freeze(model.clip, 1, 0)
    torch.manual_seed(5)
    checkpoint.save_checkpoint(tmp_path / "last", model, {"rng": checkpoint.rng_state(), "epoch": 3})
    expected = (torch.rand(3), np.random.rand(2))
    with torch.no_grad():
        model.head.net[0].weight.zero_()
    checkpoint.set_rng_state(checkpoint.load_state(tmp_path / "last")["rng"])  # torch.load(weights_only=True)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(2), expected[1])
    checkpoint.load_weights(tmp_path / "last", model)
    assert model.head.net[0].weight.abs().sum() > 0
    assert not (tmp_path / "last.tmp").exists()


def test_token_table_trims_padding_to_the_batch(tmp_path):
    texts = np.array(["#a", "#a much longer hashtag", "#bc"])
    tokens = TokenTable.build(texts, load_backbone("tiny"))
    ids, mask = tokens.rows(np.array([0, 2]))
    assert ids.shape == mask.shape and ids.shape[1] == int(mask.sum(1).max()) < tokens.input_ids.shape[2]


def test_unloadable_images_are_left_out_up_front(tmp_path, write_csv, caplog):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "img" / "ok.png")
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    table = load_pairs(
        write_csv([["ok.png", "#a", 5], ["bad.png", "#a", 1], ["gone.png", "#b", 2], ["ok.png", "#c", 1]])
    )
    with caplog.at_level(logging.WARNING):
        kept, failed = exclude_unloadable(table, tmp_path / "img")
    assert list(kept.images) == ["ok.png", "ok.png"] and set(failed) == {"bad.png", "gone.png"}
    assert "2 of 3 images" in caplog.text
