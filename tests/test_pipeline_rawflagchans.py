"""rawflagchans: flag_hilo on the time-averaged channel x baseline view of the raw bandpass data."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest
from ms_edit import multiply_data

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.context import Context
from fastcal.pipeline.stages.rawflagchans import (
    RawflagchansStage,
    bad_quadrants,
    flag_raw_channels,
    hilo_outliers,
    refine_view,
)
from fastcal.simulate import SimConfig, simulate

HOT_CHAN, HOT_BL = 20, (1, 3)


@pytest.fixture(scope="module")
def raw_ms(tmp_path_factory):
    """A clean tiny MS with 64 channels (read-only by convention; tests copy it)."""
    path = tmp_path_factory.mktemp("raw") / "raw.ms"
    simulate(path, config=SimConfig.tiny(seed=7, n_chan=64))
    return path


def _rows(path, where):
    with ct.table(str(path), ack=False) as t:
        sub = t.query(where)
        try:
            return sub.getcol("FLAG"), sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
        finally:
            sub.close()


def _inject(path, spw, factor=4.0):
    """Multiply DATA of one channel of one baseline by `factor` in the bandpass field's rows."""
    dd = open_ms(path).ddid_for_spw(spw)
    multiply_data(path, f"FIELD_ID==0 && DATA_DESC_ID=={dd} && ANTENNA1=={HOT_BL[0]} && ANTENNA2=={HOT_BL[1]}",
                  HOT_CHAN, factor)


def test_refine_view_removes_rows_and_columns():
    rng = np.random.default_rng(0)
    img = np.add.outer(np.linspace(0, 1, 16), np.linspace(2, 4, 10)) + 1e-3 * rng.standard_normal((16, 10))
    x = refine_view(img, np.ones(img.shape, bool))
    assert np.abs(x).max() < 5e-3
    valid = np.ones(img.shape, bool)
    valid[3, 4] = False
    assert np.isnan(refine_view(img, valid)[3, 4])


def test_hilo_outliers_limit_and_minsample():
    v = np.zeros((8, 8)) + np.linspace(-1, 1, 64).reshape(8, 8)
    v[2, 5] = 100.0
    out = hilo_outliers(v, 20.0, 5)
    assert out.sum() == 1 and out[2, 5]
    assert not hilo_outliers(np.array([0.0, 0.1, 100.0]), 20.0, 5).any()  # too few pixels
    with pytest.raises(ParameterError, match="fhl_limit=0"):
        hilo_outliers(v, 0.0)


def test_clean_ms_gets_no_flags(raw_ms, copy_ms):
    path = copy_ms(raw_ms)
    sci = list(open_ms(path).spws_with_role("science"))
    s = flag_raw_channels(str(path), sci)
    assert s.n_new == 0 and not s.outliers and not s.bad_quadrants and s.n_total > 0


def test_bad_quadrants_antenna_fraction_rule():
    rng = np.random.default_rng(1)
    n_ant = 6
    a1, a2 = np.triu_indices(n_ant, k=1)
    view = rng.standard_normal((64, a1.size))
    mine = (a1 == 2) | (a2 == 2)
    view[16:32, mine] += 20.0  # every pixel of antenna 2 in quadrant 1 beyond 8 MADs
    view[5, 0] = 50.0  # one outlier pixel: not a quadrant
    ant, bl = bad_quadrants(view, a1, a2, n_ant)
    assert np.argwhere(ant).tolist() == [[2, 1]]  # others: 1 of 5 baselines = 20 %, not > 20 %
    assert not bl.any()  # fbq_baseline_frac_limit = 1.0 never fires
    assert bad_quadrants(view, a1, a2, n_ant, baseline_frac_limit=0.5)[1][mine, 1].all()


def test_hot_channel_on_one_baseline_is_flagged_everywhere(raw_ms, copy_ms):
    path = copy_ms(raw_ms)
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    _inject(path, s0)
    s = flag_raw_channels(str(path), [s0, s1])
    names = info.antenna_names
    bl = f"{names[HOT_BL[0]]}&{names[HOT_BL[1]]}"
    assert s.outliers == {str(s0): {bl: [HOT_CHAN]}}
    assert s.template == [f"mode='manual' antenna='{bl}' spw='{s0}:{HOT_CHAN}~{HOT_CHAN}' "
                          f"reason='fastcal:rawflagchans'"]
    dd = info.ddid_for_spw(s0)
    flag, a1, a2 = _rows(path, f"DATA_DESC_ID=={dd} && ANTENNA1!=ANTENNA2")
    hot = (a1 == HOT_BL[0]) & (a2 == HOT_BL[1])
    assert flag[hot][:, HOT_CHAN, :].all()  # every field, every correlation
    assert not np.delete(flag[hot], HOT_CHAN, axis=1).any()
    assert not flag[~hot].any()
    assert s.n_new == flag.sum()
    assert flag_raw_channels(str(path), [s0, s1]).n_new == 0  # flagged data leave the view


def test_bad_spw_refused(raw_ms):
    with pytest.raises(ParameterError, match=r"spw \[99\]"):
        flag_raw_channels(str(raw_ms), [99])


def test_stage_records_template(raw_ms, copy_ms, tmp_path):
    path = copy_ms(raw_ms)
    info = open_ms(path)
    s0 = info.spws_with_role("science")[0]
    _inject(path, s0, factor=5.0)
    ctx = Context(path, tmp_path / "out")
    ctx.roles = {"bandpass": [info.field_names[0]]}
    ctx.science_spws = list(info.spws_with_role("science"))
    ctx.current_stage = "rawflagchans"
    res = RawflagchansStage().run(ctx)
    assert res.status == "ok" and res.outputs["baselines_flagged"] == 1
    assert [f.agent for f in ctx.flags] == ["rawflagchans"]
    assert f"spw='{s0}:{HOT_CHAN}~{HOT_CHAN}'" in ctx.flags[0].command


def test_bad_antenna_quadrant_is_flagged(tmp_path):
    """A quarter of the band of one antenna 2x too bright on all its baselines (6 antennas)."""
    path = tmp_path / "q.ms"
    simulate(path, config=SimConfig.tiny(seed=8, n_chan=64, n_ant=6))
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    dd = info.ddid_for_spw(s0)
    with ct.table(str(path), readonly=False, ack=False) as t:
        sub = t.query(f"FIELD_ID==0 && DATA_DESC_ID=={dd} && (ANTENNA1==2 || ANTENNA2==2) && ANTENNA1!=ANTENNA2")
        try:
            d = sub.getcol("DATA")
            d[:, 0:16, :] *= 2.0
            sub.putcol("DATA", d)
        finally:
            sub.close()
    s = flag_raw_channels(str(path), [s0, s1])
    ant = info.antenna_names[2]
    assert s.bad_quadrants == {str(s0): {ant: [0]}} and s.outliers == {}
    assert s.template == [f"mode='manual' antenna='{ant}' spw='{s0}:0~15' reason='fastcal:rawflagchans_quadrant'"]
    flag, a1, a2 = _rows(path, f"DATA_DESC_ID=={dd} && ANTENNA1!=ANTENNA2")
    mine = (a1 == 2) | (a2 == 2)
    assert flag[mine][:, :16, :].all() and not flag[mine][:, 16:, :].any() and not flag[~mine].any()
