"""CASA parity of fastcal.caltable (skipped without a CASA interpreter, see casa_helpers).

CASA runs in a subprocess on copies of the tiny simulated MS; this process only uses
python-casacore. Checks: CASA's ``tb`` and ``calanalysis`` read what fastcal writes;
CASA's applycal applies fastcal tables as NumPy says it should; fastcal reads the tables
CASA's gaincal/bandpass/gencal/wvrgcal write, and CASA applies fastcal's rewrite of each
exactly as it applies the original.
"""

from __future__ import annotations

import shutil
import textwrap

import casacore.tables as ct
import numpy as np
import pytest
from casa_helpers import from_json, run_casa, skip_without_casa
from test_caltable import TYPES, make_table

from fastcal.caltable import CalTable, read_caltable

pytestmark = pytest.mark.casa

# CASA script fragment: read a caltable with casatools.table, per spw, in CASA's axis order.
_TB_READ = '''
import casatools
def read_table(path):
    tb = casatools.table()
    tb.open(path)
    out = {"info": tb.info(), "colnames": tb.colnames(),
           "keywords": {k: tb.getkeyword(k) for k in tb.keywordnames()
                        if not str(tb.getkeyword(k)).startswith("Table:")},
           "spws": {}}
    pcol = "CPARAM" if "CPARAM" in tb.colnames() else "FPARAM"
    for s in sorted(set(tb.getcol("SPECTRAL_WINDOW_ID").tolist())):
        q = tb.query("SPECTRAL_WINDOW_ID==%d" % s)
        out["spws"][str(s)] = {c: q.getcol(c) for c in
            (pcol, "PARAMERR", "SNR", "FLAG", "TIME", "ANTENNA1", "ANTENNA2", "SCAN_NUMBER",
             "FIELD_ID")}
        q.close()
    tb.close()
    tb.open(path + "/SPECTRAL_WINDOW")
    out["spw_table"] = {"NUM_CHAN": tb.getcol("NUM_CHAN"), "FLAG_ROW": tb.getcol("FLAG_ROW"),
                        "CHAN_FREQ": [tb.getcell("CHAN_FREQ", i) for i in range(tb.nrows())]}
    tb.close()
    ca = casatools.calanalysis()
    ca.open(path)
    out["calanalysis"] = {"viscal": ca.viscal(), "partype": ca.partype(),
                          "numspw": ca.numspw(), "numantenna": ca.numantenna()}
    ca.close()
    return out
'''


@pytest.fixture(scope="module")
def casa():
    skip_without_casa()


def science_spws(truth) -> list[int]:
    return [int(s) for s in truth.science_spw_ids]


def assert_table_matches_casa_read(tab: CalTable, seen: dict) -> None:
    """`seen` is read_table()'s output for the same table; cells are (npar, nchan, nrow)."""
    assert seen["info"]["type"] == "Calibration"
    assert seen["info"]["subType"] == tab.vis_cal
    assert seen["keywords"]["VisCal"] == tab.vis_cal
    assert seen["keywords"]["ParType"] == tab.par_type
    pcol = "CPARAM" if tab.par_type == "Complex" else "FPARAM"
    assert sorted(seen["spws"]) == sorted(str(s) for s in tab.spw_ids)
    for s, cols in seen["spws"].items():
        rows = tab.spw_id == int(s)
        n = tab.nchan(int(s))
        for name, mine in (("params", pcol), ("paramerr", "PARAMERR"), ("snr", "SNR"),
                           ("flag", "FLAG")):
            theirs = np.asarray(from_json(cols[mine])).transpose(2, 1, 0)
            want = getattr(tab, name)[rows, :n]
            np.testing.assert_array_equal(theirs.astype(want.dtype), want, err_msg=f"{s} {name}")
        for name, col in (("time", "TIME"), ("antenna1", "ANTENNA1"), ("antenna2", "ANTENNA2"),
                          ("scan", "SCAN_NUMBER"), ("field_id", "FIELD_ID")):
            np.testing.assert_array_equal(np.asarray(cols[col]), getattr(tab, name)[rows],
                                          err_msg=f"{s} {col}")
    ca = seen["calanalysis"]
    assert (ca["viscal"], ca["partype"]) == (tab.vis_cal, tab.par_type)
    assert ca["numantenna"] == tab.n_ant


# --------------------------------------------------------------------------------------
# CASA reads fastcal
# --------------------------------------------------------------------------------------


