"""Tampered run directories stop with exit 2 and one line naming the damaged file (issue 10, defects 7, 8)."""

import json
import shutil

import numpy as np
import pytest
from test_cli import run_cli
from test_heads_support import planted, write_cache, write_pairs

from tagcons.heads import FitHeadConfig, fit_head


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_dir_faults")
    data = planted(n_images=20, per_image=8, dim=8, seed=3)
    pairs, cache = write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")
    heads = {
        "threshold": {},
        "logreg": {},
        "mlp": {"max_epochs": 2, "hidden": 16},
        "lgbm": {"n_estimators": 5},
        "lgbm_regression": {"n_estimators": 5},
    }
    made = {"root": root, "pairs": pairs, "cache": cache}
    for name, params in heads.items():
        head, objective = ("lgbm", "regression") if name == "lgbm_regression" else (name, None)
        config = FitHeadConfig(
            cache=cache, data=pairs, head=head, out=root / name, objective=objective, head_params=params
        )
        made[name] = fit_head(config).run_dir
    return made


def _edit_json(path, edit):
    payload = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(edit(payload)), encoding="utf-8")


def _set_state(key, value):
    def edit(payload):
        payload["state"][key] = value
        return payload

    return edit


def _set_param(key, value):
    def edit(payload):
        payload["params"][key] = value
        return payload

    return edit


def _object_npz(path):
    with np.load(path) as data:
        arrays = dict(data)
    arrays["classes"] = np.array([1, 2, 3, "x", None], dtype=object)
    np.savez(path, **arrays)


def _set_config(key, value):
    def edit(payload):
        payload[key] = value
        return payload

    return edit


TAMPERING = {
    "thresholds_not_numbers": (
        "threshold",
        "head.json",
        lambda p: _edit_json(p, _set_state("thresholds", ["abc"] * 4)),
    ),
    "thresholds_length_1": ("threshold", "head.json", lambda p: _edit_json(p, _set_state("thresholds", [0.2]))),
    "mlp_hidden_edited": ("mlp", "head.json", lambda p: _edit_json(p, _set_param("hidden", 32))),
    "mlp_weights_random": ("mlp", "mlp.safetensors", lambda p: p.write_bytes(np.random.bytes(300))),
    "lgbm_model_missing": ("lgbm", "lgbm.txt", lambda p: p.unlink()),
    "lgbm_model_truncated": ("lgbm", "lgbm.txt", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])),
    "lgbm_cuts_length_1": ("lgbm_regression", "head.json", lambda p: _edit_json(p, _set_state("cuts", [0.5]))),
    "npz_object_arrays": ("logreg", "logreg.npz", _object_npz),
    "features_edited": ("logreg", "config.json", lambda p: _edit_json(p, _set_config("features", "rich"))),
    "features_unknown": ("threshold", "config.json", lambda p: _edit_json(p, _set_config("features", "pixels"))),
}
NAMED_FILE = {"mlp_hidden_edited": "mlp.safetensors", "features_edited": "config.json"}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_predict_on_a_tampered_run_exits_2_naming_the_file(runs, tmp_path, capsys, case):
    head, file_name, tamper = TAMPERING[case]
    run = shutil.copytree(runs[head], tmp_path / "run")
    tamper(run / file_name)
    args = ["predict", "--run", run, "--cache", runs["cache"], "--data", runs["pairs"], "--out", tmp_path / "p.csv"]
    code, _, err = run_cli(args, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and str(run / NAMED_FILE.get(case, file_name)) in lines[0], err


def test_compare_on_a_run_whose_config_is_a_list_exits_2(runs, tmp_path, capsys):
    run = shutil.copytree(runs["threshold"], tmp_path / "run")
    (run / "config.json").write_text("[1, 2, 3]\n", encoding="utf-8")
    code, _, err = run_cli(["compare", run], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(run / "config.json") in err, err
