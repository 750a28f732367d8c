"""Any tabular dataset: a CSV (comma, semicolon or tab; gzipped or not) or Parquet file with
named feature columns and a label column.

Label values listed in ``dataset.benignValues`` are benign (0); every other value is malicious
(1). Values are compared as text, as written in a CSV (``"0"``, ``"normal"``) or as ``str()``
of a Parquet value. Groups: the label column's values (so a client may take one attack type)
and ``dataset.groupColumn`` when given (device, site, …) — any column can drive the partition.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.datasets.reading import Sheet, first_row, read_chunks
from p2p_job.datasets.sampling import Rows
from p2p_job.datasets.table import DataError, Table

PARQUET_SUFFIXES = (".parquet", ".pq")


#: Under ``dataset.preprocessing.auto``, a text column with at most this many distinct values (and
#: at most half as many as rows, so values repeat) is loaded as a category (one-hot encoded); one
#: with more (addresses, identifiers) is not.
MAX_AUTO_CATEGORIES = 32


def load(
    paths: list[Path],
    features: list[str] | None,
    label_column: str,
    benign_values: list[str],
    group_column: str | None,
    drop_bad_rows: bool,
    categorical: list[str] = (),
    auto: bool = False,
    columns: list[str] | None = None,
    hex_columns: list[str] = (),
    max_rows_per_kind: int | None = None,
) -> Table:
    """Rows of every part (``dataset.path`` may name several files: :mod:`p2p_job.datasets.parts`);
    ``features`` default to every column but label and group that holds numbers. ``categorical``
    columns (``dataset.preprocessing.categorical``) are read as text and become category codes
    (:meth:`~p2p_job.datasets.reading.Sheet.categories`), after the other features unless
    ``features`` places them. With ``auto`` (``dataset.preprocessing.auto``), so do the text
    columns (no number in them) among ``features`` (default: all but label and group) that hold
    at most :data:`MAX_AUTO_CATEGORIES` distinct values, each on two rows or more on average.
    ``columns``: the names of headerless CSV files (``dataset.columns`` /
    ``dataset.columnNamesFile``). ``hex_columns`` (``dataset.hexColumns``) hold numbers that may
    be written in hexadecimal (``0x0303``). ``max_rows_per_kind`` (``dataset.maxRowsPerKind``):
    keep a uniform sample of at most that many rows of each label and group value
    (:mod:`p2p_job.datasets.sampling`).

    The default features and ``auto``'s categories are decided on the first part's first chunk
    (:data:`~p2p_job.datasets.reading.CHUNK_ROWS` rows); every part must have the columns they
    name, and the other columns are dropped from each chunk as it is read."""
    text = [label_column] + ([group_column] if group_column else [])
    listed, hexes = list(categorical), list(hex_columns)
    known = frozenset([*text, *listed, *hexes, *(features or []), *(columns or [])])  # names the spec gave
    roles, rows, label_values = None, Rows(max_rows_per_kind), set()
    for path, sheet in _sheets(paths, columns, features, text, listed, hexes, drop_bad_rows, known, lambda: roles):
        sheet.require([*text, *listed, *hexes])
        if roles is None:
            roles = _roles(sheet, path, features, text, listed, hexes, auto, group_column)
        names, categorical, notes = roles
        numeric = [c for c in names if c not in categorical]
        frame = sheet.frame
        label_text = frame[label_column].to_numpy(dtype=object).astype(str)
        label_values |= set(np.unique(label_text).tolist())
        problems = {c: (frame[c].isna().to_numpy(), "missing value") for c in [*text, *categorical]}
        X, keep, report = sheet.features(numeric, drop_bad_rows, problems)
        codes, categories = sheet.categories(categorical, keep)
        groups = {c: frame[c].to_numpy(dtype=object).astype(str)[keep] for c in text}
        labels = (~np.isin(label_text[keep], benign_values)).astype(np.int8)
        by_name = {**{c: X[:, j] for j, c in enumerate(numeric)}, **{c: codes[:, j] for j, c in enumerate(categorical)}}
        features_of_part = np.column_stack([by_name[c] for c in names]).astype(np.float32) if names else np.empty((len(labels), 0), np.float32)
        rows.add(Table(features_of_part, labels, groups, names, report.with_columns(*notes), categories))
    for value in benign_values:
        if value not in label_values:
            where = paths[0] if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)"
            raise DataError(f"{where}: dataset.benignValues {value!r} never occurs in column {label_column!r} "
                            f"({len(label_values)} distinct value(s) there)")
    table = rows.table()
    return table.with_report(table.report.with_columns(*(
        (c, "categorical", f"{'dataset.preprocessing.categorical' if c in listed else 'dataset.preprocessing.auto: a text column'}: "
                           f"a category ({len(table.categories[c])} values), one-hot encoded")
        for c in categorical
    )))


def _roles(sheet: Sheet, path: Path, features: list[str] | None, text: list[str], listed: list[str], hexes: list[str], auto: bool,
           group_column: str | None) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """From the first chunk: the feature columns in order, which of them are categories, and the
    notes on every other column of the file."""
    frame = sheet.frame
    categorical = listed
    if auto:
        categorical = listed + [
            c for c in frame.columns
            if c not in text and c not in categorical and c not in hexes and (features is None or c in features)
            and not _holds_numbers(frame[c]) and frame[c].nunique(dropna=False) <= min(MAX_AUTO_CATEGORIES, len(frame) / 2)
        ]  # fmt: skip
    names = list(features or [c for c in frame.columns if c not in text and c not in categorical and (c in hexes or _holds_numbers(frame[c]))])
    names += [c for c in categorical if c not in names]
    not_features = [c for c in hexes if c not in names]
    if not_features:
        raise DataError(f"dataset.hexColumns: {not_features} not among the features (list them in dataset.features)")
    if not [c for c in names if c not in categorical]:
        raise DataError(f"{path}: no numeric feature columns besides {text}; name them in dataset.features")
    all_columns = list(sheet.file_columns or frame.columns)
    notes = _column_notes(all_columns, names, text[0], group_column, features is not None)
    notes += [(c, "transformed", "dataset.hexColumns: numbers written 0x… read in hexadecimal") for c in hexes]
    return names, categorical, notes


def _column_notes(columns: list[str], names: list[str], label_column: str, group_column: str | None, listed: bool) -> list[tuple[str, str, str]]:
    """What the loader did with each column that is not a feature."""
    notes = [(label_column, "label", "dataset.labelColumn: dataset.benignValues are benign, every other value malicious")]
    if group_column:
        notes.append((group_column, "group", "dataset.groupColumn: a group column for the scenario's selectors"))
    for column in columns:
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


def _sheets(paths: list[Path], columns: list[str] | None, features: list[str] | None, text: list[str], listed: list[str], hexes: list[str],
            drop_bad_rows: bool, known: frozenset[str], roles) -> Iterator[tuple[Path, Sheet]]:
    """Every part in chunks, each keeping the columns in use: those ``features`` name, or, once
    the first chunk has decided them (``roles()``), the features found there (until then, all)."""
    for path in paths:
        used = roles()[0] if roles() else [*features, *listed, *hexes] if features is not None else None
        needed = None if used is None else list(dict.fromkeys([*text, *used]))
        for sheet in _read(path, columns, [*text, *listed], hexes, drop_bad_rows, known, needed):
            yield path, sheet


def _read(path: Path, columns: list[str] | None, text_columns: list[str], hex_columns: list[str], drop_bad_rows: bool,
          known: frozenset[str], usecols: list[str] | None) -> Iterator[Sheet]:
    """One part, CSV (with a header row, or headerless with ``columns``) in chunks, or Parquet."""
    if not path.name.endswith(PARQUET_SUFFIXES):
        names = None
        if columns:
            header = first_row(path)
            if header != columns:  # a first line that is exactly the names is a header row
                if len(header) != len(columns):
                    raise DataError(f"{path}: {len(header)} fields on the first line where dataset.columns / dataset.columnNamesFile names {len(columns)}")
                names = columns
        yield from read_chunks(path, names, columns=usecols, text_columns=text_columns, hex_columns=hex_columns, drop_bad_rows=drop_bad_rows,
                               known=known)
        return
    if columns:
        raise DataError(f"{path}: a Parquet file names its own columns; dataset.columns / dataset.columnNamesFile are for headerless CSV files")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        file_columns = pq.read_schema(path).names
        missing = [c for c in usecols or [] if c not in file_columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; the file has {len(file_columns)} column(s)")
        frame = pd.read_parquet(path, columns=usecols)
    except DataError:
        raise
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from None
    frame.columns = [str(c) for c in frame.columns]
    yield Sheet(str(path), frame, header_lines=None, known=known, hex_columns=frozenset(hex_columns),
                file_columns=tuple(str(c) for c in file_columns))
