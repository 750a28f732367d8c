"""Checkpoints: what a worker needs to resume at its last completed round after a restart.

Under ``<experiment>/<method>/checkpoints/<client>/`` (DESIGN "Store layout"):

* ``<r:05d>.safetensors`` — the arrays of :meth:`p2p_job.peer.Peer.state` after round r
  (model, Adam moments, D_o_syn);
* ``latest.json`` — written LAST, the commit point: ``{"format", "round", "arrays": {"key",
  "sha256", "bytes"}, "scalars"}``.

A worker killed while writing round r's checkpoint leaves ``latest.json`` pointing at round r−1's
complete arrays, so it resumes from there; round r's older arrays file is removed only after the
new ``latest.json`` is in place.
"""

from __future__ import annotations

import json
import logging

from safetensors.numpy import load as safetensors_load

from p2p_job.payloads import encode_state, sha256
from p2p_job.peer import PeerState
from p2p_job.store import Store, StoreError, checkpoint_key

CHECKPOINT_FORMAT = "p2pk.checkpoint/v1"
LATEST = "latest.json"

log = logging.getLogger(__name__)


class CorruptCheckpoint(RuntimeError):
    """``latest.json`` names an arrays file that is missing or does not match its sha256."""


def save_checkpoint(store: Store, experiment: str, method: str, client: str, round: int, state: PeerState) -> None:
    """Write the arrays of round ``round``, then ``latest.json``, then drop older arrays."""
    data = encode_state(state.arrays)
    arrays_key = checkpoint_key(experiment, method, client, f"{round:05d}.safetensors")
    store.put_bytes(arrays_key, data)
    latest = {
        "format": CHECKPOINT_FORMAT,
        "round": round,
        "arrays": {"key": arrays_key, "sha256": sha256(data), "bytes": len(data)},
        "scalars": state.scalars,
    }
    store.put_bytes(checkpoint_key(experiment, method, client, LATEST), json.dumps(latest, sort_keys=True).encode())
    for key in store.list(checkpoint_key(experiment, method, client, "")):
        if key.endswith(".safetensors") and key != arrays_key:
            try:
                store.delete_prefix(key)
            except StoreError as exc:  # an old file left behind costs space, not correctness
                log.warning("checkpoint_cleanup_failed", extra={"fields": {"key": key, "error": str(exc)}})


def load_checkpoint(store: Store, experiment: str, method: str, client: str) -> tuple[int, PeerState] | None:
    """The last committed checkpoint as (round, state), or ``None`` when the client has none."""
    where = checkpoint_key(experiment, method, client, LATEST)
    raw = store.get_bytes(where)
    if raw is None:
        return None
    try:
        latest = json.loads(raw)
        if latest.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format is {latest.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        arrays_key, arrays_sha256 = str(latest["arrays"]["key"]), latest["arrays"]["sha256"]
        round = int(latest["round"])
        scalars = dict(latest["scalars"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpoint(f"{where}: unreadable checkpoint record ({exc!r})") from None
    data = store.get_bytes(arrays_key)
    if data is None or sha256(data) != arrays_sha256:
        raise CorruptCheckpoint(f"{where}: {arrays_key} is missing or does not match its sha256")
    return round, PeerState(arrays=safetensors_load(data), scalars=scalars)
