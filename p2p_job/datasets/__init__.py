"""Datasets (§5.1.1): every source loads into one :class:`Table` — float32 features, a 0/1
label with 1 = malicious, and group columns (device, attack family) for the scenarios.

Sources: ``nbaiot`` (N-BaIoT, original folder layout), ``botiot`` (UNSW BoT-IoT 10-best CSV),
``tabular`` (any CSV/Parquet) and ``builtin`` (a deterministic generator with the same structure).
"""

from __future__ import annotations

from pathlib import Path

from p2p_job.datasets import botiot, builtin, nbaiot, tabular
from p2p_job.datasets.table import BENIGN_FAMILY, DataError, LoadReport, Table, select_groups
from p2p_job.spec import DatasetSpec

__all__ = ["BENIGN_FAMILY", "DataError", "LoadReport", "Table", "load_dataset", "select_groups"]


def load_dataset(spec: DatasetSpec, base_dir: Path | None = None) -> Table:
    """Load the spec's dataset; a relative ``dataset.path`` is resolved against ``base_dir``
    (the spec file's folder). Bad input raises :class:`DataError` naming file, row and column."""
    if spec.kind == "builtin":
        return builtin.generate(spec.builtin)
    path = Path(spec.path).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if spec.kind == "nbaiot":
        return nbaiot.load(path, spec.devices, spec.families, spec.drop_bad_rows)
    if spec.kind == "botiot":
        return botiot.load(path, spec.families, spec.drop_bad_rows)
    return tabular.load(path, spec.features, spec.label_column, spec.benign_values, spec.group_column, spec.drop_bad_rows)
