"""``p2pk simulate``: every peer of every method in one process, exchanging through memory.

Each method is its own run of the peers on the same shards (built once from the spec's seed) and
the same seeds, with its own exchange, so the comparison between methods is fair. Within a round
every peer publishes (phase 1) before any peer gathers (phase 2), as the peers of a real
deployment would given a round timeout, so no publication is ever missing here.

The methods advance round by round together, so that one training engine call serves them all:

* ``engine="batched"`` (default): every peer of every method trains in one stacked step per
  batch (:func:`p2p_job.training.train_many`); results equal per-peer training to float
  rounding (the tolerance is stated in tests/test_training.py).
* ``engine="per-peer"``: each peer trains alone (:func:`p2p_job.training.train_local`), exactly
  as a ``p2pk worker`` does: the same results as ``p2pk run`` to the bit on the CPU.

Either way each peer's round logic is :class:`p2p_job.peer.Peer`'s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

import pandas as pd

from p2p_job.exchange import MemoryExchange
from p2p_job.peer import Peer, neighbourhoods
from p2p_job.results import RoundRecord, results_frame
from p2p_job.scenarios import Shards, build_shards
from p2p_job.scores import clear_kept, keep_in_folder
from p2p_job.spec import MethodSpec, P2PExperiment, select_methods
from p2p_job.training import resolve_device, train_many

#: Called after every (method, round) with that round's records, one per client.
RoundCallback = Callable[[str, int, list[RoundRecord]], None]


#: How ``p2pk simulate`` runs local training: all peers stacked, or each alone.
Engine = Literal["batched", "per-peer"]
ENGINES: tuple[str, ...] = ("batched", "per-peer")


def train_and_publish_all(peers: list[Peer], r: int, exchanges: list[MemoryExchange], engine: Engine) -> None:
    """Phase 1 of round r for many peers (``exchanges[i]`` is peer i's): each one's
    :meth:`~p2p_job.peer.Peer.training_task`, then one engine call for all (``batched``) or one
    per peer (``per-peer``), then each one's :meth:`~p2p_job.peer.Peer.publish_trained`."""
    tasks = [peer.training_task(r) for peer in peers]
    training, device = peers[0].exp.spec.training, peers[0].device
    if engine == "batched":
        start = time.perf_counter()
        losses = train_many(tasks, training, device)
        seconds = [(time.perf_counter() - start) / len(peers)] * len(peers)
    else:
        losses, seconds = [], []
        for task in tasks:
            start = time.perf_counter()
            losses += train_many([task], training, device)
            seconds.append(time.perf_counter() - start)
    for peer, exchange, loss, s in zip(peers, exchanges, losses, seconds):
        peer.publish_trained(r, exchange, loss, s)


def simulate_methods(
    exp: P2PExperiment,
    methods: list[MethodSpec],
    shards: Shards,
    device,
    on_round: RoundCallback | None = None,
    engine: Engine = "batched",
    keep_in: Path | None = None,
) -> list[RoundRecord]:
    """Algorithm 2 for the given methods side by side: ``spec.rounds`` rounds of every peer,
    each method through its own MemoryExchange; records method by method, round by round. With
    ``keep_in`` (a results folder), each peer's scores and final model are kept there
    (``p2p_job.scores``)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    clients = list(shards.clients)
    groups = []
    for method in methods:
        neighbours = neighbourhoods(exp, method, clients)
        groups.append(([Peer(exp, method, shards.clients[c], neighbours[c], device) for c in clients], MemoryExchange()))
    peers = [peer for group, _ in groups for peer in group]
    exchanges = [exchange for group, exchange in groups for _ in group]
    records: list[list[RoundRecord]] = [[] for _ in groups]
    if keep_in is not None:
        for group, _ in groups:
            clear_kept(keep_in, group[0].method_name)
    for r in range(1, exp.spec.rounds + 1):
        train_and_publish_all(peers, r, exchanges, engine)
        for (group, exchange), method_records in zip(groups, records):
            round_records = [peer.merge_and_evaluate(r, exchange) for peer in group]
            if keep_in is not None:
                for peer in group:
                    keep_in_folder(peer, r, keep_in)
            exchange.forget(r + 1)
            method_records += round_records
            if on_round:
                on_round(round_records[0].method, r, round_records)
    return [record for method_records in records for record in method_records]


def simulate_method(
    exp: P2PExperiment, method: MethodSpec, shards: Shards, device, on_round: RoundCallback | None = None,
    engine: Engine = "batched",
) -> list[RoundRecord]:
    """Algorithm 2 for one method: :func:`simulate_methods` with that method alone."""
    return simulate_methods(exp, [method], shards, device, on_round, engine)


def simulate(
    exp: P2PExperiment,
    *,
    methods: list[str] | None = None,
    device: str | None = None,
    base_dir: Path | None = None,
    on_round: RoundCallback | None = None,
    engine: Engine = "batched",
    keep_in: Path | None = None,
    shards: Shards | None = None,
) -> pd.DataFrame:
    """Run the experiment's methods (all, or those named) side by side and return the results
    rows.

    ``device`` overrides ``spec.runtime.device``; ``base_dir`` resolves relative dataset paths
    (the spec file's folder); ``engine`` is ``batched`` or ``per-peer`` (module docstring);
    ``keep_in`` is the results folder that keeps scores and models; ``shards``, when the caller
    built them already (``build_shards(exp, base_dir)``)."""
    selected = select_methods(exp, methods)
    torch_device = resolve_device(device or exp.spec.runtime.device)
    shards = build_shards(exp, base_dir) if shards is None else shards
    return results_frame(simulate_methods(exp, selected, shards, torch_device, on_round, engine, keep_in))
