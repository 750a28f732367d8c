"""The experiment spec: one ``P2PExperiment`` document (group ``p2pk.io``, version ``v1alpha1``).

The same YAML file is run by ``p2pk simulate``, ``p2pk run`` and the Kubernetes operator.
This module is the single source of truth for its fields: the CRD's openAPIV3Schema is
generated from these models (``p2pk_operator.crd``), so the operator cannot drift from them.

Defaults follow the paper (§5.1.3): k = 15 base points, N = 20 neighbours, λ = 0.8, five local
epochs, Adam with learning rate 1e-5 and weight decay 1e-3, a 115→80→50→10→1 network.

Field names are camelCase in YAML (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from p2p_job import presets
from p2p_job.store import SHARDS

API_GROUP = "p2pk.io"
API_VERSION = "v1alpha1"
KIND = "P2PExperiment"

#: DNS-1123 label: used in Job names, MinIO user names and store prefixes.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

RebalancingMethod = Literal["none", "random-over", "random-under", "smote", "ksmote"]
AggregationRule = Literal["p2p", "fedavg", "local"]
#: How contributors are combined (``p2p_job.robust.RULES``): ``mean`` is the paper's equation 5.
RobustRule = Literal["mean", "median", "trimmed-mean", "clipped-mean", "krum", "multi-krum", "filtered-clipped-mean", "validation"]
ScenarioKind = Literal["balanced-iid", "imbalanced-iid", "mixed-iid", "non-iid"]
TopologyKind = Literal["full", "ring", "k-regular", "erdos-renyi", "explicit"]
DatasetKind = Literal["builtin", "nbaiot", "botiot", "tabular"]
Device = Literal["auto", "cpu", "cuda"]


class SpecModel(BaseModel):
    """Base for every section: camelCase aliases, unknown fields rejected, types strict (a
    quoted ``"5"`` is not a number, as the CRD's schema says) and numbers finite (no ``.inf``
    or ``.nan``)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
    )


