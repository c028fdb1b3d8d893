"""report.html: self-contained, escaped, and renders cleanly in a real (headless) Chromium.

The browser tests need Playwright for Python and Debian's /usr/bin/chromium (no
Playwright browser download); they are skipped, with the reason, when either
is missing.
"""

from __future__ import annotations

import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgegen import report, report_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CHROMIUM_WAIT_S = 240  # the browser may still be being installed when the tests start
EVIL = "<script>alert('x')</script> & \"quotes\""


def _variant(name, role, params, size, quality, latency, sample=True, **extra):
    v = {"name": name, "role": role, "format": "onnx", "runtime": "ort", "precision": "fp32", "params": params,
         "size_bytes": size, "quality": quality, "latency": latency, "memory": {"peak_run_mib": 50.0},
         "parity": None, "bundle": f"/runs/{name}", **extra}
    if sample:
        v["sample"] = {"prompt": "def main():\n", "text": f"    return {name!r}\n"}
    return v


def lm_report() -> dict:
    """A tiny lm report shaped like recipe.run's; one gate fails and one sample carries markup."""
    def lat(tok_ms, ttft):
        return {"ttft_ms_p50": ttft, "ttft_ms_p90": ttft * 1.2, "decode_tok_s_p50": 1e3 / tok_ms,
                "per_token_ms_p50": tok_ms, "per_token_ms_p90": tok_ms * 1.1}

    def q(bpb):
        return {"bits_per_byte": bpb, "perplexity": 2 ** bpb, "tokenizer": "ByteTokenizer", "context": 64}

    variants = [_variant("teacher", "teacher", 1_200_000, 4_800_000, q(2.80), lat(1.6, 4.0)),
                _variant("student-scratch", "student_scratch", 100_000, 400_000, q(2.95), lat(0.5, 1.4)),
                _variant("student-onnx-fp32", "student", 100_000, 410_000, q(2.79), lat(0.15, 0.4),
                         parity={"max_abs": 9e-6, "greedy_agreement": 1.0}),
                _variant("student-onnx-int8", "student", 100_000, 110_000, q(2.795), lat(0.13, 0.37),
                         parity={"max_abs": 0.25, "greedy_agreement": 1.0})]
    variants[1]["sample"]["text"] = EVIL
    gates = [report.gate("param_ratio_teacher_over_student", 12.0, ">=", 6.0),
             report.gate("bits_per_byte_ratio_student_over_scratch", 1.02, "<", 1.0),
             report.gate("parity_fp32_max_abs_logit_error", 9e-6, "<=", 1e-4)]
    return report.build("tiny <lm> & co", "lm", variants, gates,
                        {"quality": "bits/byte on 1,000 <test> bytes", "latency": "3 runs"})


def histories() -> dict:
    def run(scale, ce=False):
        rows = [{"step": s, "loss": scale * (1 + 4 / s), "lr": 1e-3} for s in range(1, 41)]
        for r in rows:
            if ce:
                r["ce"] = r["loss"] * 1.1
            if r["step"] % 10 == 0:
                r.update(val_loss=r["loss"] * 1.05, val_bits_per_byte=r["loss"] * 1.4)
        return rows

    return {"teacher": run(1.0), "student": run(0.9, ce=True), "student-scratch": run(1.1)}


def image_report() -> dict:
    """An image-family report: quality.fid instead of bits/byte, per-query latencies, no text samples."""
    import random

    rng = random.Random(0)
    variants = [_variant(name, role, p, s, {"fid": fid}, {"ms_p50": ms, "ms_p90": ms * 1.2,
                         "samples_ms": [ms * rng.lognormvariate(0, 0.1) for _ in range(40)]}, sample=False)
                for name, role, p, s, fid, ms in (("teacher", "teacher", 5_000_000, 20_000_000, 30.0, 80.0),
                                                  ("student-4step", "student", 1_000_000, 4_000_000, 34.0, 9.0),
                                                  ("student-int8", "student", 1_000_000, 1_000_000, 36.0, 6.0))]
    return report.build("tiny-diffusion", "diffusion", variants, [report.gate("fid_ratio", 1.13, "<=", 1.25)],
                        {"quality": "FID (toy features)"})


