"""Where peers leave their publications: a directory or an S3 bucket (MinIO, moto, AWS).

DESIGN "Store layout": everything of one run of one method lives under
``<experiment>/<method>/`` (``spec.yaml``, ``rounds/<r:05d>/<client>/…``, ``checkpoints/<client>/…``,
``metrics/<client>/<r:05d>.parquet``); the key helpers below are the only place that spells it.

Only the standard library and ``minio`` are imported here: the operator (no torch, no pandas)
uses this module to read status and purge experiments.

Both stores make each ``put_bytes`` atomic: a reader sees the whole old object or the whole new
one, never a partial file (the directory store writes a hidden temporary file and renames it;
an S3 PUT is atomic by itself). Backend failures surface as :class:`StoreError`;
:class:`RetryingStore` retries them with exponential backoff and jitter, up to a time budget.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import urlparse

#: Prefix of the directory store's temporary files (never listed, never read).
_TMP_PREFIX = ".tmp-"
#: The name under ``<experiment>/`` that holds the shards instead of a method's run.
SHARDS = "shards"
#: Marks "no default" in :meth:`S3Store._call` (``None`` is a valid default there).
_RAISE = object()


class StoreError(RuntimeError):
    """The store could not be reached or failed an operation (worth retrying)."""


class StoreDenied(StoreError):
    """The store refused an operation for good (credentials, permissions, no such bucket)."""


class ObjectTooLarge(ValueError):
    """``get_bytes(key, max_bytes=n)`` found an object of more than ``n`` bytes; at most
    ``n + 1`` bytes of it were read (an untrusted object is never read whole to learn this)."""

    def __init__(self, key: str, max_bytes: int):
        self.key = key
        self.max_bytes = max_bytes
        super().__init__(f"{key}: more than {max_bytes} bytes")


#: S3 error codes that retrying cannot fix.
_DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"})


class Store(Protocol):
    """Keys are relative to the store root: ``"<experiment>/<method>/rounds/…"``."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, ``None`` when absent; :class:`ObjectTooLarge` when ``max_bytes``
        is given and the object is longer."""
        ...


    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        """The keys that start with ``prefix``, sorted; with ``limit``, only the first ``limit``
        of them (an untrusted prefix is never listed whole to learn that it holds too many)."""
        ...

    def delete_prefix(self, prefix: str) -> int: ...


# --------------------------------------------------------------------------- layout


def run_prefix(experiment: str, method: str) -> str:
    """``<experiment>/<method>/``: one method's run of the peers (project amendment "Methods")."""
    return f"{experiment}/{method}/"


def spec_key(experiment: str, method: str) -> str:
    return f"{run_prefix(experiment, method)}spec.yaml"


def round_key(experiment: str, method: str, round: int, client: str, name: str) -> str:
    """``rounds/<r:05d>/<client>/<name>`` with name ``model.safetensors``, ``synthetic.parquet``
    or ``manifest.json``."""
    return f"{run_prefix(experiment, method)}rounds/{round:05d}/{client}/{name}"


def checkpoint_key(experiment: str, method: str, client: str, name: str) -> str:
    return f"{run_prefix(experiment, method)}checkpoints/{client}/{name}"


def metrics_prefix(experiment: str, method: str, client: str) -> str:
    """``metrics/<client>/``: a client's metrics, one part per round (:func:`metrics_key`)."""
    return f"{run_prefix(experiment, method)}metrics/{client}/"


def metrics_key(experiment: str, method: str, client: str, round: int) -> str:
    """``metrics/<client>/<r:05d>.parquet``: the client's results rows of round r, written once
    when the round ends (a round redone after a restart writes the same key again)."""
    return f"{metrics_prefix(experiment, method, client)}{round:05d}.parquet"


def metrics_round(key: str, prefix: str) -> int | None:
    """The round of a key under a :func:`metrics_prefix` that :func:`metrics_key` spells, else None."""
    name = key[len(prefix):] if key.startswith(prefix) else ""
    stem = name.removesuffix(".parquet")
    return int(stem) if len(name) == 13 and len(stem) == 5 and stem.isdigit() else None


def shards_prefix(experiment: str) -> str:
    """``<experiment>/shards/``: the clients' prepared shards (``p2p_job.shards``), cut once
    per experiment and read by every method's workers (so no method may be named ``shards``)."""
    return f"{experiment}/{SHARDS}/"


