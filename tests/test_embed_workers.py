"""`embed`'s decode workers when --workers is not given: chosen for the device (issue 29)."""

import logging

import pytest
from embed_helpers import embed, make_image_set

from tagcons.runtime import default_workers, embed_workers


@pytest.mark.parametrize("cores, expected", [(1, 0), (2, 0), (7, 0), (8, 1), (16, 2), (64, 8), (128, 8)])
def test_on_a_cpu_the_decoders_leave_the_cores_to_the_model(cores, expected):
    assert embed_workers(None, "cpu", cores) == expected


def test_on_a_gpu_decoding_gets_the_default_workers():
    assert embed_workers(None, "cuda", 16) == default_workers()


@pytest.mark.parametrize("asked", [0, 1, 3])
def test_workers_asked_for_are_kept(asked):
    assert embed_workers(asked, "cpu", 2) == asked
    assert embed_workers(asked, "cuda", 16) == asked


def test_embed_without_workers_decodes_in_the_main_process_on_a_small_cpu(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    pairs, images = make_image_set(tmp_path, n_images=4)
    with caplog.at_level(logging.INFO, logger="tagcons"):
        summary = embed(pairs, images, tmp_path / "c.h5", workers=None, device="cpu")
    assert summary.images_new == 4
    assert "decoding in the main process (no workers)" in caplog.text
