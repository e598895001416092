"""`tagcons report`: sections, escaping, self-containment, categories, galleries, bad input."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from report_helpers import CATEGORY_REGEX, HOSTILE_IMAGE, HOSTILE_TAGS, contract_run, fit_runs, make_study

from tagcons.cli import main
from tagcons.evaluate.compare import compare_runs
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.report import ReportConfig, render_report

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}


class Page(HTMLParser):
    """Strict enough to catch broken markup: every non-void element closed in order."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.ids, self.images, self.texts, self.problems = [], set(), [], [], []
        self.scripts = 0
        self.feed(html)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update([attrs["id"]] if "id" in attrs else [])
        self.images += [attrs] if tag == "img" else []
        self.scripts += tag == "script"
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    pairs, images = make_study(root)
    runs = [
        contract_run(root / "runs", name, value, seed) for name, value, seed in (("alpha", 0.5, 1), ("beta", 0.4, 2))
    ]
    return {"root": root, "pairs": pairs, "images": images, "runs": runs}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    runs, pairs, images = fit_runs(tmp_path_factory.mktemp("report_real"))
    return {"runs": runs, "pairs": pairs, "images": images}


def _render(runs, **options) -> tuple[str, Page]:
    html = render_report(ReportConfig(run_dirs=runs, out=None, **options))
    return html, Page(html)


def _decoded(uri: str) -> Image.Image:
    assert uri.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_report_parses_and_holds_every_section(study):
    html, page = _render(study["runs"], images=study["images"], category_from=CATEGORY_REGEX)
    assert page.problems == []
    assert {"summary", "groups", "runs", "categories", "worst", "disagree", "glossary"} <= page.ids
    for shown in ("Baselines", "Paired differences", "Per category", "Worst errors", "Disagreements: alpha vs beta"):
        assert shown in page.text


def test_contract_keys_are_shown(study):
    _, page = _render(study["runs"])
    text = page.text
    assert "0.500[0.400, 0.600]" in text  # alpha's accuracy with its ci95
    assert "1000 resamples, seed 7" in text
    for baseline in ("majority", "text_only", "image_prior"):
        assert baseline in text
    assert "temperature 1.700" in text and "0.050" in text  # calibration: after-ECE
    assert "reported: expected" in text and "argmax" in text
    assert sum(1 for img in page.images if img["alt"].startswith("reliability diagram")) == 2
    assert sum(1 for img in page.images if img["alt"].startswith("training curves")) == 2  # drawn from history


def test_a_decoding_the_head_cannot_do_and_no_calibration(tmp_path):
    run = contract_run(tmp_path, "plain", 0.3, 3, decode="argmax", decodings={"argmax": None, "expected": None})
    (run / "reliability.png").unlink()
    metrics_path = run / "metrics.json"
    metrics_path.write_text(metrics_path.read_text().replace('"calibration": {', '"calibration_": {'))
    _, page = _render([run])
    assert page.problems == [] and "reported: argmax" in page.text
    assert "Calibration" not in page.text and not any(i["alt"].startswith("reliability") for i in page.images)


def test_no_network_reference_and_no_script(study):
    html, page = _render(study["runs"], images=study["images"], category_from=CATEGORY_REGEX)
    assert not re.search(r"https?://", html)
    assert page.scripts == 0
    assert all(img["src"].startswith("data:image/") for img in page.images)
    assert "default-src 'none'" in html  # the CSP forbids anything not embedded


def test_hostile_strings_render_as_text(study):
    html, page = _render(study["runs"], images=study["images"])
    assert "<script>alert" not in html and "<img src=x" not in html and "<img src=y" not in html
    for tag in HOSTILE_TAGS:
        assert tag in page.text  # shown, as text
    assert HOSTILE_IMAGE in page.text
    assert any(img["alt"] == HOSTILE_IMAGE for img in page.images)  # an attribute keeps the whole name


