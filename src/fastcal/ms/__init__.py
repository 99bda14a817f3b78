"""Measurement Set access: metadata, CASA-style selection, chunked reading, column writing.

This package is the only place where visibilities meet casacore (see docs/ms-access.md).

>>> from fastcal.ms import open_ms, read_chunks                       # doctest: +SKIP
>>> info = open_ms("obs.ms"); print(info.summary())                  # doctest: +SKIP
>>> chunks = read_chunks(info, ("DATA", "FLAG", "WEIGHT"), field="J1924*", spw="3:10~50")
"""

from fastcal.ms.info import (
    CORR_NAMES,
    AntennaInfo,
    DataDescInfo,
    FieldInfo,
    IndexColumns,
    MSInfo,
    PolInfo,
    ScanInfo,
    SpwInfo,
    StateInfo,
    format_mjd_s,
    open_ms,
    require_parallel_hands,
)
from fastcal.ms.read import (
    DEFAULT_CHUNK_BYTES,
    READABLE_COLUMNS,
    Chunk,
    iter_blocks,
    ms_lock,
    read_block,
    read_chunks,
)
from fastcal.ms.select import AntennaClause, Selection, parse_selection, row_mask, select_rows
from fastcal.ms.write import WRITABLE_COLUMNS, ChunkWriter, ensure_column, write_column

__all__ = [
    "CORR_NAMES",
    "DEFAULT_CHUNK_BYTES",
    "READABLE_COLUMNS",
    "WRITABLE_COLUMNS",
    "AntennaClause",
    "AntennaInfo",
    "Chunk",
    "ChunkWriter",
    "DataDescInfo",
    "FieldInfo",
    "IndexColumns",
    "MSInfo",
    "PolInfo",
    "ScanInfo",
    "Selection",
    "SpwInfo",
    "StateInfo",
    "ensure_column",
    "format_mjd_s",
    "iter_blocks",
    "ms_lock",
    "open_ms",
    "parse_selection",
    "read_block",
    "read_chunks",
    "require_parallel_hands",
    "row_mask",
    "select_rows",
    "write_column",
]