class FieldError(ValueError):
    """A cross-field rule broken at ``loc`` (field names relative to the model whose validator
    raises it, camelCase, list indices as ints): :func:`parse_experiment` reports it at that
    path instead of at the model's."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        self.loc = tuple(loc)
        self.message = message
        super().__init__(f"{_error_path(self.loc)}: {message}")


# --------------------------------------------------------------------------- dataset


#: Upper bound on the built-in generator's table (rows × features, float32: 1.6 GB).
MAX_BUILTIN_VALUES = 400_000_000
#: Upper bound on rows per class in one count (a client's split or the global test set).
MAX_ROWS = 100_000_000
#: Upper bound on the number of clients (each is a process, or a Job per method).
MAX_CLIENTS = 256


class BuiltinDataSpec(SpecModel):
    """The built-in generator: devices with distinct benign distributions, attack families
    as separate clusters (used by the quickstart and the tests)."""

    devices: int = Field(3, ge=1, le=64, description="Number of simulated devices (group values device-0, device-1, …).")
    families: int = Field(3, ge=1, le=16, description="Number of attack families (family-0, …), each its own cluster per device.")
    features: int = Field(115, ge=2, le=4096, description="Feature count (N-BaIoT has 115).")
    benign_per_device: int = Field(4000, ge=10, le=10_000_000, description="Benign rows generated per device.")
    malicious_per_family: int = Field(400, ge=10, le=10_000_000, description="Malicious rows generated per device and family.")
    separation: float = Field(6.0, gt=0, le=1000, description="Distance between cluster centres in units of their spread (attacks lie this far from their device's benign centre).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the generated rows; the experiment seed only picks which rows each client gets.")

    @model_validator(mode="after")
    def _fits_in_memory(self) -> "BuiltinDataSpec":
        rows = self.devices * (self.benign_per_device + self.families * self.malicious_per_family)
        if rows * self.features > MAX_BUILTIN_VALUES:
            raise ValueError(
                f"devices × (benignPerDevice + families × maliciousPerFamily) × features = {rows} rows × "
                f"{self.features} features is more than {MAX_BUILTIN_VALUES:,} values; generate fewer"
            )
        return self


ColumnTransformKind = Literal["none", "log1p", "signed-log"]
ScalingKind = Literal["minmax", "robust", "quantile"]


class ColumnTransform(SpecModel):
    """A transform of some numeric feature columns, applied before scaling."""

    columns: list[str] = Field(..., min_length=1, description="Feature names or fnmatch patterns ('*_weight', '*'); each must match a numeric column.")
    transform: ColumnTransformKind = Field(..., description="none | log1p (log(1 + x), values > −1) | signed-log (sign(x)·log(1 + |x|)).")


class PreprocessingSpec(SpecModel):
    """Each client's feature pipeline, fitted on its own training rows only (p2p_job.preprocessing):
    per-column transforms, one-hot encoding of categorical columns, then scaling. With ``auto``
    (the default for real data, see :class:`DatasetSpec`) each client fills in what is not
    said: signed-log on its heavy-tailed columns, one-hot for text columns, quantile scaling.
    Without it (the default for the built-in generator), the paper's min-max scaling of every
    column as it is."""

    auto: bool | None = Field(
        None,
        description="Fill in what is not said, per client from its own training rows: signed-log on heavy-tailed numeric columns "
        "(|skew| > 2 or > 3 decades), one-hot for text columns of at most 32 values (tabular), scaling quantile. "
        "Default: true for nbaiot, botiot and tabular data, false for builtin (the paper's min-max).",
    )
    transforms: list[ColumnTransform] = Field(
        default_factory=list, description="Per-column transforms; the first entry whose pattern matches a column decides its transform (default: none, or auto's choice)."
    )
    categorical: list[str] = Field(default_factory=list, description="Columns to one-hot encode (text or numeric codes); loaded as text categories where they hold text.")
    scaling: ScalingKind | None = Field(
        None,
        description="minmax (the paper's) | robust (median, IQR) | quantile (to uniform [0, 1]) of the numeric columns. "
        "Default: quantile with auto, else minmax.",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data):
        """``auto`` off and ``scaling`` minmax unless said; ``scaling`` quantile under ``auto``."""
        if isinstance(data, dict):
            auto = data.get("auto")
            data = {**data, "auto": bool(auto)} if auto is None else data
            if data.get("scaling") is None:
                data = {**data, "scaling": "quantile" if data["auto"] is True else "minmax"}
        return data

    @field_validator("categorical")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        dup = sorted({c for c in v if v.count(c) > 1})
        if dup:
            raise ValueError(f"columns listed twice: {dup}")
        return v


class DatasetSpec(SpecModel):
    """Where the rows come from. Every kind loads into the same in-memory form: float32
    features, a 0/1 label (1 = malicious) and group columns (device, family)."""

    kind: DatasetKind = Field("builtin", description="builtin | nbaiot | botiot | tabular.")
    path: str | None = Field(
        None,
        description="N-BaIoT root folder; BoT-IoT or tabular: a CSV/Parquet file, a folder (every data file in it) or a glob pattern "
        "(e.g. 'data/UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv'), whose parts are read one at a time and concatenated.",
    )
    devices: list[str] | None = Field(None, description="N-BaIoT: device folders to load (default: all).")
    families: list[str] | None = Field(
        None,
        description="Attack families to keep: N-BaIoT 'mirai', 'gafgyt' or 'gafgyt/udp'-style; BoT-IoT categories such as 'DDoS'.",
    )
    features: list[str] | None = Field(
        None,
        description="Feature columns. Tabular default: every column but label and group that holds numbers; BoT-IoT default: the "
        "paper's ten 'best' features the file has (the full layout: seven of them and the text state).",
    )
    columns: list[str] | None = Field(
        None,
        min_length=1,
        description="BoT-IoT, tabular: the column names of headerless CSV files, in file order (a first line that is exactly these "
        "names is taken as the header).",
    )
    column_names_file: str | None = Field(
        None,
        min_length=1,
        description="BoT-IoT, tabular: a file whose first line names the columns of headerless CSV files (BoT-IoT's "
        "UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv), relative to the spec file; never read as a data part.",
    )
    hex_columns: list[str] | None = Field(
        None,
        description="Tabular: feature columns whose numbers may be written in hexadecimal, 0x0303 (BoT-IoT's sport and dport for "
        "ICMP and ARP); kind botiot does this for sport and dport itself.",
    )
    label_column: str | None = Field(None, description="Tabular: the label column.")
    benign_values: list[str] | None = Field(None, description="Tabular: label values that mean benign; every other value is malicious.")
    group_column: str | None = Field(None, description="Tabular: column that drives the partition (device, attack category, site).")
    max_rows_per_kind: int | None = Field(
        None,
        ge=1,
        le=MAX_ROWS,
        description="Real data: keep at most this many rows of each kind (label and group values: N-BaIoT device and family, BoT-IoT "
        "family), a uniform sample drawn while the files are read (the same files give the same sample), so a dataset of millions of "
        "rows fits in memory.",
    )
    drop_bad_rows: bool = Field(False, description="Drop rows with non-numeric or non-finite features (the count is reported) instead of failing.")
    shards: str | None = Field(
        None,
        min_length=1,
        description="Where each worker reads its prepared shard instead of cutting it from the dataset: 'store' (the experiment's "
        "store, under <experiment>/shards/, written by `p2pk data prepare --out s3://…` or by `p2pk run`) or a folder written by "
        "`p2pk data prepare --out DIR` (relative to the spec file; on Kubernetes an absolute path, e.g. on kubernetes.dataVolume).",
    )
    builtin: BuiltinDataSpec = Field(default_factory=BuiltinDataSpec)
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec, description="Each client's feature pipeline (transforms, one-hot, scaling), fitted on its own training rows.")

    @model_validator(mode="before")
    @classmethod
    def _auto_for_real_data(cls, data):
        """``preprocessing.auto`` defaults to true for real data (every kind but builtin)."""
        if isinstance(data, dict) and data.get("kind", "builtin") != "builtin":
            pre = data.get("preprocessing")
            if pre is None:
                data = {**data, "preprocessing": {"auto": True}}
            elif isinstance(pre, dict) and pre.get("auto") is None:
                data = {**data, "preprocessing": {**pre, "auto": True}}
        return data

    @model_validator(mode="after")
    def _kind_needs(self) -> "DatasetSpec":
        if self.kind != "builtin" and not self.path:
            raise ValueError(f"dataset.path is required for dataset kind {self.kind!r}")
        if self.kind == "tabular":
            if not self.label_column:
                raise ValueError("dataset.labelColumn is required for dataset kind 'tabular'")
            if not self.benign_values:
                raise ValueError("dataset.benignValues is required for dataset kind 'tabular'")
        if self.columns and self.column_names_file:
            raise ValueError("dataset.columns and dataset.columnNamesFile: give one of them")
        for name, values in (("columns", self.columns), ("features", self.features), ("hexColumns", self.hex_columns)):
            repeated = sorted({v for v in values or [] if (values or []).count(v) > 1})
            if repeated:
                raise ValueError(f"dataset.{name}: {repeated} named more than once")
        fields = type(self).model_fields
        given = {f for f in fields if getattr(self, f) != fields[f].get_default(call_default_factory=True)}
        unused = sorted(given - _DATASET_FIELDS[self.kind])
        if unused:
            names = ", ".join(f"dataset.{to_camel(f)}" for f in unused)
            raise ValueError(f"{names}: not used by dataset kind {self.kind!r}")
        return self


#: The DatasetSpec fields each dataset kind reads.
_DATASET_FIELDS = {
    "builtin": {"kind", "builtin", "shards", "preprocessing"},
    "nbaiot": {"kind", "path", "devices", "families", "max_rows_per_kind", "drop_bad_rows", "shards", "preprocessing"},
    "botiot": {"kind", "path", "features", "columns", "column_names_file", "families", "max_rows_per_kind", "drop_bad_rows", "shards",
               "preprocessing"},
    "tabular": {"kind", "path", "features", "columns", "column_names_file", "hex_columns", "label_column", "benign_values", "group_column",
                "max_rows_per_kind", "drop_bad_rows", "shards", "preprocessing"},
}


# --------------------------------------------------------------------------- scenario


#: Class names by label (1 = malicious, the positive class).
CLASS_NAMES = {0: "benign", 1: "malicious"}


class ClassCounts(SpecModel):
    """Rows per class (benign = label 0, malicious = label 1)."""

    benign: int = Field(..., ge=0, le=MAX_ROWS)
    malicious: int = Field(..., ge=0, le=MAX_ROWS)

    @property
    def total(self) -> int:
        return self.benign + self.malicious


#: Selector -> row count (``scenario.globalTest.maliciousKinds`` / ``benignGroups``).
GroupCounts = dict[str, Annotated[int, Field(ge=0, le=MAX_ROWS)]]


class GlobalTestSpec(ClassCounts):
    """The global test set: rows per class and, optionally, its make-up. ``maliciousKinds``
    maps an attack-kind selector (a value of ``evaluation.kindColumn`` such as ``gafgyt/udp``,
    or any ``column=value`` group selector) to the malicious rows taken from it, ``benignGroups``
    a group selector (e.g. ``device-0``) to benign rows; each must add up to its class count,
    which may then be left out. Without them the set follows availability in the clients'
    groups; a part named in them is drawn from every row of its group that no client uses, so it
    may be a kind no client has. Selectors are checked against the data when the shards are built."""

    benign: int | None = Field(None, ge=0, description="Benign rows (default: the sum of benignGroups).")
    malicious: int | None = Field(None, ge=0, description="Malicious rows (default: the sum of maliciousKinds).")
    malicious_kinds: GroupCounts | None = Field(None, min_length=1, description="Malicious rows per attack kind, e.g. {'gafgyt/udp': 50, 'gafgyt/scan': 50}, from any rows of that kind no client uses (also a kind no client has); adds up to malicious.")
    benign_groups: GroupCounts | None = Field(None, min_length=1, description="Benign rows per group, e.g. {'device=Danmini_Doorbell': 500}, from any benign rows of that group no client uses; adds up to benign.")

    @model_validator(mode="before")
    @classmethod
    def _totals_from_make_up(cls, data: Any) -> Any:
        """A class count left out is the sum of its make-up."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for total, parts in (("benign", ("benignGroups", "benign_groups")), ("malicious", ("maliciousKinds", "malicious_kinds"))):
            given = next((out[k] for k in parts if k in out), None)
            if total not in out and isinstance(given, dict) and all(isinstance(v, int) for v in given.values()):
                out[total] = sum(given.values())
        return out

    @model_validator(mode="after")
    def _make_up_adds_up(self) -> "GlobalTestSpec":
        for total, parts, field in (("benign", self.benign_groups, "benignGroups"), ("malicious", self.malicious_kinds, "maliciousKinds")):
            if getattr(self, total) is None:
                raise ValueError(f"{total} is required (or give {field}, whose counts it then adds up)")
            if parts is not None and sum(parts.values()) != getattr(self, total):
                raise ValueError(f"{field} adds up to {sum(parts.values())} rows, but {total} is {getattr(self, total)}")
        return self