def test_casa_reads_fastcal_tables(casa, tiny_ms, tmp_path):
    ms = str(tiny_ms[0])
    tables = {v: make_table(v, ms) for v in TYPES}
    paths = {v: t.write(tmp_path / f"{v.replace(' ', '_')}.cal") for v, t in tables.items()}
    result = run_casa(_TB_READ + f"emit({{v: read_table(p) for v, p in {paths!r}.items()}})")
    for vis_cal, tab in tables.items():
        seen = result[vis_cal]
        assert_table_matches_casa_read(tab, seen)
        for s, freq in tab.chan_freq.items():
            np.testing.assert_array_equal(seen["spw_table"]["CHAN_FREQ"][s], freq)
        flagged = np.asarray(seen["spw_table"]["FLAG_ROW"])
        assert np.flatnonzero(~flagged).tolist() == tab.spw_ids.tolist()


# --------------------------------------------------------------------------------------
# CASA applies fastcal
# --------------------------------------------------------------------------------------


def ms_columns(ms, ddids):
    """Main-table columns of the rows with these DATA_DESC_IDs (all of one channel count:
    the simulator's science spws share n_chan; getcol over differing cell shapes aborts)."""
    with ct.table(str(ms), ack=False) as t:
        sel = t.query(f"DATA_DESC_ID IN {list(ddids)}", sortlist="ROWID()")
        out = {c: sel.getcol(c) for c in ("TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID",
                                           "DATA", "WEIGHT", "FLAG")
               }
        if "CORRECTED_DATA" in t.colnames():
            out["CORRECTED_DATA"] = sel.getcol("CORRECTED_DATA")
        sel.close()
    return out


def ddid_to_spw(ms) -> np.ndarray:
    with ct.table(f"{ms}/DATA_DESCRIPTION", ack=False) as t:
        return t.getcol("SPECTRAL_WINDOW_ID")


