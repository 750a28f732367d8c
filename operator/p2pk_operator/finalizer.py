"""When an experiment carries the operator's finalizer, and how long its deletion may wait.

A finalizer is for state outside Kubernetes (the Jobs, Secrets and ConfigMap go with their
owner through ownerReferences). An experiment has such state only when the operator made
MinIO users for its clients (``spec.kubernetes.s3.adminSecret``) or must purge its store prefix
(``spec.kubernetes.purgeOnDelete``): only then does it carry kopf's finalizer
(:func:`needs_finalizer`, the deletion handler's filter; kopf adds and removes the finalizer as
the spec changes). An experiment with shared credentials and no purge is deleted at once, with
or without a running operator, so it can never keep ``helm uninstall`` or a namespace waiting.

The deletion of one that does is bounded: every wait (its Jobs still running before a purge, the
store or the MinIO admin API not answering) is retried until :data:`DELETION_TIMEOUT` seconds
(``p2pk operator --deletion-timeout``) after the experiment's ``deletionTimestamp``, counted by
the API server, so an operator restart does not reset it; then the operator makes one last
try, posts a Warning Event naming what it leaves in the store (:func:`abandoned_message`) and
releases the finalizer. Pure functions; ``reconcile.cleanup`` applies them.
"""

from __future__ import annotations

import datetime
from typing import Any, Mapping

#: Seconds after its deletionTimestamp that an experiment's deletion keeps waiting for the store
#: or its Jobs before the operator gives up and releases the finalizer.
DELETION_TIMEOUT = 120.0


def needs_finalizer(spec: Mapping[str, Any] | None) -> bool:
    """Whether deleting an experiment with this (raw) spec has work outside Kubernetes: MinIO
    users to remove (``adminSecret``) or a store prefix to purge (``purgeOnDelete``)."""
    kubernetes = (spec or {}).get("kubernetes") or {}
    s3 = kubernetes.get("s3") or {}
    return bool(s3.get("adminSecret")) or kubernetes.get("purgeOnDelete") is True


def deletion_age(deletion_timestamp: str | None, now: datetime.datetime) -> float:
    """Seconds since ``metadata.deletionTimestamp`` (RFC 3339, as the API server writes it);
    0 when there is none (not being deleted) and never negative (clock skew)."""
    if not deletion_timestamp:
        return 0.0
    started = datetime.datetime.fromisoformat(deletion_timestamp.replace("Z", "+00:00"))
    return max(0.0, (now - started).total_seconds())


def retry_delay(age: float, timeout: float, delay: float) -> float | None:
    """Seconds until the next try of a deletion that waits, or ``None`` once ``timeout`` is
    spent (give up now). The last retry lands on the deadline rather than up to ``delay`` past it."""
    left = timeout - age
    if left <= 0:
        return None
    return max(1.0, min(delay, left))


def abandoned_message(age: float, timeout: float, left: list[str]) -> str:
    """The Warning Event of a deletion given up on: what stays in the store, and why."""
    return (f"released the finalizer {age:.0f} s after deletion (p2pk operator --deletion-timeout {timeout:g}); "
            f"left in the store: {'; '.join(left)}")
