"""The report in a real browser: headless Chromium loads it with no console error, decodes every
image (one forest plot per test-row group among them), a full-page screenshot is not blank, no two text
boxes overlap, and on a 390-px phone the tables scroll sideways while the page itself does not.

Needs Debian's `chromium` (`.ci/run` installs it). Skipped only outside CI when it is missing; in CI
(CI=true) a missing browser fails the test.
"""

from __future__ import annotations

import os

import pytest
from browser_helpers import find_chromium, probe, screenshot
from PIL import Image, ImageStat
from report_helpers import CATEGORY_REGEX, contract_run, fit_runs

from tagcons.evaluate.report import ReportConfig, write_report

MIN_GREY_STDDEV = 10.0  # a blank (one-colour) page has 0
PHONE_PX = 390
MIN_COLOURS = 50


@pytest.fixture(scope="module")
def chromium():
    found = find_chromium()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is missing in CI: .ci/run should have installed it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_browser")
    runs, pairs, images = fit_runs(root, heads=("mlp",))
    runs += [contract_run(root / "runs", "alpha", 0.5, 1), contract_run(root / "runs", "beta", 0.4, 2)]
    config = ReportConfig(run_dirs=runs, out=root / "report.html", images=images, category_from=CATEGORY_REGEX)
    return write_report(config)


def test_chromium_loads_the_report_without_errors_and_decodes_every_image(chromium, report, tmp_path):
    result = probe(chromium, report)
    assert result.errors == []
    assert result.images >= 10  # plots and thumbnails
    assert result.broken == []
    assert result.text > 500

    png = screenshot(chromium, report, tmp_path / "report.png", result.height)
    with Image.open(png) as shot:
        assert shot.height >= min(result.height, 16000) - 1
        grey = shot.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > MIN_GREY_STDDEV
        assert len(shot.convert("RGB").getcolors(maxcolors=1 << 24)) > MIN_COLOURS


def test_the_probe_catches_a_broken_image_and_a_console_error(chromium, report, tmp_path):
    """The checks above can fail: a page with an undecodable image and a CSP violation is caught."""
    broken = tmp_path / "broken.html"
    page = report.read_text(encoding="utf-8")
    page = page.replace("<body>", '<body><img src="data:image/png;base64,AAAA" alt="broken">', 1)
    page = page.replace("</body>", '<img src="http://127.0.0.1:9/x.png" alt="remote"></body>', 1)
    broken.write_text(page, encoding="utf-8")
    result = probe(chromium, broken)
    assert "broken" in result.broken and "remote" in result.broken
    assert result.errors  # the CSP refuses the remote image and says so on the console


def test_one_forest_plot_per_test_row_group_loads(chromium, report):
    result = probe(chromium, report)
    # the fit-head run and the two hand-written runs were tested on different rows: two groups
    assert result.forests == [("forest plot of group A", True), ("forest plot of group B", True)]
    assert result.overlaps == []


def test_on_a_phone_the_tables_scroll_and_the_page_does_not(chromium, report):
    result = probe(chromium, report, width=PHONE_PX)
    assert result.viewport == PHONE_PX
    assert result.page_width <= result.viewport  # nothing pushes the page sideways
    summary_width, summary_box = result.scrollers[0]
    assert summary_width > summary_box  # the summary's 14+ columns scroll inside their container
    assert result.overlaps == []
    assert result.broken == [] and result.errors == []


def test_the_probe_catches_overlapping_text_and_a_page_wider_than_the_phone(chromium, report, tmp_path):
    """The layout checks above can fail: text laid over the title, and tables no longer scrolling."""
    planted = tmp_path / "planted.html"
    page = report.read_text(encoding="utf-8")
    page = page.replace("<body>", '<body><p style="position: absolute; top: 8px; left: 20px">over the title</p>', 1)
    page = page.replace(".scroll { overflow-x: auto;", ".scroll { overflow-x: visible;", 1)
    planted.write_text(page, encoding="utf-8")
    result = probe(chromium, planted, width=PHONE_PX)
    assert any("over the title" in " ".join(pair) for pair in result.overlaps)
    assert result.page_width > result.viewport