def test_casa_applycal_fastcal_tables(casa, tiny_ms, copy_ms):
    """CORRECTED_DATA = DATA / (J_p J_q^*) with J from fastcal's G (nearest in time, one
    antenna flagged), B (per channel) and K (delay about the centre channel) tables.

    REF_FREQUENCY is moved to the first channel (as CASA's simulator writes it) so that the
    K check fails if CASA falls back to its pre-5.3 REF_FREQUENCY pivot (no CASA_Version).
    """
    truth = tiny_ms[1]
    src = str(copy_ms(tiny_ms[0], "edge.ms"))
    with ct.table(f"{src}/SPECTRAL_WINDOW", readonly=False, ack=False) as t:
        for row in range(t.nrows()):
            t.putcell("REF_FREQUENCY", row, t.getcell("CHAN_FREQ", row)[0])
    spws = science_spws(truth)
    dd_spw = ddid_to_spw(src)
    ddids = [int(d) for d in np.flatnonzero(np.isin(dd_spw, spws))]
    base = ms_columns(src, ddids)
    n_ant = truth.n_ant
    rng = np.random.default_rng(7)
    t_lo, t_hi = base["TIME"].min(), base["TIME"].max()
    sol_times = np.array([t_lo + 1.0, t_hi - 2.0])
    bad_ant, bad_spw = 3, spws[-1]
    g = {s: complex_values_np(rng, (2, n_ant, 1, 2)) for s in spws}
    g_flag = {s: np.zeros(g[s].shape, bool) for s in spws}
    g_flag[bad_spw][:, bad_ant] = True
    with ct.table(f"{src}/SPECTRAL_WINDOW", ack=False) as t:
        nchan = {s: int(t.getcell("NUM_CHAN", s)) for s in spws}
        freq = {s: t.getcell("CHAN_FREQ", s) for s in spws}
    b = {s: complex_values_np(rng, (1, n_ant, nchan[s], 2)) for s in spws}
    k = {s: rng.normal(0, 0.5, (1, n_ant, 1, 2)).astype(np.float32) for s in spws}
    tabs = {
        "G": CalTable.from_solutions("G Jones", g, times=sol_times, ms=src, flag=g_flag,
                                     refant=0),
        "B": CalTable.from_solutions("B Jones", b, times=[t_lo], ms=src, refant=0),
        "K": CalTable.from_solutions("K Jones", k, times=[t_lo], ms=src, refant=0),
    }
    copies = {name: str(copy_ms(src, f"{name}.ms")) for name in tabs}
    paths = {name: tab.write(f"{copies[name]}.{name}cal") for name, tab in tabs.items()}
    spw_sel = ",".join(map(str, spws))
    run_casa(f"""
        from casatasks import applycal
        for name, interp, calwt in (("G", "nearest", True), ("B", "nearest,nearest", False),
                                    ("K", "nearest", False)):
            applycal(vis={copies!r}[name], gaintable=[{paths!r}[name]], spw={spw_sel!r},
                     interp=[interp], calwt=calwt, flagbackup=False)
        emit({{"ok": True}})
    """)
    a1, a2 = base["ANTENNA1"], base["ANTENNA2"]
    row_spw = dd_spw[base["DATA_DESC_ID"]]
    # Jones per row, receptor (X, Y) and channel: shape (nrow, nchan, 2)
    t_idx = np.argmin(np.abs(base["TIME"][:, None] - sol_times[None, :]), axis=1)
    assert not np.any(np.isclose(np.abs(base["TIME"] - sol_times[0]),
                                 np.abs(base["TIME"] - sol_times[1])))
    for name in tabs:
        out = ms_columns(copies[name], ddids)
        for s in spws:
            rows = row_spw == s
            if name == "G":
                jp = g[s][t_idx[rows], a1[rows], 0][:, None, :]
                jq = g[s][t_idx[rows], a2[rows], 0][:, None, :]
            elif name == "B":
                jp, jq = b[s][0, a1[rows]], b[s][0, a2[rows]]
            else:
                nu_c = tabs["K"].chan_freq[s][0]
                phase = 2 * np.pi * k[s][0, :, 0, :][:, None, :] * 1e-9 * (
                    freq[s][None, :, None] - nu_c)
                kj = np.exp(1j * phase)
                jp, jq = kj[a1[rows]], kj[a2[rows]]
            # correlations XX, YY use receptors (X, X) and (Y, Y)
            expect = base["DATA"][rows] / (jp * np.conj(jq))
            got = out["CORRECTED_DATA"][rows]
            ok = ~out["FLAG"][rows]
            scale = np.abs(base["DATA"][rows]).max()
            np.testing.assert_allclose(got[ok], expect[ok], rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=f"{name} spw {s}")
            if name == "G":
                w_expect = base["WEIGHT"][rows] * np.abs(jp[:, 0] * jq[:, 0]) ** 2
                hit = (a1[rows] == bad_ant) | (a2[rows] == bad_ant)
                if s == bad_spw:  # flagged solution -> flagged data (applymode calflag)
                    assert out["FLAG"][rows][hit].all()
                    np.testing.assert_array_equal(out["FLAG"][rows][~hit],
                                                  base["FLAG"][rows][~hit])
                    keep = ~hit
                else:
                    np.testing.assert_array_equal(out["FLAG"][rows], base["FLAG"][rows])
                    keep = np.ones(len(hit), bool)
                np.testing.assert_allclose(out["WEIGHT"][rows][keep], w_expect[keep], rtol=1e-5)