class ClientSpec(SpecModel):
    """One peer: its name, which groups its rows come from, and its per-class counts
    (the rows of the paper's Tables 1–3).

    A group selector is ``value`` (any group column) or ``column=value``; values nest with
    ``/``, so ``gafgyt`` selects ``gafgyt/udp`` too. The rows matching any selector are its pool."""

    name: str = Field(..., pattern=DNS_LABEL, max_length=40)
    benign_groups: list[str] | None = Field(None, min_length=1, description="Group selectors its benign rows come from, e.g. 'device-0' or 'device=Danmini_Doorbell' (default: the pooled benign rows).")
    malicious_groups: list[str] | None = Field(None, min_length=1, description="Group selectors its malicious rows come from, e.g. 'family=DoS' or 'gafgyt/udp' (default: the pooled malicious rows).")
    train: ClassCounts
    validation: ClassCounts

    @model_validator(mode="after")
    def _trains(self) -> "ClientSpec":
        if self.train.total == 0:
            raise ValueError(f"client {self.name!r} has no training rows: give train.benign or train.malicious a count above 0")
        return self

    @property
    def minority(self) -> int | None:
        """The training minority class (0 benign, 1 malicious), None when balanced."""
        if self.train.benign == self.train.malicious:
            return None
        return int(self.train.malicious < self.train.benign)


