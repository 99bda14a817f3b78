"""fastcal.calapply: safe parsing of ALMA *.calapply.txt files, the writer, and applying one."""

from __future__ import annotations

import argparse

import casacore.tables as ct
import numpy as np
import pytest
from truth_tables import true_bandpass, true_gains

from fastcal.apply import add_cli_arguments, applycal, run_from_args
from fastcal.calapply import (
    ApplycalCall,
    format_calapply,
    parse_calapply,
    read_calapply,
    write_calapply,
)
from fastcal.errors import CalTableError, ParameterError

PIPELINE_TEXT = """# Apply file for uid___A002_X1.ms
applycal(vis='uid___A002_X1.ms', field='0', intent='CALIBRATE_BANDPASS#ON_SOURCE', spw='17,19', antenna='0~11,13~14&', gaintable=['uid___A002_X1.ms.h_tsyscal.s6_1.tsyscal.tbl', 'uid___A002_X1.ms.hifa_bandpass.s13_0.channel.solintinf.bcal.tbl'], gainfield=['0', ''], spwmap=[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 9, 18, 11], []], interp=['linear,linear', 'linear,linearflag'], calwt=[True, False])

applycal(vis='uid___A002_X1.ms', field='2,3', intent='OBSERVE_TARGET#ON_SOURCE', spw='17', antenna='',
         gaintable=['a.tbl'], gainfield=['nearest'], spwmap=[], interp=['linearPD'], calwt=[False], parang=False)
"""


def test_parse_pipeline_lines():
    calls = parse_calapply(PIPELINE_TEXT)
    assert len(calls) == 2
    a, b = calls
    assert a.field == "0" and a.intent == "CALIBRATE_BANDPASS#ON_SOURCE" and a.spw == "17,19"
    assert a.antenna == "0~11,13~14&" and len(a.gaintable) == 2 and a.gainfield == ["0", ""]
    assert a.spwmap[0][17] == 9 and a.spwmap[1] == [] and a.calwt == [True, False]
    assert a.interp == ["linear,linear", "linear,linearflag"] and a.line == 2
    assert (
        b.gainfield == ["nearest"]
        and b.spwmap == []
        and b.extra == {"parang": False}
        and b.line == 4
    )
    again = parse_calapply(format_calapply(calls))  # the writer round-trips
    assert [vars(x) | {"line": 0} for x in again] == [vars(x) | {"line": 0} for x in calls]


@pytest.mark.parametrize(
    "line,match",
    [
        ("applycal(vis=__import__('os').system('rm -rf /'))", "not a literal"),
        ("applycal(vis='a', gaintable=[open('x').read()])", "not a literal"),
        ("exec('print(1)')", "expected a line 'applycal"),
        ("applycal('a.ms', gaintable=['t'])", "key=value"),
        ("applycal(vis='a', gaintable=['t'], frobnicate=1)", "unknown applycal keyword"),
        ("applycal(vis='a', gaintable=[])", "gaintable is empty"),
        ("applycal(vis='a', gaintable=['t'], calwt='yes')", "calwt="),
        ("applycal(vis='a', gaintable=['t'], spwmap=[['x']])", "spwmap entry"),
        ("applycal(vis='a', gaintable=['t']", "unterminated"),
    ],
)
def test_unsafe_or_malformed_lines_are_rejected(line, match):
    with pytest.raises(ParameterError, match=match):
        parse_calapply("# Apply file for a\n" + line + "\n", "f.txt")


def test_apply_calapply_file_equals_direct_applycal(tiny_ms, copy_ms, tmp_path):
    path, truth = tiny_ms
    sci = [int(s) for s in truth.science_spw_ids]
    g = true_gains(truth, path)
    g.write(tmp_path / "obs.G")
    bp = tmp_path / "obs.B"
    true_bandpass(truth, path).write(bp)
    calls = [
        ApplycalCall(
            vis=path.name,
            field="0",
            spw=",".join(map(str, sci)),
            gaintable=["obs.G", "obs.B"],
            gainfield=["", ""],
            interp=["linear", "nearest"],
            spwmap=[[], []],
            calwt=[True, True],
        ),
        ApplycalCall(
            vis=path.name,
            field="1,2",
            spw=",".join(map(str, sci)),
            gaintable=["obs.G"],
            gainfield=["0"],
            interp=["linear"],
            spwmap=[[]],
            calwt=[False],
        ),
    ]
    txt = write_calapply(tmp_path / "obs.calapply.txt", calls)
    assert read_calapply(txt)[1].gainfield == ["0"]
    a = copy_ms(path, "a.ms")
    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    assert run_from_args(p.parse_args([str(a), "--calapply", txt])) == 0
    b = copy_ms(path, "b.ms")
    applycal(
        b,
        [str(tmp_path / "obs.G"), str(bp)],
        field="0",
        spw=",".join(map(str, sci)),
        interp=["linear", "nearest"],
    )
    applycal(
        b,
        [str(tmp_path / "obs.G")],
        field="1,2",
        spw=",".join(map(str, sci)),
        gainfield=["0"],
        calwt=False,
    )
    for s in sci:
        with ct.table(str(a), ack=False) as ta, ct.table(str(b), ack=False) as tb:
            qa, qb = ta.query(f"DATA_DESC_ID == {s}"), tb.query(f"DATA_DESC_ID == {s}")
            for col in ("CORRECTED_DATA", "FLAG", "WEIGHT"):
                np.testing.assert_array_equal(qa.getcol(col), qb.getcol(col))
    with pytest.raises(ParameterError, match="either callib"):
        applycal(a, [str(bp)], callib=txt)


def test_calapply_validates_every_line_before_writing(tiny_ms, copy_ms, tmp_path):
    path, truth = tiny_ms
    sci = [int(s) for s in truth.science_spw_ids]
    g = true_gains(truth, path)
    g.write(tmp_path / "obs.G")
    calls = [
        ApplycalCall(field="0", spw=str(sci[0]), gaintable=["obs.G"]),
        ApplycalCall(field="1", spw=str(sci[0]), gaintable=["missing.tbl"]),
    ]
    txt = write_calapply(tmp_path / "bad.calapply.txt", calls, vis="x.ms")
    ms = copy_ms(path)
    with pytest.raises(CalTableError):
        applycal(ms, callib=txt)
    with ct.table(str(ms), ack=False) as t:
        assert "CORRECTED_DATA" not in t.colnames()
