"""Headless Chromium for the report's real-browser test (and the README screenshot).

`probe(html)` loads a copy of the page whose inline script records, at the load event, every image's
naturalWidth and every error event into the DOM, then reads it back with --dump-dom; console lines
Chromium logs to stderr count as errors too. `screenshot(html, png)` takes a full-page screenshot:
the window is as tall as the page the probe measured.

Run as a script to refresh docs/report.png from a report:  python tests/browser_helpers.py REPORT.html OUT.png
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from html import unescape
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
WINDOW_WIDTH = 1280
MAX_HEIGHT = 16000  # beyond this Chromium's screenshot surface tiles badly; the reports stay far shorter
CSP_DEFAULT = "default-src 'none';"
PROBE_ID = "tagcons-probe"
PROBE_SCRIPT = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || "error event"));
  }, true);
  var original = console.error;
  console.error = function () {
    errors.push(Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
  function top(element) { return Math.round(element.getBoundingClientRect().top + window.scrollY); }
  function visible(element) {  // the element's box, clipped to the scrolling container it sits in
    var r = element.getBoundingClientRect(), box = {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
    var scroller = element.closest(".scroll");
    if (scroller) {
      var c = scroller.getBoundingClientRect();
      box = {left: Math.max(box.left, c.left), right: Math.min(box.right, c.right),
             top: Math.max(box.top, c.top), bottom: Math.min(box.bottom, c.bottom)};
    }
    return box;
  }
  function overlaps() {  // pairs of text boxes (neither inside the other) that overlap by more than TOLERANCE px
    var found = [], items = Array.prototype.slice.call(document.querySelectorAll(TEXT_BOXES))
      .map(function (e) { return {element: e, box: visible(e)}; })
      .filter(function (i) { return i.box.right - i.box.left > 0 && i.box.bottom - i.box.top > 0; });
    for (var i = 0; i < items.length; i++) {
      for (var j = i + 1; j < items.length; j++) {
        var a = items[i], b = items[j];
        if (a.element.contains(b.element) || b.element.contains(a.element)) continue;
        var w = Math.min(a.box.right, b.box.right) - Math.max(a.box.left, b.box.left);
        var h = Math.min(a.box.bottom, b.box.bottom) - Math.max(a.box.top, b.box.top);
        if (w > TOLERANCE && h > TOLERANCE) {
          found.push([a.element.tagName + ": " + a.element.textContent.slice(0, 40),
                      b.element.tagName + ": " + b.element.textContent.slice(0, 40)]);
        }
      }
    }
    return found.slice(0, 20);
  }
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var sections = Array.prototype.slice.call(document.querySelectorAll("section[id]"));
    var result = {
      images: images.length,
      broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                    .map(function (i) { return i.alt || i.src.slice(0, 60); }),
      errors: errors,
      height: Math.ceil(document.documentElement.scrollHeight),
      text: document.body.innerText.length,
      sections: Object.fromEntries(sections.map(function (s) { return [s.id, top(s)]; })),
      forests: images.filter(function (i) { return i.classList.contains("forest"); })
                     .map(function (i) { return [i.alt, i.complete && i.naturalWidth > 0]; }),
      viewport: window.innerWidth,
      page_width: document.documentElement.scrollWidth,
      scrollers: Array.prototype.slice.call(document.querySelectorAll(".scroll"))
                      .map(function (s) { return [s.scrollWidth, s.clientWidth]; }),
      overlaps: overlaps()
    };
    var out = document.createElement("pre");
    out.id = "PROBE_ID";
    out.textContent = JSON.stringify(result);
    document.body.appendChild(out);
  });
})();
</script>""".replace("PROBE_ID", PROBE_ID)
# Boxes that hold text (and images): no two may overlap beyond collapsed table borders.
TEXT_BOXES = "h1, h2, h3, h4, p, figcaption, th, td, dt, dd, nav a, .card > div, img"
OVERLAP_TOLERANCE_PX = 2
PROBE_SCRIPT = PROBE_SCRIPT.replace("TEXT_BOXES", json.dumps(TEXT_BOXES)).replace(
    "TOLERANCE", str(OVERLAP_TOLERANCE_PX)
)
CONSOLE_LINE = re.compile(r":CONSOLE[(:]")
MIN_WINDOW_WIDTH = 500  # headless Chromium widens a narrower --window-size to this
FRAME_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body style="margin: 0">
<script>
window.addEventListener("load", function () {
  var inner = document.getElementById("frame").contentDocument.getElementById("PROBE_ID");
  var out = document.createElement("pre");
  out.id = "PROBE_ID";
  out.textContent = inner ? inner.textContent : "";
  document.body.appendChild(out);
});
</script>
<iframe id="frame" width="WIDTH" height="900" style="border: 0" srcdoc="SRCDOC"></iframe>
</body></html>""".replace("PROBE_ID", PROBE_ID)


@dataclass
class ProbeResult:
    images: int
    broken: list[str]
    errors: list[str]  # page error events, console.error calls, and console lines in Chromium's log
    height: int
    text: int
    sections: dict[str, int]  # section id -> its top, in CSS pixels
    forests: list[tuple[str, bool]]  # forest plots: (alt, decoded)
    viewport: int  # the window's width in CSS pixels
    page_width: int  # the page's scroll width: above viewport, the page itself overflows sideways
    scrollers: list[tuple[int, int]]  # each table container's (scrollWidth, clientWidth)
    overlaps: list[tuple[str, str]]  # text boxes that overlap (at most 20)


def find_chromium() -> str | None:
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


def _run(chromium: str, page: Path, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *flags,
            page.resolve().as_uri(),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "LANG": "C"})


def probed_copy(html: Path, folder: Path) -> Path:
    """The page with the probe script first in <head>, and its CSP widened to allow that inline script."""
    text = html.read_text(encoding="utf-8")
    assert text.count(CSP_DEFAULT) == 1, "the report's Content-Security-Policy meta tag is missing"
    text = text.replace(CSP_DEFAULT, CSP_DEFAULT + " script-src 'unsafe-inline';", 1)
    text = text.replace("<head>", "<head>\n" + PROBE_SCRIPT, 1)
    copy = folder / "probed.html"
    copy.write_text(text, encoding="utf-8")
    return copy


def framed_copy(page: Path, width: int) -> Path:
    """A page holding ``page`` in an iframe ``width`` CSS pixels wide (headless Chromium's window is at least
    MIN_WINDOW_WIDTH wide; an iframe is a real viewport of its own), which copies the probe's result out."""
    from html import escape

    frame = page.with_name("framed.html")
    frame.write_text(
        FRAME_PAGE.replace("WIDTH", str(width)).replace("SRCDOC", escape(page.read_text(encoding="utf-8"))),
        encoding="utf-8",
    )
    return frame


