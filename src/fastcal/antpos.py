"""Antenna position corrections: ``KAntPos Jones`` tables as ``gencal(caltype='antpos')``
writes them, from lists or from a corrections file.

The table holds, per antenna, the ITRF offset (dx, dy, dz) in metres (true - catalogue
position). applycal evaluates the geometric phase (fastcal.interp / fastcal.geometry).
See docs/antpos.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections.abc import Sequence

import casacore.tables as ct
import numpy as np

from fastcal.caltable import CalTable
from fastcal.errors import ParameterError, SelectionError
from fastcal.ms.info import MSInfo, _check_is_ms

__all__ = ["antpos_table", "read_antpos_file", "add_cli_arguments", "run_from_args"]

log = logging.getLogger(__name__)


def _split_names(antenna: str | Sequence[str] | None) -> list[str]:
    if antenna is None or antenna == "":
        return []
    if isinstance(antenna, str):
        return [a.strip() for a in antenna.split(",") if a.strip()]
    return [str(a).strip() for a in antenna]


def read_antpos_file(path: str | os.PathLike, vis: str | None = None) -> dict[str, np.ndarray]:
    """Read antenna offsets (ITRF, m) from a corrections file.

    Two formats are recognised:

    * plain text, one antenna per line: ``name dx dy dz`` (whitespace or commas), ``#``
      starts a comment;
    * the pipeline's ``antennapos.csv``: header ``ms,antenna,xoffset,yoffset,zoffset,comment``;
      rows whose ``ms`` is not the basename of `vis` are skipped (all rows when `vis` is None).

    Returns
    -------
    dict name -> float64[3]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ParameterError(f"antenna position file {path!r} does not exist")
    with open(path, newline="") as fh:
        text = fh.read()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if lines and lines[0].replace(" ", "").lower().startswith("ms,antenna,xoffset"):
        return _read_pipeline_csv(lines, path, vis)
    out: dict[str, np.ndarray] = {}
    for n, ln in enumerate(text.splitlines(), 1):
        body = ln.split("#", 1)[0].replace(",", " ").split()
        if not body:
            continue
        if len(body) != 4:
            raise ParameterError(f"{path}:{n}: expected 'name dx dy dz' (metres), got {ln.strip()!r}")
        try:
            out[body[0]] = np.array([float(x) for x in body[1:]])
        except ValueError as exc:
            raise ParameterError(f"{path}:{n}: offsets must be numbers (metres): {ln.strip()!r}") from exc
    return out


def _read_pipeline_csv(lines, path, vis) -> dict[str, np.ndarray]:
    want = os.path.basename(os.path.normpath(vis)) if vis else None
    out: dict[str, np.ndarray] = {}
    reader = csv.DictReader(lines, skipinitialspace=True)
    for n, row in enumerate(reader, 2):
        if want is not None and row.get("ms", "").strip() not in (want, ""):
            continue
        try:
            out[row["antenna"].strip()] = np.array(
                [float(row["xoffset"]), float(row["yoffset"]), float(row["zoffset"])])
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{path}: row {n}: need antenna,xoffset,yoffset,zoffset numbers: "
                                 f"{row}") from exc
    if want is not None and not out:
        log.warning("%s: no rows for MS %s", path, want)
    return out


def _antenna_names(vis: str | os.PathLike | MSInfo) -> tuple[str, list[str]]:
    if isinstance(vis, MSInfo):
        return vis.path, list(vis.antenna_names)
    path = _check_is_ms(vis)
    with ct.table(os.path.join(path, "ANTENNA"), ack=False) as t:
        return path, list(t.getcol("NAME")) if t.nrows() else []


def antpos_table(
    vis: str | os.PathLike | MSInfo,
    caltable: str | os.PathLike | None = None,
    *,
    antenna: str | Sequence[str] | None = None,
    offsets: Sequence[float] | None = None,
    file: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> CalTable:
    """Build a ``KAntPos Jones`` table as ``gencal(caltype='antpos')`` writes it.

    One row per MS antenna: TIME 0, FIELD_ID -1, SPECTRAL_WINDOW_ID 0, ANTENNA2 -1,
    SCAN_NUMBER -1, INTERVAL 0, FPARAM (1, 3) = (dx, dy, dz) ITRF metres, PARAMERR 0, SNR 1,
    FLAG False; antennas not given get 0 m.

    Parameters
    ----------
    vis : str
        Measurement Set.
    caltable : str, optional
        Write the table there (atomic).
    antenna : str or list of str
        Antenna names (or ids), as gencal's ``antenna``.
    offsets : list of float
        Flat list dx, dy, dz per antenna (ITRF, m), as gencal's ``parameter``.
    file : str, optional
        Corrections file (:func:`read_antpos_file`); combined with `antenna`/`offsets`
        (the lists win for an antenna given in both).

    Raises
    ------
    SelectionError
        Unknown antenna (the message lists the valid names).
    ParameterError
        len(offsets) != 3 x len(antenna), or nothing given.
    """
    path, names = _antenna_names(vis)
    by_name = {a: i for i, a in enumerate(names)}
    given: dict[str, np.ndarray] = {}
    if file is not None:
        given.update(read_antpos_file(file, path))
    ants = _split_names(antenna)
    vals = [] if offsets is None else [float(x) for x in np.ravel(offsets)]
    if len(vals) != 3 * len(ants):
        raise ParameterError(
            f"offsets has {len(vals)} values for {len(ants)} antenna(s) {ants}; give dx, dy, dz "
            "(ITRF metres) per antenna")
    for k, a in enumerate(ants):
        given[a] = np.array(vals[3 * k:3 * k + 3])
    if not given:
        raise ParameterError("give antenna= and offsets=, or file=, with at least one antenna")
    params = np.zeros((1, len(names), 1, 3), np.float32)
    for a, off in given.items():
        idx = by_name.get(a)
        if idx is None and a.isdigit() and int(a) < len(names):
            idx = int(a)
        if idx is None:
            raise SelectionError(
                f"{path}: unknown antenna {a!r}; valid names: {', '.join(names)}")
        params[0, idx, 0, :] = off
        log.info("antpos %s: dx=%+.5f dy=%+.5f dz=%+.5f m", names[idx], *off)
    shape = params.shape
    tab = CalTable.from_solutions(
        "KAntPos Jones", {0: params}, times=np.zeros(1), ms=path, refant=-1,
        flag={0: np.zeros(shape, bool)}, paramerr={0: np.zeros(shape, np.float32)},
        snr={0: np.ones(shape, np.float32)}, interval=0.0, field_id=-1, scan=-1, obs_id=0,
        extra={"producer": "fastcal.antpos_table"},
    )
    if caltable is not None:
        tab.write(caltable, overwrite=overwrite)
    return tab


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fastcal antpos``."""
    parser.add_argument("vis", help="Measurement Set")
    parser.add_argument("caltable", help="output KAntPos Jones table")
    parser.add_argument("--antenna", default="", help="comma-separated antenna names")
    parser.add_argument("--offsets", default="",
                        help="comma-separated dx,dy,dz per antenna (ITRF metres)")
    parser.add_argument("--file", default=None,
                        help="corrections file ('name dx dy dz' lines or antennapos.csv)")
    parser.add_argument("--overwrite", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``fastcal antpos``."""
    offs = [float(x) for x in args.offsets.split(",") if x.strip()] if args.offsets else None
    tab = antpos_table(args.vis, args.caltable, antenna=args.antenna or None, offsets=offs,
                       file=args.file, overwrite=args.overwrite)
    print(f"wrote {args.caltable}: {tab.nrow} antennas")
    return 0
