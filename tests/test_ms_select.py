"""CASA-style selection strings -> ids -> rows, checked against brute-force evaluation."""

from __future__ import annotations

import dataclasses
import re

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import SelectionError
from fastcal.ms import (
    format_mjd_s,
    open_ms,
    parse_selection,
    read_chunks,
    row_mask,
    select_rows,
)


@pytest.fixture(scope="module")
def info(tiny_ms):
    return open_ms(tiny_ms[0])


def rows_of(info, **kw):
    return select_rows(info, parse_selection(info, **kw))


# ---------------------------------------------------------------- field


def test_field_by_name_id_glob_and_list(info):
    idx = info.index
    f0, f2 = info.fields[0], info.fields[2]
    assert parse_selection(info, field=f0.name).field_ids == (0,)
    assert parse_selection(info, field="0,2").field_ids == (0, 2)
    assert parse_selection(info, field="0~1").field_ids == (0, 1)
    assert parse_selection(info, field=[f2.name, 0]).field_ids == (0, 2)
    assert parse_selection(info, field=f0.name[:3] + "*").field_ids == info.field_ids(
        f0.name[:3] + "*"
    )
    rows = rows_of(info, field=f2.name)
    np.testing.assert_array_equal(rows, np.flatnonzero(idx.field_id == 2))
    assert parse_selection(info, field="").field_ids is None  # "" = everything, as in CASA


def test_field_name_wins_over_id(info):
    fields = (dataclasses.replace(info.fields[0], name="2"),) + info.fields[1:]
    odd = dataclasses.replace(info, fields=fields)
    assert parse_selection(odd, field="2").field_ids == (0,)


@pytest.mark.parametrize("value", ["NoSuchSource", "17", "Q*", "0,,1"])
def test_field_unknown_lists_valid_names(info, value):
    with pytest.raises(
        SelectionError, match=rf"field={re.escape(repr(value))}.*valid: 0 {info.fields[0].name}"
    ):
        parse_selection(info, field=value)


# ---------------------------------------------------------------- spw


def sci(info):
    return info.spws_with_role("science")


def test_spw_ids_ranges_and_channels(info):
    s0, s1 = sci(info)[:2]
    n0 = info.spws[s0].num_chan
    sel = parse_selection(info, spw=f"{s0},{s1}:2~9")
    np.testing.assert_array_equal(sel.spw_channels[s0], np.arange(n0))
    np.testing.assert_array_equal(sel.spw_channels[s1], np.arange(2, 10))
    sel = parse_selection(info, spw=f"{s0}:0~3;8~10")
    np.testing.assert_array_equal(sel.spw_channels[s0], [0, 1, 2, 3, 8, 9, 10])
    sel = parse_selection(info, spw=f"{s0}:1~{n0 - 1}^5")
    np.testing.assert_array_equal(sel.spw_channels[s0], np.arange(1, n0, 5))
    sel = parse_selection(info, spw=f"{s0}:0~1,{s0}:5")  # repeated spw: union of channels
    np.testing.assert_array_equal(sel.spw_channels[s0], [0, 1, 5])
    assert parse_selection(info, spw=f"{s0}~{s1}").spw_ids == tuple(range(s0, s1 + 1))
    assert parse_selection(info, spw="*").spw_ids == tuple(range(len(info.spws)))
    assert parse_selection(info, spw="WVR*").spw_ids == (info.spws_with_role("wvr")[0],)
    assert parse_selection(info, spw=[s0, s1]).spw_ids == (s0, s1)


def test_spw_wildcard_channels_clip_to_each_spw(info):
    sel = parse_selection(info, spw="*:5~20")
    for sid, ch in sel.spw_channels.items():
        n = info.spws[sid].num_chan
        np.testing.assert_array_equal(ch, np.arange(5, min(20, n - 1) + 1))
    assert info.spws_with_role("wvr")[0] not in sel.spw_channels  # 4 channels: none in 5~20


def test_spw_rows_are_the_ddids_of_the_spw(info):
    s0 = sci(info)[0]
    rows = rows_of(info, spw=str(s0))
    ddids = info.ddids_for_spw(s0)
    np.testing.assert_array_equal(rows, np.flatnonzero(np.isin(info.index.ddid, ddids)))


@pytest.mark.parametrize(
    "value, match",
    [
        ("99", r"no spectral window 99.*valid: spw ids 0 \(WVR"),
        (
            "{s}:0~999",
            r"channel 999 is out of range for spw {s} \({n} channels\).*valid: channels 0~{last}",
        ),
        ("{s}:a~b", r"cannot parse channel range 'a~b'"),
        ("{s}:5~2", r"empty"),
        ("230GHz~231GHz", r"frequency-based selection is not supported"),
        ("{s}:1~2GHz", r"frequency channel ranges are not supported"),
        ("NOPE*", r"no spectral window named 'NOPE\*'"),
        ("0~99", r"outside 0~{nspw}"),
    ],
)
def test_spw_errors(info, value, match):
    s0 = sci(info)[0]
    n = info.spws[s0].num_chan
    value = value.format(s=s0)
    match = match.format(s=s0, n=n, last=n - 1, nspw=len(info.spws) - 1)
    with pytest.raises(SelectionError, match=match):
        parse_selection(info, spw=value)


