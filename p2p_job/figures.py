"""Figures in the style of the paper's Figures 4–9: one panel per metric of §5.1.2 against the
round, one line per method (or run), a shaded band for the spread across clients (or seeds).

Every metric is a rate in [0, 1], so the y axes span 0..1 unless ``autoscale`` is asked for
(auto-scaling makes one false positive in 400 look like a spike); round ticks are integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from p2p_job.metrics import METRIC_NAMES
from p2p_job.summary import LABELS, Curve, curves, line_keys, line_label

#: Margins of the 2 × 4 metric panels, fixed: the layout never changes, and computing it
#: (``tight_layout``) cost more than half of drawing a figure of 300 rounds.
PANEL_MARGINS = {"left": 0.04, "right": 0.99, "top": 0.9, "bottom": 0.07, "wspace": 0.2, "hspace": 0.25}


def metric_panels(lines: dict[str, Curve], title: str, path: Path, *, autoscale: bool = False) -> Path:
    """One panel per metric, metric against round, one line per entry of ``lines`` with its
    band (where it has width); written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 4, figsize=(20, 8), sharex=True)
    banded = set()
    for ax, metric in zip(axes.flat, METRIC_NAMES):
        for label, curve in lines.items():
            (drawn,) = ax.plot(curve.mean.index, curve.mean[metric], label=label, marker="." if len(curve.mean) < 30 else None)
            low, high = curve.low[metric].to_numpy(), curve.high[metric].to_numpy()
            if np.nan_to_num(high - low).any():
                ax.fill_between(curve.mean.index, low, high, color=drawn.get_color(), alpha=0.2, linewidth=0)
                banded.add(curve.across)
        ax.set_title(LABELS[metric])
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not autoscale:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    band = f" (band: lowest to highest of the {' / '.join(sorted(banded))})" if banded else ""
    fig.suptitle(title + band)
    fig.subplots_adjust(**PANEL_MARGINS)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder made) and free it."""
    import matplotlib.pyplot as plt  # already imported by the caller that drew ``fig``

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_figures(frame: pd.DataFrame, out_dir: Path, *, autoscale: bool = False,
                 say: Callable[[str], None] = lambda message: None) -> list[Path]:
    """A run's figures under ``out_dir``: per evaluation set, ``methods-<eval>.png`` (a line per
    method or run: mean over clients, band across clients or seeds) and, for a single run,
    ``<method>-<eval>.png`` (a line per client). Other PNGs in ``out_dir`` are removed, so the
    folder never keeps figures of methods that are not in ``frame``. ``say`` is told of each
    figure as it is drawn ("figure i/n: name")."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):
        stale.unlink()
    jobs = [(lines, f"{eval_set} evaluation: mean over clients", f"methods-{eval_set}.png")
            for eval_set, lines in curves(frame).items()]
    if not {"run", "seed"} & set(frame.columns):
        groups = frame.groupby(["method", "eval"], sort=False)
        jobs += [(rows, f"{method}, {eval_set} evaluation: per client", f"{method}-{eval_set}.png")
                 for (method, eval_set), rows in groups]
    written = []
    for i, (lines, title, name) in enumerate(jobs, 1):
        say(f"figure {i}/{len(jobs)}: {name}")
        if isinstance(lines, pd.DataFrame):  # one method's rows: a line per client
            lines = curves(lines, by=["client"])[lines["eval"].iloc[0]]
        written.append(metric_panels(lines, title, out_dir / name, autoscale=autoscale))
    return written


def plot_kind_figures(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """For a single run whose rows carry per-kind rates: ``kinds-<eval>.png`` per evaluation
    set, a panel per (method, attack kind), FNR against round, a line per client — solid where
    the client had the kind in its own training rows, dashed where it never saw it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from p2p_job.results import kind_rates

    if {"run", "seed"} & set(frame.columns) or "fnr_by_kind" not in frame.columns:
        return []
    written = []
    for eval_set, rows in frame.groupby("eval", sort=False):
        rates = pd.DataFrame(
            [(r.method, r.client, r.round, k, v, k in set(() if r.train_kinds is None else r.train_kinds))
             for r in rows.itertuples() for k, v in kind_rates(r.fnr_by_kind).items()],
            columns=["method", "client", "round", "kind", "fnr", "seen"],
        )
        if rates.empty:
            continue
        methods, kinds = list(dict.fromkeys(rates["method"])), sorted(rates["kind"].unique())
        fig, axes = plt.subplots(len(methods), len(kinds), figsize=(4 * len(kinds), 3 * len(methods)),
                                 sharex=True, sharey=True, squeeze=False)
        for i, method in enumerate(methods):
            for j, kind in enumerate(kinds):
                ax = axes[i][j]
                panel = rates[(rates["method"] == method) & (rates["kind"] == kind)]
                for (client, seen), curve in panel.groupby(["client", "seen"], sort=False):
                    ax.plot(curve["round"], curve["fnr"], linestyle="-" if seen else "--",
                            label=client + ("" if seen else " (unseen)"))
                ax.set_title(f"{method}: {kind}", fontsize=9)
                ax.set_ylim(-0.02, 1.02)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=7)
        fig.supxlabel("round")
        fig.supylabel("FNR")
        fig.suptitle(f"{eval_set} evaluation: FNR per attack kind (dashed: kind absent from the client's training data)")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"kinds-{eval_set}.png"))
    return written


def roc_curves(scores: pd.DataFrame) -> dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray, float, int]]]]:
    """ROC curves from kept scores (``p2p_job.scores.read_scores`` rows, optionally with a
    ``run`` column), at each line's last kept round: ``{eval: {client: {line label: (fpr, tpr,
    auc, round)}}}``. Sets without both classes have no curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    keys = line_keys(scores)
    out: dict = {}
    for (eval_set, client, *key), rows in scores.groupby(["eval", "client", *keys], sort=False):
        last = rows[rows["round"] == rows["round"].max()]
        labels = last["label"].to_numpy()
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, last["score"].to_numpy())
        auc = float(roc_auc_score(labels, last["score"].to_numpy()))
        label = line_label(tuple(key) if len(key) > 1 else key[0])
        out.setdefault(eval_set, {}).setdefault(client, {})[label] = (fpr, tpr, auc, int(last["round"].iloc[0]))
    return out


def plot_roc(scores: pd.DataFrame, out_dir: Path) -> list[Path]:
    """``roc-<eval>.png`` per evaluation set, drawn from kept scores after the run (no
    retraining): a panel per client, a ROC curve per method (or run/method) at its last kept
    round, its AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for eval_set, clients in roc_curves(scores).items():
        fig, axes = plt.subplots(1, len(clients), figsize=(5 * len(clients), 5), squeeze=False)
        for ax, (client, lines) in zip(axes[0], clients.items()):
            for label, (fpr, tpr, auc, r) in lines.items():
                ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.4f}, round {r})")
            ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
            ax.set_title(client)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_xlim(-0.01, 1.01)
            ax.set_ylim(-0.01, 1.01)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{eval_set} evaluation: ROC curves from the kept scores")
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"roc-{eval_set}.png"))
    return written
