"""`--param KEY=VALUE`: every head's every setting parses by its type; bad values exit 2 with one line."""

import json
import re

import pytest
from test_cli import run_cli
from test_heads_support import planted, write_cache, write_pairs

from tagcons.errors import BadInputError
from tagcons.heads import make_head
from tagcons.heads.params import check_head_params, param_defaults, param_range, param_type, parse_head_params
from tagcons.heads.registry import all_head_classes, get_head_class

# every head, built in or registered, imported here so the list never depends on which tests ran first
SETTINGS = [(name, setting) for name, cls in sorted(all_head_classes().items()) for setting in param_defaults(cls)]
assert {name for name, _ in SETTINGS} >= {"threshold", "logreg", "mlp", "lgbm", "ordinal", "text-only"}


def _as_text(value) -> str:
    """How a user writes a setting's value on the command line."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


@pytest.mark.parametrize("head, setting", SETTINGS, ids=[f"{h}-{s}" for h, s in SETTINGS])
def test_every_setting_of_every_head_parses_its_default_written_as_text(head, setting):
    cls = get_head_class(head)
    default = param_defaults(cls)[setting]
    assert param_type(cls, setting) is not None, f"head '{head}' must declare the type of {setting}"
    parsed = parse_head_params(cls, {setting: _as_text(default)})
    assert parsed == {setting: default}
    assert make_head(head, params=parsed).get_params()[setting] == default


@pytest.mark.parametrize(
    "head, raw, expected",
    [
        ("logreg", {"Cs": "0.1"}, {"Cs": (0.1,)}),
        ("logreg", {"Cs": "0.1,1"}, {"Cs": (0.1, 1.0)}),
        ("logreg", {"C": "2", "threads": "none"}, {"C": 2.0, "threads": None}),
        ("mlp", {"recipe": "robust", "max_epochs": "40", "lr": "1e-3", "progress": "true"}, None),
        ("lgbm", {"objective": "regression", "n_estimators": "60", "feature_fraction": "0.5"}, None),
        ("threshold", {"objective": "qwk", "n_grid": "19"}, {"objective": "qwk", "n_grid": 19}),
    ],
)
def test_values_take_their_settings_types(head, raw, expected):
    parsed = parse_head_params(get_head_class(head), raw)
    if expected is None:
        expected = {k: param_type(get_head_class(head), k).parse(v) for k, v in raw.items()}
    assert parsed == expected
    assert all(type(parsed[k]) is type(expected[k]) for k in expected)  # 40 is an int, not 40.0


def test_typed_values_are_the_types_the_heads_use():
    parsed = parse_head_params(get_head_class("mlp"), {"max_epochs": "40", "lr": "1e-3", "progress": "false"})
    assert parsed == {"max_epochs": 40, "lr": 0.001, "progress": False}
    assert type(parsed["max_epochs"]) is int and type(parsed["lr"]) is float


@pytest.mark.parametrize(
    "head, raw, message",
    [
        ("logreg", {"Cs": "abc"}, "Cs=abc: head 'logreg' takes numbers separated by commas"),
        ("logreg", {"Cs": ","}, "Cs=,: head 'logreg' takes numbers separated by commas"),
        ("mlp", {"max_epochs": "1.5"}, "max_epochs=1.5: head 'mlp' takes an integer"),
        ("mlp", {"recipe": "magic"}, "recipe=magic: head 'mlp' takes one of paper, robust"),
        ("mlp", {"progress": "maybe"}, "progress=maybe: head 'mlp' takes true or false"),
        ("threshold", {"objective": "mae"}, "objective=mae: head 'threshold' takes one of macro_f1, qwk"),
        ("lgbm", {"depth": "3"}, "depth=3: head 'lgbm' has no setting depth"),
        ("logreg", {"class_weight": "sqrt"}, "class_weight=sqrt: head 'logreg' takes one of balanced, none"),
    ],
)
def test_bad_values_are_refused_naming_the_setting_and_its_type(head, raw, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")):
        parse_head_params(get_head_class(head), raw)


@pytest.fixture(scope="module")
def fit_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("params")
    data = planted(n_images=12, per_image=8, dim=8, seed=2)
    return write_pairs(data, root / "pairs.csv"), write_cache(data, root / "cache.h5")


def _fit_head(fit_files, out, *params, capsys):
    pairs, cache = fit_files
    args = ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "logreg", "--out", out]
    return run_cli(args + [x for p in params for x in ("--param", p)], capsys)


@pytest.mark.parametrize("value, expected", [("0.1", [0.1]), ("0.1,1", [0.1, 1.0])])
def test_fit_head_takes_a_list_setting_from_the_command_line(fit_files, tmp_path, capsys, value, expected):
    code, out, err = _fit_head(fit_files, tmp_path / "run", f"Cs={value}", "max_iter=50", capsys=capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["head_params_resolved"]["Cs"] == expected and config["head_params_resolved"]["max_iter"] == 50
    assert set(json.loads((tmp_path / "run" / "head.json").read_text())["state"]["cv_scores"]) == {
        str(c) for c in expected
    }


@pytest.mark.parametrize("param", ["Cs=abc", "max_iter=many", "nosuch=1"])
def test_fit_head_bad_param_exits_2_with_one_line(fit_files, tmp_path, capsys, param):
    code, _, err = _fit_head(fit_files, tmp_path / "run", param, capsys=capsys)
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and param.split("=")[0] in err
    assert not (tmp_path / "run").exists()


def test_fit_head_param_without_a_key_is_a_usage_error(fit_files, tmp_path, capsys):
    code, _, err = _fit_head(fit_files, tmp_path / "run", "=3", capsys=capsys)
    assert code == 2 and "'=3': use KEY=VALUE" in err and "Traceback" not in err


@pytest.mark.parametrize("head, setting", SETTINGS, ids=[f"{h}-{s}" for h, s in SETTINGS])
def test_every_number_setting_has_a_range_that_its_default_is_in(head, setting):
    cls = get_head_class(head)
    if not param_type(cls, setting).numeric:
        return
    assert param_range(cls, setting) is not None, f"head '{head}' must declare the range of {setting}"
    check_head_params(cls, {setting: param_defaults(cls)[setting]})  # the default is allowed


BAD_VALUES = [
    ("logreg", "C", "-1", "> 0"),
    ("logreg", "C", "nan", "> 0"),
    ("logreg", "C", "0", "> 0"),
    ("logreg", "Cs", "0.1,-1", "> 0 (every value)"),
    ("logreg", "inner_folds", "1", ">= 2"),
    ("ordinal", "C", "inf", "> 0"),
    ("mlp", "max_epochs", "-1", ">= 1"),
    ("mlp", "lr", "inf", "> 0"),
    ("mlp", "lr", "nan", "> 0"),
    ("mlp", "batch_size", "0", ">= 1"),
    ("mlp", "dropout", "2", "in [0, 1)"),
    ("mlp", "hidden", "1000000000", "in [1, 65536]"),
    ("mlp", "val_size", "1.5", "in [0, 1)"),
    ("lgbm", "feature_fraction", "0", "in (0, 1]"),
    ("lgbm", "max_depth", "0", "-1 or >= 1"),
    ("lgbm", "val_size", "0", "in (0, 1)"),
    ("threshold", "n_grid", "0", "in [1, 2000]"),
    ("text-only", "ngram_min", "0", ">= 1"),
    ("mlp", "seed", "-3", "in [0, 4294967295]"),
    ("lgbm", "threads", "0", ">= 1"),
]


@pytest.mark.parametrize("head, setting, text, allowed", BAD_VALUES, ids=[f"{h}-{s}={t}" for h, s, t, _ in BAD_VALUES])
def test_a_value_outside_its_range_is_refused_naming_setting_value_and_range(head, setting, text, allowed):
    parsed = parse_head_params(get_head_class(head), {setting: text})
    with pytest.raises(BadInputError, match=rf"--param {setting}=\S+: head '{head}' takes ") as refused:
        make_head(head, params=parsed)
    message = str(refused.value)
    assert f"{setting}={_as_text(parsed[setting])}:" in message and message.endswith(f"{setting} {allowed}")


@pytest.mark.parametrize("command", ["fit-head", "audit"])
@pytest.mark.parametrize("param", ["C=-1", "C=nan", "C=0"])
def test_an_out_of_range_setting_exits_2_with_one_line_before_fitting(fit_files, tmp_path, capsys, command, param):
    pairs, cache = fit_files
    args = ["-q", command, "--cache", cache, "--data", pairs, "--head", "logreg", "--out", tmp_path / "out"]
    code, _, err = run_cli(args + ["--param", param], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"--param {param.split('=')[0]}=" in err and "> 0" in err
    assert not (tmp_path / "out").exists()


def test_every_refused_setting_in_the_input_checks_page_is_refused_with_the_range_it_gives():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "input-checks.md").read_text(encoding="utf-8")
    refused = page.split("## Refused at once")[1].split("## Warned about")[0]
    quoted = re.findall(r"`--param (\w+)=(\S+?)`", refused)
    assert len(quoted) >= 6
    for setting, text in quoted:
        head = next(h for h in ("logreg", "mlp", "lgbm") if setting in param_defaults(get_head_class(h)))
        with pytest.raises(BadInputError, match=f"--param {setting}="):
            make_head(head, params=parse_head_params(get_head_class(head), {setting: text}))
    for head, setting, allowed in [("mlp", "dropout", "in [0, 1)"), ("mlp", "hidden", "in [1, 65536]")]:
        assert f"{setting} {allowed}" in refused
        assert param_range(get_head_class(head), setting).describe == allowed


def test_a_negative_seed_exits_2_naming_seed(fit_files, tmp_path, capsys):
    pairs, cache = fit_files
    args = ["-q", "fit-head", "--cache", cache, "--data", pairs, "--head", "logreg", "--out", tmp_path / "run"]
    code, _, err = run_cli([*args, "--seed", "-1"], capsys)
    assert code == 2 and "Traceback" not in err and "--seed -1: use an integer in [0, 4294967295]" in err
