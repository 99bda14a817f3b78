"""The spwphaseup mapping in gfluxscaleflag / fluxscale / timegaincal, the spw phase-offset
table, and the fluxcalflag refspwmap in fluxscale."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.caltable import read_caltable
from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.accuracy import field_flux_ratio
from fastcal.pipeline.context import Context
from fastcal.pipeline.stage import run_stages
from fastcal.pipeline.stages.applycal import ApplycalStage
from fastcal.pipeline.stages.bandpass import BandpassStage
from fastcal.pipeline.stages.fluxcalflag import FluxcalflagStage
from fastcal.pipeline.stages.fluxscale import FluxscaleStage, fluxcal_refspwmap
from fastcal.pipeline.stages.gfluxscaleflag import GfluxscaleflagStage
from fastcal.pipeline.stages.setjy import SetjyStage
from fastcal.pipeline.stages.spwphaseup import (
    OFFSETS_TABLE,
    SpwMapping,
    SpwphaseupStage,
    merge_caltables,
    phase_plan,
    select_phase_mapping,
)
from fastcal.pipeline.stages.timegaincal import TimegaincalStage
from fastcal.simulate import SimConfig, simulate


def _setup(tmp_path, phase_flux, narrow_chans=0, name="sp"):
    """tiny MS, 6 antennas, no delays/Tsys/WVR, a 2 Jy target (so its calibrated phases are
    dominated by calibration errors, not noise); `narrow_chans` > 0: keep only that many
    channels of the second science spw on the phase calibrator (low SNR there)."""
    path = str(tmp_path / f"{name}.ms")
    truth = simulate(path, config=SimConfig.tiny(seed=4, n_ant=6, phase_flux_jy=phase_flux, target_flux_jy=2.0,
                                                 tsys=False, delays=False, wvr=False, dry_residual=False))
    info = open_ms(path)
    sci = list(info.spws_with_role("science"))
    if narrow_chans:
        with ct.table(path, readonly=False, ack=False) as t:
            sub = t.query(f"DATA_DESC_ID=={info.ddid_for_spw(sci[1])} && FIELD_ID=={truth.field_id('phase')}")
            try:
                f = sub.getcol("FLAG")
                f[:, narrow_chans:, :] = True
                sub.putcol("FLAG", f)
            finally:
                sub.close()
    ctx = Context(path, tmp_path / f"{name}_out")
    names = truth.field_names
    bp, ph, tg = (names[truth.field_id(r)] for r in ("bandpass", "phase", "target"))
    ctx.roles = {"bandpass": [bp], "flux": [bp], "phase": [ph], "target": [tg]}
    ctx.science_spws = sci
    ctx.refant = list(info.antenna_names)
    ctx.options = {"setjy_models": [
        {"field": names[i], "fluxdensity": float(truth.field_flux_jy[i]), "spix": [float(truth.field_spix[i])],
         "reffreq": float(truth.flux_ref_freq_hz)} for i in (truth.field_id("bandpass"), truth.field_id("phase"))]}
    run_stages(ctx, [SetjyStage(), BandpassStage()])
    return path, truth, ctx


def _run(ctx, *stages):
    """Run `stages` (again, also when already done)."""
    return run_stages(ctx, stages, stages=[s.name for s in stages])


def _target_flag_fraction(path, field_id, spw):
    info = open_ms(path)
    with ct.table(path, ack=False) as t:
        sub = t.query(f"DATA_DESC_ID=={info.ddid_for_spw(spw)} && FIELD_ID=={field_id}")
        try:
            return float(sub.getcol("FLAG").mean())
        finally:
            sub.close()


def _solve_calls(ctx, stage):
    return [c.kwargs for c in ctx.commands if c.stage == stage and c.function.endswith("solve_gains")]


# ---------------------------------------------------------------- timegaincal + applycal


def test_narrow_spw_takes_the_wide_spw_phases(tmp_path):
    path, truth, ctx = _setup(tmp_path, 0.8, narrow_chans=1)
    s3, s4 = ctx.science_spws
    _run(ctx, SpwphaseupStage())
    assert ctx.results["spwphaseup"]["outputs"]["phase_mapping"]["spwmap"][s4] == s3
    offsets = ctx.callib.get(OFFSETS_TABLE)
    assert offsets.intents == [] and not offsets.calwt
    _run(ctx, TimegaincalStage(), ApplycalStage())
    for name in ("phase_int", "phase_scan"):
        e = ctx.callib.get(name)
        assert e.spwmap[s4] == s3 and e.spwmap[s3] == s3 and e.interp == "linear"
    solves = _solve_calls(ctx, "timegaincal")
    assert all(OFFSETS_TABLE in " ".join(k["gaintable"]) for k in solves)  # offsets pre-applied
    amp = [k for k in solves if k["calmode"] == "a"][0]
    assert amp["spwmap"][-1] == ctx.callib.get("phase_int").spwmap  # mapped phases pre-applied
    tid = truth.field_id("target")
    for r in field_flux_ratio(path, truth, tid):
        assert _target_flag_fraction(path, tid, r.spw) == 0.0
        assert abs(r.ratio - 1) < 0.03, r
        # the mapped spw is as good as the wide one: residual phase at the noise level
        # (without the phase-offset table it is ~7 deg, the spws' instrumental difference)
        assert r.phase_rms_deg < 2 * r.noise_phase_deg, r


def test_faint_phase_calibrator_combines_spws(tmp_path):
    path, truth, ctx = _setup(tmp_path, 0.15)
    s3, s4 = ctx.science_spws
    _run(ctx, SpwphaseupStage(), TimegaincalStage(), ApplycalStage())
    e = ctx.callib.get("phase_scan")
    assert e.spwmap[s3] == s3 and e.spwmap[s4] == s3 and e.interp == "linearPD"
    tab = read_caltable(e.path)
    assert tab.vis_cal == "T Jones" and set(np.unique(tab.spw_id)) == {s3}
    solves = [k for k in _solve_calls(ctx, "timegaincal") if k["calmode"] == "p"]
    assert len(solves) == 2 and all(k["combine"] == "spw" and k["gaintype"] == "T" for k in solves)
    tid = truth.field_id("target")
    for r in field_flux_ratio(path, truth, tid):
        assert _target_flag_fraction(path, tid, r.spw) == 0.0
        assert abs(r.ratio - 1) < 0.04, r  # ~0.88 without the phase-offset table
        assert r.phase_rms_deg < 2.5, r


def test_without_mapping_tables_and_calls_are_unchanged(tmp_path):
    path, truth, ctx = _setup(tmp_path, 0.8)
    _run(ctx, TimegaincalStage())  # spwphaseup not run
    before = {n: read_caltable(ctx.callib.get(n).path) for n in ("phase_int", "phase_scan", "amp_cal")}
    calls_before = _solve_calls(ctx, "timegaincal")
    entries_before = [(e.name, e.spwmap, e.interp) for e in ctx.callib]
    _run(ctx, SpwphaseupStage(), TimegaincalStage())  # bright: maps nothing
    assert ctx.results["spwphaseup"]["outputs"]["phase_mapping"] is None
    assert not any(e.name == OFFSETS_TABLE for e in ctx.callib)
    for n, t in before.items():
        assert read_caltable(ctx.callib.get(n).path).equals(t), n
    assert _solve_calls(ctx, "timegaincal") == calls_before
    assert all("combine" not in k and "gaintype" not in k for k in calls_before)
    assert [(e.name, e.spwmap, e.interp) for e in ctx.callib] == entries_before


def test_combined_groups_solved_separately_and_merged(tmp_path):
    """Two spw groups combined: one T solve per group, merged into one table whose rows equal
    the separate solves."""
    path, truth, ctx = _setup(tmp_path, 0.8)
    s3, s4 = ctx.science_spws
    ph = ctx.roles["phase"][0]
    identity = list(range(s4 + 1))
    ctx.results["spwphaseup"] = {"status": "ok", "outputs": {"fields": {ph: {
        "intent": "PHASE", "mapping": SpwMapping(spwmap=identity, combine=True, gaintype="T").to_dict()}}}}
    plan = phase_plan(ctx)
    assert plan.groups == [[s3], [s4]] and plan.combine == "spw"
    _run(ctx, TimegaincalStage())
    merged = read_caltable(ctx.callib.get("phase_scan").path)
    assert merged.vis_cal == "T Jones" and set(np.unique(merged.spw_id)) == {s3, s4}
    parts = [c.kwargs["tables"] for c in ctx.commands if c.function.endswith("merge_caltables")]
    assert len(parts) == 2  # phase_int and phase_scan
    for part in parts[-1]:
        t = read_caltable(part)
        (s,) = np.unique(t.spw_id)
        a, b = merged.solutions(int(s)), t.solutions(int(s))
        assert np.array_equal(a.params, b.params) and np.array_equal(a.flag, b.flag)


def test_merge_caltables_refuses_bad_inputs(tmp_path):
    with pytest.raises(ParameterError, match="tables is empty"):
        merge_caltables([], str(tmp_path / "x.tbl"))
    path, truth, ctx = _setup(tmp_path, 0.8)
    bp = ctx.callib.get("bandpass").path
    with pytest.raises(ParameterError, match="spw 3 is in both"):
        merge_caltables([bp, bp], str(tmp_path / "y.tbl"))


def test_mapping_selection_and_validation(tmp_path):
    a = SpwMapping(spwmap=[0, 1, 2, 3, 3]).to_dict()
    c = SpwMapping(spwmap=[0, 1, 2, 3, 3], combine=True, gaintype="T").to_dict()
    none = SpwMapping().to_dict()
    assert select_phase_mapping({"P1": {"intent": "PHASE", "mapping": none}}) is None
    assert select_phase_mapping({"CHK": {"intent": "CHECK", "mapping": a}}) is None  # check sources do not count
    assert select_phase_mapping({"P1": {"intent": "PHASE", "mapping": a},
                                 "P2": {"intent": "PHASE", "mapping": c}}).combine  # combining one wins
    assert select_phase_mapping({"P1": {"intent": "PHASE", "mapping": none},
                                 "P2": {"intent": "PHASE", "mapping": a}}).spwmap == [0, 1, 2, 3, 3]
    with pytest.raises(ParameterError, match="mapping of field 'P1' is invalid"):
        select_phase_mapping({"P1": {"intent": "PHASE", "mapping": {"spwmap": [0], "bogus": 1}}})
    ctx = Context(str(tmp_path / "none.ms"), tmp_path / "o")
    ctx.science_spws = [3, 4]
    assert not phase_plan(ctx).mapped and phase_plan(ctx).groups == [[3, 4]]
    ctx.results["spwphaseup"] = {"status": "ok", "outputs": {"fields": {"P": {"intent": "PHASE", "mapping": {
        "spwmap": [0, 1, 2, 3, 2]}}}}}
    with pytest.raises(ParameterError, match=r"maps spw\(s\) \[4\] to \[2\], not among the science spws \[3, 4\]"):
        phase_plan(ctx)


# ---------------------------------------------------------------- gfluxscaleflag


def test_gfluxscaleflag_preliminary_phases_follow_the_mapping(tmp_path):
    path, truth, ctx = _setup(tmp_path, 0.8, narrow_chans=1)
    s3, s4 = ctx.science_spws
    _run(ctx, SpwphaseupStage(), GfluxscaleflagStage())
    res = ctx.results["gfluxscaleflag"]["outputs"]
    assert res["phase_spwmap"][s4] == s3
    calls = [c.kwargs for c in ctx.commands if c.stage == "gfluxscaleflag"]
    amp = [k for k in calls if k.get("calmode") == "a"][0]
    app = [k for k in calls if "applymode" in k][0]
    assert amp["spwmap"][-1][s4] == s3 and app["spwmap"][-2][s4] == s3
    assert OFFSETS_TABLE in " ".join(app["gaintable"])
    assert res["n_applycal"] == 0  # the narrow spw is calibrated from the wide one, nothing fails


# ---------------------------------------------------------------- fluxscale refspwmap


def _neptune(tmp_path):
    """tiny MS whose flux/bandpass calibrator is 'Neptune' and whose first science spw lies in
    its CO(2-1) line (226.98-234.52 GHz), so fluxcalflag flags all of it on the flux scans."""
    path = str(tmp_path / "nep.ms")
    truth = simulate(path, config=SimConfig.tiny(seed=3, tsys=False, delays=False, wvr=False, dry_residual=False))
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    sp = info.spws[s0]
    freqs = 229.0e9 + sp.chan_width[0] * (np.arange(sp.num_chan) + 0.5)
    with ct.table(f"{path}/SPECTRAL_WINDOW", readonly=False, ack=False) as t:
        t.putcell("CHAN_FREQ", s0, freqs)
        t.putcell("REF_FREQUENCY", s0, float(freqs.mean()))
    with ct.table(f"{path}/FIELD", readonly=False, ack=False) as t:
        t.putcell("NAME", truth.field_id("bandpass"), "Neptune")
    info = open_ms(path)
    ctx = Context(path, tmp_path / "nep_out")
    ph = info.field_names[truth.field_id("phase")]
    ctx.roles = {"bandpass": ["Neptune"], "flux": ["Neptune"], "phase": [ph]}
    ctx.science_spws = [s0, s1]
    ctx.refant = list(info.antenna_names)
    i = truth.field_id("bandpass")
    ctx.options = {"setjy_models": [{"field": "Neptune", "fluxdensity": float(truth.field_flux_jy[i]),
                                     "spix": [float(truth.field_spix[i])], "reffreq": float(truth.flux_ref_freq_hz)}]}
    return ctx, ph, s0, s1


def test_fluxscale_uses_the_fluxcalflag_refspwmap(tmp_path):
    ctx, ph, s0, s1 = _neptune(tmp_path)
    # bandpass before the line flags, so that the line spw still has a bandpass (test shortcut)
    _run(ctx, SetjyStage(), BandpassStage(), FluxcalflagStage())
    refspwmap = ctx.results["fluxcalflag"]["outputs"]["refspwmap"]
    assert refspwmap[s0] == s1 and fluxcal_refspwmap(ctx) == refspwmap
    _run(ctx, FluxscaleStage())
    call = [c.kwargs for c in ctx.commands if c.stage == "fluxscale" and c.function.endswith(".fluxscale")][0]
    assert call["refspwmap"] == refspwmap
    per_spw = ctx.results["fluxscale"]["outputs"]["fluxes"][ph]["per_spw"]
    assert set(per_spw) == {str(s0), str(s1)}  # the line spw got a flux through spw s1's reference
    assert any("refspwmap" in m for m in ctx.results["fluxscale"]["messages"])


def test_fluxscale_without_refspwmap_passes_none(tmp_path):
    ctx = Context(str(tmp_path / "x.ms"), tmp_path / "o")
    assert fluxcal_refspwmap(ctx) is None  # fluxcalflag not run
    ctx.results["fluxcalflag"] = {"status": "ok", "outputs": {"refspwmap": [-1]}}
    assert fluxcal_refspwmap(ctx) is None
    ctx.results["fluxcalflag"] = {"status": "skipped", "outputs": {"refspwmap": [0, 1, 2, 4, 4]}}
    assert fluxcal_refspwmap(ctx) is None
    ctx.results["fluxcalflag"] = {"status": "ok", "outputs": {"refspwmap": [0, 1, "x"]}}
    with pytest.raises(ParameterError, match="refspwmap .* is invalid"):
        fluxcal_refspwmap(ctx)
