"""fastcal.flagversions: CASA-style <vis>.flagversions backups, listing, restore, errors."""

from __future__ import annotations

import os

import casacore.tables as ct
import numpy as np
import pytest

from fastcal.errors import ParameterError
from fastcal.flagversions import (
    delete_flag_version,
    flagversions_dir,
    list_flag_versions,
    next_version_name,
    restore_flags,
    save_flags,
)


def _flags(ms):
    with ct.table(str(ms), ack=False) as t:
        out = []
        for d in sorted(set(t.getcol("DATA_DESC_ID").tolist())):
            q = t.query(f"DATA_DESC_ID == {d}")
            out.append(q.getcol("FLAG").reshape(-1))
            q.close()
        return np.concatenate(out), t.getcol("FLAG_ROW")


def _flag_some(ms, rows):
    with ct.table(str(ms), readonly=False, ack=False) as t:
        for r in rows:
            f = t.getcell("FLAG", r)
            f[:] = True
            t.putcell("FLAG", r, f)
            t.putcell("FLAG_ROW", r, True)


def test_save_list_restore_roundtrip(tiny_ms, copy_ms):
    ms = copy_ms(tiny_ms[0])
    assert list_flag_versions(ms) == [] and next_version_name(ms) == "applycal_1"
    original = _flags(ms)
    name = save_flags(ms, comment="before")
    assert name == "applycal_1" and next_version_name(ms) == "applycal_2"
    _flag_some(ms, [0, 5, 17])
    changed = _flags(ms)
    assert changed[0].sum() > 0 and changed[1].sum() == 3
    second = save_flags(ms, "after_edit", comment="three rows flagged")
    versions = list_flag_versions(ms)
    assert [(v.name, v.comment) for v in versions] == [
        ("applycal_1", "before"),
        ("after_edit", "three rows flagged"),
    ]
    with open(os.path.join(flagversions_dir(ms), "FLAG_VERSION_LIST")) as f:
        assert f.read().splitlines() == ["applycal_1 : before", "after_edit : three rows flagged"]
    with ct.table(versions[0].path, ack=False) as t:  # CASA layout: FLAG and FLAG_ROW per row
        assert {"FLAG", "FLAG_ROW"} <= set(t.colnames())
    restore_flags(ms, "applycal_1")
    for a, b in zip(_flags(ms), original, strict=False):
        np.testing.assert_array_equal(a, b)
    restore_flags(ms, second)
    for a, b in zip(_flags(ms), changed, strict=False):
        np.testing.assert_array_equal(a, b)
    delete_flag_version(ms, "applycal_1")
    assert [v.name for v in list_flag_versions(ms)] == ["after_edit"]


def test_errors(tiny_ms, copy_ms, tmp_path):
    ms = copy_ms(tiny_ms[0])
    save_flags(ms, "v1")
    with pytest.raises(ParameterError, match="already exists"):
        save_flags(ms, "v1")
    with pytest.raises(ParameterError, match="invalid"):
        save_flags(ms, "bad name!")
    with pytest.raises(ParameterError, match="'nope' not found.*available: v1"):
        restore_flags(ms, "nope")
