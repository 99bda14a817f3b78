"""Every error of fastcal.ms names what is wrong and what would be valid."""

from __future__ import annotations

import re

import casacore.tables as ct
import numpy as np
import pytest

import fastcal.ms.write as mswrite
from fastcal.errors import (
    MissingColumnError,
    MSError,
    MSNotFoundError,
    NotAnMSError,
    ParameterError,
    SelectionError,
    UnsupportedError,
)
from fastcal.ms import (
    PolInfo,
    open_ms,
    parse_selection,
    read_chunks,
    require_parallel_hands,
    write_column,
)


def test_missing_path(tmp_path):
    with pytest.raises(
        MSNotFoundError, match=rf"Measurement Set {tmp_path}/nope.ms does not exist"
    ):
        open_ms(tmp_path / "nope.ms")
    with pytest.raises(FileNotFoundError):  # also the built-in class
        read_chunks(str(tmp_path / "nope.ms"))


def test_directory_that_is_not_a_table(tmp_path):
    d = tmp_path / "empty.ms"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    with pytest.raises(
        NotAnMSError,
        match=rf"{d} is a directory but not a casacore table.*expected a Measurement Set",
    ):
        open_ms(d)


def test_file_is_not_an_ms(tmp_path):
    f = tmp_path / "data.ms"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(NotAnMSError, match=rf"{f} is a file, not a Measurement Set"):
        open_ms(f)


def test_caltable_is_not_an_ms(tmp_path):
    path = str(tmp_path / "gains.G")
    desc = ct.maketabdesc([ct.makescacoldesc("TIME", 0.0), ct.makearrcoldesc("CPARAM", 0j, ndim=2)])
    with ct.table(path, desc, nrow=1, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "G Jones", "readme": ""})
    with pytest.raises(
        NotAnMSError,
        match=r"gains\.G is a casacore table of type 'Calibration' \(subType 'G Jones'\)"
        r" - a calibration table.*expected a table of type 'Measurement Set'",
    ):
        open_ms(path)


