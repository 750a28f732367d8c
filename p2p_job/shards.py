"""Client shards: what ``p2pk data prepare`` writes and every runner can read back, in a folder
or in the experiment's store (one client, one shard).

Layout, relative to the shards' root (a folder, or ``<experiment>/shards/`` in a store —
``p2p_job.store.shards_prefix``)::

    manifest.json                 format, fingerprint, feature names, load report, counts per client
    <client>/manifest.json        this client's fingerprint, feature names, preprocessing, categories, counts, sha256 of each file
    <client>/train.parquet        feature columns (RAW units, float32) + label (int8) [+ kind (string)]
    <client>/validation.parquet
    <client>/global_test.parquet  only when the scenario has a global test set

The ``kind`` column (each row's attack kind, from the manifests' ``kind_column``) is there when
the data has a kind column. Rows are stored as loaded: reading a client's shard fits its
preprocessor (``dataset.preprocessing``, kept in its manifest) on its training rows again, which
gives the same pipeline as at prepare time (scikit-learn's fits are deterministic) with no fitted
state on disk. A worker reads only ``<client>/…`` (its files, nothing of the other clients), which is
what lets the per-client store policy deny it every other client's shard. The top manifest (every
client's counts, for ``p2pk data describe``) is written last, each client's manifest after that
client's files. Reading checks the format, the fingerprint (the shards were cut for this
experiment's seed, dataset and scenario), the sha256 and size of each file, the columns, the
dtypes and the row counts, so a truncated, stale or foreign folder is a clear :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.datasets import DataError, LoadReport
from p2p_job.scenarios import ClientShard, RawSplit, Shards, client_shard
from p2p_job.spec import CLASS_NAMES, PreprocessingSpec
from p2p_job.store import DirectoryStore, Store, StoreError

FORMAT = "p2pk.shards/v3"
MANIFEST = "manifest.json"
SPLITS = ("train", "validation", "global_test")
LABEL = "label"
KIND = "kind"
#: Rows of the paper's Tables 1–3, by split.
TABLE_ROWS = {"train": "Training", "validation": "Local_Val", "global_test": "Global"}
#: The spec fields the shards depend on (``dataset.path``, ``dataset.columnNamesFile`` and ``dataset.shards`` only say where).
_CUT_BY = ("seed", "dataset", "scenario")


def fingerprint(exp) -> str:
    """sha256 of what the shards are cut from: the seed, the dataset selection, the scenario
    and the kind column (not where the data or the shards live)."""
    spec = exp.spec.model_dump(mode="json", by_alias=True, include=set(_CUT_BY))
    spec["dataset"] = {k: v for k, v in spec["dataset"].items() if k not in ("path", "shards", "columnNamesFile")}
    spec["kindColumn"] = exp.spec.evaluation.kind_column
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _store(where: Store | Path | str) -> Store:
    return DirectoryStore(where) if isinstance(where, (str, Path)) else where


def write_shards(shards: Shards, where: Store | Path | str, root: str = "", *, fingerprint: str | None = None) -> None:
    """Each client's Parquet files and manifest, then the top manifest (``root``: key prefix
    in the store, ``""`` or ending in ``/``)."""
    for reserved in (LABEL, KIND):
        if reserved in shards.feature_names:
            raise DataError(f"a feature is named {reserved!r}, a column the shards keep for themselves; rename it")
    store = _store(where)
    clients = {}
    for name, shard in shards.clients.items():
        files = {}
        for split in SPLITS:
            rows = getattr(shard, split)
            if rows is None:
                continue
            columns = {f: rows.raw[:, j] for j, f in enumerate(shards.feature_names)} | {LABEL: rows.y}
            if rows.kinds is not None:
                columns[KIND] = pa.array(rows.kinds.astype(str), type=pa.string())
            sink = io.BytesIO()
            pq.write_table(pa.table(columns), sink)
            data = sink.getvalue()
            _put(store, f"{root}{name}/{split}.parquet", data)
            files[split] = {"counts": rows.counts, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            if rows.kinds is not None:
                files[split]["kinds"] = rows.attack_kinds
        _put(store, f"{root}{name}/{MANIFEST}", _json({
            "format": FORMAT, "fingerprint": fingerprint, "client": name, "feature_names": shards.feature_names,
            "kind_column": shards.kind_column,
            "preprocessing": shards.preprocessing.model_dump(mode="json", by_alias=True), "categories": shards.categories,
            "splits": files,
        }))
        clients[name] = {split: files[split]["counts"] if split in files else None for split in SPLITS}
        clients[name].update({f"{split}_kinds": f["kinds"] for split, f in files.items() if "kinds" in f})
    report = shards.load_report
    _put(store, f"{root}{MANIFEST}", _json({
        "format": FORMAT, "fingerprint": fingerprint, "feature_names": shards.feature_names, "kind_column": shards.kind_column,
        "load_report": {"rows_read": report.rows_read, "rows_dropped": report.rows_dropped, "problems": list(report.problems),
                        "columns": [list(note) for note in report.columns]},
        "clients": clients,
    }))


def read_shards(where: Store | Path | str, root: str = "") -> Shards:
    """Every client's shard, in the order they were written."""
    store = _store(where)
    manifest = _manifest(store, f"{root}{MANIFEST}", {"clients": dict, "feature_names": list, "load_report": dict})
    clients = {name: _read_client(store, name, root, manifest.get("fingerprint")) for name in manifest["clients"]}
    first = next(iter(clients.values()), None)
    preprocessing = PreprocessingSpec() if first is None else first[1]
    categories = {} if first is None else first[2]
    return Shards({name: c[0] for name, c in clients.items()}, manifest["feature_names"],
                  _load_report(manifest["load_report"]), manifest.get("kind_column"), preprocessing, categories)


