"""The README cannot drift from the code: every command in it parses, the short ones run, the snippet works."""

import glob
import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import click
import numpy as np
import pytest

import tagcons.cache
from tagcons.cli import cli, main
from tagcons.demo.dataset import DemoConfig, make_demo_set
from tagcons.embed.extractor import EmbedConfig, run_embed

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"
# The pages whose commands are parsed like the README's (the README's short ones also run).
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# Commands that need the hub, a GPU cluster or minutes of training are parsed, not run; `make demo` runs
# the demo path end to end and the finetune tests run fine-tuning.
NOT_RUN = ("embed", "finetune", "cache")


def code_blocks(language: str, page: Path = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def tagcons_commands(page: Path = README) -> list[list[str]]:
    """Argument lists after `tagcons` (also inside `torchrun ... -m tagcons`), from bash blocks and tables."""
    table_rows = [line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    inline = [c for c in re.findall(r"`(tagcons [^`]+)`", "\n".join(table_rows)) if " --" in c]  # not bare names
    text = "\n".join(code_blocks("bash", page)) + "\n" + "\n".join(inline)
    text = re.sub(r"\\\n\s*", " ", text)  # a command continued over lines
    commands = []
    for line in text.splitlines():
        line = line.split("#")[0].strip() if not line.strip().startswith("tagcons") else line.strip()
        words = shlex.split(line, comments=True) if line else []
        if "tagcons" in words and words[0] in ("tagcons", "torchrun"):
            commands.append(words[words.index("tagcons") + 1 :])
    return commands


def parse(args: list[str]) -> None:
    """Resolve the subcommand chain and parse its options exactly as the CLI would (no execution)."""
    args = [a for a in args if a not in ("-q", "-v", "--quiet", "--verbose")]
    command, context = cli, click.Context(cli, info_name="tagcons")
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        command = command.commands[name]
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=name, parent=context)
    command.make_context(name, args, parent=context)


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize(
    "args", [args for page in PAGES for args in tagcons_commands(page)], ids=lambda a: " ".join(a[:2])
)
def test_every_readme_and_docs_command_parses(args):
    parse(args)


@pytest.fixture(scope="module")
def readme_workspace(tmp_path_factory):
    """The files the README's commands name, made from a small demo set and the tiny backbone."""
    root = tmp_path_factory.mktemp("readme")
    demo = make_demo_set(root / "demo", DemoConfig(n_images=40, pairs_per_image=10))
    shutil.copy(demo.pairs_csv, root / "combined_data.csv")
    shutil.copy(demo.pairs_csv, root / "new_pairs.csv")
    shutil.copytree(demo.images_dir, root / "images")
    run_embed(
        EmbedConfig(
            data=root / "combined_data.csv", images=root / "images", backbone="tiny", out=root / "clip.h5", workers=0
        )
    )
    for name in ("koclip.h5", "ko-plain.h5", "ko-ens.h5"):  # caches the README's commands name
        shutil.copy(root / "clip.h5", root / name)
    _published_study_files(root, demo.pairs_csv)
    _posts_files(root, demo.pairs_csv)
    return root


def _posts_files(root: Path, pairs_csv: Path) -> None:
    """posts.parquet (the pairs grouped by image) and posts.h5, the cache of their images and tags."""
    import pandas as pd

    pairs = pd.read_csv(pairs_csv)
    posts = pairs.groupby("Image Filename")["Hashtag"].apply(list).reset_index()
    posts.columns = ["image", "hashtags"]
    posts.insert(0, "post_id", range(len(posts)))
    posts.to_parquet(root / "posts.parquet", index=False)
    run_embed(
        EmbedConfig(
            data=None, posts=root / "posts.parquet", images=root / "images", backbone="tiny", out=root / "posts.h5",
            workers=0,
        )
    )  # fmt: skip


def _published_study_files(root: Path, pairs_csv: Path) -> None:
    """dataset.csv, folds.csv and oof/koclip_ft.csv in the published study's layout (scores 0-4 in oof)."""
    import pandas as pd

    pairs = pd.read_csv(pairs_csv)
    study = pd.DataFrame({"sample_id": np.arange(1, len(pairs) + 1), "post_id": pairs["Image Filename"]})
    study["hashtag"], study["label"] = pairs["Hashtag"], pairs["Score"]
    study.to_csv(root / "dataset.csv", index=False)
    fold = pd.factorize(study["post_id"])[0] % 3
    study[["sample_id", "post_id"]].assign(fold=fold).to_csv(root / "folds.csv", index=False)
    (root / "oof").mkdir()
    oof = study[["sample_id"]].assign(true_label=study["label"] - 1, pred_label=study["label"] - 1, fold=fold)
    oof.to_csv(root / "oof" / "koclip_ft.csv", index=False)


@pytest.mark.slow
def test_short_readme_commands_run(readme_workspace, monkeypatch, capsys):
    monkeypatch.chdir(readme_workspace)
    ran = 0
    for args in tagcons_commands():
        if args[0] in NOT_RUN:
            continue
        expanded = [match for word in args for match in (sorted(glob.glob(word)) if "*" in word else [word])]
        try:
            main(expanded)
        except SystemExit as exit_info:
            pytest.fail(f"`tagcons {' '.join(args)}` exited {exit_info.code}: {capsys.readouterr().err[-500:]}")
        ran += 1
    assert ran >= 8
    assert Path("results.md").is_file() and Path("scored.parquet").is_file() and Path("suggested.parquet").is_file()


def test_readme_python_snippet_reads_the_cache(readme_workspace, monkeypatch):
    monkeypatch.chdir(readme_workspace)
    (snippet,) = [block for block in code_blocks("python") if "h5py" in block]
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    pairs = namespace["pairs"]
    assert len(pairs) > 300 and np.isfinite(pairs["cosine"]).all()
    with tagcons.cache.open("clip.h5") as cache:
        lookup = cache.lookup(list(pairs["Image Filename"]), list(pairs["Hashtag"].str.strip()), normalise=True)
    expected = (lookup.image_embeds * lookup.text_embeds).sum(1)
    np.testing.assert_allclose(pairs["cosine"].to_numpy(), expected, atol=1e-5)


PROTOCOL_JSON = README.parent / "benchmarks" / "results" / "protocol.json"
SPLIT_DEFAULTS = ("pairs/none", "images/exact")  # each split with its default --dedupe, as the table compares them
PROTOCOL_ROWS = {
    "hashtag characters (`text-only`)": "text_only",
    "image prior (`image-prior`)": "image_prior",
    "hashtag characters + image id": "text_and_image_id",
}


def _protocol_results() -> dict:
    return json.loads(PROTOCOL_JSON.read_text())["results"]


def _mean_sd(result: dict, metric: str) -> str:
    return f"{result['mean'][metric]:.3f} ± {result['sd'][metric]:.3f}"


def test_readme_protocol_table_quotes_the_benchmark_result():
    """The pairs-split table's figures are benchmarks/results/protocol.json's, as `benchmarks/protocol.py` wrote it."""
    results = _protocol_results()
    page = DOCS / "honest-numbers.md"
    rows = {line.split("|")[1].strip(): line for line in page.read_text().splitlines() if line.startswith("| ")}
    for label, model in PROTOCOL_ROWS.items():
        by_split = results[model]
        cells = [_mean_sd(by_split[split], metric) for metric in ("macro_f1", "qwk") for split in SPLIT_DEFAULTS]
        assert [c.strip() for c in rows[label].split("|")[2:6]] == cells, label
    text = " ".join(page.read_text().split())
    with_id = results["text_and_image_id"]
    for split in SPLIT_DEFAULTS:
        low, high = with_id[split]["ci95_pooled"]["macro_f1"]
        assert f"{_mean_sd(with_id[split], 'macro_f1')} [{low:.3f}, {high:.3f}]" in text, split


@pytest.mark.slow
def test_the_protocol_benchmark_result_comes_from_the_code(tmp_path, reference_csv):
    """One cell of benchmarks/protocol.py rerun on the study's table gives the saved result."""
    spec = importlib.util.spec_from_file_location("protocol", README.parent / "benchmarks" / "protocol.py")
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    saved = _protocol_results()["text_and_image_id"]["pairs/none"]
    rerun = protocol.run(reference_csv, "text_and_image_id", "pairs", "none", len(saved["seeds"]), tmp_path)
    np.testing.assert_allclose(rerun["per_seed_macro_f1"], saved["per_seed_macro_f1"], atol=1e-9)
    assert rerun["mean"] == pytest.approx(saved["mean"], abs=1e-9)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end > 0 else None]


def test_the_newcomer_path_says_how_to_run_tagcons_and_what_the_pairs_file_is():
    """`tagcons` on PATH, the pairs file's columns and scale (the code's defaults) before the first command that
    names combined_data.csv, and the CJK font where the report is introduced."""
    import configparser

    from tagcons.configs import PairColumns
    from tagcons.labels import DEFAULT_SCALE

    text = README.read_text(encoding="utf-8")
    quickstart = _section(text, "## Set up")
    assert "source .venv/bin/activate" in quickstart and "pip install -e ." in quickstart
    setup = configparser.ConfigParser()
    setup.read(README.parent / "setup.cfg")
    assert "tagcons" in setup["options.entry_points"]["console_scripts"]
    own = _section(text, "## Your own data")
    columns = PairColumns()
    assert all(f"`{name}`" in own for name in (columns.image, columns.text, columns.label))
    low, high = str(DEFAULT_SCALE).split("-")
    assert f"{low}–{high} by default" in " ".join(own.split())
    assert "`combined_data.csv`" in own and text.index(own) < text.index("--data combined_data.csv")
    tour = _section(text, "## A five-minute tour")
    assert "CJK font" in tour and "tagcons report" in tour