def test_missing_required_column(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    with ct.table(str(path), readonly=False, ack=False) as t:
        t.removecols(["SCAN_NUMBER"])
    with pytest.raises(
        MissingColumnError,
        match=rf"{path}: required main-table column\(s\) SCAN_NUMBER missing; "
        r"a Measurement Set needs TIME, ANTENNA1",
    ):
        open_ms(path)


def test_missing_required_subtable(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    with ct.table(str(path), readonly=False, ack=False) as t:
        t.removekeyword("POLARIZATION")
    ct.tabledelete(str(path / "POLARIZATION"), ack=False)
    with pytest.raises(
        MissingColumnError,
        match=r"required subtable\(s\) POLARIZATION missing; "
        r"a Measurement Set needs ANTENNA, DATA_DESCRIPTION",
    ):
        open_ms(path)


def test_missing_visibility_column(tiny_ms):
    with pytest.raises(
        MissingColumnError,
        match=r"column MODEL_DATA is not in .*tiny\.ms \(no model was written.*"
        r"visibility columns present: DATA$",
    ):
        read_chunks(tiny_ms[0], ("DATA", "MODEL_DATA"))
    with pytest.raises(
        MissingColumnError, match=r"CORRECTED_DATA is not in .* \(run applycal first\)"
    ):
        read_chunks(tiny_ms[0], ("CORRECTED_DATA",))


def test_unknown_column_and_bad_arguments(tiny_ms):
    with pytest.raises(
        ParameterError,
        match=r"SIGMA cannot be read; valid: DATA, MODEL_DATA, CORRECTED_DATA, FLAG, WEIGHT, UVW",
    ):
        read_chunks(tiny_ms[0], ("DATA", "SIGMA"))
    info = open_ms(tiny_ms[0])
    with pytest.raises(
        ParameterError, match=r"either selection= or selection strings.*\(got field\)"
    ):
        read_chunks(info, selection=parse_selection(info, scan="1"), field="0")
    with pytest.raises(ParameterError, match=r"max_rows=0 is invalid; valid: an integer >= 1"):
        read_chunks(info, max_rows=0)


def test_unknown_selection(tiny_ms):
    info = open_ms(tiny_ms[0])
    fields = ", ".join(f"{f.id} {f.name}" for f in info.fields)
    names = ", ".join(info.antenna_names)
    sci = info.spws_with_role("science")[0]
    nchan = info.spws[sci].num_chan
    nums = sorted(s.number for s in info.scans)
    cases = [
        (
            dict(field="3C286"),
            rf"field='3C286': no field named '3C286' in .*; valid: {re.escape(fields)}$",
        ),
        (
            dict(spw="99"),
            r"spw='99': no spectral window 99 in .*; valid: spw ids 0 \(WVR#NOMINAL, 4 ch\), 1 \(",
        ),
        (
            dict(spw=f"{sci}:2~{nchan}"),
            rf"spw='{sci}:2~{nchan}': channel {nchan} is out of range for spw {sci} "
            rf"\({nchan} channels\); valid: channels 0~{nchan - 1}",
        ),
        (
            dict(antenna="XX99"),
            rf"antenna='XX99': no antenna or station named 'XX99' in .*; valid: names "
            rf"{re.escape(names)} or ids 0~{len(names.split(', ')) - 1}$",
        ),
        (
            dict(intent="CALIBRATE_POL*"),
            rf"intent='CALIBRATE_POL\*': no intent matches .*; valid: "
            rf"{re.escape(', '.join(info.intents))}$",
        ),
        (dict(scan="999"), rf"scan='999': scan 999 is not in .*; valid: {nums[0]}~{nums[-1]}$"),
    ]
    for kw, match in cases:
        with pytest.raises(SelectionError, match=match):
            read_chunks(info, **kw)


def test_empty_selection(tiny_ms):
    info = open_ms(tiny_ms[0])
    tsys = info.spws_with_role("tsys")[0]
    with pytest.raises(
        SelectionError,
        match=rf"selection spw='{tsys}', intent='\*BANDPASS\*' matches no rows .*"
        rf"spw='{tsys}' alone: \d+ rows; intent='\*BANDPASS\*' alone: \d+ rows",
    ):
        read_chunks(info, spw=str(tsys), intent="*BANDPASS*")
    with pytest.raises(SelectionError, match=r"spw='\*:100~200': selects no channel of any spw"):
        read_chunks(info, spw="*:100~200")


def test_unsupported_correlations(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    with ct.table(str(path / "POLARIZATION"), readonly=False, ack=False) as t:
        row = next(r for r in range(t.nrows()) if t.getcell("NUM_CORR", r) == 2)
        t.putcell("CORR_TYPE", row, np.array([1, 4], np.int32))  # Stokes I, V
    info = open_ms(path)
    with pytest.raises(
        UnsupportedError,
        match=r"polarization setup \d has correlations \(I, V\), which fastcal does "
        r"not support; valid: linear \(XX, XY, YX, YY\) or circular",
    ):
        require_parallel_hands(info.pols[row])
    with pytest.raises(UnsupportedError, match=r"has no correlations; valid: linear"):
        require_parallel_hands(PolInfo(0, (), ()))
    with pytest.raises(UnsupportedError, match=r"\(XX, RR\).*not mixed"):
        require_parallel_hands(PolInfo(1, (9, 5), ("XX", "RR")))
    with pytest.raises(
        UnsupportedError,
        match=r"\(XY, YX\) has no parallel-hand correlation; valid: at least one of XX, YY",
    ):
        require_parallel_hands(PolInfo(2, (10, 11), ("XY", "YX")))


def test_data_is_sacred(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    with pytest.raises(
        ParameterError,
        match=r"column='DATA': Data is sacred - fastcal never writes DATA; "
        r"valid: CORRECTED_DATA, MODEL_DATA, FLAG, FLAG_ROW, WEIGHT, WEIGHT_SPECTRUM",
    ):
        write_column(path, "DATA", [0], np.zeros((1, 4, 1), np.complex64))


def test_read_only_ms(tiny_ms, copy_ms, monkeypatch):
    path = copy_ms(tiny_ms[0])
    # root ignores file permissions, so fake what casacore reports for a read-only table
    monkeypatch.setattr(mswrite.ct, "tableiswritable", lambda p: False)
    with pytest.raises(MSError, match=rf"{path} is read-only \(no write permission\); copy it"):
        write_column(path, "FLAG_ROW", [0], np.zeros(1, bool))
