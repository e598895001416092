"""Leak guards and parity settings of `tagcons finetune`: --init-head donors, --resume on other rows,
--val-size 0, and the row provenance a run records (config.json, part_keys.json beside the backbone)."""

import json

import numpy as np
import pytest
import torch
from test_finetune_run import config, planted

from tagcons.cli import main
from tagcons.data.pairs import load_pairs
from tagcons.data.splits import train_test_split_indices
from tagcons.distributed import setup
from tagcons.embed.backbones import load_backbone
from tagcons.errors import BadInputError
from tagcons.evaluate.provenance import SIDE_KEYS_FILE, keys_hash, read_side_keys, table_keys, write_side_keys
from tagcons.finetune import run_finetune
from tagcons.finetune.config import resolve
from tagcons.finetune.data import Collate, LoaderSettings, TokenTable, eval_loader
from tagcons.finetune.loop import collect_outputs, make_precision
from tagcons.finetune.partition import load_partition
from tagcons.labels import class_weights


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return planted(tmp_path_factory.mktemp("guards"), per_colour=5)


def _test_keys(pairs):
    table = load_pairs(pairs)
    _, test = train_test_split_indices(table.labels, table.images, "images", 0.2, 42)
    return table_keys(table), table_keys(table.subset(test))


def test_init_head_trained_on_test_pairs_is_refused_with_exit_2(data, tmp_path, capsys):
    pairs, images = data
    every, test = _test_keys(pairs)
    donor = tmp_path / "donor"
    donor.mkdir()
    write_side_keys(donor, {"fit": every, "validation": None, "test": None})  # a --cv donor: fitted on all rows
    argv = ["finetune", "--data", str(pairs), "--images", str(images), "--backbone", "tiny", "--workers", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "run"), "--init-head", str(donor)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"{len(set(test))} of the {len(set(test))} pairs in this run's test part" in message
    assert "same --split" in message and "Traceback" not in message


def test_init_head_without_recorded_rows_needs_the_explicit_override(data, tmp_path):
    pairs, images = data
    donor = tmp_path / "old_run"
    donor.mkdir()
    with pytest.raises(BadInputError, match="--allow-unverified-init"):
        run_finetune(config(pairs, images, tmp_path / "a", init_head=str(donor), epochs=1))
    # With the override the guard lets it through; the empty folder then fails as a head, not as a leak.
    with pytest.raises(BadInputError, match="head.json"):
        run_finetune(config(pairs, images, tmp_path / "b", init_head=str(donor), allow_unverified_init=True))


def test_init_head_trained_on_other_rows_passes_the_guard(data, tmp_path):
    pairs, images = data
    every, test = _test_keys(pairs)
    donor = tmp_path / "donor"
    donor.mkdir()
    write_side_keys(donor, {"fit": sorted(set(every) - set(test)), "validation": None, "test": test})
    with pytest.raises(BadInputError, match="head.json"):
        run_finetune(config(pairs, images, tmp_path / "run", init_head=str(donor)))


def test_resume_on_a_changed_table_is_refused(data, tmp_path):
    pairs, images = data
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    every, test = _test_keys(pairs)
    fewer = sorted(set(every) - {sorted(test)[0]})  # as if the run had been started on another table
    saved = {"fit": keys_hash(fewer), "validation": None, "test": keys_hash(test)}
    (run / "config.json").write_text(json.dumps({"parts": saved}), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"--resume with other rows .*fit, validation"):
        run_finetune(config(pairs, images, run, resume=True))


@pytest.fixture(scope="module")
def no_validation_run(data, tmp_path_factory):
    pairs, images = data
    settings = dict(epochs=2, batch_size=16, val_size=0.0, patience=1)
    out = tmp_path_factory.mktemp("no_val") / "run"
    return run_finetune(config(pairs, images, out, **settings)), config(pairs, images, out, **settings)


def test_val_size_0_trains_every_epoch_keeps_the_last_and_records_parts(data, no_validation_run):
    pairs, images = data
    result, _ = no_validation_run
    assert result.epochs_run == 2 and result.best_epoch == 2 and not result.stopped_early
    assert len(result.history["train_loss"]) == 2 and result.history["val_loss"] == []
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["split_spec"]["val_size"] == 0.0 and saved["split_spec"]["kind"] == "images"
    assert saved["parts"]["validation"] is None
    _, test = _test_keys(pairs)
    assert saved["parts"]["test"] == keys_hash(test)
    for where in (result.run_dir, result.backbone_dir):
        recorded = read_side_keys(where)
        assert recorded["test"] == set(test) and not recorded["fit"] & set(test), where
    assert (result.backbone_dir / SIDE_KEYS_FILE).is_file()
    assert np.isfinite(result.history["train_loss_running"]).all()


def test_train_loss_is_the_eval_mode_loss_of_the_kept_model(no_validation_run):
    """Training and validation losses are computed alike (eval mode, after the epoch), so the curves compare."""
    result, settings = no_validation_run
    settings = resolve(settings)
    dist, cpu = setup("cpu"), torch.device("cpu")
    try:
        partition = load_partition(settings, dist)
        backbone = load_backbone("tiny")
        tokens = TokenTable.build(partition.table.texts, backbone)
        collate = Collate(partition.table, settings.images, backbone.image_processor, tokens)
        loader = eval_loader(partition.fit, collate, LoaderSettings(16, 0, 42, 0, 1))
        rows, logits = collect_outputs(result.model, loader, make_precision("fp32", cpu), cpu, dist, "fit")
    finally:
        dist.close()
    labels = torch.from_numpy(partition.table.labels[rows].astype(np.int64) - 1)
    weight = torch.tensor(class_weights(partition.table.labels[partition.fit].astype(int)), dtype=torch.float32)
    loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), labels, weight=weight))
    assert result.history["train_loss"][-1] == pytest.approx(loss, rel=1e-4)
