"""A ``dataset.path`` that names several files, and the column names of headerless files.

Large datasets come in parts: UNSW BoT-IoT's full dataset is 74 CSV files
(``UNSW_2018_IoT_Botnet_Dataset_1.csv`` … ``_74.csv``) without a header row, whose column names
are in a separate one-line file (``UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv``).
``dataset.path`` may be one file, a folder (every data file directly in it) or a glob pattern
(``data/UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv``); the parts are read one at a time, in
natural order (``_2`` before ``_10``), and their rows concatenated
(:func:`p2p_job.datasets.table.concat`). ``dataset.columns`` or ``dataset.columnNamesFile``
names the columns of headerless files.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from p2p_job.datasets.reading import first_row
from p2p_job.datasets.table import DataError

#: Characters that make ``dataset.path`` a glob pattern (when no file has that very name).
GLOB_CHARS = "*?["
#: Files a folder's listing takes as parts.
DATA_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")


def files(path: Path, exclude: Path | None = None) -> list[Path]:
    """The files ``path`` names, in natural order: itself, a folder's data files
    (:data:`DATA_SUFFIXES`, hidden files left out), or a glob pattern's matches. ``exclude``
    (the column-names file, which often lies beside the parts) is never one of them."""
    if not path.exists() and any(c in str(path) for c in GLOB_CHARS):
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
        what = "no file matches the pattern dataset.path"
    elif path.is_dir():
        found = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(DATA_SUFFIXES)]
        what = f"the folder holds no data file ({', '.join(DATA_SUFFIXES)})"
    else:
        return [path]  # the reader says whether it exists
    if exclude is not None:
        found = [p for p in found if not _same(p, exclude)]
    if not found:
        raise DataError(f"{path}: {what}")
    return sorted(found, key=natural_order)


def exists(path: Path) -> bool:
    """``path`` is a file or folder, or a glob pattern that matches a file."""
    return path.exists() or (any(c in str(path) for c in GLOB_CHARS) and any(Path(p).is_file() for p in glob.iglob(str(path), recursive=True)))


def natural_order(path: Path) -> list:
    """Sort key: the path with each run of digits compared as a number (``_2`` before ``_10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(path))]


def column_names(columns: list[str] | None, names_file: Path | None) -> list[str] | None:
    """The column names of headerless files: ``dataset.columns``, or the fields of the first
    line of ``dataset.columnNamesFile`` (comma, semicolon or tab separated), or None."""
    if names_file is None:
        return columns
    names = [name.strip().lstrip("\ufeff") for name in first_row(names_file)]
    if any(not name for name in names):
        raise DataError(f"{names_file} (dataset.columnNamesFile): an empty column name at position {names.index('') + 1}")
    duplicate = next((i for i, name in enumerate(names) if name in names[:i]), None)
    if duplicate is not None:
        raise DataError(f"{names_file} (dataset.columnNamesFile): column {duplicate + 1} repeats an earlier name")
    return names


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