def read_load_report(where: Store | Path | str, root: str = "") -> LoadReport:
    """What the loader read, dropped and did with columns, from the shards' manifest alone."""
    return _load_report(_manifest(_store(where), f"{root}{MANIFEST}", {"load_report": dict})["load_report"])


def _load_report(report: dict) -> LoadReport:
    return LoadReport(report["rows_read"], report["rows_dropped"], tuple(report["problems"]),
                      tuple(tuple(note) for note in report.get("columns", [])))


def read_client_shard(where: Store | Path | str, client: str, root: str = "", *,
                      fingerprint: str | None = None) -> tuple[ClientShard, list[str]]:
    """One client's shard and the feature names (what a worker loads): only ``<client>/…`` is
    read. With ``fingerprint``, shards cut for another seed, dataset or scenario are refused."""
    shard, _, _, features = _read_client(_store(where), client, root, fingerprint)
    return shard, features


def _read_client(store: Store, client: str, root: str, fingerprint: str | None) -> tuple[ClientShard, PreprocessingSpec, dict, list[str]]:
    key = f"{root}{client}/{MANIFEST}"
    entry = _manifest(store, key, {"feature_names": list, "preprocessing": dict, "categories": dict, "splits": dict},
                      missing=f"no shard for client {client!r}")
    if fingerprint is not None and entry.get("fingerprint") != fingerprint:
        raise DataError(f"{_where(store, key)}: these shards were cut for another seed, dataset or scenario than this "
                        "experiment's; prepare them again (`p2pk data prepare`)")
    features = entry["feature_names"]
    try:
        preprocessing = PreprocessingSpec.model_validate(entry["preprocessing"])
    except ValueError as exc:
        raise DataError(f"{_where(store, key)}: field 'preprocessing' is not a dataset.preprocessing section: {exc}") from None
    splits = {split: None for split in SPLITS}
    for split, info in entry["splits"].items():
        if split not in SPLITS:
            raise DataError(f"{_where(store, key)}: unknown split {split!r}")
        splits[split] = _split(store, f"{root}{client}/{split}.parquet", features, info, entry.get("kind_column") is not None)
    if splits["train"] is None or splits["validation"] is None:
        raise DataError(f"{_where(store, key)}: needs a train and a validation split")
    try:
        shard = client_shard(client, preprocessing, features, entry["categories"], splits)
    except DataError as exc:
        raise DataError(f"{_where(store, key)}: {exc}") from None
    return shard, preprocessing, entry["categories"], features


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


