"""Reference-antenna ranking (fastcal.pipeline.stages.refant, ALMA hif_refant heuristic)."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.ms import open_ms
from fastcal.pipeline.stages.refant import (
    horizontal_distance_m,
    rank_refants,
    unflagged_per_antenna,
)


def _enu_distance(positions):
    """Distance from the array centre in a local east/north plane built from (lon, lat)."""
    x, y, z = positions.T
    lon = np.arctan2(y, x)
    lat = np.arctan2(z, np.hypot(x, y))
    r = np.linalg.norm(positions, axis=1).mean()
    east = r * (lon - lon.mean()) * np.cos(lat.mean())
    north = r * (lat - lat.mean())
    return np.hypot(east, north)


def test_horizontal_distance_ignores_height(tiny_ms):
    pos = np.array([a.position for a in open_ms(tiny_ms[0]).antennas])
    up = pos.mean(axis=0) / np.linalg.norm(pos.mean(axis=0))
    h = np.linspace(-5.0, 7.0, len(pos))
    lifted = pos + np.outer(h - h.mean(), up)  # heights change, the centre does not
    np.testing.assert_allclose(horizontal_distance_m(lifted), horizontal_distance_m(pos), atol=1e-6)
    np.testing.assert_allclose(horizontal_distance_m(pos), _enu_distance(pos), rtol=0.02, atol=0.5)


def test_unflagged_data_ranks_by_distance_from_centre(tiny_ms):
    info = open_ms(tiny_ms[0])
    r = rank_refants(tiny_ms[0])
    pos = np.array([a.position for a in info.antennas])
    by_distance = [info.antenna_names[i] for i in np.argsort(_enu_distance(pos))]
    assert r.names == by_distance
    n = len(info.antennas)
    assert all(v == pytest.approx(n) for v in r.flagging.values())
    assert r.geometry[by_distance[-1]] == pytest.approx(0.0)
    assert r.removed == []
    assert r.refant == ",".join(by_distance)


def _flag_antenna(path, ant, fraction, seed=0):
    """Flag `fraction` of the cross-correlation rows of antenna `ant` (every spw)."""
    rng = np.random.default_rng(seed)
    with ct.table(str(path), readonly=False, ack=False) as t:
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        rows = np.flatnonzero(((a1 == ant) | (a2 == ant)) & (a1 != a2))
        pick = rows if fraction >= 1 else rng.choice(rows, int(round(fraction * rows.size)), replace=False)
        for r in pick:
            f = t.getcell("FLAG", int(r))
            f[:] = True
            t.putcell("FLAG", int(r), f)


def test_heavily_flagged_central_antenna_drops(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    best = rank_refants(path).names[0]
    ant = info.antenna_names.index(best)
    _flag_antenna(path, ant, 0.9)
    r = rank_refants(path)
    assert r.names[0] != best
    unfl = unflagged_per_antenna(path)
    n = len(info.antennas)
    assert r.flagging[best] == pytest.approx(n * unfl[ant] / unfl.max())
    assert r.flagging[best] < 0.3 * n
    totals = [r.total[a] for a in r.names]
    assert totals == sorted(totals, reverse=True)


def test_fully_flagged_antenna_removed(tiny_ms, copy_ms):
    path = copy_ms(tiny_ms[0])
    info = open_ms(path)
    _flag_antenna(path, 2, 1.0)
    r = rank_refants(path)
    name = info.antenna_names[2]
    assert name not in r.names and r.removed == [name]
    assert len(r.names) == len(info.antennas) - 1


def test_refantignore_and_errors(tiny_ms, copy_ms):
    info = open_ms(tiny_ms[0])
    r = rank_refants(tiny_ms[0], refantignore=[info.antenna_names[0]])
    assert info.antenna_names[0] not in r.names
    with pytest.raises(ParameterError, match="refantignore: 'XX99' is not an antenna"):
        rank_refants(tiny_ms[0], refantignore=["XX99"])
    with pytest.raises(ParameterError, match="leave nothing to rank by"):
        rank_refants(tiny_ms[0], geometry=False, flagging=False)
    path = copy_ms(tiny_ms[0])
    for a in range(len(info.antennas)):
        _flag_antenna(path, a, 1.0)
    with pytest.raises(ParameterError, match="every antenna is fully flagged"):
        rank_refants(path)
