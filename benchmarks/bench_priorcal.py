"""Cost of the prior calibrations (Tsys table, antenna-position table) against one applycal pass.

    python benchmarks/bench_priorcal.py --ms PATH
    python benchmarks/bench_priorcal.py --make-gb 1.0     # simulate one into a temp dir

Requirement (issue 6): building the Tsys table takes <= 10 % of one applycal pass on a large
MS. The applycal pass is ``fastcal.apply.applycal`` with the Tsys table (spwmap from
``tsys_spwmap``) when that module exists; otherwise the *floor* of any applycal is timed
instead: one plain casacore pass that reads DATA and writes CORRECTED_DATA (same shape) for
every science row, in ~64 MB row blocks. A real applycal does at least this much I/O, so the
ratio against the floor is an upper bound of the ratio against applycal.

Page cache warm (every file read once first); best of ``--repeat`` runs. Results printed only.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import casacore.tables as ct
import numpy as np
from _common import best, io_floor, simulate_large, warm_cache

from fastcal.antpos import antpos_table
from fastcal.ms import open_ms
from fastcal.tsys import flag_tsys, tsys_spwmap, tsys_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ms", help="existing MS (a copy is used for the write pass)")
    ap.add_argument("--make-gb", type=float, default=1.0, help="simulate an MS of this size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the simulated MS")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench_priorcal-"))
    try:
        if args.ms:
            ms = str(tmp / "copy.ms")
            shutil.copytree(args.ms, ms)
        else:
            ms = str(tmp / "large.ms")
            simulate_large(ms, args.make_gb)
        size = warm_cache(ms)
        info = open_ms(ms)
        with ct.table(os.path.join(ms, "SYSCAL"), ack=False) as t:
            n_sys = t.nrows()
        print(f"MS {size / 1e9:.2f} GB, {info.n_rows} rows, {len(info.antennas)} antennas, "
              f"{n_sys} SYSCAL rows")

        t_tsys, tab = best(lambda: tsys_table(ms), args.repeat)
        t_tsys_raw, _ = best(lambda: tsys_table(ms, fix_times=False), args.repeat)
        t_flag, _ = best(lambda: flag_tsys(tab, vis=info), args.repeat)
        t_map, spwmap = best(lambda: tsys_spwmap(info, tab), args.repeat)
        names = [a.name for a in info.antennas]
        t_ant, _ = best(lambda: antpos_table(ms, antenna=names,
                                             offsets=np.zeros(3 * len(names))), args.repeat)
        print(f"tsys_table (fix_times='auto'): {t_tsys:.3f} s   (fix_times=False: {t_tsys_raw:.3f} s)")
        print(f"flag_tsys (6 metrics):         {t_flag:.3f} s")
        print(f"tsys_spwmap:                   {t_map:.3f} s  -> {spwmap}")
        print(f"antpos_table:                  {t_ant:.3f} s")

        roles = info.spw_roles
        sci = [d.id for d in info.ddescs if roles.get(d.spw_id) == "science"]
        if importlib.util.find_spec("fastcal.apply") is not None:
            from fastcal.apply import applycal

            tsys_path = str(tmp / "bench.tsys")
            tab.write(tsys_path, overwrite=True)
            sci_spw = ",".join(str(d) for d in sorted({info.ddescs[d].spw_id for d in sci}))
            t_ref, _ = best(lambda: applycal(ms, gaintable=[tsys_path], spw=sci_spw,
                                             spwmap=[spwmap], interp=["linear,linear"],
                                             flagbackup=False), max(1, args.repeat - 1))
            label = "fastcal.apply.applycal (Tsys table)"
        else:
            t_ref, _ = best(lambda: io_floor(ms, sci), max(1, args.repeat - 1))
            label = "applycal I/O floor (read DATA + write CORRECTED_DATA, casacore)"
        print(f"{label}: {t_ref:.2f} s")
        print(f"tsys_table / applycal pass = {100 * t_tsys / t_ref:.2f} %  (requirement <= 10 %)")
        print(f"tsys_table + flag_tsys     = {100 * (t_tsys + t_flag) / t_ref:.2f} %")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
