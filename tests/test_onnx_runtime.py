"""`embed --runtime onnx / onnx-int8`: export once per checkpoint, fingerprint, refusal of mixed runtimes,
fp32 agreement with torch eager on the tiny backbone, int8 drift, and exit 2 without the extra."""

import shutil
import sys

import numpy as np
import pytest
import torch
from embed_helpers import cache_contents, embed, make_image_set
from family_models import save_tiny_dual_encoder, save_tiny_siglip
from test_cli import run_cli
from test_startup import heavy_imports

import tagcons.cache
from tagcons.embed import onnx_runtime
from tagcons.embed.backbones import load_backbone
from tagcons.errors import BadInputError, FingerprintMismatchError

needs_onnx = pytest.mark.skipif(
    not all(onnx_runtime._importable(name) for name in onnx_runtime.NEEDED_MODULES),
    reason=f"onnxruntime / onnx not installed ({onnx_runtime.INSTALL_HINT})",
)
# fp32 ONNX vs torch eager on the tiny backbone: per row cosine distance <= 1e-4 (the documented tolerance,
# docs/onnx.md) and, as measured, a max absolute difference of a few 1e-6 on features of norm ~1-10.
MAX_ABS_FP32 = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One image set embedded by torch, onnx and onnx-int8 (exports in their own home folder)."""
    root = tmp_path_factory.mktemp("onnx")
    pairs, images = make_image_set(root, n_images=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(onnx_runtime.HOME_ENV, str(root / "onnx-home"))
        caches = {runtime: root / f"{runtime}.h5" for runtime in onnx_runtime.RUNTIMES}
        for runtime, cache in caches.items():
            if runtime == "torch" or all(onnx_runtime._importable(n) for n in onnx_runtime.NEEDED_MODULES):
                embed(pairs, images, cache, runtime=runtime)
    return dict(root=root, pairs=pairs, images=images, caches=caches, home=root / "onnx-home")


def cosine_distances(a: dict, b: dict) -> np.ndarray:
    keys = sorted(a)
    x, y = np.stack([a[k] for k in keys]).astype(np.float64), np.stack([b[k] for k in keys]).astype(np.float64)
    return 1 - (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))


def drift(runs, runtime: str) -> dict:
    torch_rows, onnx_rows = cache_contents(runs["caches"]["torch"]), cache_contents(runs["caches"][runtime])
    out = {}
    for group in ("images", "texts"):
        assert sorted(torch_rows[group]) == sorted(onnx_rows[group])
        distances = cosine_distances(torch_rows[group], onnx_rows[group])
        keys = sorted(torch_rows[group])
        max_abs = max(np.abs(torch_rows[group][k] - onnx_rows[group][k]).max() for k in keys)
        out[group] = dict(max_cosine=float(distances.max()), mean_cosine=float(distances.mean()), max_abs=max_abs)
    return out


@needs_onnx
def test_fp32_onnx_features_equal_torch_within_the_tolerance(runs):
    for group, found in drift(runs, "onnx").items():
        assert found["max_cosine"] <= onnx_runtime.FP32_COSINE_TOLERANCE, (group, found)
        assert found["max_abs"] <= MAX_ABS_FP32, (group, found)


@needs_onnx
@pytest.mark.parametrize("save", [save_tiny_siglip, save_tiny_dual_encoder], ids=["siglip", "dual-encoder"])
def test_the_other_families_export_and_agree_with_torch(save, runs, tmp_path, monkeypatch):
    """SigLIP (fixed-length texts, no attention mask) and a ViT + BERT dual encoder, from local folders."""
    monkeypatch.setenv(onnx_runtime.HOME_ENV, str(tmp_path / "onnx-home"))
    checkpoint = f"local:{save(tmp_path / 'checkpoint')}"
    for runtime in ("torch", "onnx"):
        embed(runs["pairs"], runs["images"], tmp_path / f"{runtime}.h5", backbone=checkpoint, runtime=runtime)
    rows = {runtime: cache_contents(tmp_path / f"{runtime}.h5") for runtime in ("torch", "onnx")}
    for group in ("images", "texts"):
        assert cosine_distances(rows["torch"][group], rows["onnx"][group]).max() <= onnx_runtime.FP32_COSINE_TOLERANCE


@needs_onnx
def test_int8_runs_and_its_drift_is_small_but_real(runs):
    found = drift(runs, "onnx-int8")
    print(f"onnx-int8 drift against torch fp32 on the tiny backbone: {found}")  # shown with pytest -s
    for group, numbers in found.items():
        assert numbers["max_abs"] > MAX_ABS_FP32, (group, numbers)  # quantised: not the fp32 graph again
        assert numbers["max_cosine"] < 0.01, (group, numbers)  # measured: under 1e-3 on the tiny model
    rows = cache_contents(runs["caches"]["onnx-int8"])
    assert all(np.isfinite(v).all() for v in rows["images"].values())


@needs_onnx
def test_export_happens_once_per_checkpoint_and_is_reused(runs, tmp_path, monkeypatch):
    exports = [path for path in runs["home"].iterdir() if path.is_dir()]
    assert len(exports) == 1  # one checkpoint, one folder, shared by the onnx and onnx-int8 runs
    assert sorted(p.name for p in exports[0].glob("*.onnx")) == [
        "image.int8.onnx",
        "image.onnx",
        "text.int8.onnx",
        "text.onnx",
    ]
    monkeypatch.setenv(onnx_runtime.HOME_ENV, str(runs["home"]))

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "export_tower", no_export)
    monkeypatch.setattr(onnx_runtime, "quantise", no_export)
    for runtime in ("onnx", "onnx-int8"):
        embed(runs["pairs"], runs["images"], tmp_path / f"{runtime}.h5", runtime=runtime)  # loads the files
        again, first = cache_contents(tmp_path / f"{runtime}.h5"), cache_contents(runs["caches"][runtime])
        for key, row in first["images"].items():
            np.testing.assert_allclose(again["images"][key], row, rtol=0, atol=1e-6)


@needs_onnx
def test_a_damaged_export_or_an_unwritable_home_is_one_clear_error(runs, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(runs["home"], home)
    monkeypatch.setenv(onnx_runtime.HOME_ENV, str(home))
    next(home.glob("*/image.onnx")).write_bytes(b"not a model")
    with pytest.raises(BadInputError, match="image.onnx: not a loadable ONNX file .*delete .* and rerun"):
        embed(runs["pairs"], runs["images"], tmp_path / "c.h5", runtime="onnx")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(onnx_runtime.HOME_ENV, str(tmp_path / "a-file" / "onnx"))
    with pytest.raises(BadInputError, match=f"cannot keep the ONNX export in .*set {onnx_runtime.HOME_ENV}"):
        embed(runs["pairs"], runs["images"], tmp_path / "d.h5", runtime="onnx")


@needs_onnx
def test_the_runtime_is_part_of_the_fingerprint(runs):
    fingerprints = {}
    for runtime, path in runs["caches"].items():
        with tagcons.cache.open(path) as cache:
            fingerprints[runtime] = cache.fingerprint
    assert len(set(fingerprints.values())) == 3, fingerprints


@needs_onnx
@pytest.mark.parametrize(("first", "second"), [("torch", "onnx"), ("onnx", "torch"), ("onnx", "onnx-int8")])
def test_mixing_runtimes_in_one_cache_is_refused_naming_the_runtime(runs, tmp_path, monkeypatch, first, second):
    monkeypatch.setenv(onnx_runtime.HOME_ENV, str(runs["home"]))
    cache = tmp_path / "c.h5"
    embed(runs["pairs"], runs["images"], cache, runtime=first)
    with pytest.raises(FingerprintMismatchError, match="runtime"):  # everything is cached: still refused
        embed(runs["pairs"], runs["images"], cache, runtime=second)


LOOK_FOR = ("onnxruntime", "onnx", "torch", "transformers")


@needs_onnx
def test_a_rerun_with_nothing_new_imports_neither_onnxruntime_nor_torch(runs):
    args = ["embed", "--data", runs["pairs"], "--images", runs["images"], "--backbone", "tiny"]
    found = heavy_imports(*args, "--out", runs["caches"]["onnx"], "--runtime", "onnx", look_for=LOOK_FOR)
    assert found == []


def test_without_onnxruntime_the_command_exits_2_naming_the_extra(tmp_path, capsys, monkeypatch):
    pairs, images = make_image_set(tmp_path, n_images=2)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    args = ["embed", "--data", pairs, "--images", images, "--backbone", "tiny", "--out", tmp_path / "c.h5"]
    code, _, err = run_cli([*args, "--runtime", "onnx"], capsys)
    assert code == 2 and "pip install tagcons[onnx]" in err and "onnxruntime" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize(
    ("device", "dtype", "compile_model", "message"),
    [("cuda", "auto", False, "--device cuda"), ("auto", "fp16", False, "--dtype"), ("cpu", "auto", True, "--compile")],
)
def test_onnx_refuses_settings_it_cannot_honour(device, dtype, compile_model, message):
    if not all(onnx_runtime._importable(name) for name in onnx_runtime.NEEDED_MODULES):
        pytest.skip(onnx_runtime.INSTALL_HINT)
    with pytest.raises(BadInputError, match=message):
        onnx_runtime.check_runtime("onnx", device, dtype, compile_model)


def test_the_export_key_follows_the_weights():
    backbone = load_backbone("tiny")
    key = onnx_runtime.checkpoint_key(backbone)
    assert onnx_runtime.checkpoint_key(load_backbone("tiny")) == key  # the same weights: the same export
    with torch.no_grad():
        backbone.model.visual_projection.weight[0, 0] += 1e-3
    assert onnx_runtime.checkpoint_key(backbone) != key
