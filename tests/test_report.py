"""Weblog (fastcal.report.weblog) and plots (fastcal.report.plots).

The weblog tests use PNGs written by a tiny encoder below, so they run without matplotlib;
the plot tests need matplotlib (``fastcal[report]``) and are skipped without it.
"""

from __future__ import annotations

import math
import re
import struct
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from fastcal.errors import CalTableError, ParameterError, UnsupportedError
from fastcal.report import render_weblog, score_colour

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    """Minimal 8-bit RGB PNG encoder (no matplotlib needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].astype(np.uint8).tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


class _Links(HTMLParser):
    """Collects href/src attributes and the text of <td class="score ..."> cells."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.score_cells: list[tuple[str, str]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key):
                self.refs.append(a[key])
        cls = a.get("class") or ""
        if tag == "td" and "score" in cls.split():
            self._cell = cls

    def handle_data(self, data):
        if self._cell is not None:
            self.score_cells.append((self._cell, data.strip()))
            self._cell = None


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _qa(name, value, score, message, unit="", applies_to=""):
    return {"name": name, "value": value, "score": score, "message": message, "unit": unit,
            "applies_to": applies_to}


def _results(tmp_path: Path) -> list[dict]:
    rng = np.random.default_rng(3)
    img = _write_png(tmp_path / "given plot.png", rng.integers(0, 255, (20, 30, 3)))
    return [
        {"name": "importdata", "inputs": {"vis": "x.ms", "overwrite": False},
         "outputs": {"science_spws": [3, 4]}, "duration_s": 1.5,
         "qa": [_qa("flagged_fraction", 0.01, 1.0, "1% flagged", "fraction", "all data")],
         "messages": ["imported"]},
        {"name": "tsys", "qa": [_qa("tsys_median", 120.0, 0.9, "Tsys fine", "K", "spw 1")],
         "plots": [{"path": str(img), "caption": "Tsys spectra"}]},
        {"name": "wvr", "qa": [_qa("wvr_improvement", 1.3, 0.66, "WVR <helps>")],
         "plots": [str(img)]},
        {"name": "bandpass", "status": "failed", "error": "SolveError: no unflagged data",
         "qa": [_qa("bandpass_snr", 3.0, 0.33, "low SNR"), _qa("phaseup", 5.0, 0.8, "ok")],
         "messages": [("warning", "<script>alert('x')</script> & more")]},
        {"name": "final", "qa": []},
    ]


# --------------------------------------------------------------------------------------
# colours
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "colour"),
    [(1.0, "green"), (0.9001, "green"), (0.9, "blue"), (0.6601, "blue"), (0.66, "yellow"),
     (0.3301, "yellow"), (0.33, "red"), (0.0, "red"), (None, "grey"), (math.nan, "grey")],
)
def test_score_colour_boundaries(score, colour):
    # ALMA pipeline bands, upper bounds inclusive (pipeline docs QA_scores.md)
    assert score_colour(score) == colour


def test_overview_cells_coloured_at_boundaries(tmp_path):
    scores = [1.0, 0.9, 0.66, 0.33, 0.91, 0.67, 0.34, None]
    results = [{"name": f"s{i}", "score": s} for i, s in enumerate(scores)]
    index = render_weblog(results, tmp_path / "web")
    cells = _parse(index).score_cells
    # first cell is the "lowest stage score" box, then one per stage
    stage_cells = cells[1:]
    assert len(stage_cells) == len(scores)
    expected = ["green", "blue", "yellow", "red", "green", "blue", "yellow", "grey"]
    css = {"green": "qa-green", "blue": "qa-blue", "yellow": "qa-yellow", "red": "qa-red",
           "grey": "qa-none"}
    for (cls, text), s, col in zip(stage_cells, scores, expected, strict=True):
        assert css[col] in cls.split()
        assert text == ("\u2013" if s is None else f"{s:.2f}")
    assert "qa-red" in cells[0][0].split() and cells[0][1] == "0.33"


# --------------------------------------------------------------------------------------
# weblog structure
# --------------------------------------------------------------------------------------


