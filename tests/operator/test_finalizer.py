"""Which experiments carry the operator's finalizer, and how long their deletion may wait
(``p2pk_operator.finalizer``), as pure functions."""

from __future__ import annotations

import datetime

import pytest

from p2pk_operator.finalizer import abandoned_message, deletion_age, needs_finalizer, retry_delay

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(("kubernetes", "needed"), [
    ({"s3": {"endpoint": "minio:9000", "adminSecret": "minio-admin"}}, True),  # MinIO users to remove
    ({"s3": {"endpoint": "minio:9000", "credentialsSecret": "keys"}, "purgeOnDelete": True}, True),  # a prefix to purge
    ({"s3": {"endpoint": "minio:9000", "credentialsSecret": "keys"}}, False),  # nothing outside Kubernetes
    ({"s3": {"endpoint": "minio:9000", "credentialsSecret": "keys"}, "purgeOnDelete": False}, False),
    ({"s3": {"adminSecret": ""}}, False),
    ({}, False),
])
def test_only_experiments_with_state_outside_kubernetes_need_the_finalizer(kubernetes, needed):
    assert needs_finalizer({"rounds": 3, "kubernetes": kubernetes}) is needed


@pytest.mark.parametrize("spec", [None, {}, {"kubernetes": None}, {"kubernetes": {"s3": None}}])
def test_a_spec_without_kubernetes_needs_no_finalizer(spec):
    assert needs_finalizer(spec) is False


@pytest.mark.parametrize(("stamp", "age"), [
    ("2026-12-01T11:58:00Z", 120.0),
    ("2026-12-01T12:00:00Z", 0.0),
    ("2026-12-01T12:00:05Z", 0.0),  # the API server's clock ahead of ours: never negative
    (None, 0.0),  # not being deleted
])
def test_deletion_age_counts_from_the_api_servers_deletion_timestamp(stamp, age):
    assert deletion_age(stamp, NOW) == age


@pytest.mark.parametrize(("age", "timeout", "delay", "expected"), [
    (0, 120, 30, 30),      # plenty of time: the usual delay
    (100, 120, 30, 20),    # the last retry lands on the deadline
    (119.5, 120, 30, 1),   # never busy-loops
    (120, 120, 30, None),  # spent: give up now
    (500, 120, 10, None),
])
def test_retry_delay_is_bounded_by_the_deletion_timeout(age, timeout, delay, expected):
    assert retry_delay(age, timeout, delay) == expected


def test_the_abandoned_message_names_the_timeout_and_what_is_left():
    text = abandoned_message(121.4, 120, ["everything under s3://b/p/ns/exp/ (store down)", "the MinIO users u1, u2 at http://m:9000 (x)"])
    assert text == ("released the finalizer 121 s after deletion (p2pk operator --deletion-timeout 120); left in the store: "
                    "everything under s3://b/p/ns/exp/ (store down); the MinIO users u1, u2 at http://m:9000 (x)")