def test_worst_errors_come_first_with_thumbnails_at_most_160_px(study):
    _, page = _render(study["runs"], images=study["images"], worst=2)
    worst = page.text.split("Worst errors", 2)[2].split("Disagreements")[0]
    assert worst.count("true 1 · predicted 5") == 4  # the hostile rows (off by 4) lead both runs' galleries
    thumbnails = [_decoded(img["src"]) for img in page.images if img["src"].startswith("data:image/jpeg")]
    assert thumbnails and max(max(t.size) for t in thumbnails) <= 160


def test_without_images_the_galleries_are_text_only(study):
    _, page = _render(study["runs"])
    assert not [img for img in page.images if img["src"].startswith("data:image/jpeg")]
    assert "text only" in page.text and HOSTILE_TAGS[0] in page.text
    assert "categories" not in page.ids  # no category option: no section


def _category_table(page: Page) -> str:
    return page.text.split("Per category", 2)[2].split("Worst errors")[0]


def test_categories_from_the_image_key_match_compute_metrics(study):
    _, page = _render(study["runs"][:1], category_from=CATEGORY_REGEX)
    predictions = pd.read_csv(study["runs"][0] / "predictions.csv", keep_default_na=False)
    food = predictions[predictions["image"].str.startswith("food_")]
    accuracy = compute_metrics(food["true"], food["pred"])["accuracy"]
    assert f"foodalpha{len(food)}{food['image'].nunique()}{accuracy:.3f}" in _category_table(page)


def test_categories_from_a_column_of_the_pairs_file(study):
    _, page = _render(study["runs"][:1], data=study["pairs"], category_col="Category")
    table = _category_table(page)
    assert "FASHIONalpha" in table and "FOODalpha" in table


def test_real_fit_head_runs(real):
    _, page = _render(real["runs"], images=real["images"], category_from=CATEGORY_REGEX)
    assert page.problems == []
    metrics = json.loads((real["runs"][0] / "metrics.json").read_text(encoding="utf-8"))
    if "ci95" in metrics:  # fit-head writes intervals: shown under the value
        low, high = metrics["ci95"]["macro_f1"]
        assert f"{metrics['macro_f1']:.3f}[{low:.3f}, {high:.3f}]" in page.text
    else:
        assert "Intervals: not available for these runs" in page.text
    assert any(img["alt"] == "training curves of mlp" for img in page.images)
    assert all(_decoded(img["src"]).size[0] > 0 for img in page.images)
    # paired differences are compare's numbers: mlp's macro-F1 minus the better of the two
    frame = compare_runs(real["runs"]).set_index("run")
    gap = frame.loc["mlp", "macro_f1"] - frame["macro_f1"].max()
    differences = page.text.split("Paired differences", 1)[1].split("Per run")[0]
    assert ("best" if gap == 0 else f"{gap:+.3f}") in differences.split("mlp", 1)[1]


def test_cli_writes_the_file_and_prints_its_path(study, capsys):
    out = study["root"] / "report.html"
    main(["report", *map(str, study["runs"]), "--out", str(out), "--images", str(study["images"])])
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert Page(out.read_text(encoding="utf-8")).problems == []


