"""solint / combine parsing, interval assignment and refant choice (pure bookkeeping)."""

from __future__ import annotations

import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.refant import RefantPlan, apply_flex_refant
from fastcal.solint import SpanMember, assign_intervals, chan_bins, parse_combine, parse_solint


@pytest.mark.parametrize("text, kind, seconds", [
    ("inf", "inf", 0.0), ("int", "int", 0.0), ("30s", "time", 30.0), ("1min", "time", 60.0),
    ("0.5h", "time", 1800.0), ("90", "time", 90.0), (12.5, "time", 12.5), (" INF ", "inf", 0.0),
])
def test_parse_solint(text, kind, seconds):
    s = parse_solint(text)
    assert (s.kind, s.seconds, s.freq_kind) == (kind, seconds, None)


def test_parse_solint_frequency_part():
    assert parse_solint("inf,8ch", allow_freq=True).freq_kind == "chan"
    s = parse_solint("int,2MHz", allow_freq=True)
    assert (s.kind, s.freq_kind, s.freq_value) == ("int", "hz", 2e6)
    with pytest.raises(ParameterError, match="only valid for solve_bandpass"):
        parse_solint("inf,8ch")


@pytest.mark.parametrize("bad", ["10 parsecs", "-5s", "0s", "inf,8", "inf,x ch", "a,b,c", True, None])
def test_parse_solint_rejects(bad):
    with pytest.raises(ParameterError, match="solint"):
        parse_solint(bad, allow_freq=True)


def test_parse_combine():
    assert parse_combine("") == frozenset()
    assert parse_combine("scan, spw") == {"scan", "spw"}
    assert parse_combine(["field"]) == {"field"}
    with pytest.raises(ParameterError, match="'scans' not understood"):
        parse_combine("scans")


def _members():
    t = 1000.0 + 6.0 * np.arange(10)
    return [
        SpanMember(0, 1, 0, 5, t[:5]),       # scan 1, spw 5
        SpanMember(0, 1, 0, 6, t[:5]),       # scan 1, spw 6
        SpanMember(0, 2, 0, 5, t[5:] + 60),  # scan 2, spw 5
        SpanMember(0, 3, 1, 5, t[5:] + 200), # scan 3, another field
    ]


def test_inf_breaks_at_scan_field_spw():
    ivs, slots = assign_intervals(_members(), parse_solint("inf"), parse_combine(""))
    assert len(ivs) == 4
    assert [iv.label_spw for iv in ivs] == [5, 5, 5, 6]
    assert all(np.unique(s).size == 1 for s in slots)


def test_combine_scan_and_spw():
    ivs, slots = assign_intervals(_members(), parse_solint("inf"), parse_combine("scan,spw"))
    # scans combine within field 0 (and spws combine): field 0 -> 1 interval, field 1 -> 1
    assert len(ivs) == 2
    iv0 = ivs[int(slots[0][0])]
    assert iv0.label_spw == 5 and iv0.spws == (5, 6) and iv0.scan == 1 and iv0.field == 0
    assert slots[0][0] == slots[1][0] == slots[2][0] != slots[3][0]


def test_int_and_duration():
    m = _members()
    ivs, slots = assign_intervals(m, parse_solint("int"), parse_combine(""))
    assert len(ivs) == 20 and np.unique(np.concatenate(slots)).size == 20
    ivs, slots = assign_intervals(m[:1], parse_solint("12s"), parse_combine(""))
    assert slots[0].tolist() == [0, 0, 1, 1, 2]  # bins of 12 s from the first timestamp
    ivs, slots = assign_intervals([m[0], m[2]], parse_solint("100s"), parse_combine("scan"))
    # spans combine scans: 0..24 and 90..114 s -> bins 0 and 1 (counted from t0)
    assert slots[0].tolist() == [0] * 5 and slots[1].tolist() == [0, 0, 1, 1, 1]


def test_chan_bins():
    f = 100e9 + 1e6 * np.arange(10)
    w = np.full(10, 1e6)
    cb, of, ow = chan_bins(f, w, parse_solint("inf,4ch", allow_freq=True))
    assert cb.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(of, [f[:4].mean(), f[4:8].mean(), f[8:].mean()])
    np.testing.assert_allclose(ow, [4e6, 4e6, 2e6])
    cb2, _, _ = chan_bins(f, w, parse_solint("inf,4.2MHz", allow_freq=True))
    assert cb2.tolist() == cb.tolist()


