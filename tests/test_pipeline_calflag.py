"""calflag: the hif_correctedampflag integration and baseline views, and the target flags.

Data: SimConfig.tiny with 8 antennas, 2 cycles and 6 integrations per scan, no instrumental
corruption, so DATA is the sky in
Jy plus noise; CORRECTED_DATA is a copy of DATA (a perfect calibration) and every calibrator
gets its true setjy model. Faults are injected into CORRECTED_DATA.
"""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.flux import setjy
from fastcal.ms import open_ms
from fastcal.ms.write import ensure_column
from fastcal.pipeline.context import Context
from fastcal.pipeline.stages.calflag import (
    AmpFlagParams,
    CorrectedAmpFlagStage,
    correctedamp_heuristics,
    flag_corrected_outliers,
)
from fastcal.simulate import SimConfig, simulate

BP, PH, TG = "J1924-2914", "J1832-2039", "G11.92-0.61"


def _calibrated_ms(path: str, seed: int) -> str:
    lengths = {"bandpass": 6 * 6.048, "phase": 6 * 6.048, "target": 6 * 6.048, "atmosphere": 6.048}
    truth = simulate(path, config=SimConfig.tiny(seed=seed, n_ant=8, n_cycles=2, scan_lengths=lengths, gains=False,
                                                 bandpass=False, delays=False, tsys=False, wvr=False,
                                                 dry_residual=False))
    ensure_column(path, "CORRECTED_DATA")
    for role in ("bandpass", "phase"):
        fid = truth.field_id(role)
        setjy(path, field=truth.field_names[fid], fluxdensity=float(truth.field_flux_jy[fid]),
              spix=[float(truth.field_spix[fid])], reffreq=float(truth.flux_ref_freq_hz), standard="manual")
    return path


def _cols(ms: str):
    """Columns of the science-spw cross-correlation rows (and their row numbers)."""
    sci = ",".join(map(str, open_ms(ms).spws_with_role("science")))
    with ct.table(ms, ack=False) as t:
        sub = t.query(f"DATA_DESC_ID IN [{sci}] AND ANTENNA1 != ANTENNA2")
        out = {c: sub.getcol(c) for c in ("ANTENNA1", "ANTENNA2", "FIELD_ID", "SCAN_NUMBER", "TIME",
                                          "DATA_DESC_ID", "FLAG")}
        out["ROW"] = np.asarray(sub.rownumbers(t))
        sub.close()
    return out


def _scale(ms: str, c: dict, rows: np.ndarray, factor: float) -> None:
    with ct.table(ms, readonly=False, ack=False) as t:
        for r in c["ROW"][rows]:
            t.putcell("CORRECTED_DATA", int(r), t.getcell("CORRECTED_DATA", int(r)) * factor)


def _run(ms: str):
    info = open_ms(ms)
    sci = list(info.spws_with_role("science"))
    return sci, flag_corrected_outliers(ms, fields=[BP, PH], spw=sci, phase_fields=[PH], target_fields=[TG])


@pytest.fixture()
def ms(tmp_path):
    return _calibrated_ms(str(tmp_path / "cal.ms"), seed=5)


def _science_cross(c, sci):
    return np.isin(c["DATA_DESC_ID"], sci)


def test_bad_integration_of_one_antenna_flags_exactly_it(ms):
    info = open_ms(ms)
    c = _cols(ms)
    sci = list(info.spws_with_role("science"))
    ph = info.field_names.index(PH)
    times = np.unique(c["TIME"][(c["FIELD_ID"] == ph) & _science_cross(c, sci)])
    t_bad = times[1]
    bad = _science_cross(c, sci) & (c["TIME"] == t_bad) & ((c["ANTENNA1"] == 3) | (c["ANTENNA2"] == 3))
    _scale(ms, c, bad, 3.0)
    sci, summary = _run(ms)
    flagged = _cols(ms)["FLAG"].all(axis=(1, 2))
    assert flagged[bad].all()  # every baseline of antenna 3 at that integration, in both spws
    extra = flagged & ~bad
    assert extra.sum() <= 0.01 * _science_cross(c, sci).sum(), np.flatnonzero(extra)
    key = f"{PH}/{sci[0]}"
    assert [t_bad, info.antenna_names[3]] in summary.integrations[key]
    assert summary.n_target == 0  # one integration: the per-scan transfer survives
    assert any("timerange=" in line and info.antenna_names[3] in line for line in summary.template)