@pytest.mark.parametrize(
    "options, message",
    [
        (["--category-from", "^[a-z]+_"], "needs exactly one group"),
        (["--category-from", "("], "not a valid regular expression"),
        (["--category-col", "Category"], "add --data"),
        (["--category-col", "Nope", "--data", "PAIRS"], "no column Nope"),
        (["--category-col", "Category", "--category-from", "(x)", "--data", "PAIRS"], "not both"),
        (["--images", "MISSING"], "images folder not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(study, capsys, options, message):
    options = [
        str(study["pairs"]) if o == "PAIRS" else str(study["root"] / "nowhere") if o == "MISSING" else o
        for o in options
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(study["runs"][0]), "--out", str(study["root"] / "bad.html"), *options])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_a_folder_that_is_not_a_run_exits_2(study, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(study["images"]), "--out", str(study["root"] / "bad.html")])
    assert exit_info.value.code == 2
    assert "predictions.csv: not found" in capsys.readouterr().err


def test_paired_differences_are_the_numbers_compare_computes(study):
    from tagcons.evaluate import compare

    _, page = _render(study["runs"])
    differences = page.text.split("Paired differences", 1)[1].split("Per run")[0]
    if hasattr(compare, "RunGroup"):  # compare's paired bootstrap: difference, interval and p-value
        (group,) = compare.paired_differences(study["runs"])
        diff = group.difference("macro_f1", "beta")
        low, high = diff.ci95
        assert f"{diff.difference:+.3f}[{low:+.3f}, {high:+.3f}] p={diff.p_value:.3f}" in differences
    else:  # an older compare: its table's differences to the best run, said to have no interval
        frame = compare.compare_runs(study["runs"]).set_index("run")
        assert f"{frame.loc['beta', 'macro_f1'] - frame.loc['alpha', 'macro_f1']:+.3f}" in differences
        assert "paired intervals are not available" in differences


# --- issue 27 item 4: what people look at first, and what a real browser showed broken ---------------------


def _forests(page: Page) -> list[dict]:
    return [img for img in page.images if img["alt"].startswith("forest plot of group")]


def test_one_forest_plot_per_test_row_group(study, real):
    _, page = _render(study["runs"] + real["runs"])  # two groups: the hand-written runs and the fit-head runs
    forests = _forests(page)
    assert [img["alt"] for img in forests] == ["forest plot of group A", "forest plot of group B"]
    assert all(_decoded(img["src"]).size[0] > 400 for img in forests)
    assert page.text.count("Baselines, group") == 2


def test_baselines_once_per_group_and_why_text_only_differs(study, tmp_path):
    _, page = _render(study["runs"])
    groups = page.text.split("Test-row groups", 2)[2].split("Per run")[0]
    assert groups.count("image_prior0.300") == 1  # one table for alpha and beta, not one per run
    assert "shared by every run of the group" in groups and "text-only head at its default settings" in groups
    other = contract_run(tmp_path, "gamma", 0.45, 3, baselines={"majority": {"accuracy": 0.15, "macro_f1": 0.1}})
    _, page = _render([*study["runs"], other])  # a run whose baselines differ: its own set, and no reference lines
    groups = page.text.split("Test-row groups", 2)[2].split("Per run")[0]
    assert "the baselines of alpha, beta" in groups and "the baselines of gamma" in groups
    assert "a line is drawn only where every run's baseline has the same value" in groups


def test_forest_reference_lines_are_the_baseline_values_every_run_shares(study, tmp_path):
    from tagcons.evaluate.report_figures import _reference_lines
    from tagcons.evaluate.report_groups import test_row_groups
    from tagcons.evaluate.report_runs import load_runs

    (group,) = test_row_groups(load_runs(study["runs"]))
    lines = _reference_lines(group, ["accuracy", "qwk"])
    assert lines == {
        name: {"accuracy": v, "qwk": v} for name, v in (("majority", 0.1), ("text_only", 0.2), ("image_prior", 0.3))
    }
    other = contract_run(tmp_path, "gamma", 0.45, 3, baselines={"majority": {"accuracy": 0.15, "qwk": 0.1}})
    (group,) = test_row_groups(load_runs([*study["runs"], other]))
    assert _reference_lines(group, ["accuracy", "qwk"]) == {
        "majority": {"qwk": 0.1}
    }  # accuracy differs; gamma lacks the rest


def test_disagreements_are_between_the_two_best_runs_of_a_group(tmp_path):
    runs = [
        contract_run(tmp_path, name, value, seed)
        for name, value, seed in (("low", 0.3, 1), ("high", 0.6, 2), ("mid", 0.5, 3))
    ]
    _, page = _render(runs)
    assert "Disagreements: high vs mid (group A)" in page.text
    assert "Disagreements: low vs" not in page.text


def test_best_marks_are_compares_best_and_clear_only_where_its_intervals_say_so(study):
    from tagcons.evaluate import compare

    _, page = _render(study["runs"])
    summary = page.text.split("Summary", 2)[2].split("Paired differences")[0]
    (group,) = compare.paired_differences(study["runs"])
    best = group.frame.loc[min(group.best["macro_f1"]), "run"]
    assert best == "alpha" and "alpha" in summary.split("best")[0]
    clear = all(d.significant for d in group.differences["macro_f1"]["runs"].values())
    assert ("best, clear" in summary.split("Group: runs tested")[0]) == clear  # the table, not the note
    assert "it is not a claim that the run is better" in summary


def test_categories_carry_intervals_and_flag_few_test_images(study):
    _, page = _render(study["runs"][:1], category_from=CATEGORY_REGEX)
    table = _category_table(page)
    predictions = pd.read_csv(study["runs"][0] / "predictions.csv", keep_default_na=False)
    food = predictions[predictions["image"].str.startswith("food_")]
    from tagcons.evaluate.intervals import bootstrap_intervals

    low, high = bootstrap_intervals(food["true"], food["pred"], food["image"], resamples=1000, seed=7)["ci95"]["qwk"]
    assert f"[{low:.3f}, {high:.3f}]" in table  # the run's own bootstrap (1000 resamples, seed 7) on food's images
    assert f"few test images ({food['image'].nunique()} < 20)" in table


def test_an_audit_in_a_run_folder_gets_its_section(study, tmp_path):
    import shutil

    run = Path(shutil.copytree(study["runs"][0], tmp_path / "audited"))
    summary = {"n_pairs": 120, "n_flagged": 9, "flagged_share": 0.075, "oof_macro_f1": 0.41, "rows": "out-of-fold"}
    (run / "audit.json").write_text(json.dumps({**summary, "noise_rate": {"1": 0.1, "2": 0.25}, "head": "lgbm"}))
    columns = "rank,image,hashtag,given_score,suggested_score,p_given,expected_distance"
    (run / "audit.csv").write_text(f"{columns}\n1,food_00.png,{HOSTILE_TAGS[0]},5,1,0.02,1.9\n", encoding="utf-8")
    html, page = _render([run])
    assert "audit" in page.ids and "Audit from run audited" in page.text
    assert "9 pairs flagged (7.5%" in page.text and "0.410" in page.text and "not a run's test rows" in page.text
    assert HOSTILE_TAGS[0] in page.text.split("Audit from", 1)[1] and "<script>alert" not in html
    _, page = _render(study["runs"])
    assert "audit" not in page.ids  # no audit anywhere: no section


def test_a_symlinked_audit_is_left_out(study, tmp_path, caplog):
    import shutil

    run = Path(shutil.copytree(study["runs"][0], tmp_path / "linked"))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"n_pairs": 424242, "n_flagged": 1}))
    (run / "audit.json").symlink_to(secret)
    _, page = _render([run])
    assert "424242" not in page.text and "audit" not in page.ids
    assert "left out of the report" in caplog.text


def test_audit_option_needs_an_audit_folder(study, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["report", str(study["runs"][0]), "--out", str(study["root"] / "bad.html"), "--audit", str(study["images"])]
        )
    assert exit_info.value.code == 2 and "holds no audit.json" in capsys.readouterr().err


def test_glossary_and_tables_that_scroll_on_a_phone(study):
    html, page = _render(study["runs"], category_from=CATEGORY_REGEX)
    glossary = page.text.split("Glossary", 2)[2]
    for term in ("QWK", "MAE", "adjacent accuracy", "ECE", "Brier", "temperature", "p(true)"):
        assert term in glossary
    assert html.count("<table>") == html.count('<div class="scroll">\n<table>') > 5  # every table in a scroller
    assert re.search(r"\.scroll \{[^}]*overflow-x: auto", html)