# ---------------------------------------------------------------- scan, intent, observation


def test_scan_list_and_ranges(info):
    nums = sorted(s.number for s in info.scans)
    sel = parse_selection(info, scan=f"{nums[0]}~{nums[2]},{nums[-1]}")
    assert sel.scans == tuple(nums[:3]) + (nums[-1],)
    assert parse_selection(info, scan=f">{nums[-2]}").scans == (nums[-1],)
    assert parse_selection(info, scan=nums[1]).scans == (nums[1],)
    rows = rows_of(info, scan=str(nums[1]))
    np.testing.assert_array_equal(rows, np.flatnonzero(info.index.scan == nums[1]))
    with pytest.raises(
        SelectionError, match=rf"scan=.*scan 999 is not in .*valid: {nums[0]}~{nums[-1]}"
    ):
        parse_selection(info, scan="999")
    with pytest.raises(SelectionError, match="cannot parse 'x'"):
        parse_selection(info, scan="1,x")


def test_intent_globs_match_tokens(info):
    sel = parse_selection(info, intent="CALIBRATE_PHASE*")
    rows = select_rows(info, sel)
    assert rows.size
    for st in np.unique(info.index.state_id[rows]):
        assert any(tok.startswith("CALIBRATE_PHASE") for tok in info.states[st].intents)
    other = np.setdiff1d(np.arange(info.n_rows), rows)
    for st in np.unique(info.index.state_id[other]):
        assert not any(tok.startswith("CALIBRATE_PHASE") for tok in info.states[st].intents)
    both = parse_selection(info, intent="*BANDPASS*,OBSERVE_TARGET*")
    assert set(both.state_ids) == {
        s.id
        for s in info.states
        if any("BANDPASS" in t or t.startswith("OBSERVE_TARGET") for t in s.intents)
    }


def test_intent_unknown_lists_intents(info):
    with pytest.raises(
        SelectionError,
        match=r"intent='CALIBRATE_POINTING\*'.*valid: .*CALIBRATE_BANDPASS#ON_SOURCE",
    ):
        parse_selection(info, intent="CALIBRATE_POINTING*")


def test_observation(info):
    assert parse_selection(info, observation="0").observation_ids == (0,)
    with pytest.raises(SelectionError, match="observation 3 is not in"):
        parse_selection(info, observation=3)


# ---------------------------------------------------------------- antenna


def brute(info, fn):
    a1, a2 = info.index.antenna1, info.index.antenna2
    return np.flatnonzero([fn(int(x), int(y)) for x, y in zip(a1, a2, strict=True)])


def test_antenna_clauses_match_casa_semantics(info):
    n = [a.name for a in info.antennas]
    cases = {
        n[0]: lambda x, y: 0 in (x, y) and x != y,
        f"{n[0]}&{n[1]}": lambda x, y: {x, y} == {0, 1},
        f"{n[0]},{n[1]}&": lambda x, y: {x, y} == {0, 1},
        "0~2&": lambda x, y: x != y and x <= 2 and y <= 2,
        f"{n[0]}&&&": lambda x, y: x == y == 0,
        f"{n[0]}&&*": lambda x, y: 0 in (x, y),
        f"{n[0]}&&{n[0]}": lambda x, y: x == y == 0,
        "*&*": lambda x, y: x != y,
        "*&&&": lambda x, y: x == y,
        f"!{n[0]}": lambda x, y: 0 not in (x, y),
        f"*&*;!{n[1]}": lambda x, y: x != y and 1 not in (x, y),
        f"{n[0]};{n[2]}&{n[3]}": lambda x, y: (0 in (x, y) and x != y) or {x, y} == {2, 3},
        "1": lambda x, y: 1 in (x, y) and x != y,
        f"{n[3][:2]}*": lambda x, y: (
            (n[x].startswith(n[3][:2]) or n[y].startswith(n[3][:2])) and x != y
        ),
        info.antennas[4].station: lambda x, y: 4 in (x, y) and x != y,
    }
    for value, fn in cases.items():
        np.testing.assert_array_equal(rows_of(info, antenna=value), brute(info, fn), err_msg=value)


def test_antenna_integer_is_a_name_first(info):
    ants = (dataclasses.replace(info.antennas[0], name="3"),) + info.antennas[1:]
    odd = dataclasses.replace(info, antennas=ants)
    np.testing.assert_array_equal(
        rows_of(odd, antenna="3"), brute(info, lambda x, y: 0 in (x, y) and x != y)
    )


