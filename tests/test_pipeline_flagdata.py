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


# ----------------------------------------------------------------------------- online flags


def _write_flag_cmds(path, commands, applied=None):
    """Append FLAG_CMD rows (TYPE 'ONLINE') with python-casacore."""
    applied = applied or [False] * len(commands)
    with ct.table(str(path / "FLAG_CMD"), readonly=False, ack=False) as t:
        start = t.nrows()
        t.addrows(len(commands))
        for k, (c, a) in enumerate(zip(commands, applied, strict=True)):
            r = start + k
            t.putcell("COMMAND", r, c)
            t.putcell("APPLIED", r, bool(a))
            t.putcell("TYPE", r, "ONLINE")
            t.putcell("REASON", r, "ANTENNA_NOT_ON_SOURCE")
            t.putcell("TIME", r, 0.0)
            t.putcell("INTERVAL", r, 0.0)
            t.putcell("LEVEL", r, 0)
            t.putcell("SEVERITY", r, 0)


def test_online_flags_honour_antenna_time_spw_channels_and_correlation(tiny_ms, copy_ms):
    from fastcal.ms.info import format_mjd_s

    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    names = info.antenna_names
    c = _columns(path, "FLAG", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "TIME")
    spw = _row_spw(info, c["DATA_DESC_ID"])
    wvr = _wvr_rows(info, c["DATA_DESC_ID"])
    sci = info.spws_with_role("science")
    times = np.unique(c["TIME"][np.isin(spw, sci)])
    t0, t1 = times[2], times[5]  # integration mid-points: rows at t0..t1 inclusive
    pad = 0.5  # s, well inside an integration
    tr = f"{format_mjd_s(t0 - pad, digits=3)}~{format_mjd_s(t1 + pad, digits=3)}"
    corr_names = info.pols[info.ddescs[info.ddid_for_spw(sci[0])].pol_id].corr_names
    cmds = [
        f"antenna='{names[1]}&&*' timerange='{tr}'",                         # ant 1, all its rows
        f"antenna='{names[3]}&{names[4]}' spw='{sci[1]}:3~5' correlation='{corr_names[0]}'",
        f"antenna='{names[0]}&&*'",                                           # APPLIED already
        "mode='clip' clipminmax=[0,1]",                                      # unsupported mode
        f"antenna='{names[2]}' uvrange='<10m'",                               # unsupported key
        "antenna='NOPE&&*'",                                                  # not in the MS
    ]
    _write_flag_cmds(path, cmds, applied=[False, False, True, False, False, False])
    s = flag_deterministic(str(path), **ONLY)
    assert s.online_flag_commands == 6 and s.online_applied == 2 and len(s.online_skipped) == 3
    assert any("mode='clip'" in x for x in s.online_skipped)
    assert any("uvrange" in x for x in s.online_skipped) and any("NOPE" in x for x in s.online_skipped)
    expected_new = 0
    for r, f in enumerate(_columns(path, "FLAG")["FLAG"]):  # FLAG after flagging
        a1, a2, t = c["ANTENNA1"][r], c["ANTENNA2"][r], c["TIME"][r]
        want = np.zeros(f.shape, bool)
        if not wvr[r]:
            if 1 in (a1, a2) and t0 <= t <= t1:
                want[:] = True
            if {a1, a2} == {3, 4} and spw[r] == sci[1]:
                want[3:6, 0] = True
        np.testing.assert_array_equal(f, want, err_msg=f"row {r}")
        expected_new += int(want.sum())
    assert s.new["online"] == expected_new > 0
    assert sum(v for k, v in s.new.items() if k != "online") == 0
    online_lines = [x for x in s.template if x.endswith("reason='fastcal:online'")]
    assert len(online_lines) == 2 and f"timerange='{tr}'" in online_lines[0]
    with ct.table(str(path / "FLAG_CMD"), ack=False) as t:  # FLAG_CMD is left as it was
        assert t.getcol("APPLIED").tolist() == [False, False, True, False, False, False]


def test_online_flags_switch_and_parser_errors(tiny_ms, copy_ms):
    from fastcal.pipeline.stages.flagdata import parse_flag_command

    path = copy_ms(tiny_ms[0])
    _write_flag_cmds(path, [f"antenna='{open_ms(path).antenna_names[0]}&&*'"])
    s = flag_deterministic(str(path), **ONLY, online=False)
    assert s.new["online"] == 0 and s.online_flag_commands == 1 and s.online_applied == 0
    assert parse_flag_command("antenna='A&&*' timerange=\"x~y\" autocorr=True") == {
        "antenna": "A&&*", "timerange": "x~y", "autocorr": "True"}
    with pytest.raises(ParameterError, match="cannot parse"):
        parse_flag_command("antenna='A' garbage")
    with pytest.raises(ParameterError, match="'antenna' given twice"):
        parse_flag_command("antenna='A' antenna='B'")


