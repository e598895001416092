"""`fit_heads`: several heads on one join of the cache, each run the same as its own `fit_head`, and
settings routed to the heads that have them."""

import json

import pytest
from numbers_helpers import assert_same_numbers
from test_heads_support import planted, write_cache, write_pairs

from tagcons.errors import BadInputError
from tagcons.heads import FitHeadConfig, fit_head
from tagcons.heads.fit import fit_heads


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("many_heads")
    data = planted(n_images=24, per_image=8, dim=8, seed=3)
    return {"root": root, "pairs": write_pairs(data, root / "pairs.csv"), "cache": write_cache(data, root / "c.h5")}


def _config(files, out, **kw) -> FitHeadConfig:
    kw.setdefault("head", "threshold")  # fit_heads replaces it per head
    return FitHeadConfig(data=files["pairs"], cache=files["cache"], out=files["root"] / out, **kw)


def _run_config(run_dir) -> dict:
    return json.loads((run_dir / "config.json").read_text())


def test_each_head_gets_its_own_run_identical_to_fitting_it_alone(files):
    params = {"Cs": "0.5,2", "n_grid": "9", "threads": "1"}
    results = fit_heads(_config(files, "grid", objective="qwk", head_params=params), ["threshold", "logreg"])
    assert [r.run_dir for r in results] == [files["root"] / "grid" / "threshold", files["root"] / "grid" / "logreg"]
    threshold, logreg = (_run_config(r.run_dir) for r in results)
    assert (threshold["head"], threshold["objective"], threshold["head_params"]) == ("threshold", "qwk", {"n_grid": 9})
    assert (logreg["head"], logreg["objective"]) == ("logreg", None)
    assert logreg["head_params"] == {"Cs": [0.5, 2.0], "threads": 1}
    alone = fit_head(_config(files, "alone", head="logreg", head_params={"Cs": (0.5, 2.0), "threads": 1}))
    assert_same_numbers(results[1].metrics, alone.metrics)


def test_a_setting_no_head_has_is_refused_before_anything_is_fitted(files):
    with pytest.raises(BadInputError, match=r"^--param depth: none of the heads threshold, logreg has this setting$"):
        fit_heads(_config(files, "bad_param", head_params={"depth": "3"}), ["threshold", "logreg"])
    with pytest.raises(BadInputError, match=r"^--objective regression applies to none of the heads threshold, logreg$"):
        fit_heads(_config(files, "bad_objective", objective="regression"), ["threshold", "logreg"])
    assert not (files["root"] / "bad_param").exists() and not (files["root"] / "bad_objective").exists()


def test_an_existing_run_of_any_head_stops_all_of_them_first(files):
    fit_head(_config(files, "taken/logreg", head="logreg", head_params={"Cs": (1.0,), "threads": 1}))
    with pytest.raises(BadInputError, match=r"taken[/\\]logreg: already holds a run"):
        fit_heads(_config(files, "taken", head_params={"threads": "1"}), ["threshold", "logreg"])
    assert not (files["root"] / "taken" / "threshold").exists()
    results = fit_heads(_config(files, "taken", head_params={"threads": "1"}, overwrite=True), ["threshold", "logreg"])
    assert [r.run_dir.name for r in results] == ["threshold", "logreg"]
