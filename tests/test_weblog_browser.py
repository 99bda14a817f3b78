"""The weblog in a real headless browser (Debian's chromium): pages load, every image loads,
no broken relative links, screenshots are not blank.

Skipped when ``/usr/bin/chromium`` (or matplotlib, for the plots) is absent.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")

#: Injected into a copy of each page (never into the weblog itself): records, after the load
#: event, whether every <img> decoded and which links point at what.
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (i) {
    return {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
            w: i.naturalWidth};
  });
  var links = Array.from(document.querySelectorAll('a[href], link[href]')).map(
    function (a) { return a.getAttribute('href'); });
  var sheets = Array.from(document.styleSheets).map(function (s) {
    try { return s.cssRules.length; } catch (e) { return -1; } });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({imgs: imgs, links: links, sheets: sheets});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--allow-file-access-from-files",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def weblog(tiny_ms, tmp_path_factory):
    pytest.importorskip("matplotlib")
    from fastcal.caltable import CalTable
    from fastcal.report import render_weblog

    ms = str(tiny_ms[0])
    rng = np.random.default_rng(11)
    times = 4.93e9 + 60.0 * np.arange(4)
    bp = ((1 + 0.05 * rng.standard_normal((1, 5, 16, 2)))
          * np.exp(1j * np.cumsum(0.2 * rng.standard_normal((1, 5, 16, 2)), axis=2)))
    g = np.exp(1j * np.cumsum(0.3 * rng.standard_normal((4, 5, 1, 2)), axis=0))
    bptab = CalTable.from_solutions("B Jones", {3: bp.astype(np.complex64)}, times=times[:1],
                                    ms=ms)
    gtab = CalTable.from_solutions("G Jones", {3: g.astype(np.complex64)}, times=times, ms=ms)
    qa = [{"name": "bandpass_snr", "value": 40.0, "score": 0.85, "message": "SNR 40 <ok>"}]
    results = [
        {"name": "importdata", "inputs": {"vis": ms},
         "qa": [{"name": "flagged", "value": 0.0, "score": 1.0, "message": "none"}]},
        {"name": "bandpass", "qa": qa, "messages": ["<script>alert(1)</script>"],
         "plots": [{"kind": "bandpass", "args": [bptab], "caption": "Bandpass"}]},
        {"name": "timegaincal", "qa": [{"name": "phase", "score": 0.2, "message": "noisy"}],
         "plots": [{"kind": "gain_vs_time", "args": [gtab]},
                   {"kind": "wvr_phase_rms", "args": [[20, 30, 25, 22, 28], [9, 12, 10, 8, 11]]}]},
    ]
    out = tmp_path_factory.mktemp("browser") / "weblog"
    render_weblog(results, out, title="fastcal browser test")
    return out


def _probe(page: Path, tmp_path: Path) -> dict:
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html  # the weblog itself has no script
    probe_page = page.with_name(f"_probe_{page.name}")
    probe_page.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    try:
        res = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                        probe_page.as_uri())
    finally:
        probe_page.unlink()
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"{page.name}: page did not finish loading:\n{res.stdout[:500]}"
    return json.loads(html_lib.unescape(m.group(1)))


def test_pages_load_images_and_links(weblog, tmp_path):
    pages = sorted(weblog.glob("stage*.html")) + [weblog / "index.html"]
    assert len(pages) == 4
    n_img = 0
    for page in pages:
        probe = _probe(page, tmp_path)
        assert probe["sheets"] and all(n > 0 for n in probe["sheets"]), page.name  # CSS loaded
        for img in probe["imgs"]:
            assert img["ok"], f"{page.name}: image {img['src']} did not load"
            assert (weblog / img["src"]).is_file()
            n_img += 1
        for href in probe["links"]:
            assert not re.match(r"^[a-z]+:|^/", href), f"{page.name}: non-relative {href}"
            assert (weblog / href).is_file(), f"{page.name}: broken link {href}"
    assert n_img == 3


@pytest.mark.parametrize("name", ["index.html", "stage02.html"])
def test_screenshots_not_blank(weblog, tmp_path, name):
    mpimg = pytest.importorskip("matplotlib.image")
    shot = tmp_path / f"{name}.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1000",
                    "--hide-scrollbars", (weblog / name).as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    grey = img.mean(axis=-1)
    assert grey.std() > 0.1  # header bar, tables, plots: not a blank page
    # the coloured score cells are rendered (green/blue/yellow/red backgrounds present)
    colours = {"green": (0x6F, 0xBF, 0x73), "red": (0xE0, 0x66, 0x66)}
    px = np.round(img * 255).astype(int).reshape(-1, 3)
    for cname, rgb in colours.items():
        assert (np.abs(px - rgb).sum(axis=1) <= 6).sum() > 50, f"no {cname} cell in {name}"
