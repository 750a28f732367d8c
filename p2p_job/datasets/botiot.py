"""UNSW BoT-IoT (Koroniotis et al., 2019; §5.1.1) in any of its three published layouts.

- **10-best** (``UNSW_2018_IoT_Botnet_Final_10_best_{Training,Testing}.csv``): 19 columns,
  :data:`TEN_BEST_COLUMNS`.
- **5% extract** (``UNSW_2018_IoT_Botnet_Full5pc_{1..4}.csv``): 46 columns with a header,
  :data:`FIVE_PERCENT_COLUMNS`.
- **Full** (``UNSW_2018_IoT_Botnet_Dataset_{1..74}.csv``): 35 columns, :data:`FULL_COLUMNS`,
  without a header; the names are in ``UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv``.

Comma-, semicolon- or tab-separated (sniffed); ``dataset.path`` may name several parts (a folder
or a glob, :mod:`p2p_job.datasets.parts`), read one at a time, only the columns used. A file
with a header row naming ``attack`` is read by its header; a headerless one by its column
count (19, 35 or 46: the layouts above) or by ``dataset.columns`` / ``dataset.columnNamesFile``.

The label is ``attack`` (0/1). Features: ``dataset.features``, by default the paper's ten
numeric "best" features (:data:`FEATURES`) that the file has — all ten in the 10-best and 5%
layouts; in the full layout seven, plus the text ``state`` as a category in place of
``state_number`` (:func:`default_features`). ``sport`` and ``dport`` hold hexadecimal numbers
(``0x0303``) for ICMP and ARP: read as numbers when listed as features. Group ``family``:
"benign" for normal rows, else "<category>/<subcategory>", e.g. "DoS/UDP" or
"Reconnaissance/Service_Scan", so a family selector may name a category ("DDoS") or one
subcategory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from p2p_job.datasets.reading import Sheet, first_row, read_chunks
from p2p_job.datasets.sampling import Rows
from p2p_job.datasets.table import BENIGN_FAMILY, DataError, Table, attack_families, check_families, family_mask

#: Columns of the 10-best files, in file order.
TEN_BEST_COLUMNS = [
    "pkSeqID", "proto", "saddr", "sport", "daddr", "dport",
    "seq", "stddev", "N_IN_Conn_P_SrcIP", "min", "state_number", "mean", "N_IN_Conn_P_DstIP", "drate", "srate", "max",
    "attack", "category", "subcategory",
]  # fmt: skip
#: Columns of the full dataset's 74 files (no header row), in file order.
FULL_COLUMNS = [
    "pkSeqID", "stime", "flgs", "proto", "saddr", "sport", "daddr", "dport", "pkts", "bytes", "state", "ltime", "seq", "dur",
    "mean", "stddev", "smac", "dmac", "sum", "min", "max", "soui", "doui", "sco", "dco", "spkts", "dpkts", "sbytes", "dbytes",
    "rate", "srate", "drate", "attack", "category", "subcategory",
]  # fmt: skip
#: Columns of the 5% extract (header included), in file order.
FIVE_PERCENT_COLUMNS = [
    "pkSeqID", "stime", "flgs", "flgs_number", "proto", "proto_number", "saddr", "sport", "daddr", "dport", "pkts", "bytes",
    "state", "state_number", "ltime", "seq", "dur", "mean", "stddev", "sum", "min", "max", "spkts", "dpkts", "sbytes", "dbytes",
    "rate", "srate", "drate", "TnBPSrcIP", "TnBPDstIP", "TnP_PSrcIP", "TnP_PDstIP", "TnP_PerProto", "TnP_Per_Dport",
    "AR_P_Proto_P_SrcIP", "AR_P_Proto_P_DstIP", "N_IN_Conn_P_DstIP", "N_IN_Conn_P_SrcIP", "AR_P_Proto_P_Sport",
    "AR_P_Proto_P_Dport", "Pkts_P_State_P_Protocol_P_DestIP", "Pkts_P_State_P_Protocol_P_SrcIP", "attack", "category", "subcategory",
]  # fmt: skip
#: A headerless file's layout, by its column count.
LAYOUTS = {len(TEN_BEST_COLUMNS): ("10-best", TEN_BEST_COLUMNS), len(FULL_COLUMNS): ("full", FULL_COLUMNS),
           len(FIVE_PERCENT_COLUMNS): ("5%", FIVE_PERCENT_COLUMNS)}
#: The ten "best" features the paper trains on.
FEATURES = ["seq", "stddev", "N_IN_Conn_P_SrcIP", "min", "state_number", "mean", "N_IN_Conn_P_DstIP", "drate", "srate", "max"]
#: What the full layout has of them, and its text ``state`` in place of ``state_number``.
FULL_FEATURES = [*(c for c in FEATURES if c in FULL_COLUMNS), "state"]
LABEL = "attack"
GROUP_COLUMNS = ["category", "subcategory"]
#: Columns whose numbers may be hexadecimal (ICMP and ARP rows).
PORTS = ["sport", "dport"]
#: Every column name of the published layouts: messages may quote them.
KNOWN = frozenset([*TEN_BEST_COLUMNS, *FULL_COLUMNS, *FIVE_PERCENT_COLUMNS])
#: Why a column that identifies a row, a moment or a host is not a feature by default.
IDENTITY = {
    "pkSeqID": "the row's number in the dataset: an identifier, not a property of the traffic",
    "stime": "a timestamp (flow start): the attacks were run at known times, so it tells the capture's periods apart, not the traffic",
    "ltime": "a timestamp (flow end): the attacks were run at known times, so it tells the capture's periods apart, not the traffic",
    "saddr": "an IP address: identifies the testbed's hosts (the attacking machines' addresses give the label away)",
    "daddr": "an IP address: identifies the testbed's hosts (the attacking machines' addresses give the label away)",
    "smac": "a MAC address: identifies a host (mostly empty)",
    "dmac": "a MAC address: identifies a host (mostly empty)",
    "soui": "the MAC address's vendor: identifies a host (mostly empty)",
    "doui": "the MAC address's vendor: identifies a host (mostly empty)",
    "sco": "the address's country code: identifies a host (mostly empty)",
    "dco": "the address's country code: identifies a host (mostly empty)",
}
STATE_NOTE = ("the full layout has no state_number: the text state, as a category (one-hot encoded), takes its place; "
              "N_IN_Conn_P_SrcIP and N_IN_Conn_P_DstIP are not in it either, so the features are 7 of the paper's ten plus state")


def default_features(columns: list[str]) -> tuple[list[str], list[str]]:
    """The default (numeric, categorical) features of a file with these columns: the paper's ten;
    for the full layout (text ``state``, no ``state_number``), the seven of them it has and
    ``state`` as a category (:data:`FULL_FEATURES`)."""
    if "state_number" not in columns and set(FULL_FEATURES) <= set(columns):
        return list(FULL_FEATURES[:-1]), ["state"]
    return list(FEATURES), []


def column_notes(columns: list[str], features: list[str], categorical: list[str] = (), listed: bool = False) -> list[tuple[str, str, str]]:
    """What the loader does with each column of the file that is not a numeric feature."""
    notes = []
    for column in columns:
        if column in categorical:
            reason = STATE_NOTE if column == "state" and not listed and "state_number" not in columns else "dataset.preprocessing.categorical: a category, one-hot encoded"
            notes.append((column, "categorical", reason))
        elif column == LABEL:
            notes.append((column, "label", "the 0/1 label (1 = attack)"))
        elif column in GROUP_COLUMNS:
            notes.append((column, "group", "with the other of category/subcategory, the attack family '<category>/<subcategory>' (group 'family'; 'benign' on normal rows)"))
        elif column in features:
            continue
        elif listed:
            notes.append((column, "dropped", "not listed in dataset.features"))
        elif column in IDENTITY:
            notes.append((column, "dropped", IDENTITY[column] + "; not a feature unless listed in dataset.features"))
        else:
            port = "; ports written 0x… (ICMP, ARP) are read as numbers" if column in PORTS else ""
            notes.append((column, "dropped", f"not one of the ten 'best' features the paper trains on (§5.1.1); list it in dataset.features to use it{port}"))
    return notes


def load(paths: list[Path], features: list[str] | None, families: list[str] | None, drop_bad_rows: bool, categorical: list[str] = (),
         columns: list[str] | None = None, max_rows_per_kind: int | None = None) -> Table:
    """Every normal row and the attack rows of the chosen families (default: all) of every part.
    ``features`` default to :func:`default_features` of the first part's layout; ``categorical``
    columns (``dataset.preprocessing.categorical``, e.g. ``proto``) that are not among them are
    read as text and added after them as category codes. ``columns``: the names of headerless
    parts (``dataset.columns`` / ``dataset.columnNamesFile``). ``max_rows_per_kind``
    (``dataset.maxRowsPerKind``): keep a uniform sample of at most that many rows of each family
    (:mod:`p2p_job.datasets.sampling`)."""
    rows, available, chosen = Rows(max_rows_per_kind), set(), None
    for path in paths:
        names, file_columns = _layout(path, columns)
        if chosen is None:
            numeric, extra = (list(features), []) if features else default_features(file_columns)
            extra += [c for c in categorical if c not in extra]
            numeric = [c for c in numeric if c not in extra]
            chosen = numeric, extra
        for table in _read_part(path, names, file_columns, *chosen, drop_bad_rows, listed=features is not None,
                                known=KNOWN | set(features or []) | set(categorical) | set(columns or [])):
            if families:
                available |= attack_families(table)
                table = table.take(family_mask(table, families))
            rows.add(table)
    if families:
        check_families(available, families, str(paths[0]) if len(paths) == 1 else f"{paths[0].parent} ({len(paths)} files)")
    return rows.table()


def _layout(path: Path, columns: list[str] | None) -> tuple[list[str] | None, list[str]]:
    """``(names, columns)``: the names to read a headerless file with (None: it has a header
    row) and the file's columns in order."""
    header = first_row(path)
    if columns:
        if header == columns:
            return None, header
        if len(header) != len(columns):
            raise DataError(f"{path}: {len(header)} fields on the first line where dataset.columns / dataset.columnNamesFile names {len(columns)}")
        return columns, columns
    if LABEL in header:
        return None, header
    if len(header) not in LAYOUTS:
        counts = ", ".join(f"{n} ({name})" for n, (name, _) in LAYOUTS.items())
        raise DataError(f"{path}: no header naming {LABEL!r}, and {len(header)} columns where a headerless BoT-IoT file has {counts}; "
                        "name them with dataset.columns or dataset.columnNamesFile")
    return LAYOUTS[len(header)][1], LAYOUTS[len(header)][1]


