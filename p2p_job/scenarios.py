"""The four scenarios of §3.1 turned into per-client data (Tables 1–3 give their layouts).

Every client's training and local validation rows, and the global test set of the non-IID
scenario, are sampled without replacement from the dataset: disjoint across clients and
splits, each from the client's own pool (its ``benignGroups`` / ``maliciousGroups``, or all
rows of the class). The global test set comes from the union of the clients' pools, among the
rows no client trains or validates on (a part named in ``globalTest.maliciousKinds`` /
``benignGroups``: from every row of that group no client uses, so it may hold kinds no client
has). Sampling follows one seeded random order of the rows,
so the same experiment seed always gives the same shards.

Each client fits its feature pipeline (``dataset.preprocessing``; by default the paper's min-max
scaling, :class:`p2p_job.preprocessing.Preprocessor`) on its own training rows only, and applies
it to its validation rows and to its copy of the global test set.

Every split also keeps each row's attack kind (the value of ``evaluation.kindColumn``, e.g.
``gafgyt/udp``), so the evaluation can report the false negative rate per kind and tell which
kinds a client had in training. ``scenario.globalTest.maliciousKinds`` / ``benignGroups`` fix
the global test set's make-up instead of letting it follow availability.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from pathlib import Path

import numpy as np

from p2p_job.datasets import DataError, LoadReport, Table, load_dataset, select_groups
from p2p_job.preprocessing import Preprocessor
from p2p_job.seeding import rng
from p2p_job.datasets.table import within
from p2p_job.spec import CLASS_NAMES, ClassCounts, ClientSpec, DatasetSpec, EvaluationSpec, GlobalTestSpec, P2PExperiment, PreprocessingSpec


@dataclass(frozen=True)
class Split:
    """Rows of one split: ``X`` encoded by the client's preprocessor, ``raw`` as loaded, and
    each row's kind (its value in the kind column; None when the data has no kind column)."""

    X: np.ndarray  # float32 (n, d_encoded)
    y: np.ndarray  # int8 0/1, 1 = malicious
    raw: np.ndarray  # float32 (n, d): the rows in raw feature units (what the shards store)
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
class ClientShard:
    name: str
    train: Split
    validation: Split
    global_test: Split | None  # the scenario's global test set, encoded with THIS client's preprocessor
    preprocessor: Preprocessor  # fitted on train.raw only


#: One split's raw rows: features (float32 (n, d)), labels and kinds (or None).
RawSplit = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def client_shard(
    name: str, preprocessing: PreprocessingSpec, feature_names: list[str], categories: dict[str, list[str]], splits: dict[str, RawSplit | None]
) -> ClientShard:
    """A client's shard from its raw rows per split (``train``, ``validation``, ``global_test``
    or None): the preprocessor is fitted on the training rows only and encodes every split."""
    preprocessor = Preprocessor.fit(preprocessing, feature_names, splits["train"][0], categories)

    def split(rows: RawSplit | None) -> Split | None:
        if rows is None:
            return None
        X = preprocessor.transform(rows[0])
        if not np.isfinite(X).all():
            row, column = np.argwhere(~np.isfinite(X))[0]
            raise DataError(f"client {name!r}: dataset.preprocessing gives a non-finite value in encoded column {column + 1}, "
                            f"row {row + 1} (log1p of a value ≤ −1?)")
        return Split(X, rows[1], rows[0], rows[2])

    return ClientShard(name, split(splits["train"]), split(splits["validation"]), split(splits.get("global_test")), preprocessor)


@dataclass(frozen=True)
class Shards:
    clients: dict[str, ClientShard]  # in spec order
    feature_names: list[str]
    load_report: LoadReport = LoadReport()  # what the dataset loader read and dropped
    kind_column: str | None = None  # the group column the splits' kinds come from
    preprocessing: PreprocessingSpec = PreprocessingSpec()  # what each client's preprocessor was fitted from
    categories: dict[str, list[str]] = dataclass_field(default_factory=dict)  # categorical column -> its values, by code


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

    def raw(index: np.ndarray | None) -> RawSplit | None:
        return None if index is None else (table.features[index], table.labels[index], None if kinds is None else kinds[index])

    preprocessing = exp.spec.dataset.preprocessing
    clients = {
        name: client_shard(name, preprocessing, table.feature_names, table.categories, {**{s: raw(i) for s, i in split_rows.items()}, "global_test": raw(global_rows)})
        for name, split_rows in rows.items()
    }
    return Shards(clients, list(table.feature_names), table.report, kinds_from, preprocessing, dict(table.categories))


def _global_rows(table: Table, sampler: "RowSampler", union: tuple[np.ndarray, np.ndarray], spec: GlobalTestSpec, kinds_from: str | None) -> np.ndarray:
    """The global test set's rows: by class from the union of the clients' pools, or part by
    part as ``maliciousKinds`` / ``benignGroups`` ask (a plain kind value is matched against
    the kind column, ``column=value`` against that column). A part named there is drawn from
    every row of its class and group that no client trains or validates on, so the global test
    may hold kinds or devices that no client has (attacks unseen by the whole mesh)."""
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
                        known = len(set(table.groups[kinds_from][table.labels == 1].tolist()))
                        raise DataError(f"no attack of kind {selector!r} among the data's {known} attack kinds (group {kinds_from!r})")
                else:
                    in_group = select_groups(table, [selector])
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            parts.append(sampler.take_class((table.labels == label) & in_group, count, where, name))
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
