"""A client's progress, read from the metrics parts it keeps in the store.

A worker writes one part per round, ``metrics/<client>/<r:05d>.parquet`` (DESIGN, "Store
layout"), in the results schema of ``docs/internals.md`` ("Results"): one row per evaluation set
(``eval`` = ``local`` for the client's validation set, ``global`` for the scenario's global test
set). The rounds done are the parts listed (:func:`part_rounds`, from their names alone); only
the latest part is fetched, and of it only four columns (``round``, ``eval``, ``fnr``, ``fpr``),
with pyarrow alone, so the operator's image carries no pandas or torch and its cost per look
does not grow with the rounds.

Parts are written by a worker, so they are untrusted input: a listing with more parts than the
experiment has rounds, a name that is no part, anything unreadable or off-schema is a
:class:`ValueError` saying what is wrong, and non-finite rates are reported as missing (a status
is JSON, which has no NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.store import metrics_round

#: The columns read; every other column of the results schema is ignored.
COLUMNS = ("round", "eval", "fnr", "fpr")
#: Evaluation sets in order of preference for the rates shown in the status.
EVAL_PREFERENCE = ("global", "local")
#: Most bytes of a metrics part the operator fetches, and most bytes its four columns may
#: decode to: a part (one round) is a few KiB.
MAX_METRICS_BYTES = 2**20
#: Most rows a part may hold: one per evaluation set (two), with room.
MAX_PART_ROWS = 16


@dataclass(frozen=True)
class ClientProgress:
    """``rounds``: rounds with at least one evaluation row (completed rounds);
    ``round``: the latest round number; ``fnr``/``fpr``: that round's rates on ``eval``."""

    rounds: int
    round: int | None = None
    eval: str | None = None
    fnr: float | None = None
    fpr: float | None = None


def part_rounds(keys: list[str], prefix: str, rounds: int) -> list[int]:
    """The rounds of the parts listed under a client's metrics ``prefix`` (list at most
    ``rounds + 1`` keys), sorted: each key must be ``<prefix><r:05d>.parquet`` with
    1 ≤ r ≤ ``rounds``, and there can be no more parts than rounds."""
    if len(keys) > rounds:
        raise ValueError(f"more than the {rounds} parts an experiment of {rounds} rounds writes")
    found = []
    for key in keys:
        r = metrics_round(key, prefix)
        if r is None or not 1 <= r <= rounds:
            raise ValueError(f"{key[len(prefix):]!r} is no metrics part of rounds 1..{rounds} (<r:05d>.parquet)")
        found.append(r)
    return sorted(found)


def read_progress(done: list[int], data: bytes) -> ClientProgress:
    """A client's progress: the rounds it has done (``done``, :func:`part_rounds`) and FNR/FPR
    of the latest on the global test set when the scenario has one, else on the client's
    validation set, from ``data``, that round's part.

    The column types, the row count (at most :data:`MAX_PART_ROWS`) and the decoded size of the
    four columns (at most :data:`MAX_METRICS_BYTES`) come from the part's metadata and are
    checked before anything is decoded: a small file that would decode to gigabytes is refused."""
    if not done:
        return ClientProgress(rounds=0)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema, metadata = parquet.schema_arrow, parquet.metadata
        for name in COLUMNS:
            schema.field(name)
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(f"unreadable Parquet with columns {', '.join(COLUMNS)}: {exc}") from None
    for name, ok in (("round", pa.types.is_integer), ("eval", _is_text), ("fnr", pa.types.is_floating), ("fpr", pa.types.is_floating)):
        if not ok(schema.field(name).type):
            raise ValueError(f"column {name!r} has type {schema.field(name).type}, not the results schema's")
    if metadata.num_rows > MAX_PART_ROWS:
        raise ValueError(f"{metadata.num_rows} rows, more than the {MAX_PART_ROWS} a round's part holds")
    leaves = {metadata.schema.column(i).path.split(".")[0]: i for i in range(metadata.num_columns)}
    decoded = sum(metadata.row_group(g).column(leaves[name]).total_uncompressed_size
                  for g in range(metadata.num_row_groups) for name in COLUMNS if name in leaves)
    if decoded > MAX_METRICS_BYTES:
        raise ValueError(f"its columns {', '.join(COLUMNS)} decode to {decoded} bytes, over the cap of {MAX_METRICS_BYTES}")
    try:
        table = parquet.read(columns=list(COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"unreadable Parquet with columns {', '.join(COLUMNS)}: {exc}") from None
    latest = done[-1]
    rows = table.to_pylist()
    other = sorted({row["round"] for row in rows if row["round"] != latest}, key=str)
    if other:
        raise ValueError(f"the part of round {latest} holds rows of round(s) {other}")
    by_eval = {row["eval"]: row for row in rows}
    eval_set = next((e for e in EVAL_PREFERENCE if e in by_eval), None)
    if eval_set is None:
        raise ValueError(f"round {latest} has no row with eval in {EVAL_PREFERENCE}: found {sorted(map(str, by_eval))}")
    row = by_eval[eval_set]
    return ClientProgress(rounds=len(done), round=latest, eval=eval_set, fnr=_finite(row["fnr"]), fpr=_finite(row["fpr"]))


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
