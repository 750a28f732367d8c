"""Any tabular dataset: a CSV (comma, semicolon or tab; gzipped or not) or Parquet file with
named feature columns and a label column.

Label values listed in ``dataset.benignValues`` are benign (0); every other value is malicious
(1). Values are compared as text, as written in a CSV (``"0"``, ``"normal"``) or as ``str()``
of a Parquet value. Groups: the label column's values (so a client may take one attack type)
and ``dataset.groupColumn`` when given (device, site, …) — any column can drive the partition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from p2p_job.datasets.reading import Sheet, read_delimited
from p2p_job.datasets.table import DataError, Table

PARQUET_SUFFIXES = (".parquet", ".pq")


def load(
    path: Path,
    features: list[str] | None,
    label_column: str,
    benign_values: list[str],
    group_column: str | None,
    drop_bad_rows: bool,
) -> Table:
    """Rows of the file; ``features`` default to every column but label and group that holds numbers."""
    text = [label_column] + ([group_column] if group_column else [])
    sheet = _read(path, text, drop_bad_rows)
    sheet.require(text)
    frame = sheet.frame
    names = features or [c for c in frame.columns if c not in text and _holds_numbers(frame[c])]
    if not names:
        raise DataError(f"{path}: no numeric feature columns besides {text}; name them in dataset.features")

    label_text = frame[label_column].to_numpy(dtype=object).astype(str)
    for value in benign_values:
        if value not in label_text:
            seen = sorted(set(label_text.tolist()))[:20]
            raise DataError(f"{path}: dataset.benignValues {value!r} never occurs in column {label_column!r}; values: {seen}")
    problems = {c: (frame[c].isna().to_numpy(), "missing value") for c in text}
    X, keep, report = sheet.features(names, drop_bad_rows, problems)
    groups = {c: frame[c].to_numpy(dtype=object).astype(str)[keep] for c in text}
    labels = (~np.isin(label_text[keep], benign_values)).astype(np.int8)
    return Table(X, labels, groups, list(names), report.with_columns(*_column_notes(frame, names, label_column, group_column, features is not None)))


def _column_notes(frame: pd.DataFrame, names: list[str], label_column: str, group_column: str | None, listed: bool) -> list[tuple[str, str, str]]:
    """What the loader did with each column that is not a feature."""
    notes = [(label_column, "label", "dataset.labelColumn: dataset.benignValues are benign, every other value malicious")]
    if group_column:
        notes.append((group_column, "group", "dataset.groupColumn: a group column for the scenario's selectors"))
    for column in frame.columns:
        if column in names or column in (label_column, group_column):
            continue
        if listed:
            reason = "not listed in dataset.features"
        else:
            reason = "holds no number (text): not a feature by default; list it in dataset.features or encode it (dataset.preprocessing.categorical)"
        notes.append((str(column), "dropped", reason))
    return notes


def _holds_numbers(column: pd.Series) -> bool:
    """A default feature column: numeric, or text with at least one number in it (its other
    cells are then reported as bad, not silently lost with the column)."""
    return pd.api.types.is_numeric_dtype(column) or bool(pd.to_numeric(column, errors="coerce").notna().any())


def _read(path: Path, text_columns: list[str], drop_bad_rows: bool) -> Sheet:
    if not path.name.endswith(PARQUET_SUFFIXES):
        return read_delimited(path, text_columns=text_columns, drop_bad_rows=drop_bad_rows)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    return Sheet(str(path), frame, header_lines=None)
