"""The :class:`~p2p_job.exchange.Exchange` of ``p2pk run`` and Kubernetes: peers in separate
processes leave their publications in a store (directory or S3) and poll for their neighbours'.

Publishing round r (DESIGN step 3) writes ``model.safetensors`` and ``synthetic.parquet``, then
``manifest.json`` LAST: a manifest's presence means the publication is complete. Re-publishing
after a restart is idempotent: when the manifest is already there nothing is written again
(neighbours may have used it already), and a different content — possible only when training
is not bit-reproducible, e.g. on some GPUs — is logged as ``republish_differs`` while the first
version stays the one every neighbour sees.

Gathering round r (step 4) polls the neighbours' manifests with exponential backoff (capped)
until all are there or ``roundTimeoutSeconds`` have passed since the gather began. Each
publication found is validated (``p2p_job.payloads``) before it is used; a neighbour that did
not publish in time is *missing*, one whose payload fails a check is *rejected* with a reason
code. Neither fails the round (DESIGN "The algorithm").
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, wait
from typing import Callable, Mapping

import numpy as np

from p2p_job.exchange import Gathered, Publication
from p2p_job.payloads import (
    MANIFEST_FILE,
    MAX_MANIFEST_BYTES,
    MODEL_FILE,
    SYNTHETIC_FILE,
    PayloadRejected,
    StateLayout,
    check_declared_size,
    check_payload,
    decode_manifest,
    decode_state,
    decode_synthetic,
    encode_manifest,
    encode_state,
    encode_synthetic,
)
from p2p_job.store import ObjectTooLarge, Store, StoreError, round_key

log = logging.getLogger(__name__)

#: First and longest pause between two polls for missing manifests (seconds).
POLL_FIRST = 0.05
POLL_MAX = 2.0


class StoreExchange:
    """One client's view of the store for one method's run.

    ``layout`` is the expected model state (names, shapes, dtypes of w0); ``feature_names``
    the columns of shared points; ``max_payload_bytes`` the cap of ``runtime.maxPayloadMb``;
    ``timeout`` is ``runtime.roundTimeoutSeconds``. ``max_points`` caps each neighbour's shared
    points (``Peer.point_caps``: α·r·|D_base| from the spec), checked against the manifest before
    any download and against the Parquet metadata before decoding. ``on_bytes(direction, n)`` is
    told the publication bytes ``sent`` and ``received`` (telemetry).
    """

    def __init__(
        self,
        store: Store,
        *,
        experiment: str,
        method: str,
        client: str,
        feature_names: list[str],
        layout: StateLayout,
        max_payload_bytes: int,
        timeout: float,
        max_points: Mapping[str, int] | None = None,
        on_bytes: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.experiment = experiment
        self.method = method
        self.client = client
        self.feature_names = list(feature_names)
        self.layout = layout
        self.max_payload_bytes = max_payload_bytes
        self.timeout = timeout
        self.max_points = dict(max_points) if max_points is not None else None
        self.on_bytes = on_bytes or (lambda direction, n: None)
        self.clock = clock
        self.sleep = sleep

    def _key(self, round: int, client: str, name: str) -> str:
        return round_key(self.experiment, self.method, round, client, name)

    # ------------------------------------------------------------------ publish

    def publish(self, pub: Publication) -> None:
        """Write the payloads, then the manifest; skip when round ``pub.round`` is already published."""
        if pub.client != self.client:
            raise ValueError(f"client {self.client!r} may not publish as {pub.client!r}")
        payloads = {
            MODEL_FILE: encode_state(pub.delta),
            SYNTHETIC_FILE: encode_synthetic(pub.synthetic_X, pub.synthetic_y, self.feature_names),
        }
        manifest = encode_manifest(
            experiment=self.experiment, method=self.method, client=pub.client, round=pub.round,
            n_base=pub.n_base, variance=pub.variance, n_synthetic=len(pub.synthetic_y),
            payloads=payloads, metrics=pub.metrics,
        )
        manifest_key = self._key(pub.round, pub.client, MANIFEST_FILE)
        existing = self.store.get_bytes(manifest_key)
        if existing is not None:
            event = "already_published" if existing == manifest else "republish_differs"
            log.log(logging.INFO if existing == manifest else logging.WARNING, event,
                    extra={"fields": {"round": pub.round, "client": pub.client}})
            return
        for name, data in payloads.items():
            self.store.put_bytes(self._key(pub.round, pub.client, name), data)
        self.store.put_bytes(manifest_key, manifest)
        self.on_bytes("sent", sum(map(len, payloads.values())) + len(manifest))

    # ------------------------------------------------------------------ gather

    def gather(self, round: int, neighbours: list[str]) -> Gathered:
        """The neighbours' round-``round`` publications that arrive within the timeout and pass
        validation; the others are listed as missing or rejected (with the reason code).

        Each read runs in its own daemon thread, so one slow neighbour (a slow store, a large
        payload) neither holds up the others nor the round: a read still going at the deadline
        leaves that neighbour missing, and its result is dropped when it ends."""
        deadline = self.clock() + self.timeout
        pending = list(neighbours)
        publications: dict[str, Publication] = {}
        rejected: list[tuple[str, str]] = []
        reads: dict[str, Future] = {}
        pause = POLL_FIRST
        while True:
            for neighbour in pending:
                if neighbour not in reads:
                    reads[neighbour] = _in_thread(self._read, round, neighbour)
            wait(list(reads.values()), timeout=max(0.0, min(pause, deadline - self.clock())))
            for neighbour, read in list(reads.items()):
                if not read.done():
                    continue
                del reads[neighbour]
                try:
                    pub = read.result()
                except PayloadRejected as exc:
                    pending.remove(neighbour)
                    rejected.append((neighbour, exc.reason))
                    log.warning("payload_rejected", extra={"fields": {
                        "round": round, "neighbour": neighbour, "reason": exc.reason, "detail": str(exc)}})
                except StoreError as exc:  # retries exhausted: still pending, tried again at the next poll
                    log.warning("store_error", extra={"fields": {"round": round, "neighbour": neighbour, "error": str(exc)}})
                else:
                    if pub is not None:
                        pending.remove(neighbour)
                        publications[neighbour] = pub
            left = deadline - self.clock()
            if not pending or left <= 0:
                break
            self.sleep(min(pause, left))
            pause = min(POLL_MAX, pause * 2)
        for neighbour in pending:
            log.warning("neighbour_missing", extra={"fields": {
                "round": round, "neighbour": neighbour, "timeout": self.timeout, "still_reading": neighbour in reads}})
        return Gathered(publications=publications, missing=pending, rejected=rejected)

    def _read(self, round: int, client: str) -> Publication | None:
        """A neighbour's publication, ``None`` while its manifest is absent; its manifest and
        payloads validated (sizes, sha256, tensors, columns). No object is read beyond its cap:
        the manifest's is ``max_payload_bytes``, a payload's the size its manifest declares. A
        manifest or model that fails refuses the publication (:class:`PayloadRejected`); shared
        points that fail refuse only themselves (``Publication.points_refused``, no points)."""
        where = self._key(round, client, MANIFEST_FILE)
        cap = min(MAX_MANIFEST_BYTES, self.max_payload_bytes)
        try:
            manifest_bytes = self.store.get_bytes(where, max_bytes=cap)
        except ObjectTooLarge:
            raise PayloadRejected("too-large", where, f"manifest over its cap of {cap} bytes") from None
        if manifest_bytes is None:
            return None
        manifest = decode_manifest(manifest_bytes, where, experiment=self.experiment, method=self.method,
                                   client=client, round=round)
        model, model_bytes = self._read_payload(round, client, manifest, MODEL_FILE)
        delta = decode_state(model, self.layout, self._key(round, client, MODEL_FILE))
        X = np.empty((0, len(self.feature_names)), dtype=np.float32)
        y, points_refused, points_bytes = np.empty(0, dtype=np.int8), None, 0
        try:
            X, y, points_bytes = self._read_points(round, client, manifest)
        except PayloadRejected as exc:  # the points only: the model is still judged on its own
            points_refused = f"{exc.reason}: {exc.where}: {exc.detail}"
            log.warning("points_rejected", extra={"fields": {
                "round": round, "neighbour": client, "reason": exc.reason, "detail": str(exc)}})
        self.on_bytes("received", len(manifest_bytes) + model_bytes + points_bytes)
        return Publication(
            client=client, round=round, delta=delta, n_base=manifest["n_base"], variance=manifest["variance"],
            synthetic_X=X, synthetic_y=y, metrics=manifest["metrics"], points_refused=points_refused,
        )

    def _read_payload(self, round: int, client: str, manifest: dict, name: str) -> tuple[bytes, int]:
        """One payload's bytes, read no further than its manifest declares and checked against
        its sha256 and size; and how many bytes that was."""
        key = self._key(round, client, name)
        check_declared_size(manifest, name, self.max_payload_bytes, key)
        declared = manifest["payloads"][name]["bytes"]
        try:
            payload = self.store.get_bytes(key, max_bytes=declared)
        except ObjectTooLarge:
            raise PayloadRejected("hash-mismatch", key, f"larger than the manifest's {declared} bytes") from None
        return check_payload(manifest, name, payload, key), len(payload)

    def _read_points(self, round: int, client: str, manifest: dict) -> tuple[np.ndarray, np.ndarray, int]:
        """The shared points (X, y) and their bytes: a declared count over the neighbour's cap is
        refused before any download, the Parquet row count checked before decoding."""
        where = self._key(round, client, MANIFEST_FILE)
        most = None if self.max_points is None else self.max_points.get(client, 0)
        if most is not None and manifest["n_synthetic"] > most:
            raise PayloadRejected("too-many-points", where, f"declares {manifest['n_synthetic']} shared points, over the cap of {most} (α·r·|D_base|)")
        data, n_bytes = self._read_payload(round, client, manifest, SYNTHETIC_FILE)
        key = self._key(round, client, SYNTHETIC_FILE)
        X, y = decode_synthetic(data, self.feature_names, key, max_rows=manifest["n_synthetic"])
        if len(y) != manifest["n_synthetic"]:
            raise PayloadRejected("schema", where, f"n_synthetic is {manifest['n_synthetic']} but {key} has {len(y)} rows")
        return X, y, n_bytes


def _in_thread(function, *args) -> Future:
    """``function(*args)`` in a daemon thread (a read stuck in the store never holds up the
    process's exit, as a ThreadPoolExecutor's threads would); its outcome in a Future."""
    future: Future = Future()

    def run():
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the Future
            future.set_exception(exc)

    threading.Thread(target=run, name="gather-read", daemon=True).start()
    return future