def test_flagdata_stage_records_online_flags(tiny_ms, copy_ms, tmp_path):
    from fastcal.pipeline import run

    path = copy_ms(tiny_ms[0])
    _write_flag_cmds(path, [f"antenna='{open_ms(path).antenna_names[2]}&&*'"])
    ctx = run(path, str(tmp_path / "o"), stages=["importdata", "flagdata"]).context
    res = ctx.results["flagdata"]
    rec = [f for f in ctx.flags if f.agent == "online"]
    assert len(rec) == 1 and rec[0].n_new == res["outputs"]["new"]["online"] > 0
    assert "reason='fastcal:online'" in rec[0].command
    assert "flagged_by_online" in [q["name"] for q in res["qa"]]
    assert any("1 of 1 online flag commands applied" in m for m in res["messages"])


# ----------------------------------------------------------------------------- FDM edges


def _science_rows_flagged_channels(path, info, sid):
    c = _columns(path, "FLAG", "DATA_DESC_ID")
    spw = _row_spw(info, c["DATA_DESC_ID"])
    out = {tuple(np.flatnonzero(f.all(axis=1))) for r, f in enumerate(c["FLAG"]) if spw[r] == sid}
    partial = any(f.any(axis=1).sum() != f.all(axis=1).sum() for r, f in enumerate(c["FLAG"]) if spw[r] == sid)
    return out, partial


def test_fdm_2ghz_spw_loses_channels_beyond_937_5_mhz(tmp_path):
    path = tmp_path / "fdm.ms"
    simulate(path, config=SimConfig.tiny(seed=1, n_ant=4, n_spw=1, n_chan=240))  # 2 GHz, 8.333 MHz chans
    s = flag_deterministic(str(path), **{**ONLY, "edgespw": True})
    info = open_ms(path)
    sid = info.spws_with_role("science")[0]
    # the outer 62.5 MHz = 7.5 channels on each side: channels 0..7 and 232..239 reach into it
    want = list(range(8)) + list(range(232, 240))
    assert s.fdm_edge_channels == {sid: want} and s.edge_channels == {}
    got, partial = _science_rows_flagged_channels(path, info, sid)
    assert got == {tuple(want)} and not partial
    assert s.new["fdm_edge"] == 2 * len(want) * int(sum(1 for d in info.index.ddid if info.ddescs[d].spw_id == sid))
    assert f"spw='{sid}:0~7;232~239'" in " ".join(s.template)


def _shift_spw(path, sid, new_lo_edge_hz):
    """Move a spw's channels so that its lower channel edge is at `new_lo_edge_hz`."""
    with ct.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        f, w = t.getcell("CHAN_FREQ", sid), t.getcell("CHAN_WIDTH", sid)
        nf = new_lo_edge_hz + abs(w[0]) / 2 + np.arange(f.size) * abs(w[0])
        t.putcell("CHAN_FREQ", sid, nf)
        t.putcell("REF_FREQUENCY", sid, float(nf[0]))


def test_aca_500mhz_spw_near_the_baseband_edge(tmp_path):
    path = tmp_path / "aca.ms"
    simulate(path, config=SimConfig.tiny(seed=1, n_ant=4, n_spw=1, n_chan=240, chan_width_hz=500e6 / 240))
    info = open_ms(path)
    sid = info.spws_with_role("science")[0]
    centred = flag_deterministic(str(path), **{**ONLY, "edgespw": True}, online=False, lowtrans=False)
    assert centred.fdm_edge_channels == {} and centred.new["fdm_edge"] == 0  # 750 MHz from both edges
    tsys = [s for s in info.spws if info.spw_roles[s.id] == "tsys" and s.baseband == info.spws[sid].baseband][0]
    bb_lo = float(tsys.chan_freq[0] - abs(tsys.chan_width[0]) / 2)
    _shift_spw(path, sid, bb_lo + 10e6)
    s = flag_deterministic(str(path), **{**ONLY, "edgespw": True})
    # 40 MHz edge of a 500 MHz spw; channels of 2.0833 MHz from bb_lo + 10 MHz: lower edges
    # below bb_lo + 40 MHz are those of channels 0..14
    assert s.fdm_edge_channels == {sid: list(range(15))}
    got, partial = _science_rows_flagged_channels(path, open_ms(path), sid)
    assert got == {tuple(range(15))} and not partial
    with ct.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:  # no baseband spw
        t.putcell("BBC_NO", tsys.id, 7)
    s2 = flag_deterministic(str(path), **{**ONLY, "edgespw": True})
    assert s2.missing_baseband_spws == [sid] and s2.fdm_edge_channels == {}


# ----------------------------------------------------------------------------- low transmission


