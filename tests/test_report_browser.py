"""report.html in a real browser: Debian's headless Chromium, driven by Playwright, opens a real run's report from
disk at a laptop and a phone viewport and checks that it loads nothing, logs no error, and that every plot and table
rendered with a non-zero size; a report with a broken image must fail the same check.

The run is real and small: a logistic-regression probe on frozen ImageNet MobileNetV2 features of 300 Animal-MNIST
images, written as an image folder whose class names include Chinese, Arabic and HTML (``<script>``, an ``<img>``
with ``onerror``) to show that names of any script display as written and that nothing a user names can run.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in ("/usr/bin/chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell",
                             "/usr/bin/chromium", "/usr/lib/chromium/chromium") if Path(p).is_file()), None)
#: class names that replace four of Animal-MNIST's (by class index)
NAMES = {0: "熊 bear", 1: "طائر bird", 2: "<script>alert('cat')", 3: "<img src=x onerror=alert(1)> cow"}
VIEWPORTS = {"laptop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
#: where the test keeps its laptop screenshot (its output, outside version control; BENCHMARKS.md shows a copy kept in
#: benchmarks/results/ by hand): ``$TRANSFERKIT_TEST_OUTPUT`` or ``.test-output/`` in the repository
SCREENSHOT = Path(os.environ.get("TRANSFERKIT_TEST_OUTPUT") or ROOT / ".test-output") / "report_screenshot.png"

# What the page must show: every image decoded and drawn, every table and svg laid out with a size.
_MEASURE = """() => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  return {
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, natural: i.naturalWidth,
                                            box: box(i)})),
    tables: [...document.querySelectorAll('table')].map(t => ({rows: t.rows.length, box: box(t)})),
    svgs: [...document.querySelectorAll('svg')].map(s => ({box: box(s)})),
    scripts: document.querySelectorAll('script').length,
    scrollWidth: document.documentElement.scrollWidth,
    text: document.body.innerText,
  };
}"""


def check_report(browser: Any, path: Path, viewport: dict[str, int], screenshot: Path | None = None
                 ) -> tuple[list[str], dict[str, Any]]:
    """Open ``path`` (file://) at ``viewport``; return the problems found and what was measured.

    A problem is a console error, an uncaught page error, a failed request, a request for anything but the file
    itself and data: URIs, an image that did not decode (naturalWidth 0) or a plot / table with no size.
    """
    problems: list[str] = []
    context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 600)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url[:100]} ({r.failure})"))
    page.on("request", lambda r: None if r.url.startswith("data:") or r.url == path.as_uri()
            else problems.append(f"request: {r.url[:100]}"))
    page.goto(path.as_uri(), wait_until="load")
    seen = page.evaluate(_MEASURE)
    for img in seen["images"]:
        if not img["complete"] or img["natural"] == 0:
            problems.append(f"image not decoded: {img['alt']}")
        elif min(img["box"]) <= 0:
            problems.append(f"image drawn with no size: {img['alt']}")
    problems += [f"table {i} has no size" for i, t in enumerate(seen["tables"]) if min(t["box"]) <= 0]
    problems += [f"svg {i} has no size" for i, s in enumerate(seen["svgs"]) if min(s["box"]) <= 0]
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    context.close()
    return problems, seen


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    if CHROMIUM is None:
        pytest.skip("no Chromium binary (install Debian's chromium-headless-shell: scripts/setup.sh does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:  # noqa: ANN001
    """A real probe run on 300 Animal-MNIST images saved as an image folder with the class names of NAMES."""
    from PIL import Image

    from transferkit import load_data
    from transferkit.cli import main
    from transferkit.config import DataConfig

    root = tmp_path_factory.mktemp("report")
    train = load_data(DataConfig(name="animal-mnist")).train
    for c, cls in enumerate(train.classes):
        folder = root / "images" / NAMES.get(c, cls)
        folder.mkdir(parents=True)
        for i in [i for i, y in enumerate(train.labels) if y == c][:30]:
            Image.fromarray(train.inputs[i]).save(folder / f"{i}.png")
    code = main(["fit", "--data", str(root / "images"), "--backbone", "mobilenet_v2.imagenet", "--method", "probe",
                 "--set", "model.image_size=64", "--set", "train.progress=false", "--out", str(root / "run")])
    assert code == 0
    return root / "run"


def test_real_report_renders_in_chromium_on_laptop_and_phone(browser, run_folder, tmp_path):
    report = run_folder / "report.html"
    html = report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # nothing to fetch: no CDN, no font, no script
    for tag, viewport in VIEWPORTS.items():
        shot = tmp_path / f"report_{tag}.png"
        problems, seen = check_report(browser, report, viewport, screenshot=shot)
        assert problems == [], (tag, problems)
        # the report has real content: learning curves and one thumbnail per confidently wrong example ...
        wrong = [i for i in seen["images"] if i["alt"].startswith("example ")]
        assert len(wrong) >= 1 and any(i["alt"].startswith("loss and accuracy") for i in seen["images"])
        # ... metrics, both confusion matrices and the per-class table
        assert len(seen["tables"]) >= 5
        assert seen["scripts"] == 0  # no class name became a script element
        for name in NAMES.values():  # every name displays exactly as written (escaped, UTF-8, bidi-isolated)
            assert name in seen["text"], (tag, name)
        assert seen["scrollWidth"] <= viewport["width"], tag  # wide tables scroll in their box, not the page
        assert shot.stat().st_size > 10_000
    _keep_screenshot(tmp_path / "report_laptop.png")


def _keep_screenshot(shot: Path) -> None:
    """Keep the laptop screenshot for the record (BENCHMARKS.md), in a 256-colour palette (a quarter of the bytes)."""
    from PIL import Image

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as im:
        im.convert("RGB").quantize(256).save(SCREENSHOT, optimize=True)


def _corrupt_first_image(html: str) -> str:
    """The report with its first image's data replaced by valid base64 of bytes that are not an image."""
    marker = "data:image/png;base64,"
    start = html.index(marker) + len(marker)
    end = html.index('"', start)
    return html[:start] + base64.b64encode(b"this is not a PNG").decode() + html[end:]


def test_checker_catches_a_broken_image_and_an_external_request(browser, run_folder, tmp_path):
    html = (run_folder / "report.html").read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(_corrupt_first_image(html), encoding="utf-8")
    problems, _ = check_report(browser, broken, VIEWPORTS["laptop"])
    assert any(p.startswith("image not decoded") for p in problems), problems

    # a name inserted without escaping would load (and here fail to load) an image: the check sees it
    injected = tmp_path / "injected.html"
    injected.write_text(html.replace("<footer>", '<img src="missing.png" alt="x"><footer>'), encoding="utf-8")
    problems, _ = check_report(browser, injected, VIEWPORTS["phone"])
    assert any("missing.png" in p for p in problems), problems


def test_report_of_an_older_folder_leaves_out_what_is_missing(browser, run_folder, tmp_path):
    """A folder written before reports existed (no predictions, examples, environment, curves PNG): the rebuilt
    report says what is missing and still renders cleanly; the learning curves are drawn again from history.json."""
    from transferkit.cli import main

    old = tmp_path / "old"
    shutil.copytree(run_folder, old)
    for name in ("report.html", "predictions_test.npz", "wrong_examples.json", "environment.json",
                 "learning_curves.png"):
        (old / name).unlink()
    assert main(["report", str(old)]) == 0
    html = (old / "report.html").read_text(encoding="utf-8")
    assert "has no wrong_examples.json" in html and "has no environment.json" in html
    problems, seen = check_report(browser, old / "report.html", VIEWPORTS["laptop"])
    assert problems == [] and any(i["alt"].startswith("loss and accuracy") for i in seen["images"])
