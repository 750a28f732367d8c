"""The class-region point check (``rebalancing.classRegion``), measured: honest shared points it
drops (false rejections) and what it does against label flipping.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_screening.py [--rounds 10] [--real-rounds 5] [--seeds 7]
        [--tolerances 1.0] [--jobs 2] [--out FILE.md]

False rejections: P2PK-SMOTE with no adversary, so every shared point is honest, on the
built-in data of ``benchmarks/bench_attacks.py`` (non-IID: one device per client, and
imbalanced IID; four clients, full mesh) and on the real N-BaIoT rows of
``examples/nbaiot-real-5.2.4.yaml`` (K-SMOTE only; its quantile scaling, and the paper's min-max
with ``pointTolerance: 1e6`` so that no point is out of range). The rate is the honest points the
peers dropped (``points_rejected``) over the points that reached their point checks
(``points_rejected + n_received``); with these settings no honest point is out of range, so all
of them are the class-region check's (checked: the same run with the check off drops none).

Label flipping: the ``majority-flip`` attack of ``bench_attacks`` (the last client publishes its
own benign training rows labelled as attacks, as many points as it would share: the label flip
that passes the label check) under the paper's mean and the median, with the check on and off; honest clients' global FNR / FPR at the final round and the
change against the clean run (Δ₃: the larger of |ΔFNR| and |ΔFPR| over the last three rounds).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_attacks import experiment, final_rates  # noqa: E402

from p2p_job.simulate import simulate  # noqa: E402
from p2p_job.spec import parse_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "examples" / "nbaiot-real-5.2.4.yaml"


def _with_region(doc: dict, on: bool, tolerance: float) -> dict:
    doc = copy.deepcopy(doc)
    doc["spec"].setdefault("rebalancing", {}).update({"classRegion": on, "classRegionTolerance": tolerance})
    return doc


def builtin(scenario: str, attack: str | None, rounds: int, seed: int, rules: tuple[str, ...]) -> dict:
    return experiment("full", attack, rounds, scenario, seed, rules)


def real(scaling: str, rounds: int, seed: int, attack: str | None = None, rules: tuple[str, ...] = ("mean",)) -> dict:
    doc = yaml.safe_load(REAL.read_text())
    doc["spec"].update({"rounds": rounds, "seed": seed, "methods": [{"rebalancing": "ksmote", "robustRule": r} for r in rules],
                        "adversaries": [{"client": "client-c", "attack": attack}] if attack else []})
    doc["spec"]["dataset"]["preprocessing"]["scaling"] = scaling
    if scaling == "minmax":
        doc["spec"].setdefault("rebalancing", {})["pointTolerance"] = 1e6
    return doc


def one_run(job: tuple) -> tuple:
    name, doc, on, tolerance, attacker = job
    torch.set_num_threads(1)
    start = time.perf_counter()
    frame = simulate(parse_experiment(_with_region(doc, on, tolerance)), device="cpu", base_dir=REAL.parent)
    rows = frame[frame["eval"] == frame["eval"].iloc[0]]  # one row per (method, client, round)
    honest = rows[~rows["adversarial"]]
    counts = {"dropped": int(honest["points_rejected"].sum()), "taken": int(honest["n_received"].sum())}
    rates = final_rates(frame, attacker) if attacker else None
    return name, on, tolerance, counts, rates, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--real-rounds", type=int, default=5)
    parser.add_argument("--seeds", default="7")
    parser.add_argument("--tolerances", default="1.0", help="classRegionTolerance values, comma-separated")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    tolerances = [float(t) for t in args.tolerances.split(",")]
    rules = ("mean", "median")
    jobs = []
    for seed in seeds:
        honest = {f"built-in non-IID, seed {seed}": builtin("non-iid", None, args.rounds, seed, ("mean",)),
                  f"built-in imbalanced IID, seed {seed}": builtin("imbalanced-iid", None, args.rounds, seed, ("mean",)),
                  f"N-BaIoT real, quantile, seed {seed}": real("quantile", args.real_rounds, seed),
                  f"N-BaIoT real, min-max, seed {seed}": real("minmax", args.real_rounds, seed)}
        for name, doc in honest.items():
            jobs.append((name, doc, False, 1.0, None))
            jobs += [(name, doc, True, t, None) for t in tolerances]
        for scenario in ("non-iid", "imbalanced-iid"):
            for attack in (None, "majority-flip"):
                doc = builtin(scenario, attack, args.rounds, seed, rules)
                name = f"{scenario} {attack or 'clean'}, seed {seed}"
                jobs.append((name, doc, False, 1.0, "client-3"))
                jobs += [(name, doc, True, t, "client-3") for t in tolerances]
        for scaling in ("quantile", "minmax"):
            for attack in (None, "majority-flip"):
                doc = real(scaling, args.real_rounds, seed, attack, rules)
                name = f"N-BaIoT real {scaling} {attack or 'clean'}, seed {seed}"
                jobs.append((name, doc, False, 1.0, "client-c"))
                jobs += [(name, doc, True, t, "client-c") for t in tolerances]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for name, on, tolerance, counts, rates, seconds in pool.map(one_run, jobs):
            results.append((name, on, tolerance, counts, rates))
            print(f"  {name} / classRegion {on} {tolerance}: {seconds:.0f} s", flush=True)
    out = ["#### Honest shared points dropped (no adversary)", "",
           "| run | classRegion | tolerance | dropped | reached the point checks | false-rejection rate |", "|---|---|---:|---:|---:|---:|"]
    for name, on, tolerance, counts, rates in results:
        if rates is None:
            total = counts["dropped"] + counts["taken"]
            out.append(f"| {name} | {'on' if on else 'off'} | {tolerance:g} | {counts['dropped']} | {total} | "
                       f"{counts['dropped'] / total if total else float('nan'):.4f} |")
    out += ["", "#### Label flipping with benign rows (majority-flip; built-in: 4 clients, attacker client-3; N-BaIoT: 3, client-c; full mesh)", "",
            "Honest clients' global FNR / FPR at the final round, and the points honest peers dropped:", "",
            "| run | classRegion | tolerance | " + " | ".join(rules) + " | dropped |", "|---|---|---:|" + "---:|" * (len(rules) + 1)]
    clean = {(name.replace("clean", "majority-flip"), on, t): r for name, on, t, _, r in results if r is not None and "clean" in name}
    for name, on, tolerance, counts, rates in results:
        if rates is not None:
            out.append(f"| {name} | {'on' if on else 'off'} | {tolerance:g} | " + " | ".join(
                f"{rates.loc[r, 'fnr']:.3f} / {rates.loc[r, 'fpr']:.3f}" for r in rules) + f" | {counts['dropped']} |")
    out += ["", "Change against the clean run with the same setting, Δ₃ (last 3 rounds), the larger of |ΔFNR| and |ΔFPR|:", "",
            "| run | classRegion | tolerance | " + " | ".join(rules) + " |", "|---|---|---:|" + "---:|" * len(rules)]
    for name, on, tolerance, _, rates in results:
        if rates is not None and "clean" not in name:
            ref = clean[(name, on, tolerance)]
            cells = [max(abs(rates.loc[r, "fnr3"] - ref.loc[r, "fnr3"]), abs(rates.loc[r, "fpr3"] - ref.loc[r, "fpr3"])) for r in rules]
            out.append(f"| {name} | {'on' if on else 'off'} | {tolerance:g} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    out.append(f"\nTotal {time.perf_counter() - start:.0f} s with --jobs {args.jobs}.")
    print("\n".join(out))
    if args.out:
        Path(args.out).write_text("\n".join(out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
