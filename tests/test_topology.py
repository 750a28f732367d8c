"""Peer graphs: symmetric, connected, the right degrees, deterministic in the seed, clear errors."""

from __future__ import annotations

import networkx as nx
import pytest

from p2p_job.spec import TopologySpec
from p2p_job.topology import build_topology

CLIENTS = [f"client-{c}" for c in "abcdefghijkl"]  # 12


def _check_graph(topology: dict[str, list[str]], clients: list[str]) -> nx.Graph:
    assert list(topology) == clients
    for client, neighbours in topology.items():
        assert neighbours == sorted(neighbours) and client not in neighbours
        assert all(client in topology[other] for other in neighbours)  # symmetric
    graph = nx.Graph([(c, n) for c, ns in topology.items() for n in ns])
    graph.add_nodes_from(clients)
    assert nx.is_connected(graph)
    return graph


def test_full():
    topology = build_topology(TopologySpec(kind="full"), CLIENTS[:4], seed=0)
    _check_graph(topology, CLIENTS[:4])
    assert topology["client-a"] == ["client-b", "client-c", "client-d"]


def test_ring_follows_client_order():
    topology = build_topology(TopologySpec(kind="ring"), CLIENTS[:5], seed=0)
    _check_graph(topology, CLIENTS[:5])
    assert topology["client-a"] == ["client-b", "client-e"]
    assert topology["client-c"] == ["client-b", "client-d"]


@pytest.mark.parametrize(("clients", "expected"), [(["solo"], {"solo": []}), (["a", "b"], {"a": ["b"], "b": ["a"]})])
def test_tiny_rings_have_no_self_loops(clients, expected):
    assert build_topology(TopologySpec(kind="ring"), clients, seed=0) == expected


@pytest.mark.parametrize(("n", "degree"), [(12, 3), (12, 2), (10, 4), (4, 3), (2, 1)])
def test_k_regular(n, degree):
    spec = TopologySpec(kind="k-regular", degree=degree)
    topology = build_topology(spec, CLIENTS[:n], seed=5)
    _check_graph(topology, CLIENTS[:n])
    assert {len(neighbours) for neighbours in topology.values()} == {degree}
    assert build_topology(spec, CLIENTS[:n], seed=5) == topology


def test_random_graphs_depend_on_the_seed():
    for spec in (TopologySpec(kind="k-regular", degree=3), TopologySpec(kind="erdos-renyi", p=0.3)):
        graphs = {str(build_topology(spec, CLIENTS, seed=s)) for s in range(5)}
        assert len(graphs) > 1


@pytest.mark.parametrize(("n", "degree", "message"), [(5, 3, "even n·degree"), (4, 4, "degree < 4"), (4, 1, "no connected 1-regular")])
def test_k_regular_errors(n, degree, message):
    with pytest.raises(ValueError, match=message):
        build_topology(TopologySpec(kind="k-regular", degree=degree), CLIENTS[:n], seed=0)


@pytest.mark.parametrize("p", [0.15, 0.5, 1.0])
def test_erdos_renyi_is_connected_and_deterministic(p):
    spec = TopologySpec(kind="erdos-renyi", p=p)
    topology = build_topology(spec, CLIENTS, seed=11)
    graph = _check_graph(topology, CLIENTS)
    assert build_topology(spec, CLIENTS, seed=11) == topology
    if p == 1.0:
        assert graph.number_of_edges() == 66


def test_erdos_renyi_that_cannot_connect_is_an_error():
    with pytest.raises(ValueError, match="no connected Erdős–Rényi graph with p=0.001"):
        build_topology(TopologySpec(kind="erdos-renyi", p=0.001), CLIENTS, seed=0)


def test_explicit_adjacency_is_made_symmetric():
    spec = TopologySpec(kind="explicit", adjacency={"a": ["b"], "c": ["b", "d"]})
    topology = build_topology(spec, ["a", "b", "c", "d"], seed=0)
    _check_graph(topology, ["a", "b", "c", "d"])
    assert topology == {"a": ["b"], "b": ["a", "c"], "c": ["b", "d"], "d": ["c"]}


@pytest.mark.parametrize(
    ("adjacency", "message"),
    [
        ({"a": ["zed"]}, "topology.adjacency.a: unknown client 'zed'"),
        ({"a": ["a", "b"]}, "cannot be its own neighbour"),
        ({"a": ["b"], "c": ["d"]}, r"not connected; its parts are \[\['a', 'b'\], \['c', 'd'\]\]"),
    ],
)
def test_explicit_adjacency_errors(adjacency, message):
    with pytest.raises(ValueError, match=message):
        build_topology(TopologySpec(kind="explicit", adjacency=adjacency), ["a", "b", "c", "d"], seed=0)


def test_other_errors():
    with pytest.raises(ValueError, match="duplicate client names"):
        build_topology(TopologySpec(kind="full"), ["a", "a"], seed=0)
    with pytest.raises(ValueError, match="unknown kind 'star'"):
        build_topology(TopologySpec.model_construct(kind="star"), ["a", "b"], seed=0)
    assert build_topology(TopologySpec(kind="full"), [], seed=0) == {}
