"""The results of a run: one row per (method, client, round, evaluation set), shared by every
runner (``p2pk simulate``, ``p2pk run``, the Kubernetes workers' ``metrics/<client>.parquet``).

A peer reports each round as a :class:`RoundRecord`; :meth:`RoundRecord.rows` turns it into
rows of the schema below (one per evaluation set: ``local`` = the client's validation set,
``global`` = the scenario's global test set). From the rows this module writes
``results.parquet``, a summary table (final-round mean over clients, per method and evaluation
set: the metrics of §5.1.2) and figures like the paper's Figures 4–9 (metric against round).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from p2p_job.metrics import METRIC_NAMES

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
        ("aggregated", pa.bool_()),
        ("round_seconds", pa.float64()),
    ]
)
COLUMNS = tuple(SCHEMA.names)

#: Metrics of the summary table (§5.1.2), in the order shown; the figures show every metric.
SUMMARY_METRICS = ("fnr", "fpr", "precision", "recall", "f1", "auc")
LABELS = {
    "fnr": "FNR",
    "fpr": "FPR",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "auc": "AUC",
    "precision_at_recall_75": "Precision at recall 0.75",
    "recall_at_precision_75": "Recall at precision 0.75",
}


@dataclass(frozen=True)
class RoundRecord:
    """One peer's round r: its evaluations and what happened on the way.

    ``metrics`` maps an evaluation set (``local``, ``global``) to the values of every name in
    ``METRIC_NAMES``. ``n_train`` = |D_base ∪ D_syn ∪ D_o_syn| trained on (or the under-sampled
    set), ``n_synthetic`` = |D_syn| generated this round, ``n_received`` = points taken into
    D_o_syn this round (eq. 7), ``neighbours_*`` and ``payloads_rejected`` count the gathered
    publications, ``aggregated`` tells whether the peer averaged (eq. 5) this round.
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
            "aggregated": self.aggregated,
            "round_seconds": self.round_seconds,
        }
        key = {"experiment": self.experiment, "method": self.method, "client": self.client, "round": self.round}
        return [
            {**key, "eval": eval_set, **{m: float(values[m]) for m in METRIC_NAMES}, **common}
            for eval_set, values in self.metrics.items()
        ]


def rows_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows of the schema as one DataFrame with the schema's columns and types."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA).to_pandas()


def results_frame(records: Iterable[RoundRecord]) -> pd.DataFrame:
    """All records as one DataFrame with the schema's columns and types."""
    return rows_frame(row for record in records for row in record.rows())


def encode_rows(rows: list[dict]) -> bytes:
    """Rows of the schema as Parquet bytes (a worker's ``metrics/<client>.parquet``)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink)
    return sink.getvalue()


def decode_rows(data: bytes) -> list[dict]:
    """The rows of Parquet bytes written by :func:`encode_rows`."""
    return pq.read_table(pa.BufferReader(data), schema=SCHEMA).to_pylist()


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write rows of the results schema to Parquet (fails on a missing or mistyped column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame[list(COLUMNS)], schema=SCHEMA, preserve_index=False), path)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read a results (or ``metrics/<client>.parquet``) file."""
    return pq.read_table(path, schema=SCHEMA).to_pandas()


def final_round_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method and evaluation set: the mean over clients of each summary metric at the
    method's last round. Index (method, eval) in the order the methods first appear."""
    last = frame.groupby("method", sort=False)["round"].transform("max")
    final = frame[frame["round"] == last]
    summary = final.groupby(["method", "eval"], sort=False)[list(SUMMARY_METRICS)].mean()
    summary.insert(0, "round", final.groupby(["method", "eval"], sort=False)["round"].max())
    return summary


def _cell(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:.4f}"


def summary_table(frame: pd.DataFrame, title: str = "final round, mean over clients"):
    """The summary as a ``rich`` table (printed by the CLI, exported to ``summary.txt``)."""
    from rich import box
    from rich.table import Table

    summary = final_round_summary(frame)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for header in ("method", "eval", "round", *(LABELS[m] for m in SUMMARY_METRICS)):
        table.add_column(header, justify="left" if header in ("method", "eval") else "right")
    for (method, eval_set), row in summary.iterrows():
        table.add_row(method, eval_set, str(int(row["round"])), *(_cell(row[m]) for m in SUMMARY_METRICS))
    return table


def summary_markdown(frame: pd.DataFrame) -> str:
    """The summary as a Markdown table (``summary.md``)."""
    summary = final_round_summary(frame)
    header = ["method", "eval", "round", *(LABELS[m] for m in SUMMARY_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, eval_set), row in summary.iterrows():
        cells = [method, eval_set, str(int(row["round"])), *(_cell(row[m]) for m in SUMMARY_METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metric_panels(curves: dict[str, pd.DataFrame], title: str, path: Path) -> None:
    """One panel per metric of §5.1.2, metric against round, one line per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 8), sharex=True)
    for ax, metric in zip(axes.flat, METRIC_NAMES):
        for label, curve in curves.items():
            ax.plot(curve.index, curve[metric], label=label)
        ax.set_title(LABELS[metric])
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_figures(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Figures like the paper's 4–9 under ``out_dir``: per evaluation set, ``methods-<eval>.png``
    (a line per method, mean over clients) and ``<method>-<eval>.png`` (a line per client)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for eval_set, rows in frame.groupby("eval", sort=False):
        means = {m: g.groupby("round")[list(METRIC_NAMES)].mean() for m, g in rows.groupby("method", sort=False)}
        path = out_dir / f"methods-{eval_set}.png"
        _metric_panels(means, f"{eval_set} evaluation: mean over clients", path)
        written.append(path)
        for method, by_method in rows.groupby("method", sort=False):
            per_client = {c: g.set_index("round")[list(METRIC_NAMES)] for c, g in by_method.groupby("client", sort=False)}
            path = out_dir / f"{method}-{eval_set}.png"
            _metric_panels(per_client, f"{method}, {eval_set} evaluation: per client", path)
            written.append(path)
    return written


def write_results(frame: pd.DataFrame, out_dir: Path) -> None:
    """A run's output folder: ``results.parquet``, ``summary.txt``, ``summary.md``, ``figures/*.png``."""
    from rich.console import Console

    out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, out_dir / "results.parquet")
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(summary_table(frame))
    (out_dir / "summary.txt").write_text(console.export_text(), encoding="utf-8")
    (out_dir / "summary.md").write_text(summary_markdown(frame), encoding="utf-8")
    plot_figures(frame, out_dir / "figures")