def _read_part(path: Path, names: list[str] | None, file_columns: list[str], numeric: list[str], extra: list[str],
               drop_bad_rows: bool, *, listed: bool, known: frozenset[str]) -> Iterator[Table]:
    """One file's rows, chunk by chunk (:func:`~p2p_job.datasets.reading.read_chunks`): the
    features, the label and the family."""
    text = [*extra, *GROUP_COLUMNS]
    columns = list(dict.fromkeys([*numeric, *text, LABEL]))
    notes = column_notes(file_columns, numeric, extra, listed)
    for sheet in read_chunks(path, names, columns=columns, text_columns=text, hex_columns=[c for c in PORTS if c in numeric],
                             drop_bad_rows=drop_bad_rows, known=known):
        yield _rows(sheet, numeric, extra, drop_bad_rows, notes)


def _rows(sheet: Sheet, numeric: list[str], extra: list[str], drop_bad_rows: bool, notes: list[tuple[str, str, str]]) -> Table:
    frame = sheet.frame
    label = pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_label = ~np.isin(label, (0, 1))
    no_family = (label == 1) & (frame["category"].isna() | frame["subcategory"].isna()).to_numpy()
    features, keep, report = sheet.features(
        numeric,
        drop_bad_rows,
        {LABEL: (bad_label, "label must be 0 or 1"), "category": (no_family, "attack row without category/subcategory"),
         **{c: (frame[c].isna().to_numpy(), "missing value") for c in extra}},
    )
    codes, categories = sheet.categories(extra, keep)
    labels = label[keep].astype(np.int8)
    pair, values = pd.factorize(frame["category"].astype(str) + "/" + frame["subcategory"].astype(str))
    family = np.where(labels == 1, np.asarray(values, dtype=str)[pair[keep]], BENIGN_FAMILY)
    return Table(np.hstack([features, codes]), labels, {"family": family}, [*numeric, *extra], report.with_columns(*notes), categories)
