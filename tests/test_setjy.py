"""fastcal.flux: setjy virtual models, MODEL_DATA, resolved-model kernels, flux.csv files."""

from __future__ import annotations

import math
import os

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import MSNotFoundError, ParameterError, SelectionError, UnsupportedError
from fastcal.flux import (
    MODELS_KEYWORD,
    FluxEntry,
    FluxModel,
    SpwModelSet,
    clear_models,
    list_models,
    parse_frequency,
    read_flux_csv,
    setjy,
    setjy_from_csv,
    spectral_factor,
    virtual_model,
    write_flux_csv,
)
from fastcal.kernels.model import bessel_j1_array, jinc, shape_visibility
from fastcal.ms import open_ms

XX, XY, YX, YY = 9, 10, 11, 12
RR, RL, LR, LL = 5, 6, 7, 8
C = 299792458.0
ARCSEC = math.pi / 180 / 3600


@pytest.fixture
def ms(tiny_ms, copy_ms):
    return str(copy_ms(tiny_ms[0]))


def _main_checksum(path: str) -> dict:
    """Digest of every file of the MS except the main table's table.dat (keywords) and lock."""
    import hashlib

    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if rel in ("table.dat", "table.lock") or name == "table.lock":
                continue
            with open(full, "rb") as fh:
                out[rel] = hashlib.sha1(fh.read()).hexdigest()
    return out


def _ddid_data(path: str, ddid: int) -> np.ndarray:
    with ct.table(path, ack=False) as t:
        q = t.query(f"DATA_DESC_ID=={ddid}")
        data = q.getcol("DATA")
        q.close()
    return data


def _j1_integral(x: np.ndarray) -> np.ndarray:
    """J1(x) = 1/pi int_0^pi cos(tau - x sin tau) dtau (trapezoid, spectrally accurate)."""
    tau = np.linspace(0, np.pi, 4001)
    vals = np.cos(tau[None, :] - x[:, None] * np.sin(tau[None, :]))
    return np.trapezoid(vals, tau, axis=1) / np.pi


# --------------------------------------------------------------------------- point models


def test_setjy_point_model_spectrum_matches_formula(ms):
    info = open_ms(ms)
    setjy(ms, field="J1924*", fluxdensity=[3.0, 0.2, 0.1, 0.05], spix=[-0.6, 0.1], reffreq="233GHz")
    m = virtual_model(info, 0)
    assert isinstance(m, FluxModel) and m.is_point
    f = info.spws[3].chan_freq
    x = np.log10(f / 233e9)
    s = (f / 233e9) ** (-0.6 + 0.1 * x)  # S = S0 (nu/nu0)^(alpha + beta log10(nu/nu0)), as CASA
    spec = m.spectrum(f, (XX, XY, YX, YY))
    assert spec.shape == (f.size, 2) and spec.dtype == np.float64
    np.testing.assert_allclose(spec[:, 0], 3.2 * s, rtol=1e-12)  # XX = I + Q
    np.testing.assert_allclose(spec[:, 1], 2.8 * s, rtol=1e-12)  # YY = I - Q
    circ = m.spectrum(f, (RR, RL, LR, LL))
    np.testing.assert_allclose(circ[:, 0], 3.05 * s, rtol=1e-12)  # RR = I + V
    np.testing.assert_allclose(circ[:, 1], 2.95 * s, rtol=1e-12)  # LL = I - V
    vis = m.visibilities(np.zeros((3, 3)), f, (XX, XY, YX, YY))
    assert vis.shape == (3, f.size, 4) and vis.dtype == np.complex64
    np.testing.assert_allclose(vis[1, :, 1], (0.1 + 0.05j) * s, rtol=1e-6)  # XY = U + iV
    np.testing.assert_allclose(vis[1, :, 2], (0.1 - 0.05j) * s, rtol=1e-6)  # YX = U - iV
    assert virtual_model(info, 1) is None


def test_spectral_factor_and_frequencies():
    f = np.array([90e9, 100e9, 110e9])
    np.testing.assert_allclose(spectral_factor(f, 100e9, [-0.7]), (f / 100e9) ** -0.7)
    np.testing.assert_allclose(spectral_factor(f, 100e9, []), 1.0)
    assert parse_frequency("100GHz") == 100e9
    assert parse_frequency(" 230.5 MHz") == 230.5e6
    assert parse_frequency(1e11) == 1e11
    for bad in ("abc", "-5GHz", "10 parsec", None):
        with pytest.raises(ParameterError, match="reffreq"):
            parse_frequency(bad)