class ScenarioSpec(SpecModel):
    """The four scenarios of §3.1. ``preset`` fills ``clients`` and ``globalTest`` from a
    built-in layout reproducing experiments 5.2.1–5.2.4 (scaled to the data available)."""

    kind: ScenarioKind = "non-iid"
    preset: str | None = Field(None, description="Built-in client layout, e.g. 'nbaiot-5.2.4' (see `p2pk data presets`); fills kind, clients and globalTest.")
    scale: float = Field(1.0, gt=0, le=1, description="With a preset: multiply its counts by this factor to fit a smaller copy of the dataset.")
    clients: list[ClientSpec] = Field(default_factory=list, max_length=MAX_CLIENTS)
    global_test: GlobalTestSpec | None = Field(
        None,
        description="Global test set drawn from rows no client trains or validates on, from the union of the clients' groups, or with its make-up per attack kind and benign group (any rows of those no client uses).",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        """Fill kind, clients and globalTest from ``preset`` (p2p_job.presets). A document
        that gives them too (as a dumped, already expanded spec does) must agree with it."""
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        scale = data.get("scale", 1.0)
        if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
            scale = 1.0  # the scale field's own check reports it
        expanded = presets.expand(data["preset"], scale)
        out = dict(data)
        for alias, name, model in (("kind", "kind", None), ("clients", "clients", ClientSpec), ("globalTest", "global_test", GlobalTestSpec)):
            given = out.pop(name, None) if name in out else out.pop(alias, None)
            if given not in (None, []) and _comparable(given, model) != _comparable(expanded.get(alias), model):
                raise ValueError(f"scenario.{alias} conflicts with preset {data['preset']!r}; give one or the other")
            out[alias] = expanded.get(alias)
        return out

    @model_validator(mode="after")
    def _clients(self) -> "ScenarioSpec":
        if not self.clients:
            raise ValueError("scenario needs clients (or a preset)")
        names = [c.name for c in self.clients]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scenario.clients: duplicate client names {dup}")
        if self.kind == "non-iid" and self.global_test is None:
            raise ValueError("scenario.globalTest is required for the non-iid scenario")
        if self.scale != 1.0 and not self.preset:
            raise ValueError("scenario.scale applies to a preset only")
        problem = _scenario_problem(self.kind, self.clients)
        if problem:
            raise ValueError(f"scenario.clients: {problem}")
        return self


def _comparable(value: Any, model: type[SpecModel] | None) -> Any:
    """A scenario field as validated values, so camelCase/snake_case spellings compare equal."""
    try:
        if model is ClientSpec:
            return [ClientSpec.model_validate(c) for c in value]
        return model.model_validate(value) if model else value
    except (ValidationError, TypeError):
        return value


def _scenario_problem(kind: str, clients: list[ClientSpec]) -> str | None:
    """What makes these clients not the scenario ``kind`` of §3.1, or None."""
    selections = {(tuple(c.benign_groups or ()), tuple(c.malicious_groups or ())) for c in clients}
    if kind != "non-iid" and len(selections) > 1:
        return f"{kind} clients draw from the same distribution: give them all the same benignGroups and maliciousGroups"
    if kind == "non-iid" and len(clients) > 1 and len(selections) == 1:
        return "non-iid clients draw from different groups (devices, attack families): give them different benignGroups or maliciousGroups"
    if kind == "balanced-iid":
        for c in clients:
            low, high = sorted((c.train.benign, c.train.malicious))
            if 2 * low < high:
                return f"balanced-iid: client {c.name!r} trains on {c.train.benign} benign vs {c.train.malicious} malicious rows (more than a factor 2 apart)"
    minorities = {c.name: c.minority for c in clients}
    shown = {name: CLASS_NAMES.get(m, "neither (balanced)") for name, m in minorities.items()}
    if kind == "imbalanced-iid" and (None in minorities.values() or len(set(minorities.values())) > 1):
        return f"imbalanced-iid: every client needs the same minority class in training; training minority per client: {shown}"
    if kind == "mixed-iid" and {0, 1} - set(minorities.values()):
        return f"mixed-iid: the minority class must be benign on some clients and malicious on others; training minority per client: {shown}"
    return None


# --------------------------------------------------------------------------- topology


class TopologySpec(SpecModel):
    """Who is whose neighbour. Undirected; every peer aggregates over itself and its
    neighbours (C_sub in equation 5)."""

    kind: TopologyKind = "full"
    degree: int | None = Field(None, ge=1, le=MAX_CLIENTS - 1, description="k-regular: neighbours per peer.")
    p: float | None = Field(None, gt=0, le=1, description="erdos-renyi: edge probability (re-drawn until connected).")
    adjacency: dict[str, list[str]] | None = Field(None, description="explicit: client -> neighbours (made symmetric).")

    @model_validator(mode="after")
    def _params(self) -> "TopologySpec":
        if self.kind == "k-regular" and self.degree is None:
            raise FieldError(("degree",), "required for kind 'k-regular'")
        if self.kind == "erdos-renyi" and self.p is None:
            raise FieldError(("p",), "required for kind 'erdos-renyi'")
        if self.kind == "explicit" and not self.adjacency:
            raise FieldError(("adjacency",), "required for kind 'explicit'")
        for name, kind in (("degree", "k-regular"), ("p", "erdos-renyi"), ("adjacency", "explicit")):
            if getattr(self, name) is not None and self.kind != kind:
                raise FieldError((name,), f"applies to kind {kind!r} only, not {self.kind!r}")
        return self


# --------------------------------------------------------------------------- methods


class RebalancingSpec(SpecModel):
    """Parameters of the rebalancing methods (Algorithm 1 for K-SMOTE)."""

    k: int = Field(15, ge=1, le=1_000_000, description="K-SMOTE: base minority points picked at random.")
    neighbours: int = Field(20, ge=1, le=10_000, description="K-SMOTE: nearest minority neighbours N of each base point (SMOTE: k_neighbors).")
    ratio: float = Field(1.0, gt=0, le=10, description="r: generate N_s = r·|D_maj| − |D_min| points (Algorithm 1, line 1).")
    share_fraction: float = Field(0.1, ge=0, le=1, description="α: fraction of D_syn published to neighbours (equation 7).")
    received: Literal["balanced", "unbounded"] = Field(
        "balanced",
        description=(
            "D_o_syn, the points received from neighbours (Algorithm 2 line 16). balanced: they count towards the "
            "rebalancing target and are bounded by receivedFraction of each class's deficit (own synthetic points fill "
            "the rest); unbounded: the paper as written, D_o_syn only grows and is trained on whole. See docs/DESIGN.md."
        ),
    )
    received_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="balanced: D_o_syn keeps at most this fraction of each class's deficit r·|D_maj| − |D_c| (the newest points).",
    )
    point_tolerance: float = Field(
        10.0, ge=0, le=1e6, allow_inf_nan=False,
        description="Reject a neighbour's shared points lying farther than this many of the receiver's own feature ranges outside them.",
    )
    class_region: bool = Field(
        True,
        description=(
            "Drop a neighbour's shared point that lies inside the receiver's own region of the other class: its 3 "
            "nearest training rows are all of the other class and the farthest of them is within classRegionTolerance "
            "of that class's typical spacing (reason class-region; closes label flipping with benign rows). See docs/robustness.md."
        ),
    )
    class_region_tolerance: float = Field(
        0.75, ge=0, le=1e6, allow_inf_nan=False,
        description=(
            "classRegion: the radius, in units of the other class's typical spacing (the median distance of its "
            "training rows to their 3rd nearest other row of that class). 0 drops only points on 3 identical rows."
        ),
    )
    max_received: int | None = Field(
        None,
        ge=0,
        le=MAX_ROWS,
        description="Cap on the size of D_o_syn, keeping the newest points (either policy). Default: no cap of its own.",
    )


class MethodSpec(SpecModel):
    """One arm of the comparison. Every method runs on identical shards and seeds."""

    name: str | None = Field(None, pattern=DNS_LABEL, max_length=30, description="Default: the rebalancing name (plus the aggregation rule when it differs from aggregation.rule).")
    rebalancing: RebalancingMethod = "ksmote"
    aggregation: AggregationRule | None = Field(None, description="Overrides aggregation.rule for this method (e.g. fedavg for experiment 5.2.1).")
    robust_rule: RobustRule | None = Field(None, description="Overrides aggregation.robustRule for this method; the default method name then ends in -<robustRule>.")
    share: bool | None = Field(None, description="Publish an α-fraction of synthetic points (default: only for ksmote).")
    share_real_rows: bool = Field(
        False,
        description="Allow a method whose 'synthetic' points are copies of real rows (random-over with share: true) to publish them to neighbours; refused unless set.",
    )

    @model_validator(mode="after")
    def _real_rows(self) -> "MethodSpec":
        """Sharing real rows is an explicit choice: random over-sampling duplicates real minority
        rows, so sharing its D_syn publishes exact copies of a client's data."""
        copies = self.rebalancing == "random-over" and self.share is True
        if copies and not self.share_real_rows:
            raise ValueError(
                "rebalancing random-over with share: true publishes exact copies of real rows to neighbours; "
                "set shareRealRows: true to allow it"
            )
        if self.share_real_rows and not copies:
            raise ValueError("shareRealRows applies only to rebalancing random-over with share: true")
        return self


