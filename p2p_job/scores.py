"""What a run keeps besides its metrics: each client's scores on its evaluation sets and its
final model, so that ROC curves, thresholds and per-kind breakdowns can be computed after the
run without retraining.

- **Scores**: at the rounds ``spec.evaluation.scoresEvery`` picks (every N rounds and the last
  one), one Parquet file per client and round with a row per evaluated row: ``eval`` (local |
  global), ``label`` (0/1), ``kind`` (its attack kind, null when the data names none) and
  ``score`` (the sigmoid output the metrics of §5.1.2 threshold).
- **Final model**: after the last round, ``model.safetensors`` with the network's weights
  (``model.<name>``, float32, BN buffers included) and metadata naming the client, method, round,
  hidden layers, the raw features, the encoded inputs the network reads and the preprocessing
  that maps one to the other (``dataset.preprocessing`` and the categories; the client refits it
  on its own training rows, which the shards give again for the same seed).

Where they live (the same relative layout in a store run prefix and a results folder):
``scores/<method>/<client>/<r:05d>.parquet`` and ``models/<method>/<client>.safetensors`` in a
results folder; ``<experiment>/<method>/scores/<client>/<r:05d>.parquet`` and
``<experiment>/<method>/models/<client>.safetensors`` in a store (``p2p_job.store`` keys).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

if TYPE_CHECKING:  # PyTorch only where a model is kept: reading scores (p2pk run, compare) needs none
    from p2p_job.model import State


#: One file of kept scores.
SCHEMA = pa.schema([("eval", pa.string()), ("label", pa.int8()), ("kind", pa.string()), ("score", pa.float32())])
#: ``model.safetensors`` metadata format.
MODEL_FORMAT = "p2pk.model/v1"
SCORES_DIR = "scores"
MODELS_DIR = "models"


def encode_scores(scores: dict[str, np.ndarray], sets: dict) -> bytes:
    """Parquet bytes of one round's scores: ``scores`` (eval set → score per row, as the peer
    kept them) with each set's labels and kinds (``sets``: eval set → :class:`~p2p_job.scenarios.Split`)."""
    parts = []
    for name, values in scores.items():
        split = sets[name]
        kinds = pa.nulls(len(values), pa.string()) if split.kinds is None else pa.array(split.kinds.astype(str), pa.string())
        parts.append(pa.table([pa.array([name] * len(values), pa.string()), pa.array(split.y, pa.int8()), kinds,
                               pa.array(np.asarray(values, dtype=np.float32), pa.float32())], schema=SCHEMA))
    sink = io.BytesIO()
    pq.write_table(pa.concat_tables(parts) if parts else SCHEMA.empty_table(), sink)
    return sink.getvalue()


def decode_scores(data: bytes) -> pd.DataFrame:
    """The rows of one scores file."""
    return pq.read_table(pa.BufferReader(data), schema=SCHEMA).to_pandas()


def encode_model(state: State, preprocessor, *, client: str, method: str, round: int, preprocessing: dict,
                 hidden_layers: list[int]) -> bytes:
    """A client's final model as safetensors: its weights and what they mean."""
    arrays = {f"model.{name}": np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}
    metadata = {"format": MODEL_FORMAT, "client": client, "method": method, "round": str(round),
                "hidden_layers": json.dumps(list(hidden_layers)),
                "feature_names": json.dumps(list(preprocessor.feature_names)),
                "input_names": json.dumps(list(preprocessor.output_names)),
                "preprocessing": json.dumps(preprocessing), "categories": json.dumps(preprocessor.categories)}
    return safetensors_save(arrays, metadata=metadata)


def decode_model(data: bytes) -> tuple[State, dict[str, str]]:
    """``(state, metadata)`` of a file written by :func:`encode_model`."""
    arrays = safetensors_load(data)
    header_len = int.from_bytes(data[:8], "little")  # safetensors: 8-byte length, then the JSON header
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    if metadata.get("format") != MODEL_FORMAT:
        raise ValueError(f"not a {MODEL_FORMAT} file (metadata {metadata})")
    return {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}, metadata


def keep_round(peer, r: int, put_scores: Callable[[bytes], None], put_model: Callable[[bytes], None]) -> None:
    """After a peer's round ``r``: hand its scores to ``put_scores`` when ``evaluation.scoresEvery``
    keeps this round, and its model to ``put_model`` after the last round. Every runner calls
    this; only where the bytes go differs."""
    from p2p_job.model import model_state

    spec = peer.exp.spec
    if spec.evaluation.saves_scores(r, spec.rounds):
        put_scores(encode_scores(peer.last_scores, peer.evaluation_sets()))
    if r == spec.rounds:
        put_model(encode_model(model_state(peer.model), peer.shard.preprocessor, client=peer.client, method=peer.method_name,
                               round=r, preprocessing=spec.dataset.preprocessing.model_dump(mode="json", by_alias=True),
                               hidden_layers=spec.training.hidden_layers))


# --------------------------------------------------------------------------- results folders


def scores_path(out_dir: Path, method: str, client: str, round: int) -> Path:
    return Path(out_dir) / SCORES_DIR / method / client / f"{round:05d}.parquet"


def model_path(out_dir: Path, method: str, client: str) -> Path:
    return Path(out_dir) / MODELS_DIR / method / f"{client}.safetensors"


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def clear_kept(out_dir: Path, method: str) -> None:
    """Remove a method's kept scores and models from a results folder (before a new run of it)."""
    for folder in (Path(out_dir) / SCORES_DIR / method, Path(out_dir) / MODELS_DIR / method):
        shutil.rmtree(folder, ignore_errors=True)


def collect_kept(store, experiment: str, method: str, clients: list[str], out_dir: Path) -> None:
    """Copy one method's kept scores and models from a store into a results folder (``p2pk run``)."""
    from p2p_job.store import model_key, run_prefix

    clear_kept(out_dir, method)
    for client in clients:
        for key in store.list(f"{run_prefix(experiment, method)}{SCORES_DIR}/{client}/"):
            stem = key.rsplit("/", 1)[-1].removesuffix(".parquet")
            data = store.get_bytes(key)
            if stem.isdigit() and data is not None:
                write_file(scores_path(out_dir, method, client, int(stem)), data)
        data = store.get_bytes(model_key(experiment, method, client))
        if data is not None:
            write_file(model_path(out_dir, method, client), data)


def keep_in_folder(peer, r: int, out_dir: Path) -> None:
    """:func:`keep_round` into a results folder (``p2pk simulate``)."""
    keep_round(peer, r, lambda data: write_file(scores_path(out_dir, peer.method_name, peer.client, r), data),
               lambda data: write_file(model_path(out_dir, peer.method_name, peer.client), data))


def read_scores(out_dir: Path) -> pd.DataFrame:
    """Every kept score of a results folder: columns ``method, client, round, eval, label,
    kind, score`` (empty when the folder kept none)."""
    frames = []
    for path in sorted((Path(out_dir) / SCORES_DIR).glob("*/*/*.parquet")):
        frame = decode_scores(path.read_bytes())
        frames.append(frame.assign(method=path.parent.parent.name, client=path.parent.name, round=int(path.stem)))
    columns = ["method", "client", "round", *SCHEMA.names]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
