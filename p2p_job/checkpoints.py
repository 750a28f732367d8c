"""Checkpoints: what a worker needs to resume at its last completed round after a restart,
written incrementally so that their cost stays flat over the rounds.

Under ``<experiment>/<method>/checkpoints/<client>/`` (DESIGN "Store layout"):

* ``<r:05d>.safetensors`` — the peer's state after round r except D_o_syn (model, Adam
  moments): its size does not depend on the round;
* ``received-<r:05d>.safetensors`` — the points received in round r that D_o_syn still held at
  the end of round r (``X``, ``y`` and their arrival numbers ``ids``), written once, in the round
  they arrived;
* ``latest.json`` — written LAST, the commit point: ``{"format", "round", "arrays": {"key",
  "sha256", "bytes"}, "received": [{"round", "sha256", "rows", "keep"}, …], "scalars"}``,
  one short entry per received file (~110 bytes), where ``keep`` marks (as base64 of
  :func:`numpy.packbits`) which of its rows D_o_syn holds now. D_o_syn keeps arrival order and drops rows over time
  (:mod:`p2p_job.received`), so a file whose rows are all dropped leaves the record and the store.

A checkpoint therefore writes the model and optimizer state plus the round's new points, never
the whole D_o_syn again (the issue "Ride out outages": under Algorithm 2 line 16 as written it
grew by ~1.2 MiB per client per round and dominated store time). A worker killed while writing
round r's checkpoint leaves ``latest.json`` pointing at round r−1's complete files, so it resumes
from there; files no record names any more are removed only after the new ``latest.json``.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as safetensors_load

from p2p_job.payloads import encode_state, sha256
from p2p_job.peer import PeerState
from p2p_job.store import Store, StoreError, checkpoint_key

CHECKPOINT_FORMAT = "p2pk.checkpoint/v2"
LATEST = "latest.json"
#: The :class:`~p2p_job.peer.PeerState` arrays kept in the per-round received files.
RECEIVED = ("received.X", "received.y", "received.ids")

log = logging.getLogger(__name__)


class CorruptCheckpoint(RuntimeError):
    """``latest.json`` is unreadable, or names a file that is missing or does not match it."""


@dataclass
class _File:
    """One file a checkpoint record names."""

    key: str
    sha256: str
    bytes: int

    def record(self) -> dict:
        return {"key": self.key, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class _Received:
    """A received-points file (``received-<round>.safetensors``): its arrival numbers (kept in
    memory) and which of its rows D_o_syn holds."""

    round: int
    sha256: str
    ids: np.ndarray
    keep: np.ndarray

    def record(self) -> dict:
        return {"round": self.round, "sha256": self.sha256, "rows": len(self.keep),
                "keep": base64.b64encode(np.packbits(self.keep).tobytes()).decode("ascii")}


def _received_name(round: int) -> str:
    return f"received-{round:05d}.safetensors"


class Checkpoints:
    """The checkpoints of one worker (client of one method's run). :meth:`load` the last one at
    start, then :meth:`save` after every round; the object remembers which received points are
    already in the store."""

    def __init__(self, store: Store, experiment: str, method: str, client: str):
        self.store = store
        self.experiment, self.method, self.client = experiment, method, client
        self._received: list[_Received] = []
        self.last_bytes = 0  # bytes written by the last save (the worker logs it with round_end)

    def _key(self, name: str) -> str:
        return checkpoint_key(self.experiment, self.method, self.client, name)

    def _put(self, name: str, arrays: dict[str, np.ndarray]) -> tuple[_File, bytes]:
        data = encode_state(arrays)
        key = self._key(name)
        self.store.put_bytes(key, data)
        self.last_bytes += len(data)
        return _File(key, sha256(data), len(data)), data

    def save(self, round: int, state: PeerState) -> None:
        """Write round ``round``: the fixed-size arrays, the newly received points, then
        ``latest.json``; then drop the files no longer named."""
        self.last_bytes = 0
        ids = np.asarray(state.arrays["received.ids"], dtype=np.int64)
        if np.any(np.diff(ids) <= 0):
            raise ValueError("D_o_syn rows must keep their arrival order (received.ids increasing)")
        known = max((int(f.ids[-1]) for f in self._received if len(f.ids)), default=-1)
        for f in self._received:
            f.keep = np.isin(f.ids, ids)
        received = [f for f in self._received if f.keep.any()]
        new = ids > known
        if new.any():
            rows = {k: np.asarray(state.arrays[k])[new] for k in RECEIVED}
            file, _ = self._put(_received_name(round), {"X": rows["received.X"], "y": rows["received.y"],
                                                        "ids": rows["received.ids"]})
            received.append(_Received(round, file.sha256, ids=rows["received.ids"], keep=np.ones(int(new.sum()), bool)))
        fixed = {k: v for k, v in state.arrays.items() if k not in RECEIVED}
        arrays, _ = self._put(f"{round:05d}.safetensors", fixed)
        latest = {
            "format": CHECKPOINT_FORMAT,
            "round": round,
            "arrays": arrays.record(),
            "received": [f.record() for f in received],
            "scalars": state.scalars,
        }
        text = json.dumps(latest, sort_keys=True, separators=(",", ":")).encode()
        self.store.put_bytes(self._key(LATEST), text)
        self.last_bytes += len(text)
        self._received = received
        self._clean({arrays.key, *(self._key(_received_name(f.round)) for f in received)})

    def _clean(self, named: set[str]) -> None:
        """Remove the ``.safetensors`` files the committed record does not name (older rounds,
        fully dropped received files, leftovers of a save that was killed)."""
        for key in self.store.list(self._key("")):
            if key.endswith(".safetensors") and key not in named:
                try:
                    self.store.delete_prefix(key)
                except StoreError as exc:  # an old file left behind costs space, not correctness
                    log.warning("checkpoint_cleanup_failed", extra={"fields": {"key": key, "error": str(exc)}})

    def load(self) -> tuple[int, PeerState] | None:
        """The last committed checkpoint as (round, state), or ``None`` when the client has none."""
        where = self._key(LATEST)
        raw = self.store.get_bytes(where)
        if raw is None:
            return None
        try:
            latest = json.loads(raw)
            if latest.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format is {latest.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
            round = int(latest["round"])
            scalars = dict(latest["scalars"])
            arrays_file = _file(latest["arrays"])
            received = [(int(entry["round"]), str(entry["sha256"]), int(entry["rows"]),
                         base64.b64decode(entry["keep"], validate=True)) for entry in latest["received"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptCheckpoint(f"{where}: unreadable checkpoint record ({exc!r})") from None
        arrays = dict(self._read(where, arrays_file.key, arrays_file.sha256))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in RECEIVED}
        self._received = []
        for file_round, file_sha256, rows, packed in received:
            key = self._key(_received_name(file_round))
            content = self._read(where, key, file_sha256)
            try:
                keep = np.unpackbits(np.frombuffer(packed, np.uint8), count=rows).astype(bool)
            except ValueError as exc:
                raise CorruptCheckpoint(f"{where}: the keep mask of {key} is malformed ({exc})") from None
            if any(len(content.get(k, ())) != rows for k in ("X", "y", "ids")):
                raise CorruptCheckpoint(f"{where}: {key} does not hold the {rows} rows its record says")
            for name, array in zip(RECEIVED, (content["X"], content["y"], content["ids"])):
                parts[name].append(array[keep])
            self._received.append(_Received(file_round, file_sha256, ids=content["ids"], keep=keep))
        for name, chunks in parts.items():
            if chunks:
                arrays[name] = np.concatenate(chunks)
        if not received:  # nothing held: empty arrays (the peer gives X its feature width)
            arrays.update({"received.X": np.empty((0, 0), np.float32), "received.y": np.empty(0, np.int8),
                           "received.ids": np.empty(0, np.int64)})
        return round, PeerState(arrays=arrays, scalars=scalars)

    def _read(self, where: str, key: str, expected_sha256: str) -> dict[str, np.ndarray]:
        data = self.store.get_bytes(key)
        if data is None or sha256(data) != expected_sha256:
            raise CorruptCheckpoint(f"{where}: {key} is missing or does not match its sha256")
        return safetensors_load(data)


def _file(entry: dict) -> _File:
    return _File(str(entry["key"]), str(entry["sha256"]), int(entry["bytes"]))
