"""Reading data files into checked float32 features: shared by every file-based loader.

A bad cell (missing, non-numeric, non-finite or beyond float32) is an error naming the file,
row and column, unless the spec says ``dataset.dropBadRows``: then its row is dropped and
counted in the :class:`~p2p_job.datasets.table.LoadReport`.

Messages never quote the file's contents (a cell, a header, a byte): ``dataset.path`` may name
a file that is not data at all, and an error travels to logs, terminals and the operator's
status. A column is named by its position in the file, and by its name only where the spec or
the dataset's own layout gave that name (``known``); a row by its number.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from p2p_job.datasets.table import MAX_PROBLEMS, DataError, LoadReport

log = logging.getLogger(__name__)

#: Delimiters a CSV may use; the sniffer picks among these only.
DELIMITERS = ",;\t"
#: Rows of a file read at once by :func:`read_chunks`.
CHUNK_ROWS = 50_000
#: Bytes of text the sniffer looks at.
SNIFF_CHARS = 64 * 1024


def read_delimited(path: Path, names: list[str] | None = None, *, text_columns: list[str] = (), drop_bad_rows: bool = False,
                   known: frozenset[str] | set[str] = frozenset(), hex_columns: list[str] = ()) -> "Sheet":
    """Read a ``.csv`` / ``.tsv`` file, gzipped or not, whose delimiter (comma, semicolon or
    tab) is sniffed. ``names`` given: the file has no header and these are its columns.
    ``text_columns`` are kept as written (labels, group values), the rest parsed as numbers.
    ``known``: the column names messages may quote (given by the spec or the dataset's layout).
    ``hex_columns`` are read as text and parsed by :meth:`Sheet.features` as decimal or ``0x``
    hexadecimal numbers (BoT-IoT's ports).

    A line with too many fields is an error naming the line, or dropped with ``drop_bad_rows``.
    """
    return next(read_chunks(path, names, text_columns=text_columns, drop_bad_rows=drop_bad_rows, known=known, hex_columns=hex_columns,
                            whole=True))


def read_chunks(path: Path, names: list[str] | None = None, *, columns: list[str] | None = None, text_columns: list[str] = (),
                drop_bad_rows: bool = False, known: frozenset[str] | set[str] = frozenset(), hex_columns: list[str] = (),
                whole: bool = False) -> Iterator["Sheet"]:
    """:func:`read_delimited` in chunks of :data:`CHUNK_ROWS` rows (``whole``: the file as one),
    each a :class:`Sheet` that keeps only ``columns`` (default: all) and knows where its rows
    lie in the file: a large file never has all its rows, or its other columns, in memory at
    once. Every field of every line is still parsed, so a line with too many fields is caught
    (pandas would drop them silently if it were told to read some columns only)."""
    sep = sniff_delimiter(path)
    file_columns = tuple(names) if names else tuple(first_row(path))
    if columns is not None:
        missing = [c for c in columns if c not in file_columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; the file has {len(file_columns)} column(s)")
    text = {c: str for c in [*text_columns, *hex_columns]}
    options = dict(sep=sep, header=None if names else 0, names=names, skipinitialspace=True, dtype=text)
    sheet = dict(known=frozenset(known), hex_columns=frozenset(hex_columns), file_columns=file_columns if columns is not None else None)
    keep = (lambda frame: frame[columns]) if columns is not None else (lambda frame: frame)
    offset = 0
    try:
        try:
            with pd.read_csv(path, chunksize=None if whole else CHUNK_ROWS, iterator=True, **options) as reader:
                for frame in [reader.read()] if whole else reader:
                    yield Sheet(str(path), keep(frame).reset_index(drop=True), header_lines=0 if names else 1, row_offset=offset, **sheet)
                    offset += len(frame)
            return
        except pd.errors.ParserError as exc:
            if not drop_bad_rows:
                raise DataError(f"{path}: {exc}") from None
        malformed: list[list[str]] = []  # the rest of the file, its malformed lines dropped, in one piece
        frame = pd.read_csv(path, engine="python", on_bad_lines=lambda fields: malformed.append(fields), **options)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None  # the byte itself is not quoted
    problems = tuple(f"{path}: a line with {len(f)} fields, expected {frame.shape[1]}" for f in malformed)
    yield Sheet(str(path), keep(frame.iloc[offset:]).reset_index(drop=True), header_lines=None, row_offset=offset,
                malformed=LoadReport(len(malformed), len(malformed), problems[:MAX_PROBLEMS]), **sheet)


def sniff_delimiter(path: Path) -> str:
    """The delimiter of a text file, gzipped or not (:class:`csv.Sniffer` over its start)."""
    return _sniff(path)[0]


def first_row(path: Path) -> list[str]:
    """The fields of a text file's first non-blank line, as :func:`read_delimited` splits them
    (so a loader can tell a header row without parsing the whole file)."""
    sep, sample = _sniff(path)
    first = next(line for line in sample.splitlines() if line.strip())  # _sniff refuses a blank file
    return next(csv.reader([first], delimiter=sep, skipinitialspace=True))


def _sniff(path: Path) -> tuple[str, str]:
    """The delimiter of a text file and the start of the file it was told from."""
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:  # a byte-order mark is not a header
            sample = f.read(SNIFF_CHARS)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not sample.strip():
        raise DataError(f"{path}: empty file")
    if len(sample) == SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter, sample
    except csv.Error:  # the line is not quoted: dataset.path may name a file that is not data (a key, a token)
        raise DataError(f"{path}: cannot tell the delimiter (comma, semicolon or tab) from its first lines; not a CSV/TSV file?") from None


@dataclass(frozen=True)
class Sheet:
    """One file read into a frame; ``header_lines`` locates data rows in the file for messages
    (None when unknown, e.g. for Parquet or after malformed lines were skipped); ``known`` the
    column names messages may quote (the others are named by position only); ``hex_columns``
    those whose numbers may be written in hexadecimal (``0x0303``); ``file_columns`` every
    column of the file in order, when the frame holds only some of them (positions in messages
    are the file's); ``row_offset`` the rows of the file before the frame's first."""

    source: str
    frame: pd.DataFrame
    header_lines: int | None
    malformed: LoadReport = LoadReport()
    known: frozenset[str] = frozenset()
    hex_columns: frozenset[str] = frozenset()
    file_columns: tuple[str, ...] | None = None
    row_offset: int = 0  # the file's rows before the frame's first (a chunk of a large file)

    def where(self, row: int, column: str) -> str:
        row += self.row_offset
        line = f" (line {row + self.header_lines + 1})" if self.header_lines is not None else ""
        return f"{self.source}: row {row + 1}{line}, {self.column(column)}"

    def column(self, column: str) -> str:
        """``column N`` (its position in the file, from 1), with its name when ``known``."""
        position = list(self.file_columns or self.frame.columns).index(column) + 1
        return f"column {position} ({column!r})" if column in self.known else f"column {position}"

    def require(self, columns: list[str]) -> None:
        """Every column is present, else an error naming the missing ones (names the caller
        asked for, never the file's own header)."""
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            raise DataError(f"{self.source}: missing column(s) {missing}; the file has {self.frame.shape[1]} column(s)")

    def features(self, columns: list[str], drop_bad_rows: bool, row_problems: dict[str, tuple[np.ndarray, str]] | None = None) -> tuple[np.ndarray, np.ndarray, LoadReport]:
        """The columns as float32 ``(n, d)`` of the good rows, the mask of those rows, and the
        report. ``row_problems`` adds other per-row checks: ``{column: (bad mask, reason)}``
        (e.g. a label outside 0/1)."""
        self.require(columns)
        raw = self.frame[columns]
        if all(pd.api.types.is_numeric_dtype(t) for t in raw.dtypes):
            values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = np.column_stack([numbers(raw[c], c in self.hex_columns) for c in columns])
        with np.errstate(over="ignore"):  # beyond float32 becomes inf: reported below
            features = values.astype(np.float32)
        bad_cells = ~np.isfinite(features)
        checks = row_problems or {}
        bad_rows = bad_cells.any(axis=1)
        for mask, _ in checks.values():
            bad_rows |= mask
        rows = np.flatnonzero(bad_rows)
        problems = tuple(self._describe(r, columns, bad_cells, checks) for r in rows[:MAX_PROBLEMS])
        if len(rows) and not drop_bad_rows:
            raise DataError(problems[0] + " (set dataset.dropBadRows to drop such rows)")
        report = self.malformed + LoadReport(len(self.frame), len(rows), problems)
        if report.rows_dropped:
            log.warning("dropped %d bad row(s) of %d from %s; first: %s", report.rows_dropped, report.rows_read, self.source, report.problems[0])
        keep = ~bad_rows
        return features[keep], keep, report

    def categories(self, columns: list[str], keep: np.ndarray) -> tuple[np.ndarray, dict[str, list[str]]]:
        """Categorical columns of the kept rows as codes (float32 ``(n, len(columns))``): each
        value's index in the column's sorted distinct values (as text), and those values."""
        self.require(columns)
        codes, vocabularies = [], {}
        for column in columns:
            text = self.frame[column].to_numpy(dtype=object).astype(str)[keep]
            vocabularies[column], index = np.unique(text, return_inverse=True)
            vocabularies[column] = vocabularies[column].tolist()
            codes.append(index.astype(np.float32))
        return np.column_stack(codes) if codes else np.empty((int(keep.sum()), 0), np.float32), vocabularies

    def _describe(self, row: int, columns: list[str], bad_cells: np.ndarray, checks: dict[str, tuple[np.ndarray, str]]) -> str:
        for column, (mask, reason) in checks.items():
            if mask[row]:
                return f"{self.where(row, column)}: {reason}"
        column = columns[int(np.argmax(bad_cells[row]))]
        value = self.frame[column].iloc[row]
        if pd.isna(value):
            reason = "missing value"
        elif column in self.hex_columns and np.isnan(numbers(pd.Series([value]), True)[0]):
            reason = "not a number (decimal, or hexadecimal written 0x…)"
        elif np.isnan(numbers(pd.Series([value]))[0]):
            hexadecimal = bool(re.fullmatch(HEX_NUMBER, str(value).strip()))
            reason = "not a number (hexadecimal: for kind tabular, list the column in dataset.hexColumns)" if hexadecimal else "not a number"
        else:
            reason = "a number that is not finite or beyond float32"
        return f"{self.where(row, column)}: {reason}"


#: A number written in hexadecimal, as BoT-IoT writes ICMP and ARP "ports" (``0x0303``); longer
#: than 16 digits is not a number.
HEX_NUMBER = r"0[xX][0-9a-fA-F]{1,16}"


def numbers(column: pd.Series, hexadecimal: bool = False) -> np.ndarray:
    """A column's cells as float64, NaN where a cell is missing or not a number. With
    ``hexadecimal``, cells written ``0x…`` (:data:`HEX_NUMBER`) are read in base 16, the others
    as decimal numbers: only where the spec or the dataset's layout says a column holds them
    (a text cell of another column is never guessed to be hexadecimal)."""
    if not hexadecimal:
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    text = column.astype("string").str.strip()
    is_hex = text.str.fullmatch(HEX_NUMBER).fillna(False).to_numpy(dtype=bool)
    values = pd.to_numeric(text.where(~is_hex), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    values[is_hex] = [int(cell, 16) for cell in text[is_hex]]
    return values
