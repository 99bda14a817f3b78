"""fluxcalflag: line channels of solar-system flux calibrators (hifa_fluxcalflag heuristics)."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.context import Context
from fastcal.pipeline.heuristics_lines import (
    channel_ranges,
    format_channel_ranges,
    line_channel_mask,
    line_ranges_hz,
    lines_for,
)
from fastcal.pipeline.stages.fluxcalflag import (
    FluxcalflagStage,
    flag_fluxcal_lines,
    reference_spwmap,
)
from fastcal.simulate import SimConfig, simulate

CO21_HZ = 230.538e9
WIDTH_HZ = 31.25e6


def _make(tmp_path, name: str, start_hz: float = 230.5e9):
    """tiny MS (64 channels) whose flux calibrator (field 0) is called `name` and whose first
    science spw is moved to start_hz .. start_hz + 2 GHz (the data do not matter for flagging)."""
    path = tmp_path / "fc.ms"
    simulate(path, config=SimConfig.tiny(seed=3, n_chan=64, noise=False))
    with ct.table(str(path / "FIELD"), readonly=False, ack=False) as t:
        t.putcell("NAME", 0, name)
    info = open_ms(path)
    s0 = info.spws_with_role("science")[0]
    freqs = start_hz + WIDTH_HZ * (np.arange(64) + 0.5)
    with ct.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.putcell("CHAN_FREQ", s0, freqs)
        t.putcell("REF_FREQUENCY", s0, float(freqs.mean()))
    return str(path)


def _flags(path, field_id, spw):
    info = open_ms(path)
    dd = info.ddid_for_spw(spw)
    with ct.table(path, ack=False) as t:
        sub = t.query(f"FIELD_ID=={field_id} && DATA_DESC_ID=={dd}")
        try:
            return sub.getcol("FLAG")
        finally:
            sub.close()


def test_catalogue_lookup():
    assert lines_for("TITAN") == lines_for("Titan")
    co = [ln for ln in lines_for("Titan") if ln.species == "CO" and ln.transition == "2-1"][0]
    assert co.lo_ghz < co.rest_ghz < co.hi_ghz
    assert lines_for("J1924-2914") is None and lines_for("Uranus") == ()


def test_line_channel_mask_overlap_and_margin():
    f = 229.0e9 + 10e6 * np.arange(100)  # 229.00 .. 229.99 GHz, 10 MHz channels
    r = line_ranges_hz([lines_for("Titan")[1]], margin_kms=0.0)  # CO(2-1) from 229.49 GHz
    m = line_channel_mask(f, np.full(100, 10e6), r)
    assert np.flatnonzero(m)[0] == 49  # 229.49 +- 5 MHz touches 229.49: first overlapping channel
    assert m[49:].all() and not m[:49].any()
    wide = line_channel_mask(f, np.full(100, 10e6), line_ranges_hz([lines_for("Titan")[1]], 0.5))
    assert wide.sum() >= m.sum()
    with pytest.raises(ParameterError, match="margin_kms=-1"):
        line_ranges_hz(lines_for("Titan"), margin_kms=-1)


def test_channel_ranges():
    assert channel_ranges([5, 0, 1, 2, 7, 6]) == [(0, 2), (5, 7)]
    assert format_channel_ranges([3, 1, 2, 9]) == "1~3;9~9"


def test_titan_co21_channels_flagged_others_not(tmp_path):
    path = _make(tmp_path, "Titan")
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    s = flag_fluxcal_lines(path, ["Titan", info.field_names[1]], [s0, s1])
    freqs = info.spws[s0].chan_freq
    expect = np.flatnonzero((freqs + WIDTH_HZ / 2 > 229.49e9 * (1 - 0.5 / 299792.458))
                            & (freqs - WIDTH_HZ / 2 < 231.74e9 * (1 + 0.5 / 299792.458)))
    assert freqs[expect[0]] - WIDTH_HZ < CO21_HZ < freqs[expect[-1]]  # the line is in the range
    assert 0 < expect.size < 64
    assert s.channels == {f"Titan/{s0}": expect.tolist()}
    assert s.not_solar_system == [info.field_names[1]]
    fl = _flags(path, 0, s0)  # (row, chan, corr)
    assert fl[:, expect, :].all()
    others = np.setdiff1d(np.arange(64), expect)
    assert not fl[:, others, :].any()
    assert not _flags(path, 0, s1).any()  # the other spw has no line
    assert not _flags(path, 1, s0).any()  # the quasar is untouched
    assert s.n_new == fl[:, expect, :].size
    assert s.refspwmap == [-1]  # 40 of 64 channels (62.5 %): below the 75 % threshold
    assert s.template == [f"mode='manual' field='Titan' intent='*CALIBRATE_FLUX*' "
                          f"spw='{s0}:{expect[0]}~{expect[-1]}' reason='fastcal:fluxcalflag'"]
    again = flag_fluxcal_lines(path, ["Titan"], [s0, s1])
    assert again.n_new == 0 and again.channels == s.channels


def test_quasar_and_uranus_get_nothing(tmp_path):
    path = _make(tmp_path, "Uranus")
    info = open_ms(path)
    sci = list(info.spws_with_role("science"))
    s = flag_fluxcal_lines(path, ["Uranus", info.field_names[1]], sci)
    assert s.n_new == 0 and not s.channels and s.no_lines == ["Uranus"]
    for fid in (0, 1):
        for spw in sci:
            assert not _flags(path, fid, spw).any()


def test_mostly_flagged_spw_is_mapped(tmp_path):
    path = _make(tmp_path, "Neptune", start_hz=229.0e9)  # Neptune CO(2-1): 226.98-234.52 GHz
    info = open_ms(path)
    s0, s1 = info.spws_with_role("science")
    s = flag_fluxcal_lines(path, ["Neptune"], [s0, s1])
    assert s.fraction[f"Neptune/{s0}"] == 1.0
    assert s.refspwmap[s0] == s1 and s.refspwmap[s1] == s1


def test_reference_spwmap_rules():
    c = {3: 230e9, 4: 232e9, 5: 240e9}
    assert reference_spwmap({3: 0.9, 4: 0.1, 5: 0.0}, c) == [0, 1, 2, 4, 4, 5]
    assert reference_spwmap({3: 0.5, 4: 0.1}, c) == [-1]
    assert reference_spwmap({3: 0.9, 4: 0.8}, c) == [-1]  # none can serve
    with pytest.raises(ParameterError, match="threshold=1.5"):
        reference_spwmap({3: 0.1}, c, threshold=1.5)


def test_bad_field_refused(tmp_path):
    path = _make(tmp_path, "Titan")
    with pytest.raises(ParameterError, match="field 'Ganymede'"):
        flag_fluxcal_lines(path, ["Ganymede"], [3])


def test_stage_records_flags_and_template(tmp_path):
    path = _make(tmp_path, "Titan")
    info = open_ms(path)
    ctx = Context(path, tmp_path / "out")
    ctx.roles = {"flux": ["Titan"], "bandpass": ["Titan"]}
    ctx.science_spws = list(info.spws_with_role("science"))
    ctx.current_stage = "fluxcalflag"
    res = FluxcalflagStage().run(ctx)
    assert res.status == "ok"
    assert len(ctx.flags) == 1 and ctx.flags[0].agent == "fluxcalflag" and ctx.flags[0].n_new > 0
    assert "reason='fastcal:fluxcalflag'" in ctx.flags[0].command
    assert ctx.commands[0].function.endswith("flag_fluxcal_lines")
    assert any("CO(2-1)" in m for m in res.messages)
    ctx.roles = {"flux": []}
    assert FluxcalflagStage().run(ctx).status == "skipped"


def test_runner_backs_up_and_reruns_without_stacking(tmp_path):
    """Through the runner: roles from the intents, a flag backup, the same flags on a re-run."""
    from fastcal.flagversions import list_flag_versions
    from fastcal.pipeline import run
    from fastcal.pipeline.stages.importdata import ImportDataStage

    path = _make(tmp_path, "Titan")
    info = open_ms(path)
    s0 = info.spws_with_role("science")[0]
    recipe = [ImportDataStage(), FluxcalflagStage()]
    res = run(path, tmp_path / "out", recipe=recipe)
    ctx = res.context
    assert ctx.roles["flux"] == ["Titan"]
    assert "fastcal_before_fluxcalflag" in {v.name for v in list_flag_versions(path)}
    first = _flags(path, 0, s0)
    assert first.any()
    (rec,) = [f for f in ctx.flags if f.stage == "fluxcalflag"]
    ctx2 = run(path, tmp_path / "out", recipe=[ImportDataStage(), FluxcalflagStage()],
               stages=["fluxcalflag"]).context
    assert np.array_equal(_flags(path, 0, s0), first)
    (rec2,) = [f for f in ctx2.flags if f.stage == "fluxcalflag"]
    assert rec2.n_new == rec.n_new and rec2.command == rec.command  # the backup was restored first
