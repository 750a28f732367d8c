"""Collecting a dataset's rows chunk by chunk, all of them or, with ``dataset.maxRowsPerKind``, a
bounded uniform sample of each kind of row, so a dataset of tens of millions of rows (UNSW
BoT-IoT's full set: 73M) never has them all in memory.

A kind is one combination of label and group values (BoT-IoT: "benign", "DoS/UDP", …; tabular:
the label value and the group column's value). Each row gets a pseudo-random key from its
position among the rows read (a SplitMix64 hash: the same files give the same sample, whatever
the chunk size); a kind with more rows than the limit keeps the rows with the smallest keys — a
uniform sample without replacement (bottom-k sampling) — merged chunk by chunk, in file order.
The scenario then draws each client's rows from the sample with the experiment's seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from p2p_job.datasets.table import Table, concat

#: SplitMix64's constants.
_GAMMA, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def row_keys(start: int, n: int) -> np.ndarray:
    """SplitMix64 of the positions ``start … start + n - 1``: uniform uint64 keys."""
    with np.errstate(over="ignore"):
        x = (np.arange(start, start + n, dtype=np.uint64) + np.uint64(1)) * _GAMMA
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


class Rows:
    """The rows of a dataset's chunks (:meth:`add`), all or at most ``limit`` of each kind."""

    def __init__(self, limit: int | None = None):
        self.limit = limit
        self.parts: list[Table] = []
        self.keys: list[np.ndarray] = []
        self.seen = 0  # rows added
        self.kept = 0  # rows kept at the last shrink
        self.pending = 0  # rows added since

    def add(self, table: Table) -> None:
        self.parts.append(table)
        self.keys.append(row_keys(self.seen, len(table)))
        self.seen += len(table)
        self.pending += len(table)
        if self.limit is not None and self.pending > max(4 * self.limit, self.kept):  # amortised: each row is merged O(1) times
            self._shrink()

    def table(self) -> Table:
        """The rows kept, in the order read; with a limit, the load report says how many."""
        if self.limit is None:
            return concat(self.parts)
        self._shrink()
        table = self.parts[0]
        return table.with_report(table.report.with_columns((
            "(rows)", "sampled",
            f"dataset.maxRowsPerKind {self.limit:,}: {len(table):,} of the {self.seen:,} rows read kept; "
            f"each kind (label and group values) with more rows is a uniform sample of {self.limit:,}",
        )))

    def _shrink(self) -> None:
        table, keys = concat(self.parts), np.concatenate(self.keys)
        kind = pd.DataFrame({"label": table.labels, **table.groups}).groupby(list(["label", *table.groups]), sort=False).ngroup().to_numpy()
        order = np.lexsort((keys, kind))  # by kind, then key
        first = np.searchsorted(kind[order], kind[order], side="left")
        keep = np.sort(order[np.arange(len(order)) - first < self.limit])  # each kind's smallest keys, in the order read
        self.parts, self.keys, self.kept, self.pending = [table.take(keep)], [keys[keep]], len(keep), 0
