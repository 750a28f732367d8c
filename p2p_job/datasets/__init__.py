"""Datasets (§5.1.1): every source loads into one :class:`Table` — float32 features, a 0/1
label with 1 = malicious, and group columns (device, attack family) for the scenarios.

Sources: ``nbaiot`` (N-BaIoT, original folder layout), ``botiot`` (UNSW BoT-IoT: 10-best, 5% or
full layout), ``tabular`` (any CSV/Parquet) and ``builtin`` (a deterministic generator with the
same structure). ``botiot`` and ``tabular`` read a ``dataset.path`` naming several files part by
part (:mod:`p2p_job.datasets.parts`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from p2p_job.datasets import botiot, builtin, nbaiot, parts, tabular
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
    path = resolve(spec.path, base_dir)
    if spec.kind == "nbaiot":
        return nbaiot.load(path, spec.devices, spec.families, spec.drop_bad_rows, spec.max_rows_per_kind)
    names_file = resolve(spec.column_names_file, base_dir) if spec.column_names_file else None
    files = parts.files(path, exclude=names_file)
    columns = parts.column_names(spec.columns, names_file)
    if spec.kind == "botiot":
        return botiot.load(files, spec.features, spec.families, spec.drop_bad_rows, categorical, columns, spec.max_rows_per_kind)
    return tabular.load(files, spec.features, spec.label_column, spec.benign_values, spec.group_column, spec.drop_bad_rows, categorical,
                        auto=bool(spec.preprocessing.auto), columns=columns, hex_columns=spec.hex_columns or [],
                        max_rows_per_kind=spec.max_rows_per_kind)


def resolve(path: str, base_dir: Path | None) -> Path:
    """A spec's path: ``~`` expanded, a relative one against ``base_dir`` (the spec file's folder)."""
    resolved = Path(path).expanduser()
    return Path(base_dir) / resolved if base_dir is not None and not resolved.is_absolute() else resolved


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
