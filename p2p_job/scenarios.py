"""The four scenarios of §3.1 turned into per-client data (Tables 1–3 give their layouts).

Every client's training and local validation rows, and the global test set of the non-IID
scenario, are sampled without replacement from the dataset: disjoint across clients and
splits, each from the client's own pool (its ``benignGroups`` / ``maliciousGroups``, or all
rows of the class). The global test set comes from the union of the clients' pools, among the
rows no client trains or validates on. Sampling follows one seeded random order of the rows,
so the same experiment seed always gives the same shards.

Each client min-max scales with a scaler fitted on its own training rows only, and applies it
to its validation rows and to its copy of the global test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_job.datasets import DataError, LoadReport, Table, load_dataset, select_groups
from p2p_job.seeding import rng
from p2p_job.spec import CLASS_NAMES, ClassCounts, ClientSpec, P2PExperiment


@dataclass(frozen=True)
class Split:
    """Rows of one split: features already min-max scaled with the client's scaler."""

    X: np.ndarray  # float32 (n, d)
    y: np.ndarray  # int8 0/1, 1 = malicious

    @property
    def counts(self) -> dict[str, int]:
        """Rows per class, e.g. ``{"benign": 11821, "malicious": 23}``."""
        return {name: int(np.count_nonzero(self.y == label)) for label, name in CLASS_NAMES.items()}


@dataclass(frozen=True)
class Scaler:
    """Min-max scaling ``(x − min) / (max − min)`` per feature, fitted on one client's own
    training rows; a constant feature keeps a range of 1 (as scikit-learn's MinMaxScaler)."""

    data_min: np.ndarray  # float64 (d,)
    data_max: np.ndarray  # float64 (d,)

    @classmethod
    def fit(cls, X: np.ndarray) -> "Scaler":
        X = np.asarray(X)
        return cls(X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64))

    @property
    def _range(self) -> np.ndarray:
        span = self.data_max - self.data_min
        return np.where(span > 0, span, 1.0)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Raw feature units to the client's scaled units (training rows land in [0, 1])."""
        return ((np.asarray(X, dtype=np.float64) - self.data_min) / self._range).astype(np.float32)

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        """Scaled units back to raw feature units (how shared synthetic points travel)."""
        return (np.asarray(X, dtype=np.float64) * self._range + self.data_min).astype(np.float32)


@dataclass(frozen=True)
class ClientShard:
    name: str
    train: Split
    validation: Split
    global_test: Split | None  # the scenario's global test set, scaled with THIS client's scaler
    scaler: Scaler


@dataclass(frozen=True)
class Shards:
    clients: dict[str, ClientShard]  # in spec order
    feature_names: list[str]
    load_report: LoadReport = LoadReport()  # what the dataset loader read and dropped


def build_shards(exp: P2PExperiment, base_dir: Path | None = None) -> Shards:
    """Load the dataset and cut it into the scenario's client shards; deterministic in
    ``exp.spec.seed``. Asking for more rows than a pool has left is a :class:`DataError`
    naming the client, split, class and the count available."""
    scenario = exp.spec.scenario
    table = load_dataset(exp.spec.dataset, base_dir)
    sampler = RowSampler(table, exp.spec.seed)
    pools = {c.name: _pools(table, c) for c in scenario.clients}
    rows = {
        c.name: {split: sampler.take(pools[c.name], getattr(c, split), f"client {c.name!r}, {split}") for split in ("train", "validation")}
        for c in scenario.clients
    }
    global_rows = None
    if scenario.global_test is not None:
        union = tuple(np.logical_or.reduce([p[label] for p in pools.values()]) for label in CLASS_NAMES)
        global_rows = sampler.take(union, scenario.global_test, "globalTest (from the clients' groups)")

    clients = {}
    for name, split_rows in rows.items():
        scaler = Scaler.fit(table.features[split_rows["train"]])

        def split(index: np.ndarray) -> Split:
            return Split(scaler.transform(table.features[index]), table.labels[index])

        clients[name] = ClientShard(
            name=name,
            train=split(split_rows["train"]),
            validation=split(split_rows["validation"]),
            global_test=None if global_rows is None else split(global_rows),
            scaler=scaler,
        )
    return Shards(clients, list(table.feature_names), table.report)


class RowSampler:
    """Sampling without replacement across every request: rows are visited in one random
    order drawn from ``rng(seed, "scenario")``, and each request takes the first rows of its
    pool that no earlier request took."""

    def __init__(self, table: Table, seed: int):
        self.order = rng(seed, "scenario").permutation(len(table))
        self.rank = np.argsort(self.order)  # position of each row in that order
        self.free = np.ones(len(table), dtype=bool)

    def take(self, pools: tuple[np.ndarray, np.ndarray], counts: ClassCounts, who: str) -> np.ndarray:
        """Row indices: ``counts.benign`` rows of ``pools[0]`` and ``counts.malicious`` of
        ``pools[1]``, interleaved in the random order."""
        chosen = []
        for label, name in CLASS_NAMES.items():
            wanted = getattr(counts, name)
            candidates = self.order[(pools[label] & self.free)[self.order]]
            if len(candidates) < wanted:
                raise DataError(
                    f"{who}: needs {wanted} {name} rows but only {len(candidates)} are available "
                    "(in its groups, not taken by an earlier client or split)"
                )
            chosen.append(candidates[:wanted])
        picked = np.concatenate(chosen)
        self.free[picked] = False
        return picked[np.argsort(self.rank[picked])]


def _pools(table: Table, client: ClientSpec) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the benign and the malicious rows this client may draw from."""
    pools = []
    for label, selectors, field in ((0, client.benign_groups, "benignGroups"), (1, client.malicious_groups, "maliciousGroups")):
        try:
            in_groups = select_groups(table, selectors) if selectors else True
        except DataError as exc:
            raise DataError(f"client {client.name!r}, {field}: {exc}") from None
        pools.append((table.labels == label) & in_groups)
    return pools[0], pools[1]