def test_spw_on_the_183_ghz_water_line_is_flagged(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    sci = list(info.spws_with_role("science"))
    with ct.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        n = t.getcell("NUM_CHAN", sci[1])
        t.putcell("CHAN_FREQ", sci[1], 183.31e9 - 80e6 + 5e6 + 10e6 * np.arange(n))
        t.putcell("CHAN_WIDTH", sci[1], np.full(n, 10e6))  # 16 x 10 MHz centred on the line
    s = flag_deterministic(str(path), **ONLY)
    assert s.pwv_source == "WVR retrieval"
    assert s.pwv_mm == pytest.approx(tiny_ms[1].pwv_mm, rel=0.2)
    assert s.lowtrans_spws == [sci[1]]
    assert s.transmission[sci[1]] < 0.05 < 0.8 < s.transmission[sci[0]]
    c = _columns(path, "FLAG", "DATA_DESC_ID")
    spw = _row_spw(info, c["DATA_DESC_ID"])
    for r, f in enumerate(c["FLAG"]):
        assert f.all() == (spw[r] == sci[1]) and f.any() == f.all()
    assert s.new["lowtrans"] == int(sum(f.size for r, f in enumerate(c["FLAG"]) if spw[r] == sci[1]))
    assert f"mode='manual' spw='{sci[1]}' reason='fastcal:lowtrans'" in s.template
    dry = flag_deterministic(str(copy_ms(tiny_ms[0], "dry.ms")), **ONLY, pwv_mm=0.0)
    assert dry.lowtrans_spws == [] and dry.pwv_source == "pwv_mm argument"


def test_low_transmission_thresholds_and_representative_spw(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    sci = list(open_ms(path).spws_with_role("science"))
    probe = flag_deterministic(str(path), **ONLY, lowtrans=True, pwv_mm=1.5, mintransrepspw=0.0)
    tr = probe.transmission  # band 6 at 1.5 mm: ~0.9 in both spws
    assert probe.lowtrans_spws == [] and all(0.8 < tr[s] < 0.97 for s in sci)
    hi = max(tr.values()) + 0.05  # above the (nearly flat) transmission of every channel
    s = flag_deterministic(str(copy_ms(tiny_ms[0], "b.ms")), **ONLY, pwv_mm=1.5, mintransrepspw=hi)
    assert s.lowtrans_spws == sci  # no representative spw given: every spw uses mintransrepspw
    s = flag_deterministic(str(copy_ms(tiny_ms[0], "c.ms")), **ONLY, pwv_mm=1.5, mintransrepspw=0.05,
                           mintransnonrepspws=hi, representative_spw=sci[0])
    assert s.lowtrans_spws == [sci[1]]
    with pytest.raises(ParameterError, match="mintransrepspw=1.5"):
        flag_deterministic(str(path), mintransrepspw=1.5)
    with pytest.raises(ParameterError, match="representative_spw=99"):
        flag_deterministic(str(path), representative_spw=99)
    with pytest.raises(ParameterError, match="pwv_mm=-1"):
        flag_deterministic(str(path), pwv_mm=-1.0)


def test_online_time_ranges_are_padded_by_half_an_integration(tiny_ms, copy_ms):
    from fastcal.ms.info import format_mjd_s
    from fastcal.pipeline.stages.flagdata import online_tbuff

    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    ant = info.antenna_names[2]
    c = _columns(path, "TIME", "INTERVAL", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID")
    sci = np.isin(_row_spw(info, c["DATA_DESC_ID"]), info.spws_with_role("science"))
    cross = c["ANTENNA1"] != c["ANTENNA2"]
    t_int = float(np.median(c["INTERVAL"][cross]))
    assert online_tbuff(info) == pytest.approx((0.5 * t_int - 0.048, 0.5 * t_int))
    tm = np.unique(c["TIME"][sci])[4]
    # an online flag covering 1..2 s after an integration's mid-point, not the mid-point itself
    _write_flag_cmds(path, [f"antenna='{ant}&&*' timerange='{format_mjd_s(tm + 1.0, digits=3)}~"
                            f"{format_mjd_s(tm + 2.0, digits=3)}'"])
    bare = flag_deterministic(str(copy_ms(path, "bare.ms")), **ONLY, tbuff=0.0)
    assert bare.online_applied == 1 and bare.new["online"] == 0
    s = flag_deterministic(str(path), **ONLY)
    assert s.online_tbuff_s == pytest.approx([0.5 * t_int - 0.048, 0.5 * t_int])
    flags = _columns(path, "FLAG")["FLAG"]
    hit = np.array([f.all() for f in flags])
    want = sci & (c["TIME"] == tm) & ((c["ANTENNA1"] == 2) | (c["ANTENNA2"] == 2))
    np.testing.assert_array_equal(hit, want)
    assert s.new["online"] == sum(f.size for f, w in zip(flags, want, strict=True) if w)
    with pytest.raises(ParameterError, match="tbuff=-1"):
        flag_deterministic(str(path), tbuff=-1.0)