def test_setjy_stores_keyword_and_never_touches_data(ms):
    before = _main_checksum(ms)
    setjy(ms, field="0,1", fluxdensity=2.0, spix=[-0.5], reffreq="230GHz")
    after = _main_checksum(ms)
    assert before == after  # DATA, FLAG, WEIGHT and the column list unchanged
    with ct.table(ms, ack=False) as t:
        rec = t.getkeyword(MODELS_KEYWORD)
    assert rec["format"] == "fastcal-models"
    assert set(rec["models"]) == {"f0_all", "f1_all"}
    assert rec["models"]["f1_all"]["stokes"][0] == 2.0


def test_per_spw_models_override_and_dispatch(ms):
    info = open_ms(ms)
    setjy(ms, field="J1832-2039", fluxdensity=1.0, reffreq="230GHz")
    setjy(ms, field="J1832-2039", spw="4", fluxdensity=5.0, reffreq="230GHz")
    assert virtual_model(info, 1, 4).flux_i == 5.0
    assert virtual_model(info, 1, 3).flux_i == 1.0
    both = virtual_model(info, 1)
    assert isinstance(both, SpwModelSet)
    f3, f4 = info.spws[3].chan_freq, info.spws[4].chan_freq
    assert both.spectrum(f4, (XX, YY))[0, 0] == pytest.approx(5.0 * (f4[0] / 230e9) ** 0)
    assert both.spectrum(f3, (XX, YY))[0, 0] == pytest.approx(1.0)
    # an every-spw model replaces the field's per-spw ones
    setjy(ms, field="1", fluxdensity=2.0)
    assert set(list_models(ms)) == {"f1_all"}


def test_clear_models(ms):
    setjy(ms, field="0,1", fluxdensity=1.5)
    assert clear_models(ms, field="J1924-2914") == 1
    assert set(list_models(ms)) == {"f1_all"}
    assert clear_models(ms) == 1
    assert list_models(ms) == {}
    with ct.table(ms, ack=False) as t:
        assert MODELS_KEYWORD not in t.fieldnames()
    assert clear_models(ms) == 0


def test_setjy_bad_inputs(ms):
    with pytest.raises(SelectionError, match="NOPE"):
        setjy(ms, field="NOPE", fluxdensity=1.0)
    with pytest.raises(SelectionError, match="spw"):
        setjy(ms, field="0", spw="99", fluxdensity=1.0)
    with pytest.raises(ParameterError, match="Butler-JPL-Horizons.*manual, fluxscale"):
        setjy(ms, field="0", standard="Butler-JPL-Horizons 2012")
    with pytest.raises(ParameterError, match="Perley-Butler 2017.*not supported"):
        setjy(ms, field="0", standard="Perley-Butler 2017")
    with pytest.raises(ParameterError, match="Stokes I must be >= 0"):
        setjy(ms, field="0", fluxdensity=-1)
    with pytest.raises(ParameterError, match="polarised flux exceeds"):
        setjy(ms, field="0", fluxdensity=[1.0, 2.0, 0, 0])
    with pytest.raises(ParameterError, match="fluxdensity"):
        setjy(ms, field="0", fluxdensity=[1, 2, 3, 4, 5])
    with pytest.raises(ParameterError, match="spix"):
        setjy(ms, field="0", fluxdensity=1, spix=[float("nan")])
    with pytest.raises(ParameterError, match="shape='ring'"):
        setjy(ms, field="0", fluxdensity=1, shape="ring")
    with pytest.raises(ParameterError, match="majoraxis > 0"):
        setjy(ms, field="0", fluxdensity=1, shape="disk")
    with pytest.raises(ParameterError, match="fluxdict"):
        setjy(ms, field="0", standard="fluxscale")
    with pytest.raises(UnsupportedError, match="parallel hand"):
        FluxModel(0, "x").spectrum(np.array([1e11]), (XY, YX))
    assert list_models(ms) == {}  # nothing stored by the failed calls
    with pytest.raises(MSNotFoundError):
        virtual_model(ms + ".missing", 0)