def test_weblog_pages_links_and_images(tmp_path):
    out = tmp_path / "web"
    index = render_weblog(_results(tmp_path), out, title="Run <1>", info={"MS": "x.ms"})
    assert index == out / "index.html"
    pages = sorted(out.glob("*.html"))
    assert [p.name for p in pages] == ["index.html"] + [f"stage0{i}.html" for i in range(1, 6)]
    seen_imgs = 0
    for page in pages:
        parsed = _parse(page)
        assert "script" not in parsed.tags
        for ref in parsed.refs:
            assert not re.match(r"^[a-z]+:|^/", ref), f"{page.name}: non-relative link {ref}"
            target = (out / ref).resolve()
            assert target.is_file(), f"{page.name}: broken link {ref}"
            assert out.resolve() in target.parents
            if ref.endswith(".png"):
                seen_imgs += 1
                data = target.read_bytes()
                assert data.startswith(b"\x89PNG") and len(data) > 100
    assert seen_imgs >= 4  # two images, each as <img> and as its link
    text = index.read_text()
    for p in pages[1:]:
        assert f'href="{p.name}"' in text


def test_stage_page_tables(tmp_path):
    out = tmp_path / "web"
    render_weblog(_results(tmp_path), out)
    page = (out / "stage01.html").read_text()
    for snippet in ("<th>vis</th><td>x.ms</td>", "<th>overwrite</th><td>False</td>",
                    "<th>science_spws</th><td>[3, 4]</td>", "flagged_fraction", "all data",
                    "imported"):
        assert snippet in page
    failed = (out / "stage04.html").read_text()
    assert "status-failed" in failed and "no unflagged data" in failed
    # stage score = lowest QA score
    assert '<td class="score qa-red" title="red">0.33</td>' in failed
    index = (out / "index.html").read_text()
    assert "SolveError: no unflagged data" in index  # failure shown as the summary


def test_text_is_escaped(tmp_path):
    out = tmp_path / "web"
    render_weblog(_results(tmp_path), out, title="Run <1>")
    page = (out / "stage04.html").read_text()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<script" not in page
    assert "WVR &lt;helps&gt;" in (out / "stage03.html").read_text()
    assert "<title>Run &lt;1&gt;</title>" in (out / "index.html").read_text()


def test_rerender_replaces_old_images(tmp_path):
    out = tmp_path / "web"
    render_weblog(_results(tmp_path), out)
    stale = out / "stage02" / "old.png"
    stale.write_bytes(b"x")
    render_weblog(_results(tmp_path), out)
    assert not stale.exists()
    assert (out / "stage02" / "given_plot.png").is_file()


def test_failed_plot_becomes_note(tmp_path):
    results = [{"name": "s", "plots": [{"kind": "no_such_plot", "caption": "cap"},
                                       {"path": str(tmp_path / "missing.png")}]}]
    index = render_weblog(results, tmp_path / "web")
    page = (index.parent / "stage01.html").read_text()
    assert page.count("Plot not made") == 2
    assert "plot kind &#x27;no_such_plot&#x27; is unknown" in page
    assert "missing.png" in page and "does not exist" in page
    assert "<img" not in page


def test_results_from_mapping_and_context(tmp_path):
    from fastcal.pipeline.context import Context

    ctx = Context(vis=str(tmp_path / "a.ms"), out_dir=str(tmp_path / "pkg"))
    ctx.results = {"importdata": {"qa": [_qa("x", 1.0, 0.95, "fine")]},
                   "refant": {"qa": [_qa("y", 2.0, 0.5, "meh")]}}
    index = render_weblog(ctx, tmp_path / "web")
    text = index.read_text()
    assert ">importdata</a>" in text and ">refant</a>" in text
    assert "a.ms" in text  # dataset info taken from the context
    assert (tmp_path / "web" / "stage02.html").read_text().count("meh") >= 1


@pytest.mark.parametrize("bad", [None, "results", 42])
def test_bad_results(tmp_path, bad):
    with pytest.raises(ParameterError, match="results"):
        render_weblog(bad, tmp_path / "web")


