"""Deterministic flagging (fastcal.pipeline.stages.flagdata) on small simulated MSs."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.geometry import source_direction_itrf
from fastcal.ms import open_ms
from fastcal.pipeline.stages.flagdata import edge_channel_count, flag_deterministic
from fastcal.simulate import SimConfig, simulate

ONLY = dict(autocorr=False, shadow=False, edgespw=False, clipzeros=False, intents="")


def _columns(path, *cols):
    """Columns of every row; array columns (whose shape differs between spws) as lists."""
    with ct.table(str(path), ack=False) as t:
        out = {}
        for c in cols:
            if c in ("FLAG", "DATA"):
                out[c] = [t.getcell(c, r) for r in range(t.nrows())]
            else:
                out[c] = t.getcol(c)
        return out


def _row_spw(info, ddid):
    return np.array([info.ddescs[d].spw_id for d in ddid])


def _wvr_rows(info, ddid):
    roles = info.spw_roles
    return np.array([roles[s] == "wvr" for s in _row_spw(info, ddid)])


@pytest.mark.parametrize("nchan, bw, expected", [
    (64, 2e9, 2), (128, 2e9, 4), (256, 2e9, 8), (62, 1.875e9, 3), (124, 1.875e9, 6), (248, 1.875e9, 12),
    (64, 1e9, 0), (16, 2e9, 0), (3840, 1.875e9, 0),
])
def test_edge_channel_count_tdm_rules(nchan, bw, expected):
    assert edge_channel_count(nchan, bw) == expected


def test_edge_channel_count_rejects_bad_fraction():
    with pytest.raises(ParameterError, match="fracspw=0.6"):
        edge_channel_count(64, 2e9, fracspw=0.6)


@pytest.mark.parametrize("nchan", [64, 128, 256])
def test_edge_channels_flagged_per_fracspw(tmp_path, nchan):
    path = tmp_path / f"tdm{nchan}.ms"
    simulate(path, config=SimConfig.tiny(seed=1, n_ant=4, n_spw=1, n_chan=nchan))
    s = flag_deterministic(str(path), **{**ONLY, "edgespw": True})
    n_edge = {64: 2, 128: 4, 256: 8}[nchan]
    info = open_ms(path)
    sci = info.spws_with_role("science")
    assert s.edge_channels == {sci[0]: n_edge}
    c = _columns(path, "FLAG", "DATA_DESC_ID")
    spw = _row_spw(info, c["DATA_DESC_ID"])
    for r, f in enumerate(c["FLAG"]):
        if spw[r] in sci:
            flagged_chans = np.flatnonzero(f.all(axis=1))
            expected = list(range(n_edge)) + list(range(nchan - n_edge, nchan))
            assert flagged_chans.tolist() == expected
            assert not f[n_edge:nchan - n_edge].any()
        else:
            assert not f.any()
    assert s.new["edgespw"] == 2 * n_edge * 2 * int(np.isin(spw, sci).sum())


def test_autocorrelations_flagged_except_wvr(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    s = flag_deterministic(str(path), **{**ONLY, "autocorr": True})
    info = open_ms(path)
    c = _columns(path, "FLAG", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID")
    wvr = _wvr_rows(info, c["DATA_DESC_ID"])
    auto = c["ANTENNA1"] == c["ANTENNA2"]
    for r, f in enumerate(c["FLAG"]):
        assert f.all() == (auto[r] and not wvr[r])
        assert f.any() == f.all()
    assert s.new["autocorr"] > 0 and sum(v for k, v in s.new.items() if k != "autocorr") == 0
    assert any("autocorr=True" in line for line in s.template)


def test_non_science_intents_flagged(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    flag_deterministic(str(path), **{**ONLY, "intents": "*ATMOSPHERE*"})
    info = open_ms(path)
    c = _columns(path, "FLAG", "STATE_ID", "DATA_DESC_ID")
    wvr = _wvr_rows(info, c["DATA_DESC_ID"])
    atm = np.array([any("ATMOSPHERE" in i for i in info.states[s].intents) for s in c["STATE_ID"]])
    assert atm.any() and (~atm).any()
    for r, f in enumerate(c["FLAG"]):
        assert f.all() == (atm[r] and not wvr[r]) and f.any() == f.all()


def test_zeros_and_nans_flagged_exactly(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    c = _columns(path, "DATA_DESC_ID", "ANTENNA1", "ANTENNA2")
    wvr = _wvr_rows(info, c["DATA_DESC_ID"])
    rng = np.random.default_rng(7)
    cross = np.flatnonzero((c["ANTENNA1"] != c["ANTENNA2"]) & ~wvr)
    rows = rng.choice(cross, 6, replace=False)
    expected = {}
    with ct.table(str(path), readonly=False, ack=False) as t:
        for k, r in enumerate(rows):
            d = t.getcell("DATA", int(r))
            ch = int(rng.integers(d.shape[0]))
            d[ch, 0] = 0.0 if k % 2 else np.nan
            t.putcell("DATA", int(r), d)
            expected[int(r)] = (ch, 0)
    s = flag_deterministic(str(path), **{**ONLY, "clipzeros": True})
    assert s.new["clip_zeros"] == len(rows)
    flags = _columns(path, "FLAG")["FLAG"]
    for r, f in enumerate(flags):
        if r in expected:
            assert np.argwhere(f).tolist() == [list(expected[r])]
        else:
            assert not f.any()


@pytest.fixture(scope="module")
def shadow_ms(tmp_path_factory):
    """A compact array (62 m) observed at low elevation: some antennas shadow others."""
    path = tmp_path_factory.mktemp("shadow") / "shadow.ms"
    simulate(path, config=SimConfig.tiny(seed=3, n_ant=8, max_baseline_m=62.0, start_hour_angle_h=-5.0))
    return path


def _expected_shadow(path):
    """(time, antenna) pairs shadowed, from ANTENNA positions and the field directions."""
    info = open_ms(path)
    pos = np.array([a.position for a in info.antennas])
    diam = np.array([a.dish_diameter for a in info.antennas])
    c = _columns(path, "TIME", "FIELD_ID")
    out = set()
    for t, fid in sorted(set(zip(c["TIME"].tolist(), c["FIELD_ID"].tolist(), strict=True))):
        f = info.fields[fid]
        s = source_direction_itrf(t, f.ra_rad, f.dec_rad)
        for p in range(len(pos)):
            for q in range(len(pos)):
                if p == q:
                    continue
                b = pos[q] - pos[p]
                along = b @ s
                perp = np.sqrt(max(b @ b - along**2, 0.0))
                if perp < 0.5 * (diam[p] + diam[q]) and along > 0:  # q in front of p
                    out.add((t, p))
    return out


def test_shadowed_rows_match_geometry(shadow_ms, copy_ms):
    path = copy_ms(shadow_ms)
    expected = _expected_shadow(path)
    s = flag_deterministic(str(path), **{**ONLY, "shadow": True})
    info = open_ms(path)
    c = _columns(path, "FLAG", "TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID")
    wvr = _wvr_rows(info, c["DATA_DESC_ID"])
    want = np.array([(not wvr[r]) and ((t, a1) in expected or (t, a2) in expected)
                     for r, (t, a1, a2) in enumerate(zip(c["TIME"], c["ANTENNA1"], c["ANTENNA2"], strict=True))])
    got = np.array([f.all() for f in c["FLAG"]])
    assert 0 < want.sum() < want.size  # the configuration really shadows, but not everything
    np.testing.assert_array_equal(got, want)
    assert not any(f.any() and not f.all() for f in c["FLAG"])
    cross_times = {t for t, a1, a2 in zip(c["TIME"], c["ANTENNA1"], c["ANTENNA2"], strict=True) if a1 != a2}
    assert s.shadowed == len({(t, a) for t, a in expected if t in cross_times})


def test_shadow_tolerance_allows_overlap(shadow_ms, copy_ms):
    path = copy_ms(shadow_ms)
    s = flag_deterministic(str(path), **{**ONLY, "shadow": True}, tolerance=12.0)
    assert s.new["shadow"] == 0
    with pytest.raises(ParameterError, match="tolerance=-1"):
        flag_deterministic(str(path), tolerance=-1.0)


@pytest.mark.filterwarnings("ignore:refant .* has no usable solution:UserWarning")
def test_lowgainflag_flags_the_low_amplitude_antenna(tmp_path):
    from fastcal.pipeline import run

    path = tmp_path / "lowamp.ms"
    simulate(path, config=SimConfig.tiny(seed=3, n_ant=7, bad_antennas=[(2, "low_amp")]))
    ctx = run(path, str(tmp_path / "o"), stages=["importdata", "refant", "lowgainflag"]).context
    info = open_ms(path)
    bad = info.antenna_names[2]
    out = ctx.results["lowgainflag"]["outputs"]["flagged"]
    assert set(out) == {str(s) for s in ctx.science_spws}
    assert all(v == [bad] for v in out.values())
    assert bad not in ctx.refant and len(ctx.refant) == 6
    c = _columns(path, "FLAG", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID")
    spw = _row_spw(info, c["DATA_DESC_ID"])
    for r, f in enumerate(c["FLAG"]):
        has = 2 in (c["ANTENNA1"][r], c["ANTENNA2"][r])
        assert f.all() == (has and spw[r] in ctx.science_spws) and f.any() == f.all()
