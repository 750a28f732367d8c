"""The directory and S3 stores behave the same (S3 = moto's real server over HTTP, minio client);
retries, key checks, URL parsing, checkpoints."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from services import free_port

from p2p_job.store import (
    DirectoryStore,
    ObjectTooLarge,
    RetryingStore,
    StoreDenied,
    StoreError,
    check_key,
    open_store,
    round_key,
)


@pytest.fixture(params=["directory", "s3"])
def store(request, tmp_path):
    if request.param == "directory":
        return open_store((tmp_path / "store").as_uri())
    server = request.getfixturevalue("s3_server")
    return server.open(server.store_url("prefix/inside"))


def test_put_get_list_delete(store):
    assert store.get_bytes("exp/m/a.bin") is None
    assert store.list("exp/") == []
    store.put_bytes("exp/m/rounds/00001/client-a/manifest.json", b"{}")
    store.put_bytes("exp/m/a.bin", b"\x00\x01")
    store.put_bytes("exp/other/b.bin", b"")
    store.put_bytes("exp/m/a.bin", b"\x02")  # overwrite
    assert store.get_bytes("exp/m/a.bin") == b"\x02"
    assert store.get_bytes("exp/other/b.bin") == b""
    assert store.list("exp/m/") == ["exp/m/a.bin", "exp/m/rounds/00001/client-a/manifest.json"]
    assert store.list("exp/") == ["exp/m/a.bin", "exp/m/rounds/00001/client-a/manifest.json", "exp/other/b.bin"]
    assert store.delete_prefix("exp/m/") == 2
    assert store.list("exp/") == ["exp/other/b.bin"]


def test_a_read_with_max_bytes_refuses_a_longer_object(store):
    store.put_bytes("exp/m/a.bin", b"12345")
    assert store.get_bytes("exp/m/a.bin", max_bytes=5) == b"12345"
    assert store.get_bytes("exp/m/absent.bin", max_bytes=5) is None
    with pytest.raises(ObjectTooLarge, match="more than 4 bytes"):
        store.get_bytes("exp/m/a.bin", max_bytes=4)
    with pytest.raises(ObjectTooLarge):
        RetryingStore(store, sleep=lambda s: None).get_bytes("exp/m/a.bin", max_bytes=0)


def test_large_object_round_trips(store):
    data = np.random.default_rng(0).bytes(3 * 2**20 + 17)
    store.put_bytes("exp/big.bin", data)
    assert store.get_bytes("exp/big.bin") == data


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/.tmp-x"])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="invalid store key"):
        DirectoryStore(tmp_path).put_bytes(key, b"x")


def test_layout_keys():
    assert round_key("exp1", "ksmote", 3, "client-a", "manifest.json") == "exp1/ksmote/rounds/00003/client-a/manifest.json"
    assert check_key("a/b.c") == "a/b.c"


def test_directory_writes_are_atomic_for_concurrent_readers(tmp_path):
    """A reader racing a writer sees one whole version or the other, never a mix or a prefix."""
    store = DirectoryStore(tmp_path)
    versions = [bytes([i]) * 200_000 for i in range(2)]
    store.put_bytes("k", versions[0])
    seen = []

    def read():
        for _ in range(300):
            seen.append(store.get_bytes("k"))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(60):
        store.put_bytes("k", versions[i % 2])
    reader.join()
    assert set(seen) <= set(versions)
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temporary left behind


def test_directory_permission_error_is_denied(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file"
        target.write_text("x")  # a file where a folder is needed: an OSError even for root
        with pytest.raises(StoreError, match="cannot write"):
            DirectoryStore(tmp_path).put_bytes("file/child", b"x")
        return
    tmp_path.chmod(0o500)
    with pytest.raises(StoreDenied):
        DirectoryStore(tmp_path).put_bytes("a/b", b"x")


def test_s3_missing_bucket_is_denied_without_retries(s3_server):
    missing = open_store("s3://no-such-bucket-p2pk/x", endpoint=s3_server.endpoint, access_key="a", secret_key="b")
    retrying = RetryingStore(missing, attempts=4, sleep=lambda s: None)
    with pytest.raises(StoreDenied, match="NoSuchBucket"):
        retrying.put_bytes("a", b"x")
    assert retrying.retries == 0


def test_s3_unreachable_endpoint_is_a_store_error_after_retries():
    pauses = []
    unreachable = open_store("s3://bucket/x", endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b")
    store = RetryingStore(unreachable, attempts=3, sleep=pauses.append)
    with pytest.raises(StoreError, match="get k"):
        store.get_bytes("k")
    assert len(pauses) == 2


class Flaky:
    """A store that fails the first ``failures`` calls, then delegates."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.calls = inner, failures, 0

    def __getattr__(self, name):
        def call(*args):
            self.calls += 1
            if self.calls <= self.failures:
                raise StoreError(f"flaky {name}")
            return getattr(self.inner, name)(*args)

        return call


def test_retrying_store_backs_off_exponentially_then_succeeds(tmp_path):
    pauses = []
    store = RetryingStore(Flaky(DirectoryStore(tmp_path), 3), attempts=5, base_delay=0.1, max_delay=0.3, sleep=pauses.append)
    store.put_bytes("a", b"xyz")
    assert pauses == [0.1, 0.2, 0.3]
    assert store.retries == 3
    assert store.bytes_written == 3
    assert store.get_bytes("a") == b"xyz"
    assert store.bytes_read == 3


def test_retrying_store_gives_up_after_its_attempts(tmp_path):
    pauses = []
    store = RetryingStore(Flaky(DirectoryStore(tmp_path), 10), attempts=3, base_delay=1, sleep=pauses.append)
    with pytest.raises(StoreError, match="flaky get_bytes"):
        store.get_bytes("a")
    assert pauses == [1, 2]


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://x/y", "expected file:///path or s3://bucket/prefix"),
        ("file://host/path", "expected file:///absolute/path"),
        ("s3:///prefix", "expected s3://bucket/prefix"),
        ("s3://bucket/prefix", "needs an S3 endpoint"),
    ],
)
def test_bad_store_urls(url, message):
    with pytest.raises(ValueError, match=message):
        open_store(url)


def test_open_store_kinds(tmp_path, s3_server):
    assert isinstance(open_store(tmp_path.as_uri()), DirectoryStore)
    s3 = open_store("s3://some-bucket/a/b", endpoint=f"http://{s3_server.endpoint}", create_bucket=True,
                    access_key="k", secret_key="s")
    assert repr(s3) == "S3Store('s3://some-bucket/a/b/')"
    s3.put_bytes("x", b"1")
    assert s3.list("") == ["x"]
