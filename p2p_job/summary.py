"""What a run's (or several runs') result rows say, in numbers: the tables of ``summary.md`` and
``p2pk compare``, and the curves the figures draw.

Rows are those of ``p2p_job.results`` (one per method, client, round and evaluation set),
optionally with two more columns: ``run`` (a label, when several result folders are compared)
and ``seed`` (when one experiment was repeated over seeds, ``--seeds``). A *line* is one
(run, method); each line is summarised per evaluation set.

- **Final round**: the mean over clients of each metric at the line's last round; FNR* and FPR*
  are the FNR and FPR at each client's own threshold (``p2p_job.operating``).
- **Last rounds**: the mean over clients and over the last ``last`` rounds (default 5): the
  curves of §5.2 are jagged from round to round, so one round alone says little.
- **FNR per attack kind**: where the rows carry ``fnr_by_kind``, a table per evaluation set at
  the last round: a row per (line, client), a column per attack kind, the kinds absent from
  the client's own training rows (``train_kinds``) marked with :data:`UNSEEN` — "does a client
  detect what it never saw?" as a table. With several seeds, the mean across seeds.
- **Honest clients only**: rows marked ``adversarial`` (clients ``spec.adversaries`` names) are
  left out of every mean, and the tables say so and name them; per-client figures still show them.
- **Spread**: with several seeds, each seed's value is computed as above and the table gives
  their mean ± the sample standard deviation across seeds; the figures' band spans the lowest
  to the highest seed. With one seed the band spans the lowest to the highest client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from p2p_job.metrics import METRIC_NAMES

#: Metrics of the summary tables (§5.1.2), in the order shown; the figures show every metric.
SUMMARY_METRICS = ("fnr", "fpr", "precision", "recall", "f1", "auc", "tuned_fnr", "tuned_fpr")
LABELS = {
    "fnr": "FNR",
    "fpr": "FPR",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "auc": "AUC",
    "precision_at_recall_75": "Precision at recall 0.75",
    "recall_at_precision_75": "Recall at precision 0.75",
    "tuned_fnr": "FNR*",
    "tuned_fpr": "FPR*",
}
#: Rounds averaged by the "last rounds" table unless told otherwise.
DEFAULT_LAST = 5


def line_keys(frame: pd.DataFrame) -> list[str]:
    """The columns naming a line: ``run`` (when present) and ``method``."""
    return (["run"] if "run" in frame.columns else []) + ["method"]


def honest(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows of honest clients, and the adversarial clients left out (results column
    ``adversarial``; frames without it are all honest)."""
    if "adversarial" not in frame.columns:
        return frame, []
    marked = frame["adversarial"].fillna(False).astype(bool)
    return frame[~marked], sorted(frame.loc[marked, "client"].unique())


def _seeded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if "seed" in frame.columns else frame.assign(seed=0)


def line_label(key) -> str:
    """``method``, or ``run/method`` when runs are compared."""
    return "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)


@dataclass(frozen=True)
class Summary:
    """Per line and evaluation set (index ``(*line_keys, eval)``, first-appearance order):
    ``final`` holds ``round`` and each summary metric's mean, ``final_std`` the standard
    deviation across seeds (NaN with one seed); ``last``/``last_std`` the same over the last
    rounds, ``last_rounds`` says which rounds (``first``, ``round``)."""

    final: pd.DataFrame
    final_std: pd.DataFrame
    last: pd.DataFrame
    last_std: pd.DataFrame
    n_last: int
    seeds: int
    left_out: tuple[str, ...] = ()  # adversarial clients, not in any mean