class AggregationSpec(SpecModel):
    """Equations 5–6: p_k = λ·Var_k/ΣVar + (1−λ)·|D_k|/Σ|D| over the peer and its neighbours.
    ``fedavg`` is central FedAvg (all clients, weights |D_k|, every round); ``local`` never
    aggregates."""

    rule: AggregationRule = "p2p"
    lambda_: float = Field(0.8, ge=0, le=1, alias="lambda", description="λ: trade-off between data variance and data size.")
    update_probability: float = Field(1.0, gt=0, le=1, description="Probability that a peer is picked to aggregate in a round (Algorithm 2, line 12).")
    robust_rule: RobustRule = Field(
        "mean",
        description="How the peer and its neighbours are combined: mean (equation 5, the paper), median, trimmed-mean, "
        "clipped-mean, krum, multi-krum, filtered-clipped-mean or validation (p2p_job.robust; deviations from the paper against hostile neighbours).",
    )
    byzantine: int = Field(1, ge=0, le=1000, description="f: hostile contributors per neighbourhood that trimmed-mean (trims f per side), clipped-mean (clips the f farthest by default), krum, multi-krum, filtered-clipped-mean and validation (leave out at most f) withstand.")
    validation_tolerance: float = Field(
        0.05, ge=0, le=1e6, allow_inf_nan=False,
        description="validation: leave a neighbour out when removing it from the equation 5 mean lowers the peer's "
        "class-balanced validation loss (nats) by more than this.",
    )
    refuse_hostile_points: bool = Field(
        True,
        description="Also refuse the shared points of a neighbour whose model this peer refused as hostile in that round: "
        "a model check (model-mismatch, bad-weights, degenerate) or an outlier of the robust rule (krum, multi-krum and filtered-clipped-mean: "
        "a worst-scored contributor far beyond the others; validation: a rejected neighbour), never a model merely not "
        "chosen. Counted per point as hostile-sender. False: its points are judged on their own.",
    )
    clip_norm: float | None = Field(
        None, gt=0, le=1e6, allow_inf_nan=False,
        description="clipped-mean: bound on the L2 norm of a neighbour's model minus the peer's own (default: the (m − f)-th smallest "
        "of the m neighbours' distances, f = byzantine, so f hostile neighbours cannot raise it past an honest one's).",
    )
    max_weight_share: float = Field(
        1.0, gt=0, le=1, allow_inf_nan=False,
        description="Largest share of equation 6's size and variance terms any one contributor may get, whatever |D_k| or Var_k it reports (1: no cap, the paper).",
    )


class TrainingSpec(SpecModel):
    """Local training (§5.1.3)."""

    local_epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    learning_rate: float = Field(1e-5, gt=0, le=10)
    weight_decay: float = Field(1e-3, ge=0, le=10)
    hidden_layers: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default_factory=lambda: [80, 50, 10], min_length=1, max_length=32)
    dropout: float = Field(0.2, ge=0, lt=1)
    leaky_relu_slope: float = Field(0.01, ge=0, lt=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="Decision threshold on the sigmoid output.")


class EvaluationSpec(SpecModel):
    """What is measured beyond the metrics of §5.1.2: the false negative rate per attack kind,
    and the scores and final models kept for later analysis (ROC curves, thresholds)."""

    kind_column: str | None = Field(
        None,
        description="Group column naming each malicious row's attack kind, for the FNR per kind. Default: 'family' (builtin, nbaiot, botiot), the label column (tabular).",
    )
    scores_every: int = Field(
        10, ge=0, le=100_000, description="Keep each client's scores on its evaluation sets every this many rounds and at the last round (0: the last round only)."
    )

    operating_point: Literal["best-f1", "target-fpr"] = Field(
        "best-f1",
        description="Besides training.threshold (the paper's 0.5), each client picks a threshold on its own validation set every round and reports every set at it too: best-f1 (highest validation F1) or target-fpr (lowest threshold with validation FPR ≤ targetFpr).",
    )
    target_fpr: float = Field(0.01, ge=0, le=1, description="target-fpr: the false positive rate allowed on the validation set.")

    def saves_scores(self, r: int, rounds: int) -> bool:
        """Whether round ``r`` of ``rounds`` keeps its scores."""
        return r == rounds or (self.scores_every > 0 and r % self.scores_every == 0)


# --------------------------------------------------------------------------- adversaries

#: Attacks a client can mount (``p2p_job.adversaries``): on its model delta and weight inputs, or
#: on the points it shares.
AttackKind = Literal[
    "scaled-delta", "sign-flip", "model-replacement", "gaussian-noise", "inflated-n-base", "a-little-is-enough",
    "label-flip", "majority-flip", "out-of-range", "flooding", "silent",
]
#: The attacks on shared points: ``points`` applies to these only.
POINT_ATTACKS = ("label-flip", "majority-flip", "out-of-range", "flooding")