def probe(chromium: str, html: Path, width: int = WINDOW_WIDTH) -> ProbeResult:
    """Load the page in a window ``width`` CSS pixels wide (narrower than Chromium allows: in an iframe)."""
    with tempfile.TemporaryDirectory() as folder:
        page = probed_copy(html, Path(folder))
        done = _run(
            chromium,
            page if width >= MIN_WINDOW_WIDTH else framed_copy(page, width),
            "--dump-dom",
            "--virtual-time-budget=5000",
            f"--window-size={width},900",
        )
    match = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', done.stdout, re.S)
    assert match, f"the probe did not run (exit {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(unescape(match.group(1)))
    console = [line for line in done.stderr.splitlines() if CONSOLE_LINE.search(line)]
    return ProbeResult(
        result["images"],
        result["broken"],
        result["errors"] + console,
        result["height"],
        result["text"],
        result["sections"],
        [tuple(f) for f in result["forests"]],
        result["viewport"],
        result["page_width"],
        [tuple(s) for s in result["scrollers"]],
        [tuple(o) for o in result["overlaps"]],
    )


def screenshot(chromium: str, html: Path, png: Path, height: int) -> Path:
    """A screenshot of the whole page (window WINDOW_WIDTH x height, capped at MAX_HEIGHT)."""
    size = f"--window-size={WINDOW_WIDTH},{min(max(height, 200), MAX_HEIGHT)}"
    done = _run(chromium, html, f"--screenshot={png.resolve()}", size)
    assert png.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    return png


def readme_screenshot(html: Path, out: Path, gallery_height: int = 760, width: int = 900) -> Path:
    """The summary and the top of the worst-errors gallery, stacked, scaled to `width` and reduced to
    256 colours: a small PNG for the README."""
    from PIL import Image

    chromium = find_chromium()
    assert chromium, "chromium is not installed"
    result = probe(chromium, html)
    top, gallery = result.sections["runs"], result.sections["worst"]
    with tempfile.TemporaryDirectory() as folder:
        image = _loaded(screenshot(chromium, html, Path(folder) / "full.png", result.height))
    parts = [image.crop((0, 0, image.width, top)), image.crop((0, gallery, image.width, gallery + gallery_height))]
    stacked = Image.new("RGB", (parts[0].width, sum(p.height for p in parts)), "white")
    stacked.paste(parts[0], (0, 0))
    stacked.paste(parts[1], (0, parts[0].height))
    scaled = stacked.resize((width, round(stacked.height * width / stacked.width)), Image.LANCZOS)
    scaled.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def _loaded(png: Path):
    from PIL import Image

    with Image.open(png) as image:
        return image.convert("RGB")


if __name__ == "__main__":
    print(readme_screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
