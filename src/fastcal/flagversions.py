"""Flag backups in CASA's ``<vis>.flagversions`` layout (what ``flagmanager`` reads).

``<vis>.flagversions/`` holds one casacore table per version, ``flags.<name>``, with the
columns FLAG and FLAG_ROW of every main-table row, and a text file ``FLAG_VERSION_LIST`` with
one ``<name> : <comment>`` line per version.

Backups are written into a temporary table beside the target and renamed into place when
complete, and the list file is replaced atomically, so a killed process never leaves a
half-written version in the list.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass

import casacore.tables as ct
import numpy as np

from fastcal.errors import MSError, ParameterError
from fastcal.ms.info import MSInfo, bump_write_generation, ms_lock, open_ms

__all__ = [
    "FlagVersion",
    "delete_flag_version",
    "flagversions_dir",
    "list_flag_versions",
    "next_version_name",
    "restore_flags",
    "save_flags",
]

logger = logging.getLogger(__name__)

_LIST = "FLAG_VERSION_LIST"
_TMP = ".fastcal-tmp-"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_ROWS_PER_STEP_BYTES = 64 * 2**20


@dataclass(frozen=True)
class FlagVersion:
    """One saved flag version: ``name``, ``comment`` and the table ``path``."""

    name: str
    comment: str
    path: str


def flagversions_dir(vis: str | os.PathLike | MSInfo) -> str:
    """``<vis>.flagversions`` (absolute path)."""
    path = vis.path if isinstance(vis, MSInfo) else os.path.abspath(os.fspath(vis))
    return path.rstrip("/") + ".flagversions"


def list_flag_versions(vis: str | os.PathLike | MSInfo) -> list[FlagVersion]:
    """Versions listed in ``FLAG_VERSION_LIST`` whose table exists, in list order."""
    d = flagversions_dir(vis)
    lst = os.path.join(d, _LIST)
    if not os.path.isfile(lst):
        return []
    out = []
    with open(lst, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            name, _, comment = line.partition(" : ")
            name = name.strip()
            path = os.path.join(d, f"flags.{name}")
            if os.path.isdir(path):
                out.append(FlagVersion(name, comment.strip(), path))
    return out


def next_version_name(vis: str | os.PathLike | MSInfo, prefix: str = "applycal") -> str:
    """``<prefix>_N`` with N one more than the largest existing (CASA's naming)."""
    d = flagversions_dir(vis)
    n = 0
    names = {v.name for v in list_flag_versions(vis)}
    if os.path.isdir(d):
        names |= {
            e[len("flags.") :] for e in os.listdir(d) if e.startswith("flags.") and _TMP not in e
        }
    for name in names:
        m = re.fullmatch(re.escape(prefix) + r"_(\d+)", name)
        if m:
            n = max(n, int(m.group(1)))
    return f"{prefix}_{n + 1}"


def _write_list(d: str, versions: list[tuple[str, str]]) -> None:
    tmp = os.path.join(d, f"{_LIST}{_TMP}{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for name, comment in versions:
            f.write(f"{name} : {comment}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(d, _LIST))


def _row_runs(info: MSInfo) -> list[tuple[int, int]]:
    """(start, n) runs of rows with one DATA_DESC_ID, each below ~64 MB of flags."""
    ddid = info.index.ddid
    cut = np.flatnonzero(np.diff(ddid) != 0) + 1
    first = np.concatenate(([0], cut)).tolist()
    last = np.concatenate((cut, [ddid.size])).tolist()
    out = []
    for a, b in zip(first, last, strict=False):
        dd = info.ddescs[int(ddid[a])]
        cell = max(1, info.spws[dd.spw_id].num_chan * info.pols[dd.pol_id].num_corr)
        step = max(1, _ROWS_PER_STEP_BYTES // cell)
        out += [(s, min(step, b - s)) for s in range(a, b, step)]
    return out


def _remove_stale_temps(d: str) -> None:
    if not os.path.isdir(d):
        return
    for e in os.listdir(d):
        if _TMP not in e:
            continue
        pid = e.rsplit(_TMP, 1)[1]
        try:
            os.kill(int(pid), 0)
            alive = True
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            p = os.path.join(d, e)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


def save_flags(
    vis: str | os.PathLike | MSInfo,
    versionname: str | None = None,
    comment: str = "",
    *,
    prefix: str = "applycal",
) -> str:
    """Save FLAG and FLAG_ROW of every row as a new flag version.

    Parameters
    ----------
    vis : str, path-like or MSInfo
    versionname : str, optional
        Name of the version (letters, digits, ``_.+-``); default :func:`next_version_name`.
    comment : str
        Stored in FLAG_VERSION_LIST.
    prefix : str
        Prefix of the default name.

    Returns
    -------
    str
        The version name.

    Raises
    ------
    ParameterError
        Bad or existing `versionname`.
    MSError
        The backup cannot be written (e.g. read-only directory).
    """
    info = open_ms(vis)
    d = flagversions_dir(info)
    name = versionname or next_version_name(info, prefix)
    if not _NAME_RE.match(name):
        raise ParameterError(f"versionname={name!r} is invalid; valid: letters, digits and _.+-")
    if any(v.name == name for v in list_flag_versions(info)):
        raise ParameterError(f"flag version {name!r} already exists in {d}; choose another name")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as exc:
        raise MSError(f"cannot create the flag backup directory {d}: {exc}") from exc
    _remove_stale_temps(d)
    final = os.path.join(d, f"flags.{name}")
    tmp = final + f"{_TMP}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    desc = ct.maketabdesc(
        [
            ct.makearrcoldesc("FLAG", False, ndim=2, valuetype="boolean"),
            ct.makescacoldesc("FLAG_ROW", False),
        ]
    )
    dm = {
        "*1": {
            "TYPE": "TiledShapeStMan",
            "NAME": "TiledFlag",
            "SPEC": {"DEFAULTTILESHAPE": np.array([4, 128, 256], np.int32)},
            "COLUMNS": ["FLAG"],
        }
    }
    try:
        with ms_lock(info.path), ct.table(info.path, ack=False) as src:
            out = ct.table(tmp, desc, nrow=info.n_rows, ack=False, dminfo=dm)
            try:
                for start, n in _row_runs(info):
                    out.putcol("FLAG", src.getcol("FLAG", start, n), start, n)
                out.putcol("FLAG_ROW", src.getcol("FLAG_ROW"))
                out.flush()
            finally:
                out.close()
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MSError(f"cannot back up the flags of {info.path} into {final}: {exc}") from exc
    os.replace(tmp, final)
    versions = [(v.name, v.comment) for v in list_flag_versions(info)] + [(name, comment)]
    _write_list(d, versions)
    logger.info("saved flags of %s as version %s", info.path, name)
    return name


def _find(vis: str | os.PathLike | MSInfo, versionname: str) -> FlagVersion:
    versions = list_flag_versions(vis)
    for v in versions:
        if v.name == versionname:
            return v
    raise ParameterError(
        f"flag version {versionname!r} not found in {flagversions_dir(vis)}; "
        f"available: {', '.join(v.name for v in versions) or 'none'}"
    )


def restore_flags(vis: str | os.PathLike | MSInfo, versionname: str) -> None:
    """Write a saved version back into FLAG and FLAG_ROW of every row (CASA merge='replace').

    Raises
    ------
    ParameterError
        Unknown version, or one saved from an MS with a different number of rows.
    MSError
        The MS is read-only.
    """
    info = open_ms(vis)
    v = _find(info, versionname)
    if not (os.access(info.path, os.W_OK) and ct.tableiswritable(info.path)):
        raise MSError(f"{info.path} is read-only; cannot restore flags")
    with ct.table(v.path, ack=False) as src:
        if src.nrows() != info.n_rows:
            raise ParameterError(
                f"flag version {versionname!r} has {src.nrows()} rows but {info.path} has "
                f"{info.n_rows}; it belongs to another MS"
            )
        with ms_lock(info.path), ct.table(info.path, readonly=False, ack=False) as t:
            for start, n in _row_runs(info):
                t.putcol("FLAG", src.getcol("FLAG", start, n), start, n)
            t.putcol("FLAG_ROW", src.getcol("FLAG_ROW"))
            t.flush()
            bump_write_generation(info.path)
    logger.info("restored flags of %s from version %s", info.path, versionname)


def delete_flag_version(vis: str | os.PathLike | MSInfo, versionname: str) -> None:
    """Remove a saved version (its table and its FLAG_VERSION_LIST line)."""
    v = _find(vis, versionname)
    d = flagversions_dir(vis)
    _write_list(d, [(x.name, x.comment) for x in list_flag_versions(vis) if x.name != versionname])
    shutil.rmtree(v.path, ignore_errors=True)
