"""Config dataclasses: the CLI's defaults are theirs, paths are `Path`, and runs written before keep resuming."""

import dataclasses
import json
from pathlib import Path

import click
import pytest

from tagcons.cli import cli
from tagcons.configs import (
    AuditConfig,
    DemoRunConfig,
    EmbedConfig,
    EvaluateConfig,
    FinetuneConfig,
    FitHeadConfig,
    PairColumns,
    PredictConfig,
    ReportConfig,
    ScoreConfig,
    SuggestConfig,
    field_default,
)
from tagcons.errors import BadInputError

# command -> (its config, CLI parameter names that differ from the field names)
COMMANDS = {
    "embed": (EmbedConfig, {"compile_model": "compile"}),
    "fit-head": (
        FitHeadConfig,
        {"cache_path": "cache", "heads": "head", "params": "head_params", "folds_file": "folds"},
    ),
    "evaluate": (EvaluateConfig, {}),
    "predict": (PredictConfig, {"run_dir": "run", "cache_path": "cache"}),
    "audit": (AuditConfig, {"cache_path": "cache", "params": "head_params"}),
    "report": (ReportConfig, {}),
    "finetune": (FinetuneConfig, {}),
    "demo": (DemoRunConfig, {}),
    "score": (ScoreConfig, {"cache_path": "cache", "run_dir": "run"}),
    "suggest": (SuggestConfig, {"cache_path": "cache", "run_dir": "run", "index_kind": "index"}),
}
COLUMN_FLAGS = {"image_col": "image", "text_col": "text", "label_col": "label"}
COLUMN_FLAGS |= {"post_id_col": "post_id", "hashtags_col": "hashtags", "caption_col": "caption"}  # score, suggest
POST_COLUMN_FLAGS = {"post_col": "post_id", "hashtags_col": "hashtags", "caption_col": "caption"}  # embed --posts
# (command, parameter) whose CLI default is not the field's default, and why
NOT_THE_FIELD_DEFAULT = {
    ("fit-head", "params"): "KEY=VALUE text, parsed into head_params by each head's settings",
    ("audit", "params"): "KEY=VALUE text, parsed into head_params by each head's settings",
    ("predict", "image_col"): "the CLI reads the study's column names; the library's None means the run's",
    ("predict", "text_col"): "the CLI reads the study's column names; the library's None means the run's",
    ("predict", "label_col"): "the CLI reads the study's column names; the library's None means the run's",
}


def config_default(config_class, name: str):
    if name in POST_COLUMN_FLAGS and "post_columns" in config_class.__dataclass_fields__:  # embed --posts
        return getattr(field_default(config_class, "post_columns"), POST_COLUMN_FLAGS[name])
    if name in COLUMN_FLAGS:
        columns = field_default(config_class, "columns")
        return None if columns is None else getattr(columns, COLUMN_FLAGS[name])
    return field_default(config_class, name)


def cli_defaults(command_name: str) -> dict:
    """{parameter name: default} of a command's optional parameters, as click applies them."""
    command = cli.commands[command_name]
    context = click.Context(command)
    return {p.name: p.get_default(context) for p in command.params if not p.required and p.name != "help"}


@pytest.mark.parametrize("command_name", sorted(COMMANDS))
def test_every_cli_default_is_its_config_fields_default(command_name):
    config_class, renames = COMMANDS[command_name]
    fields = {f for f in config_class.__dataclass_fields__} | set(COLUMN_FLAGS) | set(POST_COLUMN_FLAGS)
    checked = 0
    for param, default in cli_defaults(command_name).items():
        if (command_name, param) in NOT_THE_FIELD_DEFAULT:
            continue
        name = renames.get(param, param)
        assert name in fields, f"{command_name} --{param}: no {config_class.__name__} field of that name"
        expected = config_default(config_class, name)
        assert default == expected, f"{command_name} --{param}: CLI {default!r}, config {expected!r}"
        checked += 1
    assert checked, f"{command_name}: no default checked"


