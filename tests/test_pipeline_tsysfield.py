"""Per-intent Tsys gainfield (pipeline CAS-12213 / PIPE-2394 mapping) in the tsys stage."""

from __future__ import annotations

import os

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.ms import open_ms
from fastcal.pipeline import run
from fastcal.pipeline.stages.tsys import pipeline_intents, tsys_entries, tsys_gainfield_map
from fastcal.simulate import SimConfig, simulate

FACTOR = {0: 1.0, 1: 9.0, 2: 81.0}  # field id -> Tsys scale: every field very different


def _scale_syscal_by_field(ms: str) -> dict[int, float]:
    """Multiply each field's SYSCAL Tsys by FACTOR[field]; returns field -> median Tsys (K)."""
    info = open_ms(ms)
    atm = [s for s in info.scans if any(i.startswith("CALIBRATE_ATMOSPHERE") for i in s.intents)]
    vals: dict[int, list] = {}
    with ct.table(os.path.join(ms, "SYSCAL"), readonly=False, ack=False) as t:
        times = t.getcol("TIME")
        spec = t.getcol("TSYS_SPECTRUM")
        centre = np.array([(s.start + s.end) / 2 for s in atm])
        nearest = np.argmin(np.abs(times[:, None] - centre[None, :]), axis=1)
        for k, s in enumerate(atm):
            rows = nearest == k
            f = s.field_ids[0]
            spec[rows] *= FACTOR[f]
            vals.setdefault(f, []).append(spec[rows])
        t.putcol("TSYS_SPECTRUM", spec)
        t.putcol("TSYS", spec.mean(axis=1))
    return {f: float(np.median(np.concatenate(v))) for f, v in vals.items()}


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsysfield")
    ms = str(d / "t.ms")
    simulate(ms, config=SimConfig.tiny(seed=3, noise=False))
    med = _scale_syscal_by_field(ms)
    res = run(ms, str(d / "out"), stages=["importdata", "tsys", "applycal"], restart=True)
    return ms, med, res.context


def test_every_scan_gets_the_tsys_of_its_own_field(applied):
    ms, med, ctx = applied
    assert set(med) == {0, 1, 2}  # every field has its own Tsys scans in the tiny schedule
    info = open_ms(ms)
    checked = set()
    with ct.table(ms, ack=False) as t:
        sci = ",".join(map(str, ctx.science_spws))
        sub = t.query(f"ANTENNA1 != ANTENNA2 AND DATA_DESC_ID IN [{sci}]",
                      columns="SCAN_NUMBER,FIELD_ID,DATA,CORRECTED_DATA")
        scan, fid = sub.getcol("SCAN_NUMBER"), sub.getcol("FIELD_ID")
        data, corr = sub.getcol("DATA"), sub.getcol("CORRECTED_DATA")
        sub.close()
    for s in info.scans:
        rows = scan == s.number
        if not rows.any():
            continue
        f = int(fid[rows][0])
        ratio = float(np.median(np.abs(corr[rows][..., [0, -1]] / data[rows][..., [0, -1]])))
        # corrected = data x sqrt(Tsys_p Tsys_q) of the field's own Tsys, not another field's
        assert ratio / med[f] == pytest.approx(1.0, abs=0.15), (s.number, s.intents, f, ratio, med)
        checked.add(f)
    assert checked == {0, 1, 2}


def test_registered_entries_and_solver_preapply(applied):
    _, _, ctx = applied
    e = ctx.callib.get("tsys")
    assert e.gainfield == "nearest" and e.interp == "linear,linear" and e.calwt
    assert {"CALIBRATE_BANDPASS*", "CALIBRATE_FLUX*", "CALIBRATE_PHASE*", "OBSERVE_TARGET*"} <= set(e.intents)
    assert ctx.preapply("tsys")["gainfield"] == ["nearest"]
    gmap = ctx.results["tsys"]["outputs"]["gainfield_map"]
    assert gmap == {"BANDPASS": "J1924-2914", "AMPLITUDE": "J1924-2914", "PHASE": "J1832-2039",
                    "TARGET": "G11.92-0.61"}


def test_gainfield_map_fallbacks():
    fields = {
        "BP": pipeline_intents(["CALIBRATE_BANDPASS#ON_SOURCE", "CALIBRATE_FLUX#ON_SOURCE"]),
        "PH": pipeline_intents(["CALIBRATE_PHASE#ON_SOURCE", "CALIBRATE_ATMOSPHERE#OFF_SOURCE"]),
        "SCI": pipeline_intents(["OBSERVE_TARGET#ON_SOURCE"]),  # no Tsys scan on the target
        "CHK": pipeline_intents(["OBSERVE_CHECK_SOURCE#ON_SOURCE"]),
    }
    gmap = tsys_gainfield_map(fields)
    # bandpass cal without Tsys -> 'nearest'; target and check -> the phase calibrator's Tsys
    assert gmap == {"BANDPASS": "nearest", "AMPLITUDE": "nearest", "PHASE": "PH", "TARGET": "PH", "CHECK": "PH"}
    entries = {n: (g, i) for n, g, i in tsys_entries(fields)}
    assert entries["tsys"] == ("nearest", ["CALIBRATE_PHASE*"])
    assert entries["tsys_target"] == ("PH", ["OBSERVE_TARGET*"])
    assert entries["tsys_check"] == ("PH", ["OBSERVE_CHECK*"])
    assert entries["tsys_bandpass"][0] == "nearest"
    # the target's own Tsys is preferred over the phase calibrator's
    fields["SCI"] |= {"ATMOSPHERE"}
    assert tsys_gainfield_map(fields)["TARGET"] == "SCI"
    assert tsys_gainfield_map(fields)["PHASE"] == "PH"


def test_phase_calibrator_that_is_also_bandpass_calibrator_follows_the_pipeline_rule():
    fields = {"BP": {"BANDPASS", "AMPLITUDE", "PHASE", "ATMOSPHERE"}, "SCI": {"TARGET", "ATMOSPHERE"}}
    gmap = tsys_gainfield_map(fields)
    # PIPE-2394: PHASE never takes the Tsys of a bandpass/amplitude field: the fallback
    # (ATMOSPHERE fields, TARGET allowed) gives the target's Tsys
    assert gmap == {"BANDPASS": "BP", "AMPLITUDE": "BP", "PHASE": "SCI", "TARGET": "SCI"}
    entries = {n: (g, i) for n, g, i in tsys_entries(fields)}
    assert entries["tsys"] == ("nearest", ["CALIBRATE_BANDPASS*", "CALIBRATE_FLUX*", "CALIBRATE_AMPLI*",
                                           "OBSERVE_TARGET*"])
    assert entries["tsys_phase"] == ("SCI", ["CALIBRATE_PHASE*"])
    # without any usable Tsys field the fallback 'nearest' is the field itself when it has Tsys
    only = {"BP": {"BANDPASS", "PHASE", "ATMOSPHERE"}}
    assert tsys_gainfield_map(only)["PHASE"] == "nearest"
    assert [(n, g) for n, g, _ in tsys_entries(only)] == [("tsys", "nearest")]
