"""Bad input to the solvers (issue §6): clear fastcal errors or one warning, raised before
any data are read; never a Numba traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastcal.errors import CalTableError, ParameterError, SelectionError, SolveError
from fastcal.simulate import SimConfig, simulate
from fastcal.solve import load_calibrator, solve_bandpass, solve_gains


@pytest.fixture(scope="module")
def ms(tmp_path_factory):
    path = tmp_path_factory.mktemp("err") / "e.ms"
    truth = simulate(path, config=SimConfig.tiny(seed=3).replace(n_ant=6), tsys=False, wvr=False)
    return path, truth


def _flag(path, ddids, scan=None):
    import casacore.tables as ct

    with ct.table(str(path), readonly=False, ack=False) as t:
        for d in ddids:
            q = f"DATA_DESC_ID=={int(d)}" + (f" AND SCAN_NUMBER=={scan}" if scan else "")
            with t.query(q) as sub:
                fl = sub.getcol("FLAG")
                fl[:] = True
                sub.putcol("FLAG", fl)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(solint="forever"), ParameterError, "solint='forever' cannot be parsed"),
    (dict(solint="-3s"), ParameterError, "solint='-3s'"),
    (dict(combine="scan,time"), ParameterError, "'time' not understood"),
    (dict(calmode="x"), ParameterError, "calmode='x' is invalid"),
    (dict(gaintype="B"), ParameterError, "use solve_bandpass"),
    (dict(minsnr=-1), ParameterError, "minsnr=-1"),
    (dict(minblperant=2.5), ParameterError, "minblperant=2.5"),
    (dict(refantmode="loose"), ParameterError, "refantmode='loose'"),
    (dict(refant="XX99"), SelectionError, "'XX99' is not an antenna"),
    (dict(refantmode="strict"), ParameterError, "strict' needs a refant"),
    (dict(field="NOPE"), SelectionError, "NOPE"),
    (dict(spw="0"), SelectionError, "no cross-correlation data"),
    (dict(model={"NOPE": 1.0}), SelectionError, "model key 'NOPE'"),
    (dict(model="bright"), ParameterError, "model='bright' is invalid"),
    (dict(gaintable=["/nonexistent.cal"]), CalTableError, "does not exist"),
    (dict(parallel="yes"), ParameterError, "parallel='yes' is invalid"),
    (dict(chunk_bytes=0), ParameterError, "chunk_bytes=0"),
])
def test_bad_parameters(ms, kwargs, err, match):
    path, _ = ms
    with pytest.raises(err, match=match):
        solve_gains(path, **kwargs)


def test_existing_caltable_is_refused_before_reading(ms, tmp_path):
    path, truth = ms
    out = tmp_path / "x.cal"
    solve_gains(path, out, field="0", spw=str(truth.science_spw_ids[0]), refant="0")
    with pytest.raises(CalTableError, match="exists; pass overwrite=True"):
        solve_gains(path, out, field="0", refant="0")
    solve_gains(path, out, field="0", spw=str(truth.science_spw_ids[0]), refant="0",
                overwrite=True)


def test_gaintable_wrong_type_and_missing_spw(ms, tmp_path):
    path, truth = ms
    s0, s1 = (int(s) for s in truth.science_spw_ids)
    with pytest.raises(CalTableError, match="Measurement Set"):
        solve_gains(path, field="0", gaintable=[str(path)])
    g0 = solve_gains(path, field="0", spw=str(s0), refant="0")
    with pytest.raises(CalTableError, match=f"no solutions for spw {s1}"):
        solve_bandpass(path, field="0", spw=str(s1), gaintable=[g0], refant="0")
    # with spwmap it is fine
    solve_bandpass(path, field="0", spw=str(s1), gaintable=[g0], spwmap=[[s0] * (s1 + 1)],
                   refant="0")


def test_interval_with_all_data_flagged_is_flagged_with_one_warning(ms, copy_ms):
    path, truth = ms
    p = copy_ms(path, "scanflag.ms")
    ph_scans = np.unique(truth.time_scan[(truth.time_field == 1) & ~truth.time_is_atm])
    _flag(p, truth.science_spw_ids, scan=int(ph_scans[0]))
    with pytest.warns(UserWarning, match=r"2 of 4 solution intervals have no unflagged data") as rec:
        tab = solve_gains(p, field="1", spw=",".join(map(str, truth.science_spw_ids)),
                          solint="inf", refant="0", minsnr=0)
    assert len([w for w in rec if "no unflagged data" in str(w.message)]) == 1
    for spw in truth.science_spw_ids:
        s = tab.solutions(int(spw))
        assert s.flag[0].all() and not s.flag[1].any()
        assert s.scan.tolist() == ph_scans.tolist()


def test_all_flagged_selection_raises(ms, copy_ms):
    path, truth = ms
    p = copy_ms(path, "allflag.ms")
    _flag(p, truth.science_spw_ids)
    with pytest.raises(SolveError, match="every sample is flagged"):
        solve_gains(p, field="0", spw=str(truth.science_spw_ids[0]), refant="0")


def test_strict_refant_dead_everywhere_raises(tmp_path):
    path = tmp_path / "s.ms"
    simulate(path, config=SimConfig.tiny(seed=4).replace(n_ant=6, bad_antennas=("2:zeros",)),
             tsys=False, wvr=False)
    with pytest.raises(SolveError, match="refantmode='strict'.*no usable solution"):
        solve_gains(path, field="0", spw="3", refant="2", refantmode="strict")
    with pytest.warns(UserWarning, match="no usable solution in"):
        tab = solve_gains(path, field="0", spw="3", refant="2")
    assert np.all(tab.solutions(3).refant[:, 0] != 2)


def test_cache_rejects_row_selections_and_models(ms):
    path, truth = ms
    cache = load_calibrator(path, field="0", spw=str(truth.science_spw_ids[0]))
    with pytest.raises(ParameterError, match="cannot be applied to a VisCache"):
        solve_gains(cache, antenna="0")
    with pytest.raises(ParameterError, match="model= cannot be given with a VisCache"):
        solve_gains(cache, model=2.0)
    with pytest.raises(SelectionError, match="matches nothing in the cache"):
        solve_gains(cache, field="2")


def test_errors_are_raised_before_reading(ms, monkeypatch):
    """Parameter errors come before any block is read."""
    import fastcal.solve as solve_mod

    def boom(*a, **k):
        raise AssertionError("data were read")

    monkeypatch.setattr(solve_mod, "read_block", boom)
    with pytest.raises(ParameterError):
        solve_gains(ms[0], solint="bad")
    with pytest.raises(CalTableError):
        solve_gains(ms[0], gaintable=[str(ms[0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AssertionError, match="data were read"):
            solve_gains(ms[0], field="0")
