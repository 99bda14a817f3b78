"""spwphaseup: per-spw phase SNR, spw mapping / combination and its QA (hifa_spwphaseup)."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.context import Context
from fastcal.pipeline.stages.spwphaseup import (
    PHASESNR,
    SpwMapping,
    SpwphaseupStage,
    spw_groups,
    spw_mapping,
    spw_mapping_score,
    spw_snr_score,
)
from fastcal.simulate import SimConfig, simulate

# ---------------------------------------------------------------- the mapping rules


def test_all_good_no_mapping():
    m = spw_mapping({3: 40.0, 4: 50.0})
    assert m.spwmap == [] and not m.combine and m.gaintype == "G"


def test_low_spw_mapped_to_best_good_spw_of_its_group():
    m = spw_mapping({3: 40.0, 4: 10.0, 5: 60.0, 6: 5.0})
    assert m.spwmap == [0, 1, 2, 3, 5, 5, 5] and not m.combine
    assert m.mapped_to(4) == 5 and m.mapped_to(3) == 3


def test_group_without_good_spw_falls_back_to_combination():
    groups = {3: "A", 4: "A", 5: "B", 6: "B"}
    m = spw_mapping({3: 40.0, 4: 10.0, 5: 20.0, 6: 5.0}, groups)
    assert m.combine and m.gaintype == "T"
    assert m.spwmap == [0, 1, 2, 3, 3, 5, 5]
    assert m.combined_snr == pytest.approx({"3": np.hypot(40, 10), "5": np.hypot(20, 5)})
    assert m.low_combined_snr_spws == [5, 6]  # sqrt(20^2 + 5^2) = 20.6 < 32


def test_none_good_combines_all():
    m = spw_mapping({3: 20.0, 4: 30.0})
    assert m.combine and m.spwmap == [0, 1, 2, 3, 3]
    assert m.low_combined_snr_spws == []  # sqrt(20^2 + 30^2) = 36 >= 32


def test_no_snr_keeps_identity():
    m = spw_mapping({3: None, 4: float("nan")})
    assert m.spwmap == [] and not m.combine and m.no_snr == [3, 4]


def test_single_spw_is_never_mapped():
    assert spw_mapping({3: 1.0}).spwmap == []


def test_bad_inputs_refused():
    with pytest.raises(ParameterError, match="phasesnr=0"):
        spw_mapping({3: 10.0}, phasesnr=0)
    with pytest.raises(ParameterError, match="no spws"):
        spw_mapping({})
    with pytest.raises(ParameterError, match="median_snr=-1"):
        spw_snr_score(-1.0)


def test_groups_from_alma_names():
    g = spw_groups({3: "X100000002#ALMA_RB_06#BB_1#SW-01#FULL_RES", 4: "X100000002#ALMA_RB_06#BB_2#SW-01#FULL_RES",
                    5: "X7#ALMA_RB_03#BB_1#SW-01#FULL_RES", 6: "spw6"})
    assert g == {3: "X100000002", 4: "X100000002", 5: "X7", 6: ""}


@pytest.mark.parametrize("snr, score", [(32.0, 1.0), (24.0, 0.9), (16.0, 0.66), (9.6, 0.33), (25.0, 1.0)])
def test_snr_score_bands(snr, score):
    assert spw_snr_score(snr, 32.0).score == score


def test_check_source_scores_are_milder():
    assert spw_snr_score(1.0, 32.0, check=True).score == 0.7


def test_mapping_score():
    sb = {3: 1, 4: 1, 5: 2}
    assert spw_mapping_score(SpwMapping(), sb).score == 1.0
    assert spw_mapping_score(SpwMapping(spwmap=[0, 1, 2, 3, 3, 5]), sb).score == 0.9
    assert spw_mapping_score(SpwMapping(spwmap=[0, 1, 2, 3, 5, 5]), sb).score == 0.66
    assert spw_mapping_score(SpwMapping(spwmap=[0, 1, 2, 3, 3, 3], combine=True), sb).score == 0.66


# ---------------------------------------------------------------- measured on simulated data


def _ms(tmp_path, flux, narrow=False):
    """tiny MS without delays or atmosphere (no bandpass needed); `narrow`: flag 14 of the
    16 channels of the second science spw, which cuts its SNR by sqrt(8)."""
    path = tmp_path / "sp.ms"
    simulate(path, config=SimConfig.tiny(seed=4, phase_flux_jy=flux, tsys=False, delays=False, wvr=False,
                                         dry_residual=False))
    info = open_ms(path)
    if narrow:
        dd = info.ddid_for_spw(info.spws_with_role("science")[1])
        with ct.table(str(path), readonly=False, ack=False) as t:
            sub = t.query(f"DATA_DESC_ID=={dd}")
            try:
                f = sub.getcol("FLAG")
                f[:, 2:, :] = True
                sub.putcol("FLAG", f)
            finally:
                sub.close()
    ctx = Context(path, tmp_path / "out")
    ctx.roles = {"phase": [info.field_names[1]], "bandpass": [info.field_names[0]]}
    ctx.science_spws = list(info.spws_with_role("science"))
    ctx.refant = list(info.antenna_names)
    ctx.current_stage = "spwphaseup"
    return ctx


def test_stage_bright_phase_calibrator_needs_no_mapping(tmp_path):
    ctx = _ms(tmp_path, 0.8)
    res = SpwphaseupStage().run(ctx)
    f = res.outputs["fields"][ctx.roles["phase"][0]]
    assert all(v > PHASESNR for v in f["snr"].values())
    assert f["mapping"]["spwmap"] == [] and not f["mapping"]["combine"]
    assert min(q.score for q in res.qa) == 1.0


def test_stage_narrow_spw_is_mapped_to_the_wide_one(tmp_path):
    ctx = _ms(tmp_path, 0.8, narrow=True)
    s3, s4 = ctx.science_spws
    res = SpwphaseupStage().run(ctx)
    f = res.outputs["fields"][ctx.roles["phase"][0]]
    snr = {int(k): v for k, v in f["snr"].items()}
    assert snr[s4] < PHASESNR <= snr[s3]
    assert 2.0 < snr[s3] / snr[s4] < 4.5  # ~sqrt(8) fewer channels
    assert f["mapping"]["spwmap"][s4] == s3 and not f["mapping"]["combine"]
    names = {q.applies_to for q in res.qa if q.name == "spwphaseup_snr"}
    assert names == {f"{ctx.roles['phase'][0]} spw {s3}"}  # the re-mapped spw is not scored


def test_stage_faint_phase_calibrator_combines_spws(tmp_path):
    ctx = _ms(tmp_path, 0.15)
    res = SpwphaseupStage().run(ctx)
    m = res.outputs["fields"][ctx.roles["phase"][0]]["mapping"]
    assert m["combine"] and m["gaintype"] == "T"
    assert min(q.score for q in res.qa) <= 0.66
    ctx.roles = {}
    assert SpwphaseupStage().run(ctx).status == "skipped"
