"""The operator's few Kubernetes API calls, behind one small interface.

Reconciliation (``p2pk_operator.reconcile``) creates objects (learning when one exists already),
reads a ConfigMap or a Secret, lists an experiment's Jobs and posts Events on the experiment;
the periodic observation (``p2pk_operator.handlers``) patches an experiment's status; nothing
else. :class:`KubeCluster` does that with the official ``kubernetes`` client; the tests use a
recording fake with the same five methods.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
from typing import Any, Protocol

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.crd import PLURAL

log = logging.getLogger(__name__)
#: The Events' reporting component.
COMPONENT = "p2pk-operator"

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

    def patch_status(self, body: Any, status: dict) -> None:
        """Merge ``status`` into the experiment's status subresource (gone meanwhile: nothing)."""


class KubeCluster:
    """:class:`Cluster` through the ``kubernetes`` client: in-cluster configuration when the
    operator runs in a pod, else the kubeconfig (``KUBECONFIG``), unless an ``ApiClient`` is
    given. An Event that cannot be posted (e.g. its namespace is being deleted) is logged, not
    raised: it never holds up what it reports."""

    def __init__(self, api_client=None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
        self._client = api_client or client.ApiClient()
        self._apis = {"CoreV1Api": client.CoreV1Api(self._client), "BatchV1Api": client.BatchV1Api(self._client)}
        self._custom = client.CustomObjectsApi(self._client)

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
        from kubernetes.client.exceptions import ApiException

        meta = body["metadata"]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": body["apiVersion"], "kind": body["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": type, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": socket.gethostname(),
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self._apis["CoreV1Api"].create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            log.warning("could not post the %s Event %s on %s/%s: %s", type, reason, meta["namespace"], meta["name"], _message(exc))

    def patch_status(self, body: Any, status: dict) -> None:
        from kubernetes.client.exceptions import ApiException

        meta = body["metadata"]
        try:
            self._custom.patch_namespaced_custom_object_status(API_GROUP, API_VERSION, meta["namespace"], PLURAL,
                                                               meta["name"], {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise


def _message(exc) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)