def test_flex_refant_continuity_and_strict():
    rng = np.random.default_rng(1)
    n_int, n_ant = 4, 5
    g = np.exp(1j * rng.uniform(-3, 3, (n_int, n_ant, 1, 2)))
    flag = np.zeros(g.shape, bool)
    flag[2:, 0] = True  # primary refant 0 lost from interval 2
    plan = RefantPlan((0,), (0, 3, 1, 2, 4), "flex")
    out = g.copy()
    used = apply_flex_refant(out, flag.copy(), plan)
    assert used.tolist() == [0, 0, 3, 3]
    assert np.allclose(np.angle(out[:2, 0]), 0)
    # antenna 3 keeps the phase it had in interval 1 (continuity), not zero
    np.testing.assert_allclose(out[2, 3], out[1, 3])
    np.testing.assert_allclose(out[3, 3], out[2, 3])
    # relative phases are untouched by referencing
    np.testing.assert_allclose(out[3, 1] * np.conj(out[3, 2]), g[3, 1] * np.conj(g[3, 2]))
    f2 = flag.copy()
    used = apply_flex_refant(g.copy(), f2, RefantPlan((0,), (0, 3, 1, 2, 4), "strict"))
    assert used.tolist() == [0, 0, -1, -1] and f2[2:].all() and not f2[:2].any()
    # strict: an interval after one without the refant is referenced again (no cascade)
    f3 = np.zeros(g.shape, bool)
    f3[2, 0] = True
    used = apply_flex_refant(g.copy(), f3, RefantPlan((0,), (0, 3, 1, 2, 4), "strict"))
    assert used.tolist() == [0, 0, -1, 0] and f3[2].all() and not f3[3].any()


@pytest.mark.parametrize("mode", ["flex", "strict"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flex_refant_kernel_matches_numpy_reference(mode, seed):
    """The Numba kernel gives the NumPy loop's referencing exactly: random flags (whole
    antennas, single channels, a whole par), tiny amplitudes, shuffled time order."""
    from reference import flex_refant_reference

    rng = np.random.default_rng(seed)
    n_int, n_ant, n_ch, n_par = 30, 6, 3, 2
    g = rng.uniform(0.5, 2, (n_int, n_ant, n_ch, n_par)) * np.exp(
        1j * rng.uniform(-3, 3, (n_int, n_ant, n_ch, n_par)))
    g[rng.random(g.shape) < 0.02] = 1e-9
    flag = rng.random(g.shape) < 0.1
    flag[rng.random((n_int, n_ant)) < 0.25] = True
    if seed == 2:
        flag[..., 1] = True  # second par never solved: only the first decides
    plan = RefantPlan((0, 2), (0, 2, 4, 1, 3, 5), mode)
    order = rng.permutation(n_int)
    g1, f1 = g.copy(), flag.copy()
    g2, f2 = g.copy(), flag.copy()
    used = apply_flex_refant(g1, f1, plan, order=order)
    expect = flex_refant_reference(g2, f2, plan, order=order)
    np.testing.assert_array_equal(used, expect)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_allclose(g1, g2, rtol=1e-14, atol=1e-15)
    assert (used >= 0).any() and len(set(used[used >= 0].tolist())) >= (2 if mode == "flex" else 1)


def test_parse_refant_and_rank(tiny_ms):
    from fastcal.errors import SelectionError
    from fastcal.ms import open_ms
    from fastcal.refant import parse_refant, rank_refants

    info = open_ms(tiny_ms[0])
    names = info.antenna_names
    plan = parse_refant(info, f"{names[2]},1")
    assert plan.user == (2, 1) and sorted(plan.choices) == list(range(len(names)))
    pos = np.array([a.position for a in info.antennas])
    d = np.linalg.norm(pos[list(plan.choices[2:])] - pos[1], axis=1)
    assert np.all(np.diff(d) >= 0)  # others by distance from the last user refant
    with pytest.raises(SelectionError, match="'XX' is not an antenna"):
        parse_refant(info, "XX")
    ranked = rank_refants(info, flagged_fraction=[1.0] + [0.0] * (len(names) - 1))
    assert sorted(ranked) == sorted(names) and ranked[-1] == names[0]  # fully flagged: last
    assert rank_refants(info, n=2) == rank_refants(info)[:2]
