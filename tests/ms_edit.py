"""Small in-place edits of simulated Measurement Sets for tests (python-casacore, test-only).

TaQL is fine here: these helpers build test inputs; fastcal itself never uses TaQL.
"""

from __future__ import annotations

import casacore.tables as ct


def flag_all_rows(ms) -> None:
    """Set every FLAG sample of `ms` (FLAG_ROW is left as it is)."""
    with ct.table(str(ms), readonly=False, ack=False) as t:
        for r in range(t.nrows()):
            f = t.getcell("FLAG", r)
            f[:] = True
            t.putcell("FLAG", r, f)


def multiply_data(ms, where: str, chans, factor) -> None:
    """DATA[rows matching the TaQL `where`, `chans`, all correlations] *= `factor`."""
    with ct.table(str(ms), readonly=False, ack=False) as t:
        sub = t.query(where)
        try:
            d = sub.getcol("DATA")
            d[:, chans, :] *= factor
            sub.putcol("DATA", d)
        finally:
            sub.close()
