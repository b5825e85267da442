"""The demo report's HTML page (its Markdown constructs, embedded PNGs, refusals) and the gallery's Markdown."""

import base64
import io
import re
import shutil

import pytest
from PIL import Image

from pretrain.runtime.errors import DataError
from superclass.demo.gallery import gallery_markdown
from superclass.demo.markdown_html import markdown_to_html, write_html
from superclass.demo.report import Report, Row

DATA_URI = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def _png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)
    return path


def test_report_html_renders_the_reports_constructs_and_embeds_its_pngs(tmp_path):
    _png(tmp_path / "plot.png")
    _png(tmp_path / "gallery" / "heldout_0.png", (10, 200, 10))
    report = Report(title="T <demo>", figures=[("a plot", "plot.png")])
    report.add(Row("probe", "clip", "top-1 (%)", 50.0, 16.67))
    report.sections = ["## Notes", "", "- **bold** and *italic* and `a|b <c>`", "- second", "", "one", "paragraph"]
    report.sections += ["", "| | truth | clip |", "|---|---|---|", "| q | red | a \\| b |", ""]
    report.sections += ["![held-out image 0](gallery/heldout_0.png)"]
    report.write(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>T &lt;demo&gt;</title>" in page
    assert "<h1>T &lt;demo&gt;</h1>" in page and "<h2>Notes</h2>" in page
    assert "<li><strong>bold</strong> and <em>italic</em> and <code>a|b &lt;c&gt;</code></li>" in page
    assert "<p>one paragraph</p>" in page and "<td>a | b</td>" in page
    assert "<th>chance / baseline</th>" in page and "<td>50</td>" in page
    images = DATA_URI.findall(page)
    assert [alt for alt, _ in images] == ["a plot", "held-out image 0"]
    colours = [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB").getpixel((0, 0)) for _, data in images]
    assert colours == [(200, 30, 30), (10, 200, 10)]  # each image is its own file's pixels, decoded as PNG
    assert "](gallery/heldout_0.png)" in (tmp_path / "report.md").read_text()  # the Markdown points at the files


def test_report_html_refuses_a_missing_or_non_png_image_in_one_line(tmp_path):
    md = tmp_path / "report.md"
    md.write_text("# r\n\n![gone](gallery/heldout_3.png)\n")
    with pytest.raises(DataError, match=r"report.md: image '.*gallery/heldout_3.png' does not exist"):
        write_html(md, tmp_path / "report.html", "r")
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "heldout_3.png").write_text("not a png")
    with pytest.raises(DataError, match="is not a PNG file"):
        write_html(md, tmp_path / "report.html", "r")
    assert not (tmp_path / "report.html").exists()  # no page with a broken picture
    assert "<code>![x](y.png)</code>" in markdown_to_html("`![x](y.png)`", tmp_path, md)  # code is not an image


def test_gallery_markdown_puts_truth_and_each_encoders_outputs_side_by_side():
    entries = [
        {
            "index": 0,
            "image": "gallery/heldout_0.png",
            "caption": "a red circle",
            "attributes": {"colour": "red", "shape": "circle"},
            "questions": [{"text": "What colour is the circle?", "answer": "red"}, {"text": "Is it?", "answer": "no"}],
            "encoders": {
                "superclass": {"caption": "a red circle", "answers": ["red", "yes"]},
                "clip": {"caption": "a blue | square", "answers": ["Red", ""]},
            },
        }
    ]
    lines = gallery_markdown(entries)
    assert "![held-out image 0](gallery/heldout_0.png)" in lines
    assert "| | truth | superclass | clip |" in lines
    assert "| caption | a red circle (colour red, shape circle) | a red circle | a blue \\| square |" in lines
    assert "| What colour is the circle? | red | red ✓ | Red ✓ |" in lines
    assert "| Is it? | no | yes | (empty) |" in lines
    assert lines[-2] == "Answers equal to the truth: superclass 1 of 2, clip 1 of 2."
    assert gallery_markdown([]) == []


def test_report_html_shows_its_images_in_a_browser(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install -e '.[dev]'")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    _png(tmp_path / "gallery" / "heldout_0.png")
    Image.new("RGB", (160, 160), (0, 0, 255)).save(tmp_path / "gallery" / "heldout_1.png")
    report = Report(title="demo", figures=[("first", "gallery/heldout_0.png")])
    report.sections = ["| image | truth |", "|---|---|", "| ![held-out image 1](gallery/heldout_1.png) | blue |"]
    report.write(tmp_path)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto((tmp_path / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
        browser.close()
    assert widths == [4, 160]  # each picture decoded by the browser from the page alone
