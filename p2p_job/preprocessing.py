"""Feature preprocessing: each client's pipeline from raw feature units to what its model sees,
fitted on that client's own training rows only (``spec.dataset.preprocessing``).

The paper min-max scales the features (§5.1.1). Real flow counters (bytes, packets, rates,
durations, N-BaIoT's weights and variances) span many orders of magnitude, and min-max scaling
alone leaves nearly every row in one corner of the unit cube; categorical columns (protocol,
state) carry no order at all. So a client's pipeline is, column by column:

1. a transform of a numeric column: ``none``, ``log1p`` (log(1 + x), for counts ≥ 0) or
   ``signed-log`` (sign(x)·log(1 + |x|), for any sign), chosen by the first entry of
   ``preprocessing.transforms`` whose column patterns (``fnmatch``: ``"*_weight"``, ``"*"``)
   match the column's name; then the scaler ``preprocessing.scaling``: ``minmax`` (the paper's,
   default), ``robust`` (median and IQR) or ``quantile`` (to a uniform distribution);
2. a one-hot encoding of each column listed in ``preprocessing.categorical``. Categorical
   columns are loaded as codes into the dataset's list of their values
   (:attr:`p2p_job.datasets.Table.categories`), so every client has the same one-hot columns and
   the same network width; a code outside that list encodes as all zeros.

``preprocessing.auto`` (the default for real data, :class:`p2p_job.spec.DatasetSpec`) fills in
what the section does not say, from the client's own training rows: ``signed-log`` on each
numeric column that :func:`column_stats` calls heavy-tailed (and no ``transforms`` entry
names), one-hot for every column the loader read as a category (text columns,
:data:`p2p_job.datasets.tabular.MAX_AUTO_CATEGORIES`), and ``quantile`` scaling unless
``scaling`` is given. Quantile rather than the paper's min-max because each client scales with
its own rows: on non-IID real data a column nearly constant on one client's rows puts the other
clients' attack kinds (their shared points, the global test rows) at ±10^4 of its min-max
range, while the quantile scaler keeps every value in [0, 1] (docs/real-data.md).

It is a scikit-learn ``ColumnTransformer`` of a ``Pipeline(FunctionTransformer, scaler)`` over the
numeric columns and a ``OneHotEncoder`` over the categorical ones. Encoded features are the
numeric columns in dataset order, then one block of one-hot columns per categorical column.

Shared synthetic points travel in raw units (DESIGN, "Shared synthetic points"): a sender maps its
points back with :meth:`Preprocessor.inverse_transform` — the inverse scaler and transform on the
numeric part, and for each one-hot block the category with the largest value (a valid category,
even for a point that a sampler interpolated across categories) — and a receiver applies its own
:meth:`Preprocessor.transform`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, QuantileTransformer, RobustScaler

from p2p_job.datasets.table import DataError
from p2p_job.spec import PreprocessingSpec

#: Quantiles the ``quantile`` scaler estimates (fewer when the client has fewer training rows).
N_QUANTILES = 1000


def signed_log1p(X: np.ndarray) -> np.ndarray:
    """sign(x)·log(1 + |x|): monotone, odd, ≈ x near 0, log-compressed in both tails."""
    return np.sign(X) * np.log1p(np.abs(X))


def signed_expm1(X: np.ndarray) -> np.ndarray:
    """The inverse of :func:`signed_log1p`."""
    return np.sign(X) * np.expm1(np.abs(X))


#: Transform name -> (function, inverse) on a float64 array.
TRANSFORMS = {"log1p": (np.log1p, np.expm1), "signed-log": (signed_log1p, signed_expm1)}


def _apply(X: np.ndarray, columns: dict[str, np.ndarray], inverse: bool) -> np.ndarray:
    """Apply each transform (or its inverse) to its columns of ``X`` (float64 copy)."""
    out = np.array(X, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for name, index in columns.items():
            out[:, index] = TRANSFORMS[name][1 if inverse else 0](out[:, index])
    return out


def _scaler(kind: str, n_rows: int):
    if kind == "robust":
        return RobustScaler()
    if kind == "quantile":
        return QuantileTransformer(n_quantiles=max(1, min(N_QUANTILES, n_rows)), output_distribution="uniform", subsample=None)
    return MinMaxScaler()


def one_hot_columns(spec: PreprocessingSpec, feature_names: list[str], categories: dict[str, list[str]] | None) -> list[str]:
    """The columns to one-hot encode: ``categorical``, and under ``auto`` every other column the
    loader read as a category (text columns, :func:`p2p_job.datasets.tabular.load`), in
    feature order. A listed column that is not a feature is a :class:`DataError`."""
    names = set(feature_names)
    for column in spec.categorical:
        if column not in names:
            raise DataError(f"dataset.preprocessing.categorical: no feature column {column!r} among the data's "
                            f"{len(feature_names)} (`p2pk data describe` lists them)")
    if not spec.auto:
        return list(spec.categorical)
    return list(spec.categorical) + [n for n in feature_names if n in (categories or {}) and n not in spec.categorical]


def column_transforms(spec: PreprocessingSpec, feature_names: list[str], categorical: list[str] = (), X_train: np.ndarray | None = None) -> dict[str, str]:
    """The transform of every numeric column (``categorical`` columns excluded), by name: the
    first ``transforms`` entry with a matching pattern, else — under ``auto``, from the client's
    raw training rows ``X_train`` — ``signed-log`` where :func:`column_stats` calls the column
    heavy-tailed (signed-log equals log1p on values ≥ 0 and stays defined for a neighbour's
    negative ones), else ``none``. A pattern that matches no column is a :class:`DataError`."""
    chosen: dict[str, str] = {}
    numeric = [n for n in feature_names if n not in categorical]
    for i, entry in enumerate(spec.transforms):
        for pattern in entry.columns:
            hits = [n for n in numeric if fnmatchcase(n, pattern)]
            if not hits:
                raise DataError(f"dataset.preprocessing.transforms[{i}].columns: {pattern!r} matches no numeric feature column")
            for name in hits:
                chosen.setdefault(name, entry.transform)
    if spec.auto and X_train is not None:
        index = {n: j for j, n in enumerate(feature_names)}
        rest = [n for n in numeric if n not in chosen]
        stats = column_stats(rest, np.asarray(X_train)[:, [index[n] for n in rest]]) if rest else []
        chosen.update({c.name: "signed-log" for c in stats if c.suggestion != "none"})
    return {n: chosen.get(n, "none") for n in numeric}


@dataclass(frozen=True)
class Preprocessor:
    """One client's fitted pipeline (see the module docstring). ``feature_names`` are the raw
    columns, in the dataset's order; ``output_names`` the encoded ones (``"proto=tcp"`` for a
    one-hot column); ``onehot_blocks`` the ``(start, stop)`` of each categorical column's
    one-hot block among the encoded features."""

    feature_names: list[str]
    transforms: dict[str, str]  # numeric column -> none | log1p | signed-log
    categorical: list[str]
    categories: dict[str, list[str]]  # categorical column -> its values, by code
    pipeline: ColumnTransformer

    @classmethod
    def fit(
        cls,
        spec: PreprocessingSpec,
        feature_names: list[str],
        X_train: np.ndarray,
        categories: dict[str, list[str]] | None = None,
    ) -> "Preprocessor":
        """Fit on one client's raw training rows ``X_train`` (float32 (n, d), categorical columns
        as numeric codes). A transform that is undefined on a training value (``log1p`` of a value
        ≤ −1) is a :class:`DataError` naming the column."""
        categorical = one_hot_columns(spec, feature_names, categories)
        transforms = column_transforms(spec, feature_names, categorical, X_train)
        index = {n: j for j, n in enumerate(feature_names)}
        numeric = [index[n] for n in transforms]
        by_transform = {
            t: np.array([k for k, n in enumerate(transforms) if transforms[n] == t], dtype=np.intp)
            for t in TRANSFORMS
            if t in transforms.values()
        }
        numeric_pipeline = Pipeline(
            [
                (
                    "transform",
                    FunctionTransformer(
                        partial(_apply, columns=by_transform, inverse=False),
                        inverse_func=partial(_apply, columns=by_transform, inverse=True),
                        check_inverse=False,
                    ),
                ),
                ("scale", _scaler(spec.scaling, len(X_train))),
            ]
        )
        parts = [("numeric", numeric_pipeline, numeric)]
        if categorical:
            missing = [c for c in categorical if c not in (categories or {})]
            if missing:
                raise DataError(f"dataset.preprocessing.categorical: column(s) {missing} were not loaded as categories")
            codes = [np.arange(len(categories[c]), dtype=np.float64) for c in categorical]
            onehot = OneHotEncoder(categories=codes, handle_unknown="ignore", sparse_output=False, dtype=np.float32)
            parts.append(("categorical", onehot, [index[c] for c in categorical]))
        pipeline = ColumnTransformer(parts, sparse_threshold=0.0)
        X_train = np.asarray(X_train, dtype=np.float32)
        transformed = _apply(X_train[:, numeric], by_transform, inverse=False)
        bad = ~np.isfinite(transformed)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            name = list(transforms)[col]
            raise DataError(  # names the feature by position and the row by number, never the value
                f"dataset.preprocessing: {transforms[name]} of feature column {numeric[col] + 1} is undefined for its value "
                f"in training row {row + 1}; use signed-log for columns with values ≤ −1"
            )
        pipeline.fit(X_train)
        return cls(list(feature_names), transforms, categorical, dict(categories or {}), pipeline)

    @property
    def n_outputs(self) -> int:
        return len(self.transforms) + sum(len(c) for c in self._onehot_categories())

    def _onehot_categories(self) -> list[np.ndarray]:
        if not self.categorical:
            return []
        return list(self.pipeline.named_transformers_["categorical"].categories_)

    @property
    def onehot_blocks(self) -> list[tuple[int, int]]:
        blocks, start = [], len(self.transforms)
        for values in self._onehot_categories():
            blocks.append((start, start + len(values)))
            start += len(values)
        return blocks

    @property
    def output_names(self) -> list[str]:
        names = list(self.transforms)
        for column, values in zip(self.categorical, self._onehot_categories()):
            names += [f"{column}={self.categories[column][int(v)]}" for v in values]
        return names

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Raw rows (float32 (n, d)) to this client's encoded features (float32). Values a
        transform is undefined for come out NaN (a receiver rejects such points).

        What ``pipeline.transform`` computes — each fitted part on its columns, side by side —
        with the parts called directly: the ``ColumnTransformer`` layer (its input checks and
        dispatch) cost more than the parts themselves on the few hundred points a peer receives
        per neighbour and round (docs/real-data.md, "Received points and run time");
        tests/test_preprocessing.py checks the two give the same array."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} raw features, got an array of shape {X.shape}")
        if len(X) == 0:
            return np.empty((0, self.n_outputs), dtype=np.float32)
        parts = [(self.pipeline.named_transformers_[name], columns) for name, _, columns in self.pipeline.transformers
                 if name in self.pipeline.named_transformers_]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return np.hstack([fitted.transform(X[:, columns]) for fitted, columns in parts]).astype(np.float32)

    def inverse_transform(self, X: np.ndarray) -> np.ndarray:
        """Encoded features back to raw rows (float32 (n, d)); each one-hot block becomes the code
        of its largest entry (all zeros: the first category)."""
        X = np.asarray(X, dtype=np.float64)
        if len(X) == 0:
            return np.empty((0, len(self.feature_names)), dtype=np.float32)
        n_numeric = len(self.transforms)
        index = {n: j for j, n in enumerate(self.feature_names)}
        raw = np.empty((len(X), len(self.feature_names)), dtype=np.float64)
        numeric = self.pipeline.named_transformers_["numeric"]
        with np.errstate(over="ignore"):
            raw[:, [index[n] for n in self.transforms]] = numeric.inverse_transform(X[:, :n_numeric])
        for column, (start, stop), values in zip(self.categorical, self.onehot_blocks, self._onehot_categories()):
            raw[:, index[column]] = np.asarray(values, dtype=np.float64)[np.argmax(X[:, start:stop], axis=1)]
        with np.errstate(over="ignore"):
            return raw.astype(np.float32)


# --------------------------------------------------------------------------- suggestions

#: |skewness| above which a numeric column is called heavy-tailed.
SKEW_LIMIT = 2.0
#: A column whose values span more than this many decades (max |x| over the median |x|) is too.
DECADES_LIMIT = 3.0


@dataclass(frozen=True)
class ColumnStats:
    """One raw feature column over the rows given (``p2pk data describe``)."""

    name: str
    minimum: float
    median: float
    maximum: float
    skew: float  # sample skewness (Fisher), 0 for a constant column
    decades: float  # log10(max |x| / median of the non-zero |x|), 0 when all are zero
    distinct: int
    suggestion: str  # none | log1p | signed-log | categorical


def column_stats(feature_names: list[str], X: np.ndarray, categories: dict[str, list[str]] | None = None) -> list[ColumnStats]:
    """Range, skew and spread of every raw column, and the transform it suggests: ``categorical``
    for columns loaded as categories; for numeric ones, a log when the column is heavy-tailed
    (|skew| > :data:`SKEW_LIMIT` or more than :data:`DECADES_LIMIT` decades) — ``log1p`` when
    every value is ≥ 0, else ``signed-log`` — and ``none`` otherwise."""
    from scipy.stats import skew

    out = []
    for j, name in enumerate(feature_names):
        x = np.asarray(X[:, j], dtype=np.float64)
        magnitude = np.abs(x[x != 0])
        decades = float(np.log10(magnitude.max() / np.median(magnitude))) if magnitude.size else 0.0
        s = float(skew(x)) if np.ptp(x) > 0 else 0.0
        if categories and name in categories:
            suggestion = "categorical"
        elif abs(s) > SKEW_LIMIT or decades > DECADES_LIMIT:
            suggestion = "log1p" if x.min() >= 0 else "signed-log"
        else:
            suggestion = "none"
        out.append(ColumnStats(name, float(x.min()), float(np.median(x)), float(x.max()), s, decades, int(len(np.unique(x))), suggestion))
    return out


def suggested_preprocessing(stats: list[ColumnStats]) -> dict:
    """A ``dataset.preprocessing`` section from :func:`column_stats` (camelCase, as in YAML):
    one transforms entry per suggested log, the categorical columns, quantile scaling — what
    ``auto`` does, written out (``auto`` decides per client, on its own training rows)."""
    transforms = []
    for kind in ("signed-log", "log1p"):
        columns = [c.name for c in stats if c.suggestion == kind]
        if columns:
            transforms.append({"columns": columns, "transform": kind})
    section: dict = {"transforms": transforms} if transforms else {}
    categorical = [c.name for c in stats if c.suggestion == "categorical"]
    if categorical:
        section["categorical"] = categorical
    section["scaling"] = "quantile"
    return section
