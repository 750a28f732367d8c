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


@dataclass(frozen=True)
class ClientProgress:
    """``rounds``: rounds with at least one evaluation row (completed rounds);
    ``round``: the latest round number; ``fnr``/``fpr``: that round's rates on ``eval``."""

    rounds: int
    round: int | None = None
    eval: str | None = None
    fnr: float | None = None
    fpr: float | None = None


def read_progress(data: bytes) -> ClientProgress:
    """Summarise one metrics file: completed rounds, and FNR/FPR of the latest round on the
    global test set when the scenario has one, else on the client's validation set."""
    try:
        table = pq.read_table(pa.BufferReader(data), columns=list(COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"unreadable Parquet with columns {', '.join(COLUMNS)}: {exc}") from None
    for name, ok in (("round", pa.types.is_integer), ("eval", _is_text), ("fnr", pa.types.is_floating), ("fpr", pa.types.is_floating)):
        if not ok(table.schema.field(name).type):
            raise ValueError(f"column {name!r} has type {table.schema.field(name).type}, not the results schema's")
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