def test_bad_baseline_of_phase_calibrator_flagged_and_propagated_to_target(ms):
    info = open_ms(ms)
    c = _cols(ms)
    sci = list(info.spws_with_role("science"))
    ph, tg = info.field_names.index(PH), info.field_names.index(TG)
    bl = _science_cross(c, sci) & (c["ANTENNA1"] == 1) & (c["ANTENNA2"] == 5)
    _scale(ms, c, bl & (c["FIELD_ID"] == ph), 1.3)
    sci, summary = _run(ms)
    flagged = _cols(ms)["FLAG"].all(axis=(1, 2))
    assert flagged[bl & (c["FIELD_ID"] == ph)].all()
    assert flagged[bl & (c["FIELD_ID"] == tg)].all()  # the pipeline's PHASE -> TARGET propagation
    extra = flagged & ~bl
    assert extra.sum() <= 0.01 * _science_cross(c, sci).sum()
    names = info.antenna_names
    assert f"{names[1]}&{names[5]}" in summary.baselines[f"{PH}/{sci[0]}"]
    assert summary.n_target > 0 and f"{TG}/{sci[0]}" in summary.target


def test_clean_ms_gets_almost_no_flags(ms):
    c = _cols(ms)
    sci, summary = _run(ms)
    n = _science_cross(c, sci).sum() * c["FLAG"].shape[1] * c["FLAG"].shape[2]
    assert summary.n_new <= 0.002 * n, summary
    assert summary.n_target == 0


def test_stage_flags_target_of_antenna_lost_on_phase_scan_and_writes_template(ms, tmp_path):
    info = open_ms(ms)
    c = _cols(ms)
    sci = list(info.spws_with_role("science"))
    ph, tg = info.field_names.index(PH), info.field_names.index(TG)
    first = min(c["SCAN_NUMBER"][c["FIELD_ID"] == ph])
    ant2 = _science_cross(c, sci) & ((c["ANTENNA1"] == 2) | (c["ANTENNA2"] == 2))
    _scale(ms, c, ant2 & (c["SCAN_NUMBER"] == first), 0.3)  # antenna 2 bad in the first phase scan
    ctx = Context(ms, str(tmp_path / "out"))
    ctx.roles = {"bandpass": [BP], "flux": [BP], "phase": [PH], "target": [TG]}
    ctx.science_spws = sci
    ctx.current_stage = "calflag"
    res = CorrectedAmpFlagStage().run(ctx)
    flagged = _cols(ms)["FLAG"].all(axis=(1, 2))
    assert flagged[ant2 & (c["SCAN_NUMBER"] == first)].all()
    # its target data after that scan (up to the next phase-calibrator scan) lose their calibration
    first_target, second_target = sorted(set(c["SCAN_NUMBER"][c["FIELD_ID"] == tg]))[:2]
    assert flagged[ant2 & (c["SCAN_NUMBER"] == first_target)].all()
    # the next target scan is calibrated from the two later phase-calibrator scans: kept
    assert not flagged[ant2 & (c["SCAN_NUMBER"] == second_target)].any()
    assert not flagged[_science_cross(c, sci) & ~ant2 & (c["FIELD_ID"] == tg)].any()
    assert res.outputs["n_target"] > 0
    (rec,) = ctx.flags
    assert rec.agent == "correctedampflag" and rec.n_new == res.outputs["n_new"]
    assert f"field='{TG}'" in rec.command and f"antenna='{info.antenna_names[2]}'" in rec.command