def test_weblog_without_matplotlib(tmp_path, monkeypatch):
    """Plot specs become notes naming the missing package; the weblog is still written."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from fastcal.report import plots

    assert not plots.matplotlib_available()
    with pytest.raises(UnsupportedError, match=r"fastcal\[report\]"):
        plots.plot_wvr_phase_rms([1.0], [0.5], tmp_path / "w.png")
    results = [{"name": "wvr", "plots": [{"kind": "wvr_phase_rms", "args": [[1.0], [0.5]]}]}]
    page = (render_weblog(results, tmp_path / "web").parent / "stage01.html").read_text()
    assert "Plot not made" in page and "matplotlib" in page


# --------------------------------------------------------------------------------------
# plots (need matplotlib)
# --------------------------------------------------------------------------------------

N_ANT = 5
T0 = 4.93e9


def _image_stats(path: Path) -> tuple[float, float]:
    """(std of the grey levels, fraction of non-white pixels) of a PNG."""
    mpimg = pytest.importorskip("matplotlib.image")
    img = mpimg.imread(path)[..., :3].mean(axis=-1)
    return float(img.std()), float((img < 0.95).mean())


def _assert_drawn(path: Path, min_ink: float = 0.02) -> None:
    assert path.is_file() and path.read_bytes().startswith(b"\x89PNG")
    std, ink = _image_stats(path)
    assert std > 0.05 and ink > min_ink, f"{path.name} looks blank (std {std}, ink {ink})"


@pytest.fixture(scope="module")
def tables(tiny_ms):
    pytest.importorskip("matplotlib")
    from fastcal.caltable import CalTable

    ms = str(tiny_ms[0])
    rng = np.random.default_rng(7)
    times = T0 + 60.0 * np.arange(6)
    tsys = (80 + np.linspace(0, 40, 32)[None, None, :, None]
            + 5 * rng.standard_normal((2, N_ANT, 32, 2)))
    bp = ((1 + 0.1 * rng.standard_normal((1, N_ANT, 16, 2)))
          * np.exp(1j * np.cumsum(0.2 * rng.standard_normal((1, N_ANT, 16, 2)), axis=2)))
    g = ((1 + 0.1 * rng.standard_normal((6, N_ANT, 1, 2)))
         * np.exp(1j * np.cumsum(0.3 * rng.standard_normal((6, N_ANT, 1, 2)), axis=0)))
    return {
        "tsys": CalTable.from_solutions("B TSYS", {1: tsys.astype(np.float32),
                                                   2: tsys.astype(np.float32) + 10},
                                        times=times[:2], ms=ms),
        "bandpass": CalTable.from_solutions("B Jones", {3: bp.astype(np.complex64)},
                                            times=times[:1], ms=ms),
        "gain": CalTable.from_solutions("G Jones", {3: g.astype(np.complex64)}, times=times,
                                        ms=ms),
        "gain_flagged": CalTable.from_solutions(
            "G Jones", {3: g.astype(np.complex64)}, times=times, ms=ms,
            flag={3: np.ones(g.shape, bool)}),
    }


def test_plot_tsys(tables, tmp_path):
    from fastcal.report.plots import plot_tsys

    _assert_drawn(plot_tsys(tables["tsys"], tmp_path / "tsys.png"))
    _assert_drawn(plot_tsys(tables["tsys"], tmp_path / "tsys2.png", spw=2, antennas=[0, 3]))


def test_plot_bandpass(tables, tmp_path):
    from fastcal.report.plots import plot_bandpass

    _assert_drawn(plot_bandpass(tables["bandpass"], tmp_path / "bp.png"))


def test_plot_gain_vs_time(tables, tmp_path):
    from fastcal.report.plots import plot_gain_vs_time

    drawn = plot_gain_vs_time(tables["gain"], tmp_path / "g.png")
    _assert_drawn(drawn)
    # an all-flagged table gives a "no data" note, with far less ink than real curves
    empty = plot_gain_vs_time(tables["gain_flagged"], tmp_path / "g0.png")
    assert _image_stats(empty)[1] < 0.5 * _image_stats(drawn)[1]


def test_plots_from_arrays(tmp_path):
    pytest.importorskip("matplotlib")
    from fastcal.report.plots import (
        plot_amp_vs_uvdist,
        plot_flag_summary,
        plot_flux_spectrum,
        plot_wvr_phase_rms,
    )

    _assert_drawn(plot_flag_summary({"autocorr": 500, "shadow": 120, "edge": 0}, 4000,
                                    tmp_path / "flags.png"), min_ink=0.01)

    _assert_drawn(plot_wvr_phase_rms([20.0, 30.0, np.nan, 25.0], [10.0, 12.0, np.nan, 11.0],
                                     tmp_path / "wvr.png", antenna_names=["A", "B", "C", "D"]))
    freq = np.array([224e9, 226e9, 236e9, 238e9])
    flux = 1.2 * (freq / 231e9) ** -0.7
    _assert_drawn(plot_flux_spectrum(freq, flux, 0.02 * flux, tmp_path / "flux.png",
                                     fit_flux_jy=1.2, fit_ref_freq_hz=231e9, spix=[-0.7],
                                     catalogue_jy=flux * 1.01, field_name="J1924-2914"),
                  min_ink=0.01)
    rng = np.random.default_rng(2)
    uv = rng.uniform(15, 300, 500)
    _assert_drawn(plot_amp_vs_uvdist(uv, 0.01 * rng.random((500, 2)),
                                     1.0 + 0.05 * rng.standard_normal((500, 2)),
                                     tmp_path / "uv.png", model_jy=1.0))


def test_make_plot_spec_in_weblog(tables, tmp_path):
    results = [{"name": "bandpass", "plots": [
        {"kind": "bandpass", "args": [tables["bandpass"]], "caption": "BP"},
        {"kind": "gain_vs_time", "args": [tables["gain"]], "kwargs": {"spw": 3}},
    ]}]
    index = render_weblog(results, tmp_path / "web")
    refs = [r for r in _parse(index.parent / "stage01.html").refs if r.endswith(".png")]
    assert len(set(refs)) == 2
    for r in set(refs):
        _assert_drawn(index.parent / r)


def test_plot_errors(tables, tmp_path):
    from fastcal.report.plots import (
        plot_amp_vs_uvdist,
        plot_bandpass,
        plot_flag_summary,
        plot_flux_spectrum,
        plot_gain_vs_time,
        plot_tsys,
        plot_wvr_phase_rms,
    )

    with pytest.raises(CalTableError, match="needs a B TSYS table, got 'B Jones'"):
        plot_tsys(tables["bandpass"], tmp_path / "x.png")
    with pytest.raises(CalTableError, match="G Jones or T Jones"):
        plot_gain_vs_time(tables["tsys"], tmp_path / "x.png")
    with pytest.raises(ParameterError, match=r"no solutions for spw \[4\]; spws in the table: \[3\]"):
        plot_bandpass(tables["bandpass"], tmp_path / "x.png", spw=4)
    with pytest.raises(ParameterError, match=r"antenna ids \[7\] are out of range 0..4"):
        plot_bandpass(tables["bandpass"], tmp_path / "x.png", antennas=[0, 7])
    with pytest.raises(ParameterError, match="same length"):
        plot_wvr_phase_rms([1.0, 2.0], [1.0], tmp_path / "x.png")
    with pytest.raises(ParameterError, match="antenna_names has 1 entries"):
        plot_wvr_phase_rms([1.0, 2.0], [1.0, 1.0], tmp_path / "x.png", antenna_names=["A"])
    with pytest.raises(ParameterError, match="give both fit_flux_jy and fit_ref_freq_hz"):
        plot_flux_spectrum([1e11], [1.0], None, tmp_path / "x.png", fit_flux_jy=1.0)
    with pytest.raises(ParameterError, match="flux_jy has shape"):
        plot_flux_spectrum([1e11, 2e11], [1.0], None, tmp_path / "x.png")
    with pytest.raises(ParameterError, match="first axis must match uvdist_m"):
        plot_amp_vs_uvdist([1.0, 2.0], [1.0], [1.0, 2.0], tmp_path / "x.png")
    with pytest.raises(ParameterError, match="total must be > 0"):
        plot_flag_summary({"autocorr": 1}, 0, tmp_path / "x.png")
    with pytest.raises(ParameterError, match="use a .png name"):
        plot_wvr_phase_rms([1.0], [1.0], tmp_path / "x.jpg")
    assert not list(tmp_path.glob("x.*"))


def test_pipeline_stage_results_roundtrip(tables, tmp_path):
    """Real StageResult/PlotSpec objects, and the same results after a JSON state round trip."""
    from fastcal.pipeline.context import Context
    from fastcal.pipeline.qa import QAScore, flagged_fraction_score
    from fastcal.pipeline.stage import PlotSpec, StageResult, load_context, save_context

    bp_path = tables["bandpass"].write(str(tmp_path / "x.bcal.tbl"))
    ctx = Context(vis=str(tmp_path / "x.ms"), out_dir=str(tmp_path / "pkg"),
                  refant=["DV04", "DA41"])
    results = [
        StageResult("flagdata", qa=[flagged_fraction_score(0.2)], inputs={"autocorr": True},
                    duration_s=0.5),
        StageResult("bandpass", qa=[QAScore("bandpass_snr", 45.0, 0.9, "SNR 45", "SNR")],
                    plots=[PlotSpec("bandpass", "Bandpass <all antennas>", {"table": bp_path}),
                           PlotSpec("wvr_phase_rms", "WVR", {"rms_before_deg": [3.0, 4.0],
                                                             "rms_after_deg": [1.0, 2.0]})]),
        StageResult("tsys", status="not_implemented", messages=["stage 'tsys' is not implemented"]),
    ]
    for r in results:
        ctx.results[r.stage] = r.to_dict()
    save_context(ctx)
    for source, label in ((results, "objects"), (load_context(ctx.out_dir), "json")):
        out = tmp_path / f"web_{label}"
        index = render_weblog(source, out)
        text = index.read_text()
        assert ">flagdata</a>" in text and ">bandpass</a>" in text
        assert "not implemented" in text and "status-not_implemented" in text
        assert '<td class="score qa-blue" title="blue">0.90</td>' in text
        page = (out / "stage02.html").read_text()
        assert "Bandpass &lt;all antennas&gt;" in page
        pngs = sorted((out / "stage02").glob("*.png"))
        assert len(pngs) == 2
        for png in pngs:
            _assert_drawn(png)
    assert "DV04" in (tmp_path / "web_json" / "index.html").read_text()


def test_default_title(tmp_path):
    from fastcal.pipeline.context import Context

    ctx = Context(vis=str(tmp_path / "obs.ms"), out_dir=str(tmp_path / "pkg"))
    ctx.results = {"importdata": {"status": "ok"}}
    assert "<title>fastcal weblog: obs.ms</title>" in render_weblog(ctx, tmp_path / "a").read_text()
    assert "<title>fastcal calibration weblog</title>" in render_weblog(
        [{"stage": "x"}], tmp_path / "b").read_text()


def test_cli_rerenders_from_state(tmp_path, capsys):
    import argparse

    from fastcal.pipeline.context import Context
    from fastcal.pipeline.stage import StageResult, save_context
    from fastcal.report.weblog import add_cli_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    with pytest.raises(ParameterError, match="no pipeline state"):
        run_from_args(parser.parse_args([str(tmp_path)]))
    ctx = Context(vis=str(tmp_path / "obs.ms"), out_dir=str(tmp_path / "pkg"))
    ctx.results["refant"] = StageResult("refant", messages=["DV04 first"]).to_dict()
    save_context(ctx)
    assert run_from_args(parser.parse_args([ctx.out_dir])) == 0
    index = tmp_path / "pkg" / "qa" / "index.html"
    assert str(index) in capsys.readouterr().out
    assert "DV04 first" in index.read_text()
