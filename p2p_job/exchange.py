"""What peers send each other, and the exchange they send it through.

After local training in round r every peer publishes a :class:`Publication` (Algorithm 2,
lines 5–10 done; DESIGN "The algorithm", step 3); a peer picked to aggregate then gathers its
neighbours' round-r publications (lines 13–16). The :class:`Exchange` protocol is all the peer
knows about transport: :class:`MemoryExchange` serves the one-process simulation, and
``p2p_job.store_exchange`` the directory/S3 store of ``p2pk run`` and Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Publication:
    """What a peer publishes after local training in round ``round``.

    ``delta`` is the trained model minus w0 (float32, parameters and BatchNorm statistics);
    ``n_base`` and ``variance`` are |D_base| and Var(D_base), the inputs of p_k (eq. 6);
    ``synthetic_X``/``synthetic_y`` are the shared α-fraction of D_syn (eq. 7) in RAW feature
    units (the receiver encodes them with its own preprocessor); ``metrics`` are the peer's last
    completed evaluation, keyed ``"<eval>_<metric>"`` (e.g. ``local_fnr``), empty in round 1.
    ``points_refused`` is set by an exchange that refused the shared points' bytes (a count over
    the cap, a malformed file; ``"<reason>: <detail>"``): the points are then empty and the
    model is still judged on its own (DESIGN "Hostile neighbours").
    """

    client: str
    round: int
    delta: dict[str, np.ndarray]
    n_base: int
    variance: float
    synthetic_X: np.ndarray
    synthetic_y: np.ndarray
    metrics: dict[str, float]
    points_refused: str | None = None


@dataclass
class Gathered:
    """The neighbours' publications of one round, and who could not be used."""

    publications: dict[str, Publication]
    missing: list[str] = field(default_factory=list)              # timed out / absent
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (client, reason)


class Exchange(Protocol):
    """Transport between peers; the peer's round logic sees nothing else."""

    def publish(self, pub: Publication) -> None: ...

    def gather(self, round: int, neighbours: list[str]) -> Gathered: ...


class MemoryExchange:
    """The simulation's exchange: publications held in a dict, in one process.

    Every peer publishes before any peer gathers (the simulation runs phase 1 for all peers,
    then phase 2), so a neighbour absent here really did not publish.
    """

    def __init__(self) -> None:
        self._pubs: dict[tuple[int, str], Publication] = {}

    def publish(self, pub: Publication) -> None:
        self._pubs[(pub.round, pub.client)] = pub

    def gather(self, round: int, neighbours: list[str]) -> Gathered:
        found = {n: self._pubs[(round, n)] for n in neighbours if (round, n) in self._pubs}
        return Gathered(publications=found, missing=[n for n in neighbours if n not in found])

    def forget(self, before_round: int) -> None:
        """Drop publications of rounds before ``before_round`` (no peer reads them again)."""
        self._pubs = {key: pub for key, pub in self._pubs.items() if key[0] >= before_round}