def test_heuristics_on_synthetic_view():
    rng = np.random.default_rng(0)
    n_ant, n_t = 10, 20
    a1, a2 = np.triu_indices(n_ant, 1)
    time = np.repeat(np.arange(n_t, dtype=float), a1.size)
    ant1, ant2 = np.tile(a1, n_t), np.tile(a2, n_t)
    metric = rng.normal(0, 1, (time.size, 1))
    metric[(time == 7) & ((ant1 == 4) | (ant2 == 4))] += 8.0  # antenna 4 at t=7
    metric[(ant1 == 0) & (ant2 == 9)] += 6.0  # baseline 0-9 at all times
    flags = correctedamp_heuristics(time, ant1, ant2, metric, np.zeros_like(metric, bool), n_ant, 1)
    reasons = {(f.reason, f.time, f.ant1, f.ant2) for f in flags}
    assert ("bad baseline", None, 0, 9) in reasons
    assert ("bad antenna timestamp", 7.0, 4, None) in reasons or all(
        f.time == 7.0 and 4 in (f.ant1, f.ant2) for f in flags if f.reason == "ultrahigh baseline timestamp")
    assert not any(f.reason in ("bad timestamp", "bad antenna") for f in flags)


def test_bad_inputs(ms):
    with pytest.raises(ParameterError, match="field 'nope' is not in"):
        flag_corrected_outliers(ms, fields=["nope"], spw=[3])
    with pytest.raises(ParameterError, match="niter=0"):
        flag_corrected_outliers(ms, fields=[BP], spw=[3], niter=0)
    assert AmpFlagParams().antblpossig == 3.2 and AmpFlagParams().tmantint == 0.063


def test_gfluxscaleflag_stage_flags_bad_integration_before_fluxscale(tmp_path):
    from fastcal.pipeline import run
    from fastcal.pipeline.recipe import alma_recipe

    ms = str(tmp_path / "raw.ms")
    lengths = {"bandpass": 6 * 6.048, "phase": 6 * 6.048, "target": 6 * 6.048, "atmosphere": 6.048}
    simulate(ms, config=SimConfig.tiny(seed=4, n_ant=8, n_cycles=2, scan_lengths=lengths))
    info = open_ms(ms)
    c = _cols(ms)
    ph = info.field_names.index(PH)
    t_bad = np.unique(c["TIME"][c["FIELD_ID"] == ph])[2]
    bad = (c["TIME"] == t_bad) & ((c["ANTENNA1"] == 6) | (c["ANTENNA2"] == 6))
    with ct.table(ms, readonly=False, ack=False) as t:  # a glitch in the raw data (+50 %: a
        for r in c["ROW"][bad]:  # x3 glitch drags the per-scan amplitude of that antenna too)
            t.putcell("DATA", int(r), t.getcell("DATA", int(r)) * 1.5)
    names = [s.name for s in alma_recipe()]
    assert names.index("bandpass") < names.index("gfluxscaleflag") < names.index("fluxscale")
    res = run(ms, str(tmp_path / "out"), stop="gfluxscaleflag", restart=True)
    out = res.context.results["gfluxscaleflag"]["outputs"]
    flagged = _cols(ms)["FLAG"].all(axis=(1, 2))
    assert flagged[bad].all()
    assert [t_bad, info.antenna_names[6]] in out["integrations"][f"{PH}/{res.context.science_spws[0]}"]
    before = c["FLAG"].all(axis=(1, 2))
    assert (flagged & ~before & ~bad).sum() <= 0.01 * flagged.size
    assert any(f.agent == "gfluxscaleflag" for f in res.context.flags)
    assert "fastcal_before_gfluxscaleflag" in {v.name for v in __import__(
        "fastcal.flagversions", fromlist=["x"]).list_flag_versions(ms)}
