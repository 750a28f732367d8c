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


#: Under ``dataset.preprocessing.auto``, a text column with at most this many distinct values (and
#: at most half as many as rows, so values repeat) is loaded as a category (one-hot encoded); one
#: with more (addresses, identifiers) is not.
MAX_AUTO_CATEGORIES = 32


def load(
    path: Path,
    features: list[str] | None,
    label_column: str,
    benign_values: list[str],
    group_column: str | None,
    drop_bad_rows: bool,
    categorical: list[str] = (),
    auto: bool = False,
) -> Table:
    """Rows of the file; ``features`` default to every column but label and group that holds
    numbers. ``categorical`` columns (``dataset.preprocessing.categorical``) are read as text
    and become category codes (:meth:`~p2p_job.datasets.reading.Sheet.categories`), after the
    other features unless ``features`` places them. With ``auto``
    (``dataset.preprocessing.auto``), so do the text columns (no number in them) among
    ``features`` (default: all but label and group) that hold at most
    :data:`MAX_AUTO_CATEGORIES` distinct values, each on two rows or more on average."""
    text = [label_column] + ([group_column] if group_column else [])
    categorical = listed = list(categorical)
    known = frozenset([*text, *categorical, *(features or [])])  # names the spec gave
    sheet = _read(path, [*text, *categorical], drop_bad_rows, known)
    sheet.require([*text, *categorical])
    frame = sheet.frame
    if auto:
        categorical = listed + [
            c for c in frame.columns
            if c not in text and c not in categorical and (features is None or c in features)
            and not _holds_numbers(frame[c]) and frame[c].nunique(dropna=False) <= min(MAX_AUTO_CATEGORIES, len(frame) / 2)
        ]  # fmt: skip
    names = list(features or [c for c in frame.columns if c not in text and c not in categorical and _holds_numbers(frame[c])])
    names += [c for c in categorical if c not in names]
    numeric = [c for c in names if c not in categorical]
    if not numeric:
        raise DataError(f"{path}: no numeric feature columns besides {text}; name them in dataset.features")

    label_text = frame[label_column].to_numpy(dtype=object).astype(str)
    for value in benign_values:
        if value not in label_text:
            raise DataError(f"{path}: dataset.benignValues {value!r} never occurs in column {label_column!r} "
                            f"({len(set(label_text.tolist()))} distinct value(s) there)")
    problems = {c: (frame[c].isna().to_numpy(), "missing value") for c in [*text, *categorical]}
    X, keep, report = sheet.features(numeric, drop_bad_rows, problems)
    codes, categories = sheet.categories(categorical, keep)
    groups = {c: frame[c].to_numpy(dtype=object).astype(str)[keep] for c in text}
    labels = (~np.isin(label_text[keep], benign_values)).astype(np.int8)
    columns = {**{c: X[:, j] for j, c in enumerate(numeric)}, **{c: codes[:, j] for j, c in enumerate(categorical)}}
    notes = _column_notes(frame, names, label_column, group_column, features is not None)
    notes += [
        (c, "categorical", f"{'dataset.preprocessing.categorical' if c in listed else 'dataset.preprocessing.auto: a text column'}: "
                           f"a category ({len(categories[c])} values), one-hot encoded")
        for c in categorical
    ]
    return Table(np.column_stack([columns[c] for c in names]).astype(np.float32), labels, groups, names, report.with_columns(*notes), categories)


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
            reason = (
                "holds no number (text): not a feature by default; list it in dataset.features or encode it (dataset.preprocessing.categorical; "
                f"dataset.preprocessing.auto does for text columns of at most {MAX_AUTO_CATEGORIES} values)"
            )
        notes.append((str(column), "dropped", reason))
    return notes


def _holds_numbers(column: pd.Series) -> bool:
    """A default feature column: numeric, or text with at least one number in it (its other
    cells are then reported as bad, not silently lost with the column)."""
    return pd.api.types.is_numeric_dtype(column) or bool(pd.to_numeric(column, errors="coerce").notna().any())


def _read(path: Path, text_columns: list[str], drop_bad_rows: bool, known: frozenset[str]) -> Sheet:
    if not path.name.endswith(PARQUET_SUFFIXES):
        return read_delimited(path, text_columns=text_columns, drop_bad_rows=drop_bad_rows, known=known)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    return Sheet(str(path), frame, header_lines=None, known=known)