class _Links(HTMLParser):
    """Collects tag names and every src/href value."""

    def __init__(self):
        super().__init__()
        self.tags, self.urls = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


def _parse(html: str) -> _Links:
    p = _Links()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("report_html")
    report.write(d, lm_report(), histories())
    return d


@pytest.fixture(scope="module")
def image_page(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("report_html_image") / "report.html"
    f.write_text(report_html.render(image_report(), {}), encoding="utf-8")
    return f


# ------------------------------------------------------------------ the file itself


def test_write_adds_html_beside_md(written):
    assert {"report.json", "report.md", "report.html"} <= {p.name for p in written.iterdir()}
    assert "[report.html](report.html)" in (written / "report.md").read_text()


def test_html_escapes_report_strings(written):
    html = (written / "report.html").read_text("utf-8")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    assert "tiny &lt;lm&gt; &amp; co" in html and "&lt;test&gt;" in html


def test_html_is_self_contained(written, image_page):
    for page in (written / "report.html", image_page):
        html = page.read_text("utf-8")
        parsed = _parse(html)
        assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
        assert parsed.urls and all(u.startswith("data:image/png;base64,") for u in parsed.urls), parsed.urls[:3]
        assert not [u for u in parsed.urls if re.match(r"\s*(https?:)?//", u, re.I)]
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
        assert "Content-Security-Policy" in html


def test_html_content(written, image_page):
    html = (written / "report.html").read_text("utf-8")
    assert html.count("<img ") == 3  # latency, quality trade-offs, training
    assert 'class="fail"' in html and html.count('class="fail"') == 1  # the one failed gate row
    assert "Some gates failed (2/3)" in html and "bits per byte" in html
    image = image_page.read_text("utf-8")
    assert image.count("<img ") == 2  # no histories: no training plot
    assert "FID" in image and "bits per byte" not in image
    assert "Samples" not in image  # no text samples, no empty section


def test_pareto_front_and_quality_key():
    assert report_html.pareto_front([(1, 3), (2, 2), (3, 3), (0.5, 4), (2, 2.5)]) == [3, 0, 1]
    assert report_html.quality_key([{"quality": {"fid": 3.0}}, {"quality": {"bits_per_byte": 2.0}}]) == "bits_per_byte"
    assert report_html.quality_key([{"quality": {"fid": 3.0}}]) == "fid"


# ------------------------------------------------------------------ in a real browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright; no browser download "
                                          "needed, the tests use /usr/bin/chromium)")
    deadline = time.monotonic() + CHROMIUM_WAIT_S
    while not os.access(CHROMIUM, os.X_OK) and time.monotonic() < deadline:
        time.sleep(5)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"chromium is missing: no executable {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        while True:  # the package may still be unpacking right after the binary appears
            try:
                b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                break
            except sync_api.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(5)
        yield b
        b.close()


def _load(browser, page_file: Path, screenshot: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_file.as_uri(), wait_until="load")
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
    page.screenshot(path=str(screenshot), full_page=True)
    info = {"errors": errors, "requests": requests, "images": images, "scripts": page.locator("script").count(),
            "text": page.inner_text("body"), "title": page.title()}
    page.close()
    return info


@pytest.mark.parametrize("which", ["lm", "image"])
def test_renders_in_chromium(browser, written, image_page, which, tmp_path):
    page_file = written / "report.html" if which == "lm" else image_page
    shot = tmp_path / f"{which}.png"
    info = _load(browser, page_file, shot)
    assert info["errors"] == []
    assert all(u.startswith(("file:", "data:")) for u in info["requests"]), info["requests"]
    assert len(info["images"]) == (3 if which == "lm" else 2)
    assert all(complete and w > 0 and h > 0 for complete, w, h in info["images"]), info["images"]
    assert info["scripts"] == 0
    assert shot.stat().st_size > 50_000
    if which == "lm":
        assert info["title"] == "edgegen report: tiny <lm> & co"
        assert EVIL in info["text"]  # shown as text, not run
        assert "student-onnx-int8" in info["text"] and "✘ failed" in info["text"]
