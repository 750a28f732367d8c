"""Client shards on disk: what ``p2pk data prepare`` writes and every runner can read back.

```
DIR/manifest.json                          counts per class (and per attack kind) per client, feature names, scalers
DIR/<client>/train.parquet                 feature columns (scaled, float32) + label (int8) [+ kind (string)]
DIR/<client>/validation.parquet
DIR/<client>/global_test.parquet           only when the scenario has a global test set
```
The ``kind`` column (each row's attack kind, from the manifest's ``kind_column``) is there
when the data has a kind column. The manifest is written last. Reading checks the format, the columns, the dtypes and that the
row counts match the manifest, so a truncated or foreign folder is a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.datasets import DataError, LoadReport
from p2p_job.scenarios import ClientShard, Scaler, Shards, Split

FORMAT = "p2pk.shards/v1"
MANIFEST = "manifest.json"
SPLITS = ("train", "validation", "global_test")
LABEL = "label"
KIND = "kind"
#: Rows of the paper's Tables 1–3, by split.
TABLE_ROWS = {"train": "Training", "validation": "Local_Val", "global_test": "Global"}


def write_shards(shards: Shards, out_dir: Path) -> None:
    """One Parquet file per client and split, then ``manifest.json``."""
    for reserved in (LABEL, KIND):
        if reserved in shards.feature_names:
            raise DataError(f"a feature is named {reserved!r}, a column the shards keep for themselves; rename it")
    out_dir = Path(out_dir)
    clients = {}
    for name, shard in shards.clients.items():
        (out_dir / name).mkdir(parents=True, exist_ok=True)
        entry = {"scaler": {"data_min": shard.scaler.data_min.tolist(), "data_max": shard.scaler.data_max.tolist()}}
        for split in SPLITS:
            rows = getattr(shard, split)
            entry[split] = None if rows is None else rows.counts
            if rows is not None and rows.kinds is not None:
                entry[f"{split}_kinds"] = rows.attack_kinds
            if rows is not None:
                columns = {f: rows.X[:, j] for j, f in enumerate(shards.feature_names)} | {LABEL: rows.y}
                if rows.kinds is not None:
                    columns[KIND] = pa.array(rows.kinds.astype(str), type=pa.string())
                pq.write_table(pa.table(columns), out_dir / name / f"{split}.parquet")
        clients[name] = entry
    report = shards.load_report
    manifest = {
        "format": FORMAT,
        "feature_names": shards.feature_names,
        "kind_column": shards.kind_column,
        "load_report": {"rows_read": report.rows_read, "rows_dropped": report.rows_dropped, "problems": list(report.problems)},
        "clients": clients,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def read_shards(dir: Path) -> Shards:
    """Every client's shard, in the order they were written."""
    manifest = _manifest(Path(dir))
    clients = {name: _client(Path(dir), manifest, name) for name in manifest["clients"]}
    report = LoadReport(**{**manifest["load_report"], "problems": tuple(manifest["load_report"]["problems"])})
    return Shards(clients, manifest["feature_names"], report, manifest.get("kind_column"))


def read_client_shard(dir: Path, client: str) -> ClientShard:
    """One client's shard (what a worker loads)."""
    manifest = _manifest(Path(dir))
    if client not in manifest["clients"]:
        raise DataError(f"{dir}: no shard for client {client!r}; clients are {list(manifest['clients'])}")
    return _client(Path(dir), manifest, client)


def class_counts(shards: Shards) -> dict[str, dict[str, int]]:
    """Rows per class per client, as the paper's Tables 1–3: ``{"Training_benign":
    {"client-a": 11821, …}, "Training_anomaly": …, "Local_Val_…", "Global_…"}`` (Global rows
    only when the scenario has a global test set)."""
    table: dict[str, dict[str, int]] = {}
    for name, shard in shards.clients.items():
        for split, row in TABLE_ROWS.items():
            rows = getattr(shard, split)
            if rows is not None:
                counts = rows.counts
                table.setdefault(f"{row}_benign", {})[name] = counts["benign"]
                table.setdefault(f"{row}_anomaly", {})[name] = counts["malicious"]
    return table


def kind_counts(shards: Shards) -> dict[str, dict[str, int]]:
    """Malicious rows per attack kind per client, in the layout of :func:`class_counts`:
    ``{"Training_gafgyt/udp": {"client-a": 23, "client-b": 0, …}, …, "Global_…"}``."""
    table: dict[str, dict[str, int]] = {}
    for split, row in TABLE_ROWS.items():
        kinds = sorted({k for shard in shards.clients.values() if getattr(shard, split) is not None for k in getattr(shard, split).attack_kinds})
        for kind in kinds:
            table[f"{row}_{kind}"] = {
                name: getattr(shard, split).attack_kinds.get(kind, 0) for name, shard in shards.clients.items() if getattr(shard, split) is not None
            }
    return table


def _manifest(dir: Path) -> dict:
    path = dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; is {dir} a folder written by `p2pk data prepare`?") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest")
    for field, kind in (("clients", dict), ("feature_names", list), ("load_report", dict)):
        if not isinstance(manifest.get(field), kind):
            raise DataError(f"{path}: field {field!r} is missing or not a {kind.__name__}")
    return manifest


def _client(dir: Path, manifest: dict, name: str) -> ClientShard:
    entry, features = manifest["clients"][name], manifest["feature_names"]
    scaler = Scaler(np.array(entry["scaler"]["data_min"], dtype=np.float64), np.array(entry["scaler"]["data_max"], dtype=np.float64))
    if scaler.data_min.shape != (len(features),) or scaler.data_max.shape != (len(features),):
        raise DataError(f"{dir / MANIFEST}: client {name!r}: scaler does not have {len(features)} features")
    with_kinds = manifest.get("kind_column") is not None
    splits = {
        split: None if entry.get(split) is None else _split(dir / name / f"{split}.parquet", features, entry[split], with_kinds)
        for split in SPLITS
    }
    return ClientShard(name=name, scaler=scaler, **splits)


def _split(path: Path, features: list[str], counts: dict[str, int], with_kinds: bool) -> Split:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    expected = [*features, LABEL, *([KIND] if with_kinds else [])]
    if table.column_names != expected:
        raise DataError(f"{path}: columns are not the manifest's {len(features)} features followed by {expected[len(features):]}")
    X = np.column_stack([table.column(f).to_numpy() for f in features])
    y = table.column(LABEL).to_numpy()
    if X.dtype != np.float32 or y.dtype != np.int8 or not np.isin(y, (0, 1)).all():
        raise DataError(f"{path}: expected float32 features and an int8 0/1 label, found {X.dtype} and {y.dtype}")
    kinds = table.column(KIND).to_numpy(zero_copy_only=False).astype(str) if with_kinds else None
    split = Split(X, y, kinds)
    if split.counts != counts:
        raise DataError(f"{path}: holds {split.counts} rows, the manifest says {counts}")
    return split
