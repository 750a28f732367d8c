"""The results of a run: one row per (method, client, round, evaluation set), shared by every
runner (``p2pk simulate``, ``p2pk run``, the Kubernetes workers' ``metrics/<client>/<r:05d>.parquet``).

A peer reports each round as a :class:`RoundRecord`; :meth:`RoundRecord.rows` turns it into
rows of the schema below (one per evaluation set: ``local`` = the client's validation set,
``global`` = the scenario's global test set). :func:`write_results` is the one place that writes a results folder
(``results.parquet``, the tables of ``p2p_job.summary``, the figures of ``p2p_job.figures``),
for every runner and for ``p2pk compare``.

Where the data names attack kinds, each row also carries the FNR of every attack kind in that
evaluation set (``fnr_by_kind``) and the kinds the client had in its own training rows
(``train_kinds``): the summary's per-kind table marks the kinds a client never saw, which is
the paper's claim under test (a client detects attacks it only knows through its neighbours).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.metrics import METRIC_NAMES

#: Metrics that depend on the decision threshold, reported again at the client's own threshold
#: (``p2p_job.operating``) as ``tuned_<name>``.
TUNED_METRICS = ("fnr", "fpr", "precision", "recall", "f1")
from p2p_job.summary import DEFAULT_LAST

#: The results schema (docs/internals.md, "Results"), in column order.
SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("method", pa.string()),
        ("client", pa.string()),
        ("round", pa.int64()),
        ("eval", pa.string()),
        *[(name, pa.float64()) for name in METRIC_NAMES],
        ("train_loss", pa.float64()),
        ("n_train", pa.int64()),
        ("n_synthetic", pa.int64()),
        ("n_received", pa.int64()),
        ("neighbours_used", pa.int64()),
        ("neighbours_missing", pa.int64()),
        ("payloads_rejected", pa.int64()),
        ("points_rejected", pa.int64()),
        ("aggregated", pa.bool_()),
        ("round_seconds", pa.float64()),
        ("fnr_by_kind", pa.map_(pa.string(), pa.float64())),
        ("train_kinds", pa.list_(pa.string())),
        ("threshold", pa.float64()),
        *[(f"tuned_{name}", pa.float64()) for name in TUNED_METRICS],
        ("adversarial", pa.bool_()),
    ]
)
COLUMNS = tuple(SCHEMA.names)

@dataclass(frozen=True)
class RoundRecord:
    """One peer's round r: its evaluations and what happened on the way.

    ``metrics`` maps an evaluation set (``local``, ``global``) to the values of every name in
    ``METRIC_NAMES``. ``n_train`` = |D_base ∪ D_syn ∪ D_o_syn| trained on (or the under-sampled
    set), ``n_synthetic`` = |D_syn| generated this round, ``n_received`` = points taken into
    D_o_syn this round (eq. 7), ``neighbours_*`` count the gathered publications,
    ``payloads_rejected`` the publications, models and point sets refused whole and
    ``points_rejected`` the shared points dropped one by one (DESIGN "Hostile neighbours"),
    ``aggregated`` tells whether the peer averaged (eq. 5) this round.
    ``fnr_by_kind`` maps an evaluation set to the FNR of each attack kind in it, and
    ``train_kinds`` lists the attack kinds of the client's own training rows (both empty when
    the data names no kinds). ``threshold`` is the client's own operating point this round
    (``evaluation.operatingPoint`` on its validation set) and ``tuned`` maps an evaluation set
    to the :data:`TUNED_METRICS` at it (NaN when not given). ``adversarial`` marks a client that ``spec.adversaries`` names
    (summaries leave it out: they report honest clients).
    """

    experiment: str
    method: str
    client: str
    round: int
    metrics: dict[str, dict[str, float]]
    train_loss: float
    n_train: int
    n_synthetic: int
    n_received: int
    neighbours_used: int
    neighbours_missing: int
    payloads_rejected: int
    aggregated: bool
    round_seconds: float
    fnr_by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    train_kinds: tuple[str, ...] = ()
    threshold: float = float("nan")
    tuned: dict[str, dict[str, float]] = field(default_factory=dict)
    adversarial: bool = False
    points_rejected: int = 0

    def rows(self) -> list[dict]:
        """The record as rows of :data:`SCHEMA`, one per evaluation set."""
        common = {
            "train_loss": self.train_loss,
            "n_train": self.n_train,
            "n_synthetic": self.n_synthetic,
            "n_received": self.n_received,
            "neighbours_used": self.neighbours_used,
            "neighbours_missing": self.neighbours_missing,
            "payloads_rejected": self.payloads_rejected,
            "points_rejected": self.points_rejected,
            "aggregated": self.aggregated,
            "round_seconds": self.round_seconds,
        }
        key = {"experiment": self.experiment, "method": self.method, "client": self.client, "round": self.round}
        return [
            {**key, "eval": eval_set, **{m: float(values[m]) for m in METRIC_NAMES}, **common,
             "fnr_by_kind": dict(self.fnr_by_kind.get(eval_set, {})), "train_kinds": list(self.train_kinds),
             "threshold": float(self.threshold),
             **{f"tuned_{m}": float(self.tuned.get(eval_set, {}).get(m, float("nan"))) for m in TUNED_METRICS},
             "adversarial": self.adversarial}
            for eval_set, values in self.metrics.items()
        ]


def kind_rates(value) -> dict[str, float]:
    """A row's ``fnr_by_kind`` as a dict (Parquet hands a map back as (key, value) pairs)."""
    return {} if value is None else {str(k): float(v) for k, v in dict(value).items()}


