"""Datasets (§5.1.1): every source loads into one :class:`Table` — float32 features, a 0/1
label with 1 = malicious, and group columns (device, attack family) for the scenarios.

Sources: ``nbaiot`` (N-BaIoT, original folder layout), ``botiot`` (UNSW BoT-IoT 10-best CSV),
``tabular`` (any CSV/Parquet) and ``builtin`` (a deterministic generator with the same structure).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from p2p_job.datasets import botiot, builtin, nbaiot, tabular
from p2p_job.datasets.table import BENIGN_FAMILY, DataError, LoadReport, Table, select_groups
from p2p_job.spec import DatasetSpec

__all__ = ["BENIGN_FAMILY", "DataError", "LoadReport", "Table", "load_dataset", "select_groups"]


def load_dataset(spec: DatasetSpec, base_dir: Path | None = None) -> Table:
    """Load the spec's dataset; a relative ``dataset.path`` is resolved against ``base_dir``
    (the spec file's folder). Bad input raises :class:`DataError` naming file, row and column."""
    return with_categories(_load(spec, base_dir), spec.preprocessing.categorical)


def _load(spec: DatasetSpec, base_dir: Path | None) -> Table:
    categorical = spec.preprocessing.categorical
    if spec.kind == "builtin":
        return builtin.generate(spec.builtin)
    path = Path(spec.path).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if spec.kind == "nbaiot":
        return nbaiot.load(path, spec.devices, spec.families, spec.drop_bad_rows)
    if spec.kind == "botiot":
        return botiot.load(path, spec.families, spec.drop_bad_rows, categorical)
    return tabular.load(path, spec.features, spec.label_column, spec.benign_values, spec.group_column, spec.drop_bad_rows, categorical,
                        auto=bool(spec.preprocessing.auto))


def with_categories(table: Table, categorical: list[str]) -> Table:
    """Every ``dataset.preprocessing.categorical`` column as category codes: the loaders code
    the text columns they read; a numeric feature column listed there is coded here (its
    sorted distinct values, written as ``%g``). A column that is no feature is a DataError."""
    missing = [c for c in categorical if c not in table.feature_names]
    if missing:
        raise DataError(f"dataset.preprocessing.categorical: no feature column(s) {missing} among the data's "
                        f"{len(table.feature_names)} (`p2pk data describe` lists them)")
    todo = [c for c in categorical if c not in table.categories]
    if not todo:
        return table
    features, categories = table.features.copy(), dict(table.categories)
    for column in todo:
        j = table.feature_names.index(column)
        values, codes = np.unique(features[:, j], return_inverse=True)
        features[:, j] = codes.astype(np.float32)
        categories[column] = [format(float(v), "g") for v in values]
    return replace(table, features=features, categories=categories)
