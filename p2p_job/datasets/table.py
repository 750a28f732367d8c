"""The in-memory form every dataset loads into, and how scenarios pick rows from it by group.

A :class:`Table` is the whole labelled dataset (§5.1.1) before it is split among clients:
float32 features, a 0/1 label with 1 = malicious, and group columns (device, attack family, …)
that the scenarios of §3.1 use to give each client its own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

#: Family value of every benign row (attack families are e.g. "gafgyt/udp", "DoS/UDP").
BENIGN_FAMILY = "benign"


#: How many dropped-row descriptions a load report keeps.
MAX_PROBLEMS = 5


class DataError(ValueError):
    """Bad input data; the message names the file, row and column where it can."""


#: What a loader did with a column of the file that is not a feature as it stands:
#: ``(column, action, reason)``, action one of :data:`COLUMN_ACTIONS`.
ColumnNote = tuple[str, str, str]
COLUMN_ACTIONS = ("dropped", "label", "group", "transformed")


@dataclass(frozen=True)
class LoadReport:
    """What a loader read and what it dropped: rows (only with ``dataset.dropBadRows``) and
    every column of the file it did not take as a feature as it stands, with the reason
    (``columns``), so no choice of the loader is silent."""

    rows_read: int = 0
    rows_dropped: int = 0
    problems: tuple[str, ...] = ()  # the first few dropped rows, "file: row R (line L), column 'c': …"
    columns: tuple[ColumnNote, ...] = ()

    def __add__(self, other: "LoadReport") -> "LoadReport":
        return LoadReport(
            self.rows_read + other.rows_read,
            self.rows_dropped + other.rows_dropped,
            (self.problems + other.problems)[:MAX_PROBLEMS],
            tuple(dict.fromkeys(self.columns + other.columns)),
        )

    def with_columns(self, *notes: ColumnNote) -> "LoadReport":
        """The report with more column notes (duplicates dropped, order kept)."""
        return replace(self, columns=tuple(dict.fromkeys(self.columns + tuple(tuple(n) for n in notes))))


@dataclass(frozen=True)
class Table:
    """A labelled dataset: row ``i`` is ``features[i]``, ``labels[i]`` and ``groups[g][i]``."""

    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray  # int8 0/1, 1 = malicious
    groups: dict[str, np.ndarray]  # e.g. {"device": str array, "family": str array}
    feature_names: list[str]
    report: LoadReport = field(default_factory=LoadReport)
    #: Feature columns loaded from text as categories: column -> its values; the feature holds the
    #: value's index (a float code), the same in every client since all read the same file.
    categories: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.features.dtype != np.float32 or self.features.ndim != 2 or len(self.features) != n:
            raise ValueError(f"features must be float32 of shape (n, d) with n = {n} labels")
        if self.labels.dtype != np.int8 or not np.isin(self.labels, (0, 1)).all():
            raise ValueError("labels must be int8 0/1")
        if len(self.feature_names) != self.features.shape[1] or len(set(self.feature_names)) != len(self.feature_names):
            raise ValueError("feature_names must name each feature column once")
        for name, values in self.groups.items():
            if len(values) != n:
                raise ValueError(f"group column {name!r} has {len(values)} values for {n} rows")

    def __len__(self) -> int:
        return len(self.labels)

    def with_report(self, report: LoadReport) -> "Table":
        return replace(self, report=report)

    def take(self, rows: np.ndarray) -> "Table":
        """The rows selected by a boolean mask or an index array, in that order."""
        return replace(
            self,
            features=self.features[rows],
            labels=self.labels[rows],
            groups={name: values[rows] for name, values in self.groups.items()},
        )


def concat(tables: list[Table]) -> Table:
    """The rows of several tables with the same columns (the parts of one dataset), in order,
    with their reports added. A categorical column's codes are renumbered into the sorted
    union of every part's values (each part coded its own, :meth:`Sheet.categories`).

    The list is emptied as the rows are copied into the result (allocated once, its pages
    touched only as they are filled), so a part is freed once copied and the peak stays near one
    copy of the rows rather than two."""
    first = tables[0]
    if len(tables) == 1:
        return tables.pop()
    n = sum(len(t) for t in tables)
    categories = {c: sorted(set().union(*(t.categories[c] for t in tables))) for c in first.categories}
    features = np.empty((n, first.features.shape[1]), dtype=np.float32)
    labels = np.empty(n, dtype=np.int8)
    groups = {name: np.empty(n, dtype=np.result_type(*(t.groups[name].dtype for t in tables))) for name in first.groups}
    report, names, at = LoadReport(), list(first.feature_names), 0
    while tables:
        table = tables.pop(0)
        rows = slice(at, at + len(table))
        features[rows] = table.features
        for column, values in table.categories.items():
            j = names.index(column)
            recode = np.searchsorted(np.array(categories[column]), np.array(values, dtype=str)).astype(np.float32)
            features[rows, j] = recode[table.features[:, j].astype(np.int64)] if len(values) else table.features[:, j]
        labels[rows] = table.labels
        for name, values in table.groups.items():
            groups[name][rows] = values
        report, at = report + table.report, at + len(table)
    return Table(features, labels, groups, names, report, categories)


def select_groups(table: Table, selectors: list[str]) -> np.ndarray:
    """Boolean mask of the rows matching any selector (a client's ``benignGroups`` /
    ``maliciousGroups``).

    A selector is ``value`` (matched against every group column) or ``column=value`` (one
    column). Values are hierarchical with ``/``: ``gafgyt`` matches ``gafgyt/udp`` and
    ``gafgyt/tcp``; ``DoS`` matches ``DoS/UDP``. A selector that matches no row is an error
    counting the values that exist (they may be a file's cells, which messages never quote).
    """
    mask = np.zeros(len(table), dtype=bool)
    for selector in selectors:
        column, sep, value = selector.partition("=")
        if sep:
            if column not in table.groups:
                raise DataError(f"group selector {selector!r}: no group column {column!r} (have {sorted(table.groups)})")
            columns = [column]
        else:
            columns, value = list(table.groups), selector
        hit = np.zeros(len(table), dtype=bool)
        for name in columns:
            hit |= within(table.groups[name], value)
        if not hit.any():
            known = ", ".join(f"{len(set(table.groups[name].tolist()))} in {name!r}" for name in columns)
            raise DataError(f"group selector {selector!r} matches no row (distinct group values: {known})")
        mask |= hit
    return mask


def is_within(value: str, wanted: str) -> bool:
    """``value`` is ``wanted`` or lies below it in the ``/`` hierarchy ("gafgyt/udp" is in "gafgyt")."""
    return value == wanted or value.startswith(wanted + "/")


def within(values: np.ndarray, wanted: str) -> np.ndarray:
    """:func:`is_within` over an array of group values."""
    distinct, inverse = np.unique(values.astype(str), return_inverse=True)
    return np.array([is_within(v, wanted) for v in distinct], dtype=bool)[inverse.reshape(-1)]


def check_families(available: set[str], wanted: list[str], source: str) -> None:
    """Each wanted attack family (``dataset.families``) has at least one member among ``available``."""
    for family in wanted:
        if not any(is_within(a, family) for a in available):
            raise DataError(f"{source}: no attack of family {family!r} among its {len(available)} attack families")


def attack_families(table: Table) -> set[str]:
    """The distinct attack families (group ``family``) of the table's malicious rows."""
    return set(np.unique(table.groups["family"][table.labels == 1]).tolist())


def family_mask(table: Table, families: list[str]) -> np.ndarray:
    """Mask of the benign rows and of the attack rows in any of ``families`` (unchecked)."""
    mask = table.labels == 0
    for family in families:
        mask |= within(table.groups["family"], family) & (table.labels == 1)
    return mask
