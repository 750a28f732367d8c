"""K-SMOTE against imbalanced-learn's SMOTE, generating the same number of points.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_ksmote.py [--repeats 5]

Data: real N-BaIoT rows of the Ennio doorbell, by default the repository's test fixtures
(tests/fixtures/nbaiot/ennio_doorbell_gafgyt: the first 5000 rows of each file), or ``--data DIR``
holding the complete ``tcp.csv.gz`` and ``udp.csv.gz`` of the N-BaIoT download. Minority rows are
drawn from tcp.csv.gz (gafgyt tcp flood) without replacement; majority rows from udp.csv.gz
(gafgyt udp flood), with replacement when the file has fewer rows than asked for (the samplers
only interpolate between minority rows: majority rows are counted and copied, never searched);
then both are min-max scaled together as a client scales its training rows.
Both samplers run ``fit_resample`` on the same (X, y) with ratio r = 1, so each generates
N_s = |D_maj| − |D_min| points (K-SMOTE: k = 15 bases, N = 20 neighbours; SMOTE:
k_neighbors = min(20, |D_min| − 1)). Throughput is N_s divided by the best wall time of
``--repeats`` runs, with ``--threads`` BLAS/OpenMP threads (default 1, for stable timings on a
shared machine); peak memory is tracemalloc's peak over one more run of each.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

from p2p_job.ksmote import KSMOTE

DATA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nbaiot" / "ennio_doorbell_gafgyt"
SIZES = ((23, 11821), (500, 11821), (5000, 50000))  # (|D_min|, |D_maj|); d = 115 features


def best_time(resample, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        resample()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(resample) -> int:
    tracemalloc.start()
    resample()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per sampler and size (best is kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads for both samplers (default 1: stable timings on a shared machine)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder with tcp.csv.gz and udp.csv.gz (default: the test fixtures, 5000 rows each)")
    args = parser.parse_args()
    threadpool_limits(args.threads)

    minority_rows = pd.read_csv(args.data / "tcp.csv.gz", dtype=np.float32).to_numpy()
    majority_rows = pd.read_csv(args.data / "udp.csv.gz", dtype=np.float32).to_numpy()
    print(f"data: minority rows from {args.data / 'tcp.csv.gz'} ({len(minority_rows)} rows), "
          f"majority rows from {args.data / 'udp.csv.gz'} ({len(majority_rows)} rows, drawn with replacement "
          f"where a size needs more), "
          f"{minority_rows.shape[1]} features; best of {args.repeats} runs, {args.threads} thread(s)\n")

    header = (f"{'n_min':>6} {'n_maj':>6} {'d':>4} {'N_s':>6} | {'SMOTE pts/s':>12} {'K-SMOTE pts/s':>14} "
              f"{'speed-up':>9} | {'SMOTE peak MiB':>14} {'K-SMOTE peak MiB':>16} {'mem ratio':>9}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for n_min, n_maj in SIZES:
        X = np.concatenate([
            minority_rows[rng.choice(len(minority_rows), n_min, replace=False)],
            majority_rows[rng.choice(len(majority_rows), n_maj, replace=n_maj > len(majority_rows))],
        ])
        X = MinMaxScaler().fit_transform(X).astype(np.float32)
        y = np.concatenate([np.ones(n_min, dtype=np.int8), np.zeros(n_maj, dtype=np.int8)])
        n_new, target = n_maj - n_min, {1: n_maj}
        smote = SMOTE(sampling_strategy=target, k_neighbors=min(20, n_min - 1), random_state=0)
        ksmote = KSMOTE(sampling_strategy=target, k=15, n_neighbors=20, random_state=0)
        assert len(smote.fit_resample(X, y)[1]) == len(ksmote.fit_resample(X, y)[1]) == n_min + n_maj + n_new
        rates = [n_new / best_time(lambda s=s: s.fit_resample(X, y), args.repeats) for s in (smote, ksmote)]
        peaks = [peak_bytes(lambda s=s: s.fit_resample(X, y)) / 2**20 for s in (smote, ksmote)]
        print(f"{n_min:>6} {n_maj:>6} {X.shape[1]:>4} {n_new:>6} | {rates[0]:>12,.0f} {rates[1]:>14,.0f} "
              f"{rates[1] / rates[0]:>8.1f}x | {peaks[0]:>14.1f} {peaks[1]:>16.1f} {peaks[0] / peaks[1]:>8.2f}x")


if __name__ == "__main__":
    main()