def stored_fingerprint(where: Store | Path | str, root: str = "") -> str | None:
    """The fingerprint of the complete shards under ``root`` (their top manifest), or None."""
    try:
        return _manifest(_store(where), f"{root}{MANIFEST}", {}).get("fingerprint")
    except DataError:
        return None


def ensure_shards(exp, store: Store, base_dir: Path | None = None) -> Shards | None:
    """Cut the experiment's shards once into ``<experiment>/shards/`` of its store, unless
    shards with this experiment's fingerprint are there already (then ``None``): what
    ``p2pk run`` does before starting any worker, so that every worker of every method reads
    its own shard instead of cutting them all again."""
    from p2p_job.scenarios import build_shards
    from p2p_job.store import shards_prefix

    root, wanted = shards_prefix(exp.name), fingerprint(exp)
    if stored_fingerprint(store, root) == wanted:
        return None
    shards = build_shards(exp, base_dir)
    write_shards(shards, store, root, fingerprint=wanted)
    return shards


# --------------------------------------------------------------------------- parts


def _json(doc: dict) -> bytes:
    return json.dumps(doc, indent=1).encode()


def _put(store: Store, key: str, data: bytes) -> None:
    try:
        store.put_bytes(key, data)
    except StoreError as exc:
        raise DataError(f"cannot write the shards: {exc}") from None


def _where(store: Store, key: str) -> str:
    return str(store.root / key) if isinstance(store, DirectoryStore) else f"{store!r}: {key}"


def _manifest(store: Store, key: str, fields: dict[str, type], missing: str | None = None) -> dict:
    data = store.get_bytes(key)
    where = _where(store, key)
    if data is None:
        raise DataError(f"{where}: not found; " + (f"{missing} (was it prepared with `p2pk data prepare`?)" if missing
                                                   else "is this a folder written by `p2pk data prepare`?"))
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise DataError(f"{where}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{where}: not a {FORMAT} manifest (prepare the shards again with this version of p2pk)")
    for field, kind in fields.items():
        if not isinstance(manifest.get(field), kind):
            raise DataError(f"{where}: field {field!r} is missing or not a {kind.__name__}")
    return manifest


def _split(store: Store, key: str, features: list[str], info, with_kinds: bool) -> RawSplit:
    where = _where(store, key)
    if not isinstance(info, dict) or not isinstance(info.get("counts"), dict):
        raise DataError(f"{where}: its manifest entry has no counts")
    data = store.get_bytes(key)
    if data is None:
        raise DataError(f"{where}: not found")
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise DataError(f"{where}: does not match the sha256 and size in its manifest (damaged, or written by something else)")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: cannot read: {exc}") from None
    expected = [*features, LABEL, *([KIND] if with_kinds else [])]
    if table.column_names != expected:
        raise DataError(f"{where}: columns are not the manifest's {len(features)} features followed by {expected[len(features):]}")
    X = np.column_stack([table.column(f).to_numpy() for f in features])
    y = table.column(LABEL).to_numpy()
    if X.dtype != np.float32 or y.dtype != np.int8 or not np.isin(y, (0, 1)).all():
        raise DataError(f"{where}: expected float32 features and an int8 0/1 label, found {X.dtype} and {y.dtype}")
    kinds = table.column(KIND).to_numpy(zero_copy_only=False).astype(str) if with_kinds else None
    counts = {name: int(np.count_nonzero(y == label)) for label, name in CLASS_NAMES.items()}
    if counts != info["counts"]:
        raise DataError(f"{where}: holds {counts} rows, the manifest says {info['counts']}")
    return X, y, kinds
