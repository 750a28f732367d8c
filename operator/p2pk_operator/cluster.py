"""The operator's few Kubernetes API calls, behind one small interface.

Reconciliation (``p2pk_operator.reconcile``) creates objects (learning when one exists already),
reads a ConfigMap or a Secret, lists an experiment's Jobs and posts Events on the experiment;
nothing else. :class:`KubeCluster` does that with the official ``kubernetes`` client; the tests
use a recording fake with the same four methods.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

#: Kinds the operator touches → (API class of the kubernetes client, method suffix).
_ENDPOINTS = {"ConfigMap": ("CoreV1Api", "config_map"), "Secret": ("CoreV1Api", "secret"), "Job": ("BatchV1Api", "job")}
#: HTTP statuses that mean "this object is wrong" (retrying the same object cannot help).
_REJECTED = (400, 422)


class Rejected(Exception):
    """The API server refused an object for good (a 400 or 422 answer)."""


class Forbidden(Exception):
    """The operator's RBAC does not let it read that object (a 403 answer)."""


class Cluster(Protocol):
    def create(self, obj: dict) -> dict | None:
        """Create ``obj`` in ``obj.metadata.namespace``; ``None`` when created, else the object
        of that kind and name that exists already."""

    def read(self, kind: str, namespace: str, name: str) -> dict | None:
        """The object, or ``None`` when there is none; :class:`Forbidden` when RBAC says no."""

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict]:
        """Objects of ``kind`` in ``namespace`` carrying all ``labels``."""

    def event(self, body: Any, type: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event on ``body`` (the experiment)."""


class KubeCluster:
    """:class:`Cluster` through the ``kubernetes`` client: in-cluster configuration when the
    operator runs in a pod, else the kubeconfig (``KUBECONFIG``), unless an ``ApiClient`` is
    given. Events go through kopf, which posts them in the background."""

    def __init__(self, api_client=None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        self._client = api_client or client.ApiClient()
        self._apis = {"CoreV1Api": client.CoreV1Api(self._client), "BatchV1Api": client.BatchV1Api(self._client)}

    def _call(self, kind: str, verb: str, *args, **kwargs):
        api, suffix = _ENDPOINTS[kind]
        return getattr(self._apis[api], f"{verb}_namespaced_{suffix}")(*args, **kwargs)

    def create(self, obj: dict) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        kind, meta = obj["kind"], obj["metadata"]
        try:
            self._call(kind, "create", meta["namespace"], obj)
            return None
        except ApiException as exc:
            if exc.status == 409:
                return self.read(kind, meta["namespace"], meta["name"])
            if exc.status in _REJECTED:
                raise Rejected(f"{kind} {meta['name']}: {_message(exc)}") from None
            raise

    def read(self, kind: str, namespace: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._client.sanitize_for_serialization(self._call(kind, "read", name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 403:
                raise Forbidden(f"{kind} {namespace}/{name}: {_message(exc)}") from None
            raise

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        items = self._call(kind, "list", namespace, label_selector=selector).items
        return [self._client.sanitize_for_serialization(item) for item in items]

    def event(self, body: Any, type: str, reason: str, message: str) -> None:
        import kopf

        kopf.event(body, type=type, reason=reason, message=message)


def _message(exc) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)
