"""Cost of solve_wvr against one applycal pass (issue 6: <= 10 %).

    python benchmarks/bench_wvr.py --ms PATH
    python benchmarks/bench_wvr.py --make-gb 1.0      # simulate one into a temp dir

``solve_wvr`` is timed end to end from a path (open_ms, reading the WVR rows and POINTING,
retrievals, table build; no write) and with the table write. The reference pass is
``fastcal.apply.applycal`` applying the WVR table itself (interp nearest, calwt False) when
that module imports; otherwise the floor of any applycal: one plain casacore pass reading
DATA and writing CORRECTED_DATA for every science row in ~64 MB blocks (an upper bound of
the ratio). Page cache warm (every file read once first); best of ``--repeat`` runs.
Results are printed only.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile

import numpy as np
from _common import best, io_floor, simulate_large, warm_cache

from fastcal.ms import open_ms
from fastcal.wvr import solve_wvr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ms", help="existing MS (a CORRECTED_DATA column may be added)")
    ap.add_argument("--make-gb", type=float, default=1.0, help="simulate an MS of this size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the simulated MS")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tmp = None
    if args.ms:
        path = args.ms
    else:
        tmp = tempfile.mkdtemp(prefix="bench-wvr-")
        path = os.path.join(tmp, "big.ms")
        simulate_large(path, args.make_gb)
    try:
        size = warm_cache(path)
        info = open_ms(path)
        n_wvr = int(
            np.isin(
                info.index.ddid, [d.id for d in info.ddescs if info.spws[d.spw_id].num_chan == 4]
            ).sum()
        )
        print(
            f"MS {size / 1e9:.2f} GB, {info.n_rows} rows ({n_wvr} WVR rows), "
            f"{len(info.antennas)} antennas"
        )
        t_open, _ = best(lambda: open_ms(path), args.repeat)
        t_wvr, res = best(lambda: solve_wvr(path), args.repeat)
        out = os.path.join(tmp or os.path.dirname(os.path.abspath(path)), "bench.wvr")
        t_wvr_w, _ = best(lambda: solve_wvr(path, out, overwrite=True), args.repeat)
        print(f"open_ms                  {t_open:8.3f} s")
        print(f"solve_wvr (no write)     {t_wvr:8.3f} s  ({res.table.nrow} table rows)")
        print(f"solve_wvr + write        {t_wvr_w:8.3f} s")
        label, t_ref = None, None
        try:
            from fastcal.apply import applycal

            def run_apply():
                return applycal(path, [out], interp=["nearest"], calwt=[False], flagbackup=False)

            t_ref, _ = best(run_apply, max(1, args.repeat - 1))
            label = "fastcal.apply.applycal (WVR table)"
        except ImportError:
            sci = [d.id for d in info.ddescs if info.spws[d.spw_id].num_chan > 4]
            t_ref, _ = best(lambda: io_floor(path, sci), max(1, args.repeat - 1))
            label = "casacore DATA read + CORRECTED_DATA write (applycal floor)"
        print(f"{label:<40s} {t_ref:8.3f} s")
        print(
            f"ratio solve_wvr / reference: {t_wvr / t_ref:.3f} (with write {t_wvr_w / t_ref:.3f})"
        )
        shutil.rmtree(out, ignore_errors=True)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