def test_usescratch_writes_model_data_for_selected_field_only(ms):
    info = open_ms(ms)
    before = _ddid_data(ms, info.ddid_for_spw(3))
    setjy(ms, field="J1924-2914", fluxdensity=3.0)  # virtual model, then replaced by MODEL_DATA
    setjy(ms, field="J1924-2914", spw="3,4", fluxdensity=[2.0, 0.5, 0, 0], spix=[-1.0],
          reffreq="230GHz", usescratch=True)
    # the solvers must now see MODEL_DATA in spws 3, 4; the other spws keep the 3 Jy model
    left = list_models(ms)
    assert sorted(left) == [f"f0_s{s.id}" for s in info.spws if s.id not in (3, 4)]
    assert all(m.flux_i == 3.0 for m in left.values())
    assert virtual_model(info, 0, 3) is None
    with ct.table(ms, ack=False) as t:
        ddid = info.ddid_for_spw(3)
        q = t.query(f"FIELD_ID==0 && DATA_DESC_ID=={ddid}")
        md = q.getcol("MODEL_DATA")
        q.close()
        q = t.query(f"FIELD_ID==1 && DATA_DESC_ID=={ddid}")
        other = q.getcol("MODEL_DATA")
        q.close()
    s = (info.spws[3].chan_freq / 230e9) ** -1.0
    np.testing.assert_allclose(md[:, :, 0], np.broadcast_to(2.5 * s, md.shape[:2]), rtol=1e-6)
    np.testing.assert_allclose(md[:, :, 1], np.broadcast_to(1.5 * s, md.shape[:2]), rtol=1e-6)
    np.testing.assert_array_equal(other, 1.0 + 0j)  # untouched rows keep CASA's 1 Jy
    np.testing.assert_array_equal(_ddid_data(ms, info.ddid_for_spw(3)), before)  # DATA untouched


# --------------------------------------------------------------------------- resolved models


def test_bessel_j1_matches_integral_representation():
    x = np.concatenate([np.linspace(-30, 30, 601), [11.99, 12.0, 12.01, 50.0, 200.0]])
    np.testing.assert_allclose(bessel_j1_array(x), _j1_integral(x), atol=2e-12)
    assert jinc(0.0) == 1.0
    assert abs(jinc(3.8317059702075125)) < 1e-12  # first null of 2 J1(x)/x


def test_gaussian_and_disk_visibilities():
    nu = np.array([100e9, 200e9])
    uvw = np.array([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 0.0]])
    fwhm = 1.0 * ARCSEC
    g = shape_visibility(uvw, nu, 1, 2 * fwhm, fwhm, 0.0, 0.0, 0.0)
    q = 100.0 * nu / C
    # pa = 0: major axis north-south, so a north-south (v) baseline is the more resolved one
    np.testing.assert_allclose(g[1].real, np.exp(-np.pi**2 * (2 * fwhm) ** 2 * q**2 / (4 * np.log(2))), rtol=1e-12)
    np.testing.assert_allclose(g[0].real, np.exp(-np.pi**2 * fwhm**2 * q**2 / (4 * np.log(2))), rtol=1e-12)
    np.testing.assert_array_equal(g[2], 1.0)
    d = shape_visibility(uvw, nu, 2, fwhm, fwhm, 0.3, 0.0, 0.0)
    x = np.pi * fwhm * q
    np.testing.assert_allclose(d[0].real, 2 * _j1_integral(x) / x, atol=1e-10)
    np.testing.assert_allclose(d[0], d[1], atol=1e-14)  # circular disk: orientation-free


def test_offset_point_phase():
    lo, mo = 2.0 * ARCSEC, -1.0 * ARCSEC
    uvw = np.array([[300.0, -120.0, 15.0]])
    nu = np.array([230e9])
    v = shape_visibility(uvw, nu, 0, 0.0, 0.0, 0.0, lo, mo)
    n = np.sqrt(1 - lo * lo - mo * mo)
    s = nu[0] / C
    expect = np.exp(-2j * np.pi * s * (300 * lo - 120 * mo + 15 * (n - 1)))
    np.testing.assert_allclose(v[0, 0], expect, rtol=1e-12)
    model = FluxModel(0, "x", stokes=(2.0, 0, 0, 0), reffreq_hz=230e9, offset_arcsec=(2.0, -1.0))
    assert not model.is_point
    np.testing.assert_allclose(model.visibilities(uvw, nu, (XX, YY))[0, 0], 2 * expect, rtol=1e-6)


