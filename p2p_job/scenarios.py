"""The four scenarios of §3.1 turned into per-client data (Tables 1–3 give their layouts).

Every client's training and local validation rows, and the global test set of the non-IID
scenario, are sampled without replacement from the dataset: disjoint across clients and
splits, each from the client's own pool (its ``benignGroups`` / ``maliciousGroups``, or all
rows of the class). The global test set comes from the union of the clients' pools, among the
rows no client trains or validates on. Sampling follows one seeded random order of the rows,
so the same experiment seed always gives the same shards.

Each client min-max scales with a scaler fitted on its own training rows only, and applies it
to its validation rows and to its copy of the global test set.

Every split also keeps each row's attack kind (the value of ``evaluation.kindColumn``, e.g.
``gafgyt/udp``), so the evaluation can report the false negative rate per kind and tell which
kinds a client had in training. ``scenario.globalTest.maliciousKinds`` / ``benignGroups`` fix
the global test set's make-up instead of letting it follow availability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p2p_job.datasets import DataError, LoadReport, Table, load_dataset, select_groups
from p2p_job.seeding import rng
from p2p_job.datasets.table import within
from p2p_job.spec import CLASS_NAMES, ClassCounts, ClientSpec, DatasetSpec, EvaluationSpec, GlobalTestSpec, P2PExperiment


@dataclass(frozen=True)
class Split:
    """Rows of one split: features already min-max scaled with the client's scaler, and each
    row's kind (its value in the kind column; None when the data has no kind column)."""

    X: np.ndarray  # float32 (n, d)
    y: np.ndarray  # int8 0/1, 1 = malicious
    kinds: np.ndarray | None = None  # str (n,), e.g. "gafgyt/udp"; benign rows keep their own value

    @property
    def counts(self) -> dict[str, int]:
        """Rows per class, e.g. ``{"benign": 11821, "malicious": 23}``."""
        return {name: int(np.count_nonzero(self.y == label)) for label, name in CLASS_NAMES.items()}

    @property
    def attack_kinds(self) -> dict[str, int]:
        """Malicious rows per attack kind, sorted by kind (empty without a kind column)."""
        if self.kinds is None:
            return {}
        values, counts = np.unique(self.kinds[self.y == 1], return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts)}


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
    kind_column: str | None = None  # the group column the splits' kinds come from


def kind_column(dataset: DatasetSpec, evaluation: EvaluationSpec, table: Table) -> str | None:
    """The group column naming attack kinds: ``evaluation.kindColumn``, else ``family`` where
    the loader makes one (builtin, nbaiot, botiot), else the tabular label column."""
    if evaluation.kind_column is not None:
        if evaluation.kind_column not in table.groups:
            raise DataError(f"evaluation.kindColumn: no group column {evaluation.kind_column!r} in the data (have {sorted(table.groups)})")
        return evaluation.kind_column
    if "family" in table.groups:
        return "family"
    return dataset.label_column if dataset.label_column in table.groups else None


def build_shards(exp: P2PExperiment, base_dir: Path | None = None) -> Shards:
    """Load the dataset and cut it into the scenario's client shards; deterministic in
    ``exp.spec.seed``. Asking for more rows than a pool has left is a :class:`DataError`
    naming the client, split, class and the count available."""
    scenario = exp.spec.scenario
    table = load_dataset(exp.spec.dataset, base_dir)
    kinds_from = kind_column(exp.spec.dataset, exp.spec.evaluation, table)
    sampler = RowSampler(table, exp.spec.seed)
    pools = {c.name: _pools(table, c) for c in scenario.clients}
    rows = {
        c.name: {split: sampler.take(pools[c.name], getattr(c, split), f"client {c.name!r}, {split}") for split in ("train", "validation")}
        for c in scenario.clients
    }
    global_rows = None
    if scenario.global_test is not None:
        union = tuple(np.logical_or.reduce([p[label] for p in pools.values()]) for label in CLASS_NAMES)
        global_rows = _global_rows(table, sampler, union, scenario.global_test, kinds_from)
    kinds = None if kinds_from is None else table.groups[kinds_from].astype(str)

    clients = {}
    for name, split_rows in rows.items():
        scaler = Scaler.fit(table.features[split_rows["train"]])

        def split(index: np.ndarray) -> Split:
            return Split(scaler.transform(table.features[index]), table.labels[index], None if kinds is None else kinds[index])

        clients[name] = ClientShard(
            name=name,
            train=split(split_rows["train"]),
            validation=split(split_rows["validation"]),
            global_test=None if global_rows is None else split(global_rows),
            scaler=scaler,
        )
    return Shards(clients, list(table.feature_names), table.report, kinds_from)


def _global_rows(table: Table, sampler: "RowSampler", union: tuple[np.ndarray, np.ndarray], spec: GlobalTestSpec, kinds_from: str | None) -> np.ndarray:
    """The global test set's rows: by class from the union of the clients' pools, or part by
    part as ``maliciousKinds`` / ``benignGroups`` ask (a plain kind value is matched against
    the kind column, ``column=value`` against that column)."""
    who = "globalTest (from the clients' groups)"
    if spec.malicious_kinds is None and spec.benign_groups is None:
        return sampler.take(union, spec, who)
    parts = []
    for label, name, make_up, field in ((0, "benign", spec.benign_groups, "benignGroups"), (1, "malicious", spec.malicious_kinds, "maliciousKinds")):
        if make_up is None:
            parts.append(sampler.take_class(union[label], getattr(spec, name), who, name))
            continue
        for selector, count in make_up.items():
            where = f"scenario.globalTest.{field}[{selector!r}]"
            try:
                if label == 1 and "=" not in selector and kinds_from is not None:
                    in_group = within(table.groups[kinds_from], selector)
                    if not (in_group & (table.labels == 1)).any():
                        known = sorted(set(table.groups[kinds_from][table.labels == 1].tolist()))
                        raise DataError(f"no attack of kind {selector!r} in the data; the kinds ({kinds_from}) are {known}")
                else:
                    in_group = select_groups(table, [selector])
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            parts.append(sampler.take_class(union[label] & in_group, count, f"{where} (in the clients' groups)", name))
    return sampler.sorted(np.concatenate(parts))


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
        picked = [self.take_class(pools[label], getattr(counts, name), who, name) for label, name in CLASS_NAMES.items()]
        return self.sorted(np.concatenate(picked))

    def take_class(self, pool: np.ndarray, wanted: int, who: str, name: str = "") -> np.ndarray:
        """The first ``wanted`` free rows of ``pool`` in the random order (then taken)."""
        candidates = self.order[(pool & self.free)[self.order]]
        if len(candidates) < wanted:
            raise DataError(
                f"{who}: needs {wanted} {name} rows but only {len(candidates)} are available "
                "(in its groups, not taken by an earlier client or split)"
            )
        picked = candidates[:wanted]
        self.free[picked] = False
        return picked

    def sorted(self, rows: np.ndarray) -> np.ndarray:
        """Row indices in the random order (how every split is laid out)."""
        return rows[np.argsort(self.rank[rows])]


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
