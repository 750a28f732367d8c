"""All methods over many seeds of one ``p2pk simulate --seeds`` folder: the final round's global
metrics (mean over clients) as mean ± std and a 95% interval, and a PAIRED comparison of
P2PK-SMOTE against every other method on FNR + FPR (same seed = same rows, same test set).

Run by hand (not by pytest), after e.g.
``p2pk simulate examples/nbaiot-real-5.2.4.yaml --seeds 1-20 --out runs/nbaiot-real-20``::

    .venv/bin/python benchmarks/compare_seeds.py runs/nbaiot-real-20 [--method ksmote] [--eval global]

Several folders (the same spec and seeds, one setting changed, e.g. ``--set
rebalancing.classRegion=false``) are compared the same way, paired by seed: each method is named
``<folder>/<method>``, and ``--method`` names the one compared against the others::

    .venv/bin/python benchmarks/compare_seeds.py runs/flows-on runs/flows-off --method flows-on/ksmote

Printed: a Markdown table per method (FNR, FPR, FNR + FPR, AUC, FNR*, FPR* at each client's
validation threshold; mean ± std over seeds, a t-interval of the mean and the worst seed), then per other method
the mean paired difference of FNR + FPR (P2PK-SMOTE minus it; negative: P2PK-SMOTE better), its
95% t-interval, the seeds where P2PK-SMOTE is better / equal / worse and the two-sided exact sign
test's p-value (ties dropped), and which test rows are missed: per attack kind, the mean over seeds
and clients of the rows a client misses at the paper's threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = {"fnr": "FNR", "fpr": "FPR", "sum": "FNR + FPR", "auc": "AUC", "tuned_fnr": "FNR*", "tuned_fpr": "FPR*"}


def final_rows(root: Path, eval_set: str, prefix: str = "") -> pd.DataFrame:
    """Per (seed, method): the last round's metrics on ``eval_set``, mean over clients; method
    names start with ``prefix``."""
    parts = []
    for folder in sorted(root.glob("seed-*"), key=lambda p: int(p.name.split("-")[1])):
        results = folder / "results.parquet"
        if not results.exists():
            continue
        frame = pd.read_parquet(results)
        frame = frame[(frame["eval"] == eval_set) & (frame["round"] == frame["round"].max())]
        mean = frame.groupby("method")[["fnr", "fpr", "auc", "tuned_fnr", "tuned_fpr"]].mean()
        mean["seed"] = int(folder.name.split("-")[1])
        mean.index = prefix + mean.index
        parts.append(mean.reset_index())
    out = pd.concat(parts, ignore_index=True)
    out["sum"] = out["fnr"] + out["fpr"]
    return out


def interval(x: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean (a point when every value is the same)."""
    if len(x) < 2 or np.std(x) == 0:
        return float(np.mean(x)), float(np.mean(x))
    half = stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x))
    return float(np.mean(x) - half), float(np.mean(x) + half)


def missed_by_kind(root: Path, eval_set: str, threshold: float = 0.5, prefix: str = "") -> pd.DataFrame:
    """Per method and attack kind: test rows a client misses at ``threshold`` in the last kept
    round, mean over seeds and clients, of how many rows of that kind."""
    rows = []
    for folder in sorted(root.glob("seed-*")):
        if not (folder / "results.parquet").exists():  # a seed still running
            continue
        for scores in folder.glob("scores/*/*/*.parquet"):
            method, client = scores.parts[-3], scores.parts[-2]
            if scores != max(scores.parent.glob("*.parquet")):
                continue
            frame = pd.read_parquet(scores)
            frame = frame[(frame["eval"] == eval_set) & (frame["label"] == 1)]
            for kind, part in frame.groupby("kind"):
                rows.append({"seed": folder.name, "method": prefix + method, "client": client, "kind": kind,
                             "missed": int((part["score"] < threshold).sum()), "of": len(part)})
    frame = pd.DataFrame(rows)
    return frame.groupby(["method", "kind"]).agg(missed=("missed", "mean"), of=("of", "first")).unstack("kind")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", type=Path, nargs="+", help="p2pk simulate --seeds output folder(s)")
    parser.add_argument("--method", default="ksmote", help="the method compared against every other one (<folder>/<method> with several folders)")
    parser.add_argument("--eval", default="global")
    args = parser.parse_args()
    prefixes = [f"{root.name}/" if len(args.roots) > 1 else "" for root in args.roots]
    rows = pd.concat([final_rows(root, args.eval, prefix) for root, prefix in zip(args.roots, prefixes)], ignore_index=True)
    seeds = sorted(rows["seed"].unique())
    methods = list(dict.fromkeys(rows["method"]))
    print(f"{', '.join(map(str, args.roots))}: {len(seeds)} seeds ({seeds[0]}–{seeds[-1]}), {args.eval} set, final round, mean over clients\n")
    print("| method | " + " | ".join(COLUMNS.values()) + " | 95% interval of FNR + FPR | worst seed's FNR + FPR |")
    print("|---|" + "---|" * (len(COLUMNS) + 2))
    for method in methods:
        part = rows[rows["method"] == method].sort_values("seed")
        cells = [f"{part[c].mean():.4f} ± {part[c].std(ddof=1):.4f}" for c in COLUMNS]
        low, high = interval(part["sum"].to_numpy())
        print(f"| {method} | " + " | ".join(cells) + f" | {low:.4f} – {high:.4f} | {part['sum'].max():.4f} |")
    wide = rows.pivot(index="seed", columns="method", values="sum")
    print(f"\nPaired by seed, FNR + FPR of {args.method} minus the other method (negative: {args.method} better):\n")
    print("| other | mean difference | 95% interval | better / equal / worse | sign test p |")
    print("|---|---|---|---|---|")
    for other in methods:
        if other == args.method:
            continue
        d = (wide[args.method] - wide[other]).to_numpy()
        low, high = interval(d)
        better, worse = int(np.sum(d < -1e-12)), int(np.sum(d > 1e-12))
        p = stats.binomtest(better, better + worse).pvalue if better + worse else 1.0
        print(f"| {other} | {d.mean():+.4f} | {low:+.4f} – {high:+.4f} | {better} / {len(d) - better - worse} / {worse} | {p:.3f} |")
    print(f"\nAttack rows missed at the paper's threshold, per kind (mean over seeds and clients; the kinds' row counts in brackets):\n")
    missed = pd.concat([missed_by_kind(root, args.eval, prefix=prefix) for root, prefix in zip(args.roots, prefixes)])
    kinds = list(missed["missed"].columns)
    print("| method | " + " | ".join(f"{k} ({int(missed['of'][k].iloc[0])})" for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for method in methods:
        print(f"| {method} | " + " | ".join(f"{missed['missed'][k][method]:.2f}" for k in kinds) + " |")


if __name__ == "__main__":
    main()
