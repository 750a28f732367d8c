"""UNSW BoT-IoT (Koroniotis et al., 2019; §5.1.1), "10 best features" CSV.

Comma-, semicolon- or tab-separated (sniffed), with or without the header row; a headerless
file has the columns in :data:`COLUMNS` order. The label is ``attack`` (0/1); the paper's ten
numeric features are :data:`FEATURES`. Group ``family``: "benign" for normal rows, else
"<category>/<subcategory>", e.g. "DoS/UDP" or "Reconnaissance/Service_Scan", so a family
selector may name a category ("DDoS") or one subcategory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from p2p_job.datasets.reading import first_row, read_delimited
from p2p_job.datasets.table import BENIGN_FAMILY, DataError, Table, select_family

#: Columns of the 10-best files, in file order.
COLUMNS = [
    "pkSeqID", "proto", "saddr", "sport", "daddr", "dport",
    "seq", "stddev", "N_IN_Conn_P_SrcIP", "min", "state_number", "mean", "N_IN_Conn_P_DstIP", "drate", "srate", "max",
    "attack", "category", "subcategory",
]  # fmt: skip
#: The ten "best" features the paper trains on.
FEATURES = ["seq", "stddev", "N_IN_Conn_P_SrcIP", "min", "state_number", "mean", "N_IN_Conn_P_DstIP", "drate", "srate", "max"]
LABEL = "attack"


def column_notes(columns: list[str], categorical: list[str] = ()) -> list[tuple[str, str, str]]:
    """What the loader does with each column of the file that is not one of :data:`FEATURES`."""
    notes = []
    for column in columns:
        if column in categorical:
            notes.append((column, "categorical", "dataset.preprocessing.categorical: a category, one-hot encoded"))
        elif column == LABEL:
            notes.append((column, "label", "the 0/1 label (1 = attack)"))
        elif column in ("category", "subcategory"):
            notes.append((column, "group", "with the other of category/subcategory, the attack family '<category>/<subcategory>' (group 'family'; 'benign' on normal rows)"))
        elif column not in FEATURES:
            notes.append((column, "dropped", "not one of the ten 'best' features the paper trains on (§5.1.1)"))
    return notes


def load(path: Path, families: list[str] | None, drop_bad_rows: bool, categorical: list[str] = ()) -> Table:
    """Every normal row and the attack rows of the chosen families (default: all).
    ``categorical`` columns (``dataset.preprocessing.categorical``, e.g. ``proto``) that are not
    among the ten features are read as text and added after them as category codes."""
    header = first_row(path)
    if LABEL not in header and len(header) != len(COLUMNS):
        raise DataError(
            f"{path}: no header naming {LABEL!r}, and {len(header)} columns where a headerless "
            f"10-best file has {len(COLUMNS)} ({' '.join(COLUMNS)})"
        )
    extra = [c for c in categorical if c not in FEATURES]
    sheet = read_delimited(path, names=None if LABEL in header else COLUMNS, text_columns=extra, drop_bad_rows=drop_bad_rows,
                           known=frozenset([*COLUMNS, *extra]))
    sheet.require([LABEL, "category", "subcategory", *extra])
    frame = sheet.frame
    label = pd.to_numeric(frame[LABEL], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_label = ~np.isin(label, (0, 1))
    no_family = (label == 1) & (frame["category"].isna() | frame["subcategory"].isna()).to_numpy()
    features, keep, report = sheet.features(
        FEATURES,
        drop_bad_rows,
        {LABEL: (bad_label, "label must be 0 or 1"), "category": (no_family, "attack row without category/subcategory"),
         **{c: (frame[c].isna().to_numpy(), "missing value") for c in extra}},
    )
    codes, categories = sheet.categories(extra, keep)
    labels = label[keep].astype(np.int8)
    attack_family = (frame["category"].astype(str) + "/" + frame["subcategory"].astype(str)).to_numpy(dtype=object).astype(str)
    family = np.where(labels == 1, attack_family[keep], BENIGN_FAMILY)
    report = report.with_columns(*column_notes([str(c) for c in frame.columns], extra))
    table = Table(np.hstack([features, codes]), labels, {"family": family}, [*FEATURES, *extra], report, categories)
    return table.take(select_family(table, families, str(path))) if families else table
