"""``p2pk simulate``: every peer of every method in one process, exchanging through memory.

Each method is its own run of the peers on the same shards (built once from the spec's seed) and
the same seeds, so the comparison between methods is fair. Within a round every peer publishes
(phase 1) before any peer gathers (phase 2), as the peers of a real deployment would given a
round timeout, so no publication is ever missing here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from p2p_job.exchange import MemoryExchange
from p2p_job.peer import Peer, neighbourhoods
from p2p_job.results import RoundRecord, results_frame
from p2p_job.scenarios import Shards, build_shards
from p2p_job.spec import MethodSpec, P2PExperiment, resolved_method_name
from p2p_job.training import resolve_device

#: Called after every (method, round) with that round's records, one per client.
RoundCallback = Callable[[str, int, list[RoundRecord]], None]


def select_methods(exp: P2PExperiment, names: list[str] | None) -> list[MethodSpec]:
    """The spec's methods, or only those named (by resolved name), in spec order."""
    rule = exp.spec.aggregation.rule
    by_name = {resolved_method_name(m, rule): m for m in exp.spec.methods}
    if names is None:
        return list(by_name.values())
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; the spec's methods are {list(by_name)}")
    return [m for n, m in by_name.items() if n in names]


def with_rounds(exp: P2PExperiment, rounds: int) -> P2PExperiment:
    """The experiment with ``spec.rounds`` replaced (the ``--rounds`` override)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    return exp.model_copy(update={"spec": exp.spec.model_copy(update={"rounds": rounds})})


def simulate_method(
    exp: P2PExperiment, method: MethodSpec, shards: Shards, device, on_round: RoundCallback | None = None
) -> list[RoundRecord]:
    """Algorithm 2 for one method: ``spec.rounds`` rounds of every peer, through a MemoryExchange."""
    clients = list(shards.clients)
    neighbours = neighbourhoods(exp, method, clients)
    peers = [Peer(exp, method, shards.clients[c], neighbours[c], device) for c in clients]
    exchange = MemoryExchange()
    records: list[RoundRecord] = []
    for r in range(1, exp.spec.rounds + 1):
        for peer in peers:
            peer.train_and_publish(r, exchange)
        round_records = [peer.merge_and_evaluate(r, exchange) for peer in peers]
        exchange.forget(r + 1)
        records += round_records
        if on_round:
            on_round(round_records[0].method, r, round_records)
    return records


def simulate(
    exp: P2PExperiment,
    *,
    methods: list[str] | None = None,
    device: str | None = None,
    base_dir: Path | None = None,
    on_round: RoundCallback | None = None,
) -> pd.DataFrame:
    """Run the experiment's methods (all, or those named) and return the results rows.

    ``device`` overrides ``spec.runtime.device``; ``base_dir`` resolves relative dataset paths
    (the spec file's folder)."""
    selected = select_methods(exp, methods)
    torch_device = resolve_device(device or exp.spec.runtime.device)
    shards = build_shards(exp, base_dir)
    records = [
        record for method in selected for record in simulate_method(exp, method, shards, torch_device, on_round)
    ]
    return results_frame(records)