def complex_values_np(rng, shape):
    amp = 1 + 0.1 * rng.standard_normal(shape)
    return (amp * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


# --------------------------------------------------------------------------------------
# fastcal reads CASA
# --------------------------------------------------------------------------------------

CASA_KINDS = {"G": "G Jones", "B": "B Jones", "K": "K Jones", "KAntPos": "KAntPos Jones",
              "Tsys": "B TSYS", "WVR": "T Jones"}


@pytest.fixture(scope="module")
def casa_tables(casa, tiny_ms, tmp_path_factory):
    """Tables CASA writes on a copy of tiny_ms, and what CASA's tb reads from them."""
    src, truth = tiny_ms
    work = tmp_path_factory.mktemp("casa_tables")
    ms = work / "tiny.ms"
    shutil.copytree(src, ms)
    spw_sel = ",".join(map(str, science_spws(truth)))
    bp_field = str(truth.field_id("bandpass"))
    refant = truth.antenna_names[0]
    ants = ",".join(truth.antenna_names[1:3])
    script = _TB_READ + textwrap.dedent(f"""
        from casatasks import gaincal, bandpass, gencal, wvrgcal
        ms = {str(ms)!r}
        errors = {{}}
        def attempt(name, task, **kw):
            try:
                task(vis=ms, caltable=name, **kw)
            except Exception as err:
                errors[name] = repr(err)
        attempt("G", gaincal, field={bp_field!r}, spw={spw_sel!r}, solint="int",
                refant={refant!r}, calmode="ap", minsnr=0)
        attempt("B", bandpass, field={bp_field!r}, spw={spw_sel!r}, solint="inf",
                combine="scan", refant={refant!r}, minsnr=0)
        attempt("K", gaincal, field={bp_field!r}, spw={spw_sel!r}, gaintype="K",
                solint="inf", refant={refant!r}, minsnr=0)
        attempt("KAntPos", gencal, caltype="antpos", antenna={ants!r},
                parameter=[0.01, 0.02, 0.03, -0.01, 0.0, 0.005])
        attempt("Tsys", gencal, caltype="tsys")
        attempt("WVR", wvrgcal, toffset=0)
        import os
        seen = {{n: read_table(n) for n in {list(CASA_KINDS)!r} if os.path.isdir(n)}}
        emit({{"errors": errors, "seen": seen}})
    """)
    result = run_casa(script, cwd=work)
    return work, ms, result


@pytest.mark.parametrize("kind", list(CASA_KINDS))
def test_fastcal_reads_casa_tables(kind, casa_tables, tiny_ms):
    work, ms, result = casa_tables
    if kind not in result["seen"]:
        err = result["errors"].get(kind, "no table written")
        if kind == "WVR":
            pytest.skip(f"CASA wvrgcal did not run on the simulated MS: {err}")
        pytest.fail(f"CASA could not write the {kind} table: {err}")
    tab = read_caltable(work / kind)
    assert tab.vis_cal == CASA_KINDS[kind]
    assert tab.ms_name == "tiny.ms"
    assert tab.casa_version == result["seen"][kind]["keywords"]["CASA_Version"]
    assert_table_matches_casa_read(tab, result["seen"][kind])
    # rows complete and in CASA order: every antenna once per (spw, time)
    for s in tab.spw_ids:
        sol = tab.solutions(int(s))
        assert sol.params.shape[:2] == (len(tab.times(int(s))), tiny_ms[1].n_ant)
    # fastcal's rewrite reads back equal
    again = read_caltable(tab.write(work / f"{kind}.fc", overwrite=True))
    assert again == tab


APPLY = {"G": "linear", "B": "nearest,linear", "K": "nearest", "Tsys": "linear,linear",
         "WVR": "nearest"}


def test_casa_applies_fastcal_rewrites_like_originals(casa_tables, tiny_ms, copy_ms):
    """CASA's applycal gives identical CORRECTED_DATA, WEIGHT and FLAG for each CASA table
    and for fastcal's rewrite of it (read_caltable -> write)."""
    work, ms, result = casa_tables
    truth = tiny_ms[1]
    kinds = [k for k in APPLY if k in result["seen"]]
    assert {"G", "B", "K", "Tsys"} <= set(kinds), result["errors"]
    pairs = {}
    for kind in kinds:
        rewritten = read_caltable(work / kind).write(work / f"{kind}.apply.fc", overwrite=True)
        pairs[kind] = (str(work / kind), rewritten,
                       str(copy_ms(tiny_ms[0], f"{kind}.a.ms")),
                       str(copy_ms(tiny_ms[0], f"{kind}.b.ms")))
    spw_sel = ",".join(map(str, science_spws(truth)))
    tsys_map = list(range(int(max(truth.science_spw_ids)) + 1))
    for s, t in zip(truth.science_spw_ids, truth.science_tsys_spw, strict=True):
        tsys_map[int(s)] = int(t)
    run_casa(f"""
        from casatasks import applycal
        for kind, (orig, fc, ms_a, ms_b) in {pairs!r}.items():
            spwmap = [{tsys_map!r}] if kind == "Tsys" else []
            for table, vis in ((orig, ms_a), (fc, ms_b)):
                applycal(vis=vis, gaintable=[table], spw={spw_sel!r},
                         interp=[{APPLY!r}[kind]], spwmap=spwmap, calwt=True,
                         flagbackup=False)
        emit({{"ok": True}})
    """)
    dd_spw = ddid_to_spw(tiny_ms[0])
    ddids = [int(d) for d in np.flatnonzero(np.isin(dd_spw, science_spws(truth)))]
    for kind, (_, _, ms_a, ms_b) in pairs.items():
        a, b = ms_columns(ms_a, ddids), ms_columns(ms_b, ddids)
        for col in ("CORRECTED_DATA", "WEIGHT", "FLAG"):
            np.testing.assert_array_equal(a[col], b[col], err_msg=f"{kind} {col}")
        assert not np.array_equal(a["CORRECTED_DATA"], a["DATA"]), kind
