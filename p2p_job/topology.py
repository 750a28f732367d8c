"""Who is whose neighbour: the undirected peer graph. A peer averages over itself and its
neighbours (C_sub of equation 5) and receives only their synthetic points (equation 7).

Kinds (``spec.topology.kind``):

- ``full``: every peer is connected to every other (the paper's setting, §5.1.3);
- ``ring``: each peer to the previous and next one in client order;
- ``k-regular``: a random graph where every peer has ``degree`` neighbours
  (``networkx.random_regular_graph``); needs ``degree < n`` and ``n·degree`` even;
- ``erdos-renyi``: each edge present with probability ``p`` (``networkx.gnp_random_graph``);
- ``explicit``: the ``adjacency`` given, made symmetric (an edge listed either way counts).

Random graphs are drawn from ``p2p_job.seeding.rng(seed, "topology")`` and drawn again from the
same stream until connected, at most :data:`MAX_DRAWS` times; so every peer derives the same
graph from the seed. A graph that is not connected is an error: every peer must be reachable.
Errors are :class:`p2p_job.spec.FieldError` naming the spec field (``topology.degree``, …): the
spec model builds the graph once while validating, so ``p2pk validate`` refuses what no runner
could build.
"""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from p2p_job.seeding import rng as seeded_rng
from p2p_job.spec import FieldError, TopologySpec

#: Draws of a random graph before giving up on a connected one.
MAX_DRAWS = 1000


def _connected_draw(draw: Callable[[int], nx.Graph], seed: int, what: str, field: str) -> nx.Graph:
    """``draw(networkx_seed)`` again and again, seeds taken from the experiment's topology
    stream, until the graph is connected."""
    stream = seeded_rng(seed, "topology")
    for _ in range(MAX_DRAWS):
        graph = draw(int(stream.integers(2**32)))
        if nx.is_connected(graph):
            return graph
    raise FieldError(("topology", field), f"no connected {what} in {MAX_DRAWS} draws; raise the edge count")


def _explicit(adjacency: dict[str, list[str]], clients: list[str]) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(range(len(clients)))
    index = {name: i for i, name in enumerate(clients)}
    for name, neighbours in adjacency.items():
        for other in [name, *neighbours]:
            if other not in index:
                raise FieldError(("topology", "adjacency", name), f"unknown client {other!r}")
        if name in neighbours:
            raise FieldError(("topology", "adjacency", name), "a client cannot be its own neighbour")
        graph.add_edges_from((index[name], index[other]) for other in neighbours)
    return graph


def build_topology(spec: TopologySpec, clients: list[str], seed: int) -> dict[str, list[str]]:
    """The peer graph as ``{client: sorted neighbour names}``, keys in ``clients`` order.
    Symmetric, connected and deterministic in ``seed``."""
    n = len(clients)
    if len(set(clients)) != n:
        raise FieldError(("scenario", "clients"), f"duplicate client names in {clients}")
    if n == 0:
        return {}
    if spec.kind == "full":
        graph = nx.complete_graph(n)
    elif spec.kind == "ring":
        graph = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)  # no self-loop for one client
    elif spec.kind == "k-regular":
        degree = spec.degree
        if degree is None or degree >= n or (n * degree) % 2:
            raise FieldError(
                ("topology", "degree"), f"a {degree}-regular graph on {n} clients needs degree < {n} and an even n·degree"
            )
        graph = _connected_draw(lambda s: nx.random_regular_graph(degree, n, seed=s), seed, f"{degree}-regular graph on {n} clients", "degree")
    elif spec.kind == "erdos-renyi":
        graph = _connected_draw(lambda s: nx.gnp_random_graph(n, spec.p, seed=s), seed, f"Erdős–Rényi graph with p={spec.p} on {n} clients", "p")
    elif spec.kind == "explicit":
        graph = _explicit(spec.adjacency or {}, clients)
        if not nx.is_connected(graph):
            parts = [sorted(clients[i] for i in part) for part in nx.connected_components(graph)]
            raise FieldError(("topology", "adjacency"), f"not connected; its parts are {parts}")
    else:
        raise FieldError(("topology", "kind"), f"unknown kind {spec.kind!r}")
    return {name: sorted(clients[j] for j in graph.neighbors(i)) for i, name in enumerate(clients)}