def scores_key(experiment: str, method: str, client: str, round: int) -> str:
    """A client's kept scores of one round (``p2p_job.scores``)."""
    return f"{run_prefix(experiment, method)}scores/{client}/{round:05d}.parquet"


def model_key(experiment: str, method: str, client: str) -> str:
    """A client's final model (``p2p_job.scores``)."""
    return f"{run_prefix(experiment, method)}models/{client}.safetensors"


def check_key(key: str) -> str:
    """A key is ``/``-separated non-empty names, none of them ``.``, ``..`` or hidden temporaries."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) for p in parts):
        raise ValueError(f"invalid store key {key!r}: expected '/'-separated names without '', '.', '..'")
    return key


def _within(data: bytes, key: str, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLarge(key, max_bytes)
    return data


# --------------------------------------------------------------------------- directory


class DirectoryStore:
    """A store in a local directory (``file:///path``); keys map to files below ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except PermissionError as exc:
            raise StoreDenied(f"{self}: cannot write {key}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"{self}: cannot write {key}: {exc}") from exc

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self}: cannot read {key}: {exc}") from exc
        return _within(data, key, max_bytes)

    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        base = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(_TMP_PREFIX)
        )
        return sorted(k for k in keys if k.startswith(prefix))[:limit]

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        return len(keys)


# --------------------------------------------------------------------------- S3