def summarize(frame: pd.DataFrame, last: int = DEFAULT_LAST) -> Summary:
    """The final-round and last-rounds tables of a results frame (see the module docstring)."""
    if last < 1:
        raise ValueError(f"--last must be at least 1, got {last}")
    keys = line_keys(frame) + ["eval"]
    kept, left_out = honest(frame)
    rows = _seeded(kept)
    rows = rows.assign(**{m: np.nan for m in SUMMARY_METRICS if m not in rows.columns})  # older results
    metrics = list(SUMMARY_METRICS)
    final_round = rows.groupby(keys + ["seed"], sort=False)["round"].transform("max")
    final = rows[rows["round"] == final_round]
    in_last = rows[rows["round"] > final_round - last]
    per_seed_final = final.groupby(keys + ["seed"], sort=False)[metrics].mean()
    per_seed_last = in_last.groupby(keys + ["seed"], sort=False)[metrics].mean()
    rounds = final.groupby(keys, sort=False)["round"].max()
    first = in_last.groupby(keys, sort=False)["round"].min()

    def across_seeds(per_seed: pd.DataFrame):
        grouped = per_seed.groupby(level=list(range(len(keys))), sort=False)
        return grouped.mean(), grouped.std(ddof=1)

    final_mean, final_std = across_seeds(per_seed_final)
    last_mean, last_std = across_seeds(per_seed_last)
    final_mean.insert(0, "round", rounds)
    last_mean.insert(0, "round", rounds)
    last_mean.insert(0, "first", first)
    return Summary(final_mean, final_std, last_mean, last_std, last, int(rows["seed"].nunique()), tuple(left_out))


def final_round_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per line and evaluation set: the mean over clients of each summary metric at the line's
    last round, and that ``round``."""
    return summarize(frame).final


def _cell(mean: float, std: float) -> str:
    if np.isnan(mean):
        return "—"
    return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _tables(summary: Summary) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the two tables."""
    spread = f", mean ± std across {summary.seeds} seeds" if summary.seeds > 1 else ""
    if summary.left_out:
        spread += f" (honest clients only; adversarial, left out: {', '.join(summary.left_out)})"
    label_header = ["run", "method"] if len(summary.final.index.names) == 3 else ["method"]
    out = []
    for title, column, means, stds, rounds in (
        ("Final round, mean over clients" + spread, "round", summary.final, summary.final_std,
         lambda row: str(int(row["round"]))),
        (f"Mean over clients and the last {summary.n_last} rounds" + spread, "rounds", summary.last, summary.last_std,
         lambda row: f"{int(row['first'])}–{int(row['round'])}" if row["first"] != row["round"] else str(int(row["round"]))),
    ):
        header = [*label_header, "eval", column, *(LABELS[m] for m in SUMMARY_METRICS)]
        body = []
        for index, row in means.iterrows():
            std = stds.loc[index]
            body.append([*(str(k) for k in index), rounds(row), *(_cell(row[m], std[m]) for m in SUMMARY_METRICS)])
        out.append((title, header, body))
    return out


#: Mark of an attack kind absent from a client's own training rows in the per-kind tables.
UNSEEN = "†"
UNSEEN_NOTE = f"{UNSEEN}: no row of this attack kind in the client's own training data."
#: What the starred columns of the main tables are.
TUNED_NOTE = "FNR*, FPR*: at each client's own threshold, chosen on its validation set (evaluation.operatingPoint); FNR, FPR at training.threshold."


def kind_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """FNR per attack kind at each line's last round: one row per (line, eval, client, kind)
    with ``round``, ``fnr`` (mean across seeds) and ``seen`` (the kind was in the client's own
    training rows). Empty when the rows carry no per-kind rates."""
    from p2p_job.results import kind_rates

    keys = line_keys(frame)
    columns = [*keys, "eval", "client", "round", "kind", "fnr", "seen"]
    if "fnr_by_kind" not in frame.columns or frame.empty:
        return pd.DataFrame(columns=columns)
    rows = _seeded(frame)
    last = rows.groupby(keys + ["seed"], sort=False)["round"].transform("max")
    long = pd.DataFrame(
        [
            {**{k: getattr(row, k) for k in keys}, "eval": row.eval, "client": row.client, "round": int(row.round),
             "kind": kind, "fnr": rate, "seen": kind in set(() if row.train_kinds is None else row.train_kinds)}
            for row in rows[rows["round"] == last].itertuples()
            for kind, rate in kind_rates(row.fnr_by_kind).items()
        ],
        columns=columns,
    )
    group = [*keys, "eval", "client", "kind"]
    return long.groupby(group, sort=False).agg(round=("round", "max"), fnr=("fnr", "mean"), seen=("seen", "any")).reset_index()[columns]


