"""A client's progress, read from the ``metrics/<client>.parquet`` file it keeps in the store.

The file follows the results schema of ``docs/internals.md`` ("Results"): one row per round and
evaluation set (``eval`` = ``local`` for the client's validation set, ``global`` for the
scenario's global test set). The operator needs only four columns of it (``round``, ``eval``,
``fnr``, ``fpr``) and reads them with pyarrow alone, so its image carries no pandas or torch.

The file is written by a worker, so it is untrusted input: anything unreadable or off-schema is
a :class:`ValueError` saying what is wrong, and non-finite rates are reported as missing
(a status is JSON, which has no NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

#: The columns read; every other column of the results schema is ignored.
COLUMNS = ("round", "eval", "fnr", "fpr")
#: Evaluation sets in order of preference for the rates shown in the status.
EVAL_PREFERENCE = ("global", "local")
#: Most bytes of a metrics file the operator fetches, and most bytes its four columns may
#: decode to: a file of 100,000 rounds is a few MB.
MAX_METRICS_BYTES = 64 * 2**20


def max_rows(rounds: int) -> int:
    """Most rows a metrics file of an experiment of ``rounds`` rounds can hold: one per round
    and evaluation set (two), with room for a round written twice around a restart."""
    return 4 * rounds + 16


@dataclass(frozen=True)
class ClientProgress:
    """``rounds``: rounds with at least one evaluation row (completed rounds);
    ``round``: the latest round number; ``fnr``/``fpr``: that round's rates on ``eval``."""

    rounds: int
    round: int | None = None
    eval: str | None = None
    fnr: float | None = None
    fpr: float | None = None


def read_progress(data: bytes, max_rows: int | None = None) -> ClientProgress:
    """Summarise one metrics file: completed rounds, and FNR/FPR of the latest round on the
    global test set when the scenario has one, else on the client's validation set.

    The column types, the row count (at most ``max_rows``) and the decoded size of the four
    columns (at most :data:`MAX_METRICS_BYTES`) come from the file's metadata and are checked
    before anything is decoded: a small file that would decode to gigabytes is refused."""
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
    if max_rows is not None and metadata.num_rows > max_rows:
        raise ValueError(f"{metadata.num_rows} rows, more than the {max_rows} an experiment of this length writes")
    leaves = {metadata.schema.column(i).path.split(".")[0]: i for i in range(metadata.num_columns)}
    decoded = sum(metadata.row_group(g).column(leaves[name]).total_uncompressed_size
                  for g in range(metadata.num_row_groups) for name in COLUMNS if name in leaves)
    if decoded > MAX_METRICS_BYTES:
        raise ValueError(f"its columns {', '.join(COLUMNS)} decode to {decoded} bytes, over the cap of {MAX_METRICS_BYTES}")
    try:
        table = parquet.read(columns=list(COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"unreadable Parquet with columns {', '.join(COLUMNS)}: {exc}") from None
    rows = table.to_pylist()
    rounds = {row["round"] for row in rows if row["round"] is not None}
    if not rounds:
        return ClientProgress(rounds=0)
    latest = max(rounds)
    by_eval = {row["eval"]: row for row in rows if row["round"] == latest}
    eval_set = next((e for e in EVAL_PREFERENCE if e in by_eval), None)
    if eval_set is None:
        raise ValueError(f"round {latest} has no row with eval in {EVAL_PREFERENCE}: found {sorted(map(str, by_eval))}")
    row = by_eval[eval_set]
    return ClientProgress(rounds=len(rounds), round=latest, eval=eval_set, fnr=_finite(row["fnr"]), fpr=_finite(row["fpr"]))


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