class AdversarySpec(SpecModel):
    """A client that misbehaves from round ``fromRound`` on: it trains honestly, keeps its honest
    model for itself, and publishes what ``attack`` makes of its publication (an experiment
    feature for measuring poisoning; see ``p2p_job.adversaries`` and docs/robustness.md)."""

    client: str = Field(..., pattern=DNS_LABEL, max_length=40, description="The misbehaving client (a scenario client).")
    attack: AttackKind = Field(
        ...,
        description="scaled-delta | sign-flip | model-replacement | gaussian-noise | inflated-n-base | a-little-is-enough (on the model) | "
        "label-flip | majority-flip | out-of-range | flooding (on the shared points) | silent (publishes nothing).",
    )
    from_round: int = Field(1, ge=1, le=99_999, description="First round the client misbehaves in.")
    factor: float | None = Field(
        None, gt=0, le=1e12,
        description="Strength: scaled-delta multiplies the delta (default 10), sign-flip by −factor (1), model-replacement "
        "lowers the output bias by factor, boosted by the client count (10), gaussian-noise is the noise σ (1), inflated-n-base "
        "multiplies |D_base| (1000), a-little-is-enough shifts each entry by −factor standard deviations of the honest models (1), out-of-range puts points up to factor feature ranges away (1000).",
    )
    points: int | None = Field(None, ge=1, le=1_000_000, description="Points shared per round by label-flip, majority-flip and out-of-range (default: as many as the client would share honestly) and flooding (20000).")

    @model_validator(mode="after")
    def _points_for_point_attacks(self) -> "AdversarySpec":
        if self.points is not None and self.attack not in POINT_ATTACKS:
            raise FieldError(("points",), f"applies to {', '.join(POINT_ATTACKS)} only, not {self.attack!r}")
        return self


class RuntimeSpec(SpecModel):
    """How peers run and exchange; runners and flags may override."""

    device: Device = "auto"
    round_timeout_seconds: float = Field(600, gt=0, le=7 * 86_400, description="How long a peer waits for its neighbours' publications of a round (at most a week).")
    store: str | None = Field(None, max_length=4096, description="s3://bucket/prefix or file:///path (default: runner's choice).")
    metrics_port: int = Field(9400, ge=1, le=65535)
    pushgateway: str | None = Field(None, max_length=1024, description="host:port of a Prometheus Pushgateway.")
    max_payload_mb: float = Field(256, gt=0, le=16_384, description="Reject any neighbour payload larger than this (at most 16 GiB).")
    store_retry_seconds: float = Field(
        120, ge=0, le=3600,
        description="How long each store call keeps retrying (exponential backoff with jitter) before the worker gives up and exits for a restart.")
    max_failures_per_round: int = Field(
        3, ge=0, le=100,
        description="Failed starts of one worker at the same round before it stops for good (a crash loop), however many restarts its runner allows.")


# --------------------------------------------------------------------------- kubernetes

#: DNS-1123 subdomain: names of Secrets and service accounts.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Kubernetes resource quantity (``500m``, ``2Gi``, ``1.5``): the API server's grammar.
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
#: S3 bucket names (lower case, digits, dots and hyphens; 3–63 characters).
S3_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
#: Key prefix inside the bucket: '/'-separated names without wildcards (the scoped MinIO
#: policies match keys with '*' patterns, so '*' and '?' must not appear in real keys).
S3_PREFIX = r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$"
#: host:port or http(s)://host:port.
S3_ENDPOINT = r"^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$"
#: The extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"

Quantity = Annotated[int | Annotated[str, Field(pattern=QUANTITY)], Field(description="A quantity: 2, '500m', '4Gi'.")]


class S3Spec(SpecModel):
    """The S3 store (MinIO) the Kubernetes workers exchange through: ``s3://<bucket>/<prefix>``.
    With ``adminSecret`` the operator makes one MinIO user per client, allowed to write only its
    own keys and read only its neighbours' (DESIGN, "Store layout"); with ``credentialsSecret``
    every client shares one user (the weaker mode)."""

    endpoint: str | None = Field(None, pattern=S3_ENDPOINT, description="MinIO/S3 endpoint, host:port or http(s)://host:port.")
    bucket: str = Field("p2pk", pattern=S3_BUCKET, description="Bucket holding every experiment's store.")
    prefix: str = Field("experiments", pattern=S3_PREFIX, description="Key prefix of the experiments in the bucket ('' for the bucket root).")
    secure: bool = Field(False, description="Use HTTPS when the endpoint has no scheme.")
    credentials_secret: str | None = Field(
        None, pattern=DNS_SUBDOMAIN, max_length=253, description="Secret with accessKey/secretKey shared by all clients (weaker mode)."
    )
    admin_secret: str | None = Field(
        None, pattern=DNS_SUBDOMAIN, max_length=253, description="Secret with MinIO admin accessKey/secretKey: one scoped user per client."
    )

    @model_validator(mode="after")
    def _credentials(self) -> "S3Spec":
        if self.admin_secret and self.credentials_secret:
            raise ValueError("kubernetes.s3: give adminSecret (one scoped user per client) or credentialsSecret (one shared user), not both")
        if self.admin_secret and not self.endpoint:
            raise ValueError("kubernetes.s3.endpoint is required with adminSecret (the MinIO admin API lives there)")
        return self

    @property
    def store_url(self) -> str:
        """``s3://bucket/prefix``: the store root (``P2PK_STORE``)."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint with its scheme: ``http(s)://host:port`` (``P2PK_S3_ENDPOINT``)."""
        if not self.endpoint or "://" in self.endpoint:
            return self.endpoint
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


class ResourceRequirements(SpecModel):
    """CPU and memory of each client pod, as in a container's ``resources`` (GPUs: use ``gpus``)."""

    requests: dict[str, Quantity] | None = Field(None, description="e.g. {cpu: '2', memory: 4Gi}.")
    limits: dict[str, Quantity] | None = Field(None, description="e.g. {memory: 8Gi}.")

    @model_validator(mode="after")
    def _no_gpus(self) -> "ResourceRequirements":
        for part in ("requests", "limits"):
            if GPU_RESOURCE in (getattr(self, part) or {}):
                raise ValueError(f"kubernetes.resources.{part}: set GPUs with kubernetes.gpus, not {GPU_RESOURCE!r}")
        return self