def test_configs_take_paths_as_path_and_columns_as_pair_columns(tmp_path):
    config = FinetuneConfig(data="pairs.csv", images="images", backbone="tiny", out=str(tmp_path), init_head="run")
    assert (config.data, config.images, config.run_dir, config.init_head) == (
        Path("pairs.csv"),
        Path("images"),
        tmp_path,
        Path("run"),
    )
    assert config.columns == PairColumns()
    assert ReportConfig(run_dirs=["a", "b"], out="r.html").run_dirs == [Path("a"), Path("b")]
    assert FitHeadConfig(data="d.csv", head="threshold", out="o", cache=None).cache is None


PATH_FIELDS = {"data", "images", "out", "cache", "run", "init_head", "exclude_pairs", "run_dirs"}


@pytest.mark.parametrize("config_class", [c for c, _ in COMMANDS.values()], ids=lambda c: c.__name__)
def test_path_fields_are_annotated_path(config_class):
    for spec in dataclasses.fields(config_class):
        if spec.name in PATH_FIELDS and spec.type != "DemoConfig":
            assert "Path" in spec.type, f"{config_class.__name__}.{spec.name}: {spec.type}"
        assert not spec.name.endswith(("image_col", "text_col", "label_col")), "pair columns come as one PairColumns"


# What `to_dict` wrote before configs took Path and PairColumns (flat column keys, paths as text),
# plus the keys the run adds to config.json.
OLD_CONFIG_JSON = {
    **{"data": "pairs.csv", "images": "images", "backbone": "tiny", "out": "run", "recipe": "robust"},
    **{"revision": None, "epochs": 10, "batch_size": 32, "grad_accum": 1, "split": "images", "dedupe": None},
    **{"test_size": 0.2, "val_size": 0.1, "seed": 42, "optimizer": "adamw", "lr": 1e-05, "head_lr": 0.001},
    **{"weight_decay": 0.05, "layer_decay": 0.75, "schedule": "cosine", "warmup": 0.1, "step_size": 5},
    **{"gamma": 0.1, "grad_clip": 1.0, "class_weights": True, "patience": 3, "unfreeze_vision": 2},
    **{"unfreeze_text": -1, "lp_init": True, "init_head": None, "allow_unverified_init": False, "dropout": 0.3},
    **{"hidden": 256, "precision": "auto", "grad_checkpointing": False, "wise_alpha": 1.0, "device": "auto"},
    **{"workers": 0, "image_col": "Image Filename", "text_col": "Hashtag", "label_col": "Rating"},
    **{"strip_hash": False, "scale": "1-5", "text_templates": ["{}"], "head_init": "linear-probe"},
}


def resumed(tmp_path, **overrides) -> str:
    from tagcons.finetune.config import resolve
    from tagcons.finetune.resume import _resumed_head_init

    (tmp_path / "config.json").write_text(json.dumps({**OLD_CONFIG_JSON, "out": str(tmp_path)}))
    settings = dict(data=Path("pairs.csv"), images=Path("images"), backbone="tiny", out=tmp_path, workers=0)
    config = FinetuneConfig(**{**settings, "columns": PairColumns(label="Rating"), **overrides}, resume=True)
    return _resumed_head_init(resolve(config))


def test_resume_reads_a_config_json_written_before_paths_and_columns_changed(tmp_path):
    assert resumed(tmp_path) == "linear-probe"
    assert FinetuneConfig(data="d", images="i", backbone="tiny", out="o").to_dict()["label_col"] == "Score"
    with pytest.raises(BadInputError, match="label_col: 'Rating' -> 'Score'"):
        resumed(tmp_path, columns=PairColumns())


def test_the_suites_summary_lists_failures_errors_and_skips_but_not_expected_failures():
    """`make test` ends with pytest's short summary: failures, errors and skips, not every xfail's reason."""
    import re

    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    addopts = tomllib.loads(pyproject.read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    report = re.search(r"-r(\w+)", addopts)[1]
    assert set(report) >= {"f", "E", "s"} and not set(report) & {"a", "A", "x", "X"}