def test_antenna_errors(info):
    name0 = info.antennas[0].name
    with pytest.raises(
        SelectionError,
        match=rf"antenna='XX99'.*valid: names {name0}, .* or ids 0~{len(info.antennas) - 1}",
    ):
        parse_selection(info, antenna="XX99")
    with pytest.raises(SelectionError, match="no antenna named or numbered '9'"):
        parse_selection(info, antenna="9&0")
    with pytest.raises(SelectionError, match="'&&&' takes no second list"):
        parse_selection(info, antenna="0&&&1")


def test_include_autocorr_false(info):
    m = row_mask(info, parse_selection(info), include_autocorr=False)
    np.testing.assert_array_equal(m, info.index.antenna1 != info.index.antenna2)


# ---------------------------------------------------------------- timerange


def test_timerange_forms(info):
    t = info.index.time
    s = info.scans[1]
    day = format_mjd_s(s.start).rsplit("/", 1)[0]
    a, b = (
        format_mjd_s(s.start - 0.05, date=False, digits=2),
        format_mjd_s(s.end + 0.05, date=False, digits=2),
    )
    expect = np.flatnonzero((t >= s.start - 0.05) & (t <= s.end + 0.05))
    for value in (
        f"{a}~{b}",
        f"{day}/{a}~{day}/{b}",
        f"{day}/{a}~{b}",
        (s.start - 0.05, s.end + 0.05),
    ):
        np.testing.assert_array_equal(rows_of(info, timerange=value), expect, err_msg=str(value))
    dur = s.end + 0.05 - (s.start - 0.05)
    np.testing.assert_array_equal(rows_of(info, timerange=f"{a}+{dur:.2f}"), expect)
    np.testing.assert_array_equal(
        rows_of(info, timerange=f">{a}"), np.flatnonzero(t >= s.start - 0.05)
    )
    np.testing.assert_array_equal(
        rows_of(info, timerange=f"<{b}"), np.flatnonzero(t <= s.end + 0.05)
    )


@pytest.mark.parametrize(
    "value, match",
    [
        ("noon", "cannot parse time 'noon'"),
        ("05:00:00", "a single time is ambiguous"),
        ("06:00:00~05:00:00", "end is before start"),
        ("2024/13/40/01:00:00~02:00:00", "invalid date"),
        ("25:61:00~26:00:00", "invalid time of day"),
    ],
)
def test_timerange_errors(info, value, match):
    with pytest.raises(SelectionError, match=rf"timerange='{value}': {match}"):
        parse_selection(info, timerange=value)


# ---------------------------------------------------------------- empty selections, TaQL


def test_empty_selection_explains_each_part(info):
    target = next(
        f
        for f in info.fields
        if any("OBSERVE_TARGET" in i for s in info.scans if f.id in s.field_ids for i in s.intents)
    )
    sel = parse_selection(info, field=target.name, intent="*BANDPASS*")
    with pytest.raises(
        SelectionError,
        match=rf"field='{target.name}', intent='\*BANDPASS\*' matches no rows"
        rf".*field='{target.name}' alone: \d+ rows; intent='\*BANDPASS\*' alone: \d+ rows",
    ):
        select_rows(info, sel)


def test_combined_selection_is_intersection(info):
    s0 = sci(info)[0]
    kw = dict(
        field="1",
        spw=f"{s0}:3~5",
        antenna="0&&*",
        scan=",".join(str(s.number) for s in info.scans[:4]),
    )
    rows = rows_of(info, **kw)
    idx = info.index
    expect = (
        (idx.field_id == 1)
        & np.isin(idx.ddid, info.ddids_for_spw(s0))
        & ((idx.antenna1 == 0) | (idx.antenna2 == 0))
        & np.isin(idx.scan, [s.number for s in info.scans[:4]])
    )
    np.testing.assert_array_equal(rows, np.flatnonzero(expect))


def test_selection_never_builds_taql(info, tiny_ms, monkeypatch):
    """Hostile strings are only ever compared in Python: TaQL is never called."""

    def boom(*a, **k):
        raise AssertionError("TaQL was called")

    monkeypatch.setattr(ct, "taql", boom)
    monkeypatch.setattr(ct.table, "query", boom)
    monkeypatch.setattr(ct.table, "selectrows", boom)
    with pytest.raises(SelectionError, match="no field named"):
        parse_selection(info, field="x' || TRUE || '")
    with pytest.raises(SelectionError):
        parse_selection(info, antenna="0 OR ANTENNA1>=0")
    chunks = read_chunks(
        tiny_ms[0], ("FLAG",), field=info.fields[0].name, spw=f"{sci(info)[0]}:0~3"
    )
    assert chunks and all(c.field_id == 0 for c in chunks)