class Toleration(SpecModel):
    """A pod toleration (as in a Pod spec), e.g. for tainted GPU nodes."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0, le=2**31 - 1)


#: An absolute path in a container.
ABSOLUTE_PATH = r"^/.*$"


class DataVolume(SpecModel):
    """A PersistentVolumeClaim holding the dataset (or prepared shards), mounted read-only in
    every client pod: the other way in besides shards in the store."""

    claim_name: str = Field(..., pattern=DNS_SUBDOMAIN, max_length=253, description="PersistentVolumeClaim in the experiment's namespace.")
    mount_path: str = Field("/data", pattern=ABSOLUTE_PATH, description="Where it is mounted (read-only) in the worker.")
    sub_path: str | None = Field(None, pattern=r"^[^/].*$", description="Mount only this path inside the volume.")


class KubernetesSpec(SpecModel):
    """How the operator runs the experiment: one Job (one pod) per method and client."""

    image: str = Field("ghcr.io/p2pk/worker:0.1.0", min_length=1, description="Worker image (runs `p2pk worker` as a non-root user).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    gpus: int = Field(0, ge=0, le=16, description="nvidia.com/gpu limit per client pod; > 0 also sets P2PK_DEVICE=cuda.")
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = Field(None, description="Node labels each client pod must match.")
    tolerations: list[Toleration] | None = None
    service_account_name: str | None = Field(None, pattern=DNS_SUBDOMAIN, max_length=253, description="Service account of the client pods.")
    backoff_limit: int = Field(
        20, ge=0, le=1000,
        description="Pod failures before a client's Job fails (each new pod resumes from the checkpoint; runtime.maxFailuresPerRound stops a crash loop sooner).")
    active_deadline_seconds: int | None = Field(None, ge=1, le=2**31 - 1, description="Wall-clock limit of each client's Job.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=2**31 - 1, description="Delete each finished Job (and its pod) this long after it ends.")
    s3: S3Spec = Field(default_factory=S3Spec)
    data_volume: DataVolume | None = Field(None, description="A PersistentVolumeClaim with the dataset or prepared shards, mounted read-only.")
    purge_on_delete: bool = Field(False, description="Delete the experiment's store prefix when the resource is deleted.")


class ExperimentSpec(SpecModel):
    """``spec`` of a P2PExperiment."""

    seed: int = Field(0, ge=0, le=2**31 - 1)
    rounds: int = Field(..., ge=1, le=99_999, description="Communication rounds (global epochs); the store numbers them with five digits.")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    scenario: ScenarioSpec
    topology: TopologySpec = Field(default_factory=TopologySpec)
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec()], min_length=1)
    rebalancing: RebalancingSpec = Field(default_factory=RebalancingSpec)
    aggregation: AggregationSpec = Field(default_factory=AggregationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    adversaries: list[AdversarySpec] = Field(
        default_factory=list, max_length=MAX_CLIENTS,
        description="Clients that misbehave, and how (p2p_job.adversaries); results mark them and summaries leave them out.",
    )

    @model_validator(mode="after")
    def _unique_methods(self) -> "ExperimentSpec":
        names = [resolved_method_name(m, self.aggregation.rule) for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"methods: duplicate method names {dup}; give each a distinct name")
        if SHARDS in names:
            raise ValueError(f"methods: {SHARDS!r} is reserved (the store keeps the clients' shards under <experiment>/{SHARDS}/); name the method otherwise")
        if self.scenario.preset:
            wanted = presets.available()[self.scenario.preset].dataset
            if wanted != self.dataset.kind:
                raise ValueError(f"scenario.preset {self.scenario.preset!r} is written for dataset kind {wanted!r}, not {self.dataset.kind!r}")
        from p2p_job.topology import build_topology  # imports this module

        build_topology(self.topology, [c.name for c in self.scenario.clients], self.seed)  # raises FieldError
        if self.dataset.kind == "builtin":
            _check_builtin_supply(self.dataset.builtin, self.scenario)
        self._check_adversaries()
        return self

    def _check_adversaries(self) -> None:
        clients = [c.name for c in self.scenario.clients]
        seen: set[str] = set()
        for i, adversary in enumerate(self.adversaries):
            if adversary.client not in clients:
                raise FieldError(("adversaries", i, "client"), f"no client {adversary.client!r} in the scenario (clients: {clients})")
            if adversary.client in seen:
                raise FieldError(("adversaries", i, "client"), f"client {adversary.client!r} is named twice; give each adversary one attack")
            seen.add(adversary.client)
            if adversary.from_round > self.rounds:
                raise FieldError(("adversaries", i, "fromRound"), f"round {adversary.from_round} comes after the last round ({self.rounds})")
        if clients and seen >= set(clients):
            raise FieldError(("adversaries",), "every client is an adversary: leave at least one honest client to measure")


def _check_builtin_supply(builtin: BuiltinDataSpec, scenario: ScenarioSpec) -> None:
    """The built-in generator's rows are known from the spec, so asking for more rows than it
    makes is refused here rather than by ``build_shards``: every group selector must name one
    of its groups, each client's pool must hold its train + validation rows, and each class
    must hold what all clients and the global test set ask for together (necessary conditions;
    ``build_shards`` still checks the rows left after earlier clients took theirs)."""
    from p2p_job.datasets.builtin import group_table  # numpy; imports this module

    cells, sizes = group_table(builtin)
    demand = {label: 0 for label in CLASS_NAMES}
    for i, client in enumerate(scenario.clients):
        for label, name in CLASS_NAMES.items():
            field = f"{name}Groups"
            selectors = getattr(client, f"{name}_groups")
            try:
                pool = sizes[(cells.labels == label) & _select(cells, selectors)].sum()
            except ValueError as exc:
                raise FieldError(("scenario", "clients", i, field), str(exc)) from None
            wanted = getattr(client.train, name) + getattr(client.validation, name)
            if wanted > pool:
                raise FieldError(
                    ("scenario", "clients", i),
                    f"client {client.name!r} needs {wanted} {name} rows (train + validation) but its groups hold "
                    f"{pool} in the built-in dataset (dataset.builtin)",
                )
            demand[label] += wanted
    for label, name in CLASS_NAMES.items():
        total = int(sizes[cells.labels == label].sum())
        wanted = demand[label] + (getattr(scenario.global_test, name) if scenario.global_test else 0)
        if wanted > total:
            raise FieldError(
                ("scenario",),
                f"the clients and globalTest need {wanted} {name} rows together but the built-in dataset makes {total} (dataset.builtin)",
            )


def _select(table: Any, selectors: list[str] | None) -> Any:
    """``select_groups`` over the built-in dataset's group table (all rows when no selectors)."""
    from p2p_job.datasets.table import select_groups

    return select_groups(table, selectors) if selectors else True


class Metadata(SpecModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)

    name: str = Field(..., pattern=DNS_LABEL, max_length=40)
    namespace: str | None = None


class P2PExperiment(SpecModel):
    """The whole document, as written in ``exp.yaml`` and applied with kubectl."""

    api_version: Literal["p2pk.io/v1alpha1"] = Field("p2pk.io/v1alpha1", alias="apiVersion")
    kind: Literal["P2PExperiment"] = "P2PExperiment"
    metadata: Metadata
    spec: ExperimentSpec

    @property
    def name(self) -> str:
        return self.metadata.name