def _kind_grids(frame: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per evaluation set: (title, header, rows) of the FNR-per-kind table — a row per
    (line, client), a column per attack kind, unseen kinds marked."""
    kinds = kind_summary(frame)
    keys = line_keys(frame)
    grids = []
    for eval_set, rows in kinds.groupby("eval", sort=False):
        names = sorted(rows["kind"].unique())
        header = [*keys, "client", "trained on", *names]
        body = []
        for key, cell in rows.groupby([*keys, "client"], sort=False):
            rates = {r.kind: (r.fnr, r.seen) for r in cell.itertuples()}
            trained = sorted(k for k, (_, seen) in rates.items() if seen) or ["none"]
            marks = ("" if k not in rates else _cell(rates[k][0], np.nan) + ("" if rates[k][1] else f" {UNSEEN}") for k in names)
            body.append([*(str(k) for k in key), ", ".join(trained), *marks])
        grids.append((f"FNR per attack kind, {eval_set} set, last round", header, body))
    return grids


def summary_markdown(frame: pd.DataFrame, last: int = DEFAULT_LAST) -> str:
    """The summary as Markdown (``summary.md``): the final-round table, the last-rounds one,
    then the FNR per attack kind where the data names kinds."""
    parts = []
    for title, header, body in _tables(summarize(frame, last)) + _kind_grids(frame):
        lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines += ["", UNSEEN_NOTE if title.startswith("FNR per attack kind") else TUNED_NOTE]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def summary_tables(frame: pd.DataFrame, title: str = "", last: int = DEFAULT_LAST) -> list:
    """The summary as ``rich`` tables (printed by the CLI, exported to ``summary.txt``)."""
    from rich import box
    from rich.table import Table

    tables = []
    for name, header, body in _tables(summarize(frame, last)) + _kind_grids(frame):
        per_kind = name.startswith("FNR per attack kind")
        table = Table(title=f"{title}: {name}" if title else name, box=box.SIMPLE_HEAD, pad_edge=False,
                      collapse_padding=True, caption=UNSEEN_NOTE if per_kind else TUNED_NOTE)
        for column in header:
            table.add_column(column, justify="left" if column in ("run", "method", "eval", "client", "trained on") else "right")
        for cells in body:
            table.add_row(*cells)
        tables.append(table)
    return tables


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """One line of a figure: per round (index) and metric (columns) the ``mean``, and the band
    from ``low`` to ``high`` (across clients, or across seeds when there are several)."""

    mean: pd.DataFrame
    low: pd.DataFrame
    high: pd.DataFrame
    across: str  # "clients" or "seeds"


def curves(frame: pd.DataFrame, by: list[str] | None = None) -> dict[str, dict[str, Curve]]:
    """Per evaluation set, one :class:`Curve` per line (``by``: the columns naming a line;
    default :func:`line_keys`), keyed by its label."""
    by = by or line_keys(frame)
    rows = _seeded(frame if "client" in by else honest(frame)[0])
    metrics = list(METRIC_NAMES)
    out: dict[str, dict[str, Curve]] = {}
    for eval_set, in_eval in rows.groupby("eval", sort=False):
        lines = out.setdefault(eval_set, {})
        for key, line in in_eval.groupby(by if len(by) > 1 else by[0], sort=False):
            if line["seed"].nunique() > 1:
                per_member = line.groupby(["seed", "round"])[metrics].mean().groupby("round")
                across = "seeds"
            else:
                per_member = line.groupby("round")[metrics]
                across = "clients"
            lines[line_label(key)] = Curve(per_member.mean(), per_member.min(), per_member.max(), across)
    return out
