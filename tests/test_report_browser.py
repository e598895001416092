"""The report in a real browser: headless Chromium loads it with no console error, decodes every
image, and a full-page screenshot is not blank.

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