def rows_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of the schema as one DataFrame with the schema's columns and types."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA).to_pandas()


def tables_frame(tables: Iterable[pa.Table]) -> pd.DataFrame:
    """Arrow tables of :data:`SCHEMA` (metrics parts, :func:`decode_table`) as one DataFrame."""
    return pa.concat_tables([SCHEMA.empty_table(), *tables]).to_pandas()


def results_frame(records: Iterable[RoundRecord]) -> pd.DataFrame:
    """All records as one DataFrame with the schema's columns and types."""
    return rows_frame(row for record in records for row in record.rows())


def encode_rows(rows: list[dict]) -> bytes:
    """Parquet bytes of rows of :data:`SCHEMA`: one round's part of a worker's metrics
    (``metrics/<client>/<r:05d>.parquet``, written once when the round ends, so a round costs
    the same whatever the rounds before it)."""
    sink = io.BytesIO()
    # No column statistics: of one round's rows they are useless and a fifth of the bytes.
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink, write_statistics=False)
    return sink.getvalue()


def decode_rows(data: bytes) -> list[dict]:
    """The rows of Parquet bytes written by :func:`encode_rows`."""
    return decode_table(data).to_pylist()


def decode_table(data: bytes) -> pa.Table:
    """Parquet bytes of :data:`SCHEMA` rows as an Arrow table. A part holds two rows, so the
    fixed costs count: ``ParquetFile.read`` on this thread (0.4 ms a part) rather than
    ``read_table``'s dataset machinery and thread pool (1.7 ms); a cast only when the stored
    schema differs."""
    table = pq.ParquetFile(pa.BufferReader(data)).read(columns=list(COLUMNS), use_threads=False)
    return table if table.schema.equals(SCHEMA) else table.cast(SCHEMA)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write rows of the results schema to Parquet (fails on a missing or mistyped column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False), path)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a results file (or one part of a worker's metrics)."""
    return pq.read_table(path, schema=SCHEMA).to_pandas()


def write_results(frame: pd.DataFrame, out_dir: Path, *, name: str = "summary", title: str = "",
                  last: int = DEFAULT_LAST, autoscale: bool = False, scores: pd.DataFrame | None = None,
                  notes: list[str] | None = None, say: Callable[[str], None] = lambda message: None) -> None:
    """A results folder: ``results.parquet``, ``<name>.txt`` and ``<name>.md`` (the tables of
    ``p2p_job.summary``) and ``figures/*.png`` (``p2p_job.figures``). Every runner and command
    that writes results calls this. A ``frame`` with a ``run`` column (``p2pk compare``) or a
    ``seed`` column (``--seeds``) is not one run's rows: then no ``results.parquet`` is written
    (each run's folder has its own). ``say`` is told of the figures as they are drawn (a
    progress line each: they take seconds).
    ROC curves (``roc-<eval>.png``) are drawn from ``scores`` (``p2p_job.scores.read_scores``
    rows), by default the scores kept in ``out_dir`` itself. ``notes`` (``p2p_job.choices``: the
    loader's choices about columns, warnings about the spec) end the summary files."""
    from rich.console import Console

    from p2p_job.figures import plot_figures, plot_kind_figures, plot_roc
    from p2p_job.scores import read_scores
    from p2p_job.summary import summary_markdown, summary_tables

    out_dir.mkdir(parents=True, exist_ok=True)
    if not {"run", "seed"} & set(frame.columns):
        write_parquet(frame, out_dir / "results.parquet")
    console = Console(record=True, width=160, file=io.StringIO())
    for table in summary_tables(frame, title, last):
        console.print(table)
    listed = "".join(f"- {note}\n" for note in notes or [])
    choices = f"\n## Data and choices\n\n{listed}" if listed else ""
    (out_dir / f"{name}.txt").write_text(console.export_text() + choices, encoding="utf-8")
    (out_dir / f"{name}.md").write_text(summary_markdown(frame, last) + choices, encoding="utf-8")
    say(f"drawing figures in {out_dir / 'figures'}")
    plot_figures(frame, out_dir / "figures", autoscale=autoscale, say=say)
    plot_kind_figures(frame, out_dir / "figures")
    plot_roc(read_scores(out_dir) if scores is None else scores, out_dir / "figures")