def test_resolved_model_stored_and_zero_spacing(ms):
    info = open_ms(ms)
    setjy(ms, field="0", fluxdensity=4.0, reffreq="230GHz", shape="disk", majoraxis="2arcsec",
          minoraxis=1.5, positionangle=30)
    m = virtual_model(info, 0)
    assert (m.shape, m.major_arcsec, m.minor_arcsec, m.pa_deg) == ("disk", 2.0, 1.5, 30.0)
    for pa in ("30", "30deg", "1800arcmin"):
        setjy(ms, field="1", fluxdensity=1.0, shape="gaussian", majoraxis="0.05arcmin", positionangle=pa)
        g = virtual_model(info, 1)
        assert g.pa_deg == pytest.approx(30.0) and g.major_arcsec == pytest.approx(3.0)
        assert g.minor_arcsec == pytest.approx(3.0)  # minor defaults to major
    setjy(ms, field="1", fluxdensity=1.0, shape="gaussian", majoraxis=1.0, minoraxis=2.0, positionangle=10)
    g = virtual_model(info, 1)  # minor > major: axes swapped, PA turned by 90 deg
    uvw = np.array([[120.0, 40.0, 0.0], [-30.0, 80.0, 0.0]])
    fr = info.spws[3].chan_freq
    # the kernel puts its first axis along pa: 1" along PA 10 deg and 2" along PA 100 deg
    direct = shape_visibility(uvw, fr, 1, 1.0 * ARCSEC, 2.0 * ARCSEC, math.radians(10.0), 0.0, 0.0)
    np.testing.assert_allclose(g.visibilities(uvw, fr, (XX,))[:, :, 0], direct, rtol=1e-6)
    assert (g.major_arcsec, g.minor_arcsec, g.pa_deg) == (2.0, 1.0, 100.0)
    with pytest.raises(ParameterError, match="positionangle='north'"):
        setjy(ms, field="1", fluxdensity=1.0, shape="gaussian", majoraxis=1, positionangle="north")
    assert not m.is_point
    f = info.spws[3].chan_freq
    vis = m.visibilities(np.array([[0.0, 0.0, 0.0], [150.0, 40.0, 0.0]]), f, (XX, YY))
    np.testing.assert_allclose(vis[0].real, m.spectrum(f, (XX, YY)), rtol=1e-6)
    assert np.all(np.abs(vis[1]) < np.abs(vis[0]))  # resolved on a 155 m baseline


# --------------------------------------------------------------------------- flux.csv


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return path


def test_read_flux_csv_all_header_forms(tmp_path):
    cur = _write(tmp_path / "a.csv", "ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment\n"
                 "uid___X.ms,1,3,0.81,0.0,0.0,0.0,-0.7,0.0,0.0,"
                 "# field=J1832-2039 intents=PHASE origin=DB age=3 queried_at=N/A\n\n")
    old = _write(tmp_path / "b.csv", "ms,field,spw,I,Q,U,V,spix,comment\nuid___X.ms,1,3,0.81,0,0,0,-0.7,x, y\n")
    oldest = _write(tmp_path / "c.csv", "vis,fieldid,spwid,I,Q,U,V,pix,comment\nuid___X.ms,1,3,0.81,0,0,0,-0.7,z\n")
    for p in (cur, old, oldest):
        (e,) = read_flux_csv(p)
        assert (e.ms, e.field, e.spw, e.stokes, e.spix) == ("uid___X.ms", "1", 3, (0.81, 0.0, 0.0, 0.0), -0.7)
    assert read_flux_csv(old)[0].comment == "x, y"  # unquoted comma in the comment kept
    assert read_flux_csv(cur)[0].comment.startswith("# field=J1832-2039")


