"""kopf handlers for P2PExperiment resources: thin wrappers around ``p2pk_operator.reconcile``.

Run with ``p2pk operator --namespace NS`` (or ``--all-namespaces``), or
``kopf run --standalone -m p2pk_operator.handlers``. Every handler is idempotent:

- create, resume (the operator restarted) and a spec change reconcile the experiment;
- one task re-derives the status of created, unfinished experiments every
  :data:`OBSERVE_INTERVAL` seconds (``$P2PK_OBSERVE_INTERVAL``, set by
  ``p2pk operator --observe-interval``; default 30) from their Jobs and the clients' metrics
  in the store (kopf's index of the experiments it serves says which there are);
- delete removes the clients' MinIO users and, with ``purgeOnDelete``, the store prefix
  (the Jobs, Secrets and ConfigMap go with their owner). Only experiments with such state
  outside Kubernetes carry kopf's finalizer (:func:`~p2pk_operator.finalizer.needs_finalizer`),
  and their deletion waits at most ``memo.deletion_timeout`` seconds
  (``p2pk operator --deletion-timeout``) before the finalizer is released with a Warning Event.

The side effects live in ``memo.services`` (:class:`~p2pk_operator.reconcile.Services`), made
at startup unless already given (tests pass a ``kopf.Memo`` with fakes), with
``memo.pushgateway`` as the Jobs' default Pushgateway (``p2pk operator --pushgateway``) and
``memo.admission`` the allowlists (``--allowed-image``, ``--allowed-service-account``) and
``memo.deletion_timeout`` the bound on a deletion.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os

import kopf

from p2p_job.spec import API_GROUP, API_VERSION
from p2pk_operator.admission import Admission
from p2pk_operator.cluster import KubeCluster
from p2pk_operator.crd import PLURAL
from p2pk_operator.finalizer import DELETION_TIMEOUT, needs_finalizer
from p2pk_operator.reconcile import DeletionWaits, Services, cleanup, reconcile
from p2pk_operator.status import needs_observation

#: Seconds between two status observations of a running experiment.
OBSERVE_INTERVAL = float(os.environ.get("P2PK_OBSERVE_INTERVAL") or 30)
RESOURCE = (API_GROUP, API_VERSION, PLURAL)
log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # kopf's own "handler succeeded" notes stay in the log; the experiment's Events are the
    # status transitions the reconciliation posts (and kopf's warnings and errors).
    settings.posting.level = logging.WARNING
    # Serve only the namespaces given (or all with --all-namespaces) and the CRDs present at
    # start: no cluster-wide scan of Namespaces and CustomResourceDefinitions, which a namespaced
    # operator's Role does not allow (it was refused and fell back only after ~55 s of retries).
    settings.scanning.disabled = True
    if "services" not in memo:
        memo.services = Services(cluster=KubeCluster(), pushgateway=memo.get("pushgateway"),
                                 admission=memo.get("admission") or Admission(),
                                 deletion_timeout=memo.get("deletion_timeout") or DELETION_TIMEOUT)


@kopf.on.create(*RESOURCE)
def created(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_) -> None:
    reconcile(body, patch, memo.services)


@kopf.on.resume(*RESOURCE)
def resumed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_) -> None:
    reconcile(body, patch, memo.services)


@kopf.on.update(*RESOURCE, field="spec")
def spec_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_) -> None:
    reconcile(body, patch, memo.services)


@kopf.index(*RESOURCE)
def experiments(body: kopf.Body, namespace: str, name: str, **_) -> dict:
    """The latest state of every experiment the operator serves, for :func:`observe_forever`."""
    return {(namespace, name): copy.deepcopy(dict(body))}


def observe(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_) -> None:
    """Re-derive a created, unfinished experiment's status into ``patch``; others are left alone."""
    if needs_observation(body):
        reconcile(body, patch, memo.services)


def observe_once(body: dict, memo: kopf.Memo) -> None:
    """:func:`observe`, and the status patch applied."""
    patch = kopf.Patch()
    observe(body, patch, memo)
    if patch.get("status"):
        memo.services.cluster.patch_status(body, dict(patch["status"]))


async def observe_forever(memo: kopf.Memo, index: kopf.Index, interval: float) -> None:
    """Every ``interval`` seconds, observe every experiment in ``index`` at once (each in a
    thread). One task for the operator, not a kopf timer per experiment: kopf puts its finalizer
    on every object a timer serves (to stop the timer before the object goes), and an experiment
    without state outside Kubernetes must not wait for the operator to be deleted."""
    while True:
        await asyncio.sleep(interval)
        bodies = [body for store in list(index.values()) for body in list(store)]
        outcomes = await asyncio.gather(*(asyncio.to_thread(observe_once, body, memo) for body in bodies), return_exceptions=True)
        for body, outcome in zip(bodies, outcomes):
            where = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
            if isinstance(outcome, kopf.TemporaryError):
                log.warning("observing %s: %s", where, outcome)
            elif isinstance(outcome, Exception):
                log.error("observing %s failed: %s", where, outcome, exc_info=outcome)


@kopf.on.startup()
async def start_observing(memo: kopf.Memo, experiments: kopf.Index, **_) -> None:
    memo.observer = asyncio.create_task(observe_forever(memo, experiments, OBSERVE_INTERVAL))


@kopf.on.cleanup()
async def stop_observing(memo: kopf.Memo, **_) -> None:
    if memo.get("observer"):
        memo.observer.cancel()


def _needs_finalizer(spec: kopf.Spec, **_) -> bool:
    return needs_finalizer(spec)


# Filtered: kopf adds its finalizer only to experiments with state outside Kubernetes (and
# removes it when a spec change drops that), so the others never wait for an operator.
@kopf.on.delete(*RESOURCE, when=_needs_finalizer)
async def deleted(body: kopf.Body, memo: kopf.Memo, logger, **_) -> None:
    # Waiting (for the Jobs to stop, for the store) is no error: logged as information and tried
    # again here rather than with kopf.TemporaryError, which kopf logs as an ERROR. The wait is
    # bounded by the deletion timeout, counted from the deletionTimestamp, so a restart in
    # between (this task cancelled, the finalizer kept) does not extend it.
    while True:
        try:
            return await asyncio.to_thread(cleanup, body, memo.services)
        except DeletionWaits as wait:
            logger.info(f"{wait}; trying again in {wait.delay:g} s")
            await asyncio.sleep(wait.delay)
