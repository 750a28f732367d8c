"""The directory and S3 stores behave the same (S3 = moto's real server over HTTP, minio client);
retries, key checks, URL parsing, checkpoints."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import pytest
from services import free_port

from p2p_job.store import (
    DEFAULT_RETRY_SECONDS,
    DirectoryStore,
    ObjectTooLarge,
    RetryingStore,
    StoreDenied,
    StoreError,
    check_key,
    metrics_key,
    metrics_prefix,
    metrics_round,
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
    assert store.list("exp/", limit=2) == ["exp/m/a.bin", "exp/m/rounds/00001/client-a/manifest.json"]
    assert RetryingStore(store).list("exp/", limit=1) == ["exp/m/a.bin"]
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
    prefix = metrics_prefix("exp1", "ksmote", "client-a")
    assert metrics_key("exp1", "ksmote", "client-a", 3) == prefix + "00003.parquet" == "exp1/ksmote/metrics/client-a/00003.parquet"
    assert metrics_round(prefix + "00003.parquet", prefix) == 3
    for other in ("00003.parquet.tmp", "3.parquet", "x/00003.parquet", "0000a.parquet"):
        assert metrics_round(prefix + other, prefix) is None
    assert metrics_round("exp1/ksmote/metrics/client-b/00003.parquet", prefix) is None
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


class FakeTime:
    """A clock that only moves when the store sleeps: budgets are checked without waiting."""

    def __init__(self):
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def retrying(store, fake: FakeTime, **kwargs) -> RetryingStore:
    return RetryingStore(store, sleep=fake.sleep, clock=fake.clock, rng=random.Random(7), **kwargs)


def test_s3_missing_bucket_is_denied_without_retries(s3_server):
    missing = open_store("s3://no-such-bucket-p2pk/x", endpoint=s3_server.endpoint, access_key="a", secret_key="b")
    store = retrying(missing, FakeTime())
    with pytest.raises(StoreDenied, match="NoSuchBucket"):
        store.put_bytes("a", b"x")
    assert store.retries == 0


def test_s3_refused_connections_are_retried_until_the_budget_is_spent():
    fake = FakeTime()
    unreachable = open_store("s3://bucket/x", endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b")
    store = retrying(unreachable, fake, budget_seconds=30, max_delay=4)
    with pytest.raises(StoreError, match="get k"):
        store.get_bytes("k")
    assert sum(fake.pauses) <= 30 < sum(fake.pauses) + 4  # stopped when the next pause would pass the budget
    assert store.retries == len(fake.pauses) >= 7


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


def test_retrying_store_backs_off_with_full_jitter_then_succeeds(tmp_path):
    fake, waits = FakeTime(), []
    store = retrying(Flaky(DirectoryStore(tmp_path), 4), fake, base_delay=0.1, max_delay=0.3, on_wait=waits.append)
    store.put_bytes("a", b"xyz")
    # Pause i is uniform in [0, min(max_delay, base·2^i)] (Brooker 2015): 0.1, 0.2, 0.3, 0.3.
    expected = random.Random(7)
    assert fake.pauses == [expected.uniform(0, cap) for cap in (0.1, 0.2, 0.3, 0.3)]
    assert [w.failures for w in waits] == [1, 2, 3, 4]
    assert waits[0].what == "put a" and waits[0].error == "flaky put_bytes" and waits[0].waited == 0
    assert waits[-1].waited == pytest.approx(sum(fake.pauses[:-1]))
    assert store.retries == 4 and store.bytes_written == 3
    assert store.get_bytes("a") == b"xyz" and store.bytes_read == 3


def test_retrying_store_rides_out_a_minute_long_outage_at_default_settings(tmp_path):
    """The default budget outlasts a store restart of about a minute."""
    fake = FakeTime()
    outage = Flaky(DirectoryStore(tmp_path), failures=10**9)
    store = retrying(outage, fake)
    original_sleep = store.sleep

    def sleep(seconds):  # the store comes back 60 s into the outage
        original_sleep(seconds)
        if fake.now >= 60:
            outage.failures = 0

    store.sleep = sleep
    store.put_bytes("a", b"x")
    assert DEFAULT_RETRY_SECONDS >= 90 and 60 <= fake.now <= 75


def test_retrying_store_gives_up_after_its_budget(tmp_path):
    fake = FakeTime()
    store = retrying(Flaky(DirectoryStore(tmp_path), 10**9), fake, budget_seconds=5, base_delay=1, max_delay=2)
    with pytest.raises(StoreError, match="flaky get_bytes"):
        store.get_bytes("a")
    assert 3 <= sum(fake.pauses) <= 5


def test_retrying_store_with_no_budget_tries_once(tmp_path):
    fake = FakeTime()
    store = retrying(Flaky(DirectoryStore(tmp_path), 1), fake, budget_seconds=0)
    with pytest.raises(StoreError):
        store.list("")
    assert fake.pauses == []


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