# --------------------------------------------------------------------------- helpers


def kubernetes_errors(exp: P2PExperiment) -> list[tuple[str, str]]:
    """What only a Kubernetes run needs besides a valid spec: an S3 endpoint, store credentials
    and data a pod can reach (shards in the store, or absolute paths), as ``(field path, message)``. The operator refuses the experiment with these
    (``p2pk_operator.manifests.plan``); ``p2pk validate --kubernetes`` reports the same."""
    s3 = exp.spec.kubernetes.s3
    errors = []
    if not s3.endpoint:
        errors.append(("spec.kubernetes.s3.endpoint", "required on Kubernetes: the workers exchange through this S3 (MinIO) endpoint"))
    if not (s3.admin_secret or s3.credentials_secret):
        errors.append(("spec.kubernetes.s3", "give adminSecret (one scoped MinIO user per client) or credentialsSecret (one shared user): the workers need store credentials"))
    data = exp.spec.dataset
    # The worker reads the spec from /etc/p2pk: a relative path would point there.
    if data.shards not in (None, "store") and not data.shards.startswith("/"):
        errors.append(("spec.dataset.shards", "on Kubernetes: 'store' (the experiment's store) or an absolute path in the pod, e.g. on kubernetes.dataVolume"))
    if data.kind != "builtin" and data.shards is None and not (data.path or "").startswith("/"):
        errors.append(("spec.dataset.path", "on Kubernetes: an absolute path in the pod (e.g. on kubernetes.dataVolume), "
                       "or set dataset.shards: store after `p2pk data prepare --out s3://…` (each worker then reads only its own shard)"))
    if data.shards is None and data.column_names_file and not data.column_names_file.startswith("/"):
        errors.append(("spec.dataset.columnNamesFile", "on Kubernetes: an absolute path in the pod (e.g. on kubernetes.dataVolume)"))
    return errors


def resolved_method_name(method: MethodSpec, default_rule: AggregationRule) -> str:
    """The method's name: explicit, else the rebalancing name, suffixed with the
    aggregation rule when it differs from the experiment's default, then with the method's own
    ``robustRule`` when it gives one (e.g. ``ksmote-median``)."""
    if method.name:
        return method.name
    name = method.rebalancing
    if method.aggregation and method.aggregation != default_rule:
        name = f"{name}-{method.aggregation}"
    if method.robust_rule:
        name = f"{name}-{method.robust_rule}"
    return name


class InvalidSpec(ValueError):
    """A spec that failed validation; ``errors`` lists ``(field path, message)`` pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {msg}" for path, msg in errors)
        super().__init__(f"{source}: invalid P2PExperiment ({len(errors)} error(s))\n{lines}")


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


def _error_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", str(item)):
            parts.append(f"[{item!r}]")  # dict keys and union tags
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(document)"


def parse_experiment(document: Any, source: str = "<spec>") -> P2PExperiment:
    """Validate a parsed YAML/JSON document; raise :class:`InvalidSpec` listing every error
    by field path (e.g. ``spec.training.learningRate``)."""
    if not isinstance(document, dict):
        raise InvalidSpec(source, [("(document)", "expected a mapping with apiVersion, kind, metadata, spec")])
    try:
        return P2PExperiment.model_validate(document)
    except ValidationError as exc:
        errors = []
        for e in exc.errors():
            loc, msg = e["loc"], e["msg"].removeprefix("Value error, ")
            cause = (e.get("ctx") or {}).get("error")
            if isinstance(cause, FieldError):
                loc, msg = (*loc, *cause.loc), cause.message
            errors.append((_error_path(loc), msg))
        raise InvalidSpec(source, errors) from None


#: Largest experiment file read (Kubernetes objects are capped at about 1.5 MB too).
MAX_SPEC_BYTES = 1 << 20
#: Largest YAML document, counted in nodes with every alias expanded (a "billion laughs"
#: document is a few hundred bytes that expand to 10^9 nodes).
MAX_YAML_NODES = 100_000


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 (and kubectl) do: ``1e-5`` is a number,
    not the string YAML 1.1 makes of it (the model's types are strict)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789"),
)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with aliases expanded, computed on the composed graph (each node
    once), stopping as soon as the count passes :data:`MAX_YAML_NODES`."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_YAML_NODES + 1)
    return sizes[id(root)]


def load_yaml(text: str, source: str) -> Any:
    """One YAML document from ``text``, safely: at most :data:`MAX_YAML_NODES` nodes with
    aliases expanded (checked before anything is built from it), a single document, no
    arbitrary tags. Problems raise :class:`InvalidSpec` naming the line."""
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidSpec(source, [("(document)", "empty file: expected a P2PExperiment mapping")])
        if _expanded_size(node) > MAX_YAML_NODES:
            raise InvalidSpec(source, [("(document)", f"more than {MAX_YAML_NODES} YAML nodes once aliases are expanded; refused (an alias bomb?)")])
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise InvalidSpec(source, [(where, f"YAML syntax error: {getattr(exc, 'problem', None) or exc}")]) from None
    except RecursionError:
        raise InvalidSpec(source, [("(document)", "YAML nested too deeply")]) from None
    finally:
        loader.dispose()


def load_experiment(path: str | Path) -> P2PExperiment:
    """Read and validate an experiment file: at most :data:`MAX_SPEC_BYTES`, UTF-8, one YAML
    document (:func:`load_yaml`), then the model. Every problem is an :class:`InvalidSpec`."""
    return parse_experiment(read_document(path), str(path))


def read_document(path: str | Path) -> Any:
    """An experiment file's YAML document, read as :func:`load_experiment` reads it but not yet
    validated (``p2p_job.overrides`` edits it first)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise InvalidSpec(str(path), [("(file)", exc.strerror or str(exc))]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidSpec(str(path), [("(file)", f"larger than {MAX_SPEC_BYTES} bytes; an experiment file is a few kilobytes")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSpec(str(path), [("(file)", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")]) from None
    return load_yaml(text, str(path))


def dump_experiment(exp: P2PExperiment) -> str:
    """The experiment as YAML with camelCase keys (what is stored as ``spec.yaml``)."""
    return yaml.safe_dump(exp.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