def _minio_client(endpoint: str, access_key: str | None, secret_key: str | None, secure: bool):
    """A minio client for ``host:port`` or ``http(s)://host:port``. Its HTTP pool does not
    retry by itself: :class:`RetryingStore` is the one retry layer, with its own backoff."""
    import certifi
    import urllib3
    from minio import Minio

    parsed = urlparse(endpoint if "://" in endpoint else f"{'https' if secure else 'http'}://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"invalid S3 endpoint {endpoint!r}: expected host:port or http(s)://host:port")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=10, read=120), maxsize=10, retries=False,
        cert_reqs="CERT_REQUIRED", ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(parsed.netloc, access_key=access_key, secret_key=secret_key, secure=parsed.scheme == "https",
                 http_client=http)


class S3Store:
    """A store in an S3 bucket under an optional prefix (``s3://bucket/prefix``), through the
    ``minio`` client. ``create_bucket`` makes the bucket when it is missing (the local runner
    and tests; scoped Kubernetes credentials usually may not)."""

    def __init__(self, client, bucket: str, prefix: str = "", *, create_bucket: bool = False):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if create_bucket:
            self._call("create bucket", lambda: self.client.bucket_exists(bucket) or self.client.make_bucket(bucket))

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _call(self, what: str, fn: Callable, *, absent=_RAISE):
        """Run one client call; a missing object gives ``absent`` (when given), any other
        failure a :class:`StoreError`."""
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except S3Error as exc:
            if absent is not _RAISE and exc.code in ("NoSuchKey", "NoSuchObject"):
                return absent
            raise (StoreDenied if exc.code in _DENIED_CODES else StoreError)(f"{self}: {what}: {exc}") from exc
        except (MinioException, HTTPError, OSError) as exc:
            raise StoreError(f"{self}: {what}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self.prefix + check_key(key)
        self._call(f"put {key}", lambda: self.client.put_object(self.bucket, name, io.BytesIO(data), len(data)))

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        name = self.prefix + check_key(key)

        def read() -> bytes:
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read() if max_bytes is None else response.read(max_bytes + 1)
            finally:
                response.close()
                response.release_conn()

        data = self._call(f"get {key}", read, absent=None)
        return None if data is None else _within(data, key, max_bytes)

    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        # S3 lists in key order, page by page: islice stops fetching pages at the limit.
        objects = self._call(
            f"list {prefix}",
            lambda: list(itertools.islice(self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True), limit)),
        )
        return sorted(o.object_name[len(self.prefix) :] for o in objects)

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list(prefix)
        errors = self._call(
            f"delete {prefix}",
            lambda: list(self.client.remove_objects(self.bucket, (DeleteObject(self.prefix + k) for k in keys))),
        )
        if errors:
            raise StoreError(f"{self}: delete {prefix}: {errors[0]}")
        return len(keys)


# --------------------------------------------------------------------------- retries


#: Seconds a store call keeps retrying by default: long enough to ride out a store restart
#: (MinIO comes back in well under a minute) or a short network partition.
DEFAULT_RETRY_SECONDS = 120.0


@dataclass(frozen=True)
class StoreWait:
    """One pause of :class:`RetryingStore` before the next try: the call (``"get <key>"``),
    how many tries failed so far, the seconds since the first try, the pause ahead, the error."""

    what: str
    failures: int
    waited: float
    pause: float
    error: str


class RetryingStore:
    """Wraps a store: a call that raises :class:`StoreError` (but not :class:`StoreDenied`, which
    no retry can fix) is tried again after a pause, until it succeeds or ``budget_seconds`` have
    passed since its first try; then the last error is raised.

    Pauses follow "exponential backoff with full jitter" (M. Brooker, *Exponential Backoff And
    Jitter*, AWS Architecture Blog, 2015): the i-th pause is uniform in
    ``[0, min(max_delay, base_delay·2^i)]``, so workers that lost the store together do not come
    back in lock-step. ``on_wait`` is told of every pause (the worker logs it and sets a gauge,
    so that a peer waiting for its store is seen waiting, not dead). ``rng`` makes the jitter
    reproducible in tests; ``clock`` and ``sleep`` can be faked.

    It also keeps the seconds spent in store calls and the bytes moved, which telemetry and
    ``benchmarks/bench_store.py`` report."""

    def __init__(self, store: Store, *, budget_seconds: float = DEFAULT_RETRY_SECONDS, base_delay: float = 0.2,
                 max_delay: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 on_wait: Callable[[StoreWait], None] | None = None):
        if budget_seconds < 0 or base_delay <= 0 or max_delay < base_delay:
            raise ValueError("RetryingStore needs budget_seconds >= 0 and 0 < base_delay <= max_delay")
        self.store = store
        self.budget_seconds = budget_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_wait = on_wait
        self.seconds = 0.0
        self.bytes_written = 0
        self.bytes_read = 0
        self.retries = 0

    def __repr__(self) -> str:
        return repr(self.store)

    def _retry(self, what: str, fn: Callable, *args):
        start = self.clock()
        try:
            failures = 0
            while True:
                try:
                    return fn(*args)
                except StoreDenied:
                    raise
                except StoreError as exc:
                    waited = self.clock() - start
                    pause = self.rng.uniform(0, min(self.max_delay, self.base_delay * 2**failures))
                    failures += 1
                    if waited + pause > self.budget_seconds:
                        raise
                    self.retries += 1
                    if self.on_wait:
                        self.on_wait(StoreWait(what, failures, waited, pause, str(exc)))
                    self.sleep(pause)
        finally:
            self.seconds += self.clock() - start

    def put_bytes(self, key: str, data: bytes) -> None:
        self._retry(f"put {key}", self.store.put_bytes, key, data)
        self.bytes_written += len(data)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes | None:
        data = self._retry(f"get {key}", self.store.get_bytes, key, max_bytes)
        self.bytes_read += len(data or b"")
        return data

    def list(self, prefix: str, limit: int | None = None) -> list[str]:
        return self._retry(f"list {prefix}", self.store.list, prefix, limit)

    def delete_prefix(self, prefix: str) -> int:
        return self._retry(f"delete {prefix}", self.store.delete_prefix, prefix)


# --------------------------------------------------------------------------- URLs


def open_store(url: str, *, endpoint: str | None = None, access_key: str | None = None,
               secret_key: str | None = None, secure: bool = False, create_bucket: bool = False) -> Store:
    """``file:///path`` → :class:`DirectoryStore`; ``s3://bucket/prefix`` → :class:`S3Store`
    (``endpoint`` is required: ``host:port`` or ``http(s)://host:port``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise ValueError(f"invalid store URL {url!r}: expected file:///absolute/path")
        return DirectoryStore(parsed.path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"invalid store URL {url!r}: expected s3://bucket/prefix")
        if not endpoint:
            raise ValueError(f"store {url!r} needs an S3 endpoint (P2PK_S3_ENDPOINT or --s3-endpoint)")
        client = _minio_client(endpoint, access_key, secret_key, secure)
        return S3Store(client, parsed.netloc, parsed.path, create_bucket=create_bucket)
    raise ValueError(f"invalid store URL {url!r}: expected file:///path or s3://bucket/prefix")