def test_read_flux_csv_errors(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        read_flux_csv(tmp_path / "missing.csv")
    with pytest.raises(ParameterError, match="header .* not recognised"):
        read_flux_csv(_write(tmp_path / "h.csv", "name,flux\nx,1\n"))
    with pytest.raises(ParameterError, match="line 2: column I='abc'"):
        read_flux_csv(_write(tmp_path / "v.csv", "ms,field,spw,I,Q,U,V,spix,comment\nm,1,3,abc,0,0,0,0,\n"))
    with pytest.raises(ParameterError, match="line 2: spw='x'"):
        read_flux_csv(_write(tmp_path / "s.csv", "ms,field,spw,I,Q,U,V,spix,comment\nm,1,x,1,0,0,0,0,\n"))


def test_flux_csv_roundtrip_and_setjy_from_csv(ms, tmp_path):
    info = open_ms(ms)
    name = os.path.basename(ms)
    entries = [FluxEntry(name, "1", 3, (0.8, 0.01, 0.0, 0.0), -0.7, 0.0, 0.0, "# field=J1832-2039"),
               FluxEntry(name, "J1924-2914", 4, (3.0, 0.0, 0.0, 0.0), -0.6, 0.0, 0.0, ""),
               FluxEntry("other.ms", "0", 3, (9.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0, "")]
    path = tmp_path / "flux.csv"
    assert write_flux_csv(path, entries) == 3
    with open(path) as fh:
        assert fh.readline().strip() == "ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment"
    assert read_flux_csv(path) == entries
    with pytest.raises(ParameterError, match="exists"):
        write_flux_csv(path, entries)
    models = setjy_from_csv(ms, path)
    assert sorted(models) == [0, 1]  # the other.ms row is ignored
    m = virtual_model(info, 1, 3)
    assert m.flux_i == 0.8 and m.spix == (-0.7,) and m.reffreq_hz == pytest.approx(info.spws[3].centre_freq)
    assert virtual_model(info, 1, 4) is None
    assert virtual_model(info, 0, 4).flux_i == 3.0
    with pytest.raises(ParameterError, match="no row for MS"):
        setjy_from_csv(ms, _write(tmp_path / "x.csv", "ms,field,spw,I,Q,U,V,spix,comment\nzz.ms,0,3,1,0,0,0,0,\n"))
    with pytest.raises(SelectionError, match="spw 7"):
        setjy_from_csv(ms, _write(tmp_path / "y.csv", "ms,field,spw,I,Q,U,V,spix,comment\n,0,7,1,0,0,0,0,\n"))


def test_cli_setjy(ms, capsys):
    import argparse

    from fastcal.flux import add_cli_arguments, run_from_args

    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    assert run_from_args(p.parse_args([ms, "--field", "0", "--fluxdensity", "2.5", "--spix", "-0.6",
                                       "--reffreq", "230GHz"])) == 0
    assert run_from_args(p.parse_args([ms, "--list"])) == 0
    out = capsys.readouterr().out
    assert "J1924-2914" in out and "2.5" in out and "230 GHz" in out
    assert run_from_args(p.parse_args([ms, "--clear"])) == 0
    assert list_models(ms) == {}


# --------------------------------------------------------------------------- CASA parity


@pytest.mark.casa
def test_casa_setjy_model_data_parity(tmp_path):
    """casatasks.setjy(standard='manual', usescratch=True) and fastcal write the same MODEL_DATA
    (full-pol: XX = I+Q, XY = U+iV, YX = U-iV, YY = I-Q; curvature in log10(nu/nu0))."""
    from casa_helpers import run_casa, skip_without_casa

    from fastcal.simulate import SimConfig, simulate

    skip_without_casa()
    paths = [str(tmp_path / n) for n in ("casa.ms", "fastcal.ms")]
    for p in paths:
        simulate(p, config=SimConfig.tiny(seed=2).replace(corr="XX,XY,YX,YY"))
    kw = dict(fluxdensity=[2.0, 0.2, 0.1, 0.05], spix=[-0.7, 0.5], reffreq="230GHz")
    run_casa(f"""
        from casatasks import setjy
        setjy(vis={paths[0]!r}, field="J1924-2914", standard="manual", usescratch=True, **{kw!r})
        emit({{}})
    """)
    setjy(paths[1], field="J1924-2914", usescratch=True, **kw)
    info = open_ms(paths[1])
    got = []
    for p in paths:
        with ct.table(p, ack=False) as t:
            q = t.query(f"FIELD_ID==0 && DATA_DESC_ID=={info.ddid_for_spw(4)} && ANTENNA1!=ANTENNA2")
            got.append(q.getcol("MODEL_DATA"))
            q.close()
    np.testing.assert_allclose(got[1], got[0], rtol=2e-6, atol=1e-7)
