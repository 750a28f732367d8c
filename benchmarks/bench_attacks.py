"""Honest clients' final global FNR/FPR for every aggregation rule × attack, against the clean run.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/bench_attacks.py [--rounds 8] [--topologies full,ring] [--out FILE.md]

Setting: the built-in generator (20 features), one device per client, non-IID (§3.1 scenario 4:
each client knows only its own device's attacks), a global test set from every device.
P2PK-SMOTE (``ksmote``, sharing α = 0.1 of D_syn) with each aggregation rule of
``aggregation.robustRule`` as its own method (``methods[].robustRule``), on identical shards and
seeds. Two neighbourhoods, as the issue asks: four clients in a full mesh and five in a ring,
the last client the attacker (``spec.adversaries``, from round 1, each attack's default
strength, see ``p2p_job.adversaries``); one clean run per neighbourhood (the same client honest).

Each cell is ``FNR / FPR`` on the global test set at the final round, mean over the honest
clients (the attacker's own rows left out of the clean run too, so both sides average the same
clients); ``Δ`` is the larger of |ΔFNR| and |ΔFPR| against the clean run of the same rule. The
goal (issue 9): with the best robust rule, Δ ≤ 0.05 for the attacks on the model; attacks on
the shared points bounded. ``rejected`` sums the publications honest peers refused over the run.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from p2p_job.adversaries import DEFAULTS
from p2p_job.robust import RULES
from p2p_job.simulate import simulate
from p2p_job.spec import parse_experiment

MODEL_ATTACKS = ("scaled-delta", "sign-flip", "model-replacement", "gaussian-noise", "inflated-n-base")
POINT_ATTACKS = ("label-flip", "out-of-range", "flooding")
assert set(MODEL_ATTACKS + POINT_ATTACKS) == set(DEFAULTS)


def experiment(topology: str, attack: str | None, rounds: int) -> dict:
    n = 4 if topology == "full" else 5
    clients = [
        {"name": f"client-{i}", "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
         "train": {"benign": 400, "malicious": 30}, "validation": {"benign": 100, "malicious": 30}}
        for i in range(n)
    ]
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": f"attack-{topology}-{attack or 'clean'}"},
        "spec": {
            "seed": 7,
            "rounds": rounds,
            "dataset": {"kind": "builtin", "builtin": {"devices": n, "families": 2, "features": 20,
                                                       "benignPerDevice": 700, "maliciousPerFamily": 60}},
            "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 400, "malicious": 200}},
            "topology": {"kind": topology},
            "methods": [{"rebalancing": "ksmote", "robustRule": rule} for rule in RULES],
            "rebalancing": {"k": 10, "neighbours": 10},
            "training": {"localEpochs": 1, "batchSize": 64, "learningRate": 1e-3},
            "adversaries": [{"client": clients[-1]["name"], "attack": attack}] if attack else [],
        },
    }


def final_rates(frame: pd.DataFrame, attacker: str) -> pd.DataFrame:
    """Per method: final-round global FNR and FPR, mean over the clients other than ``attacker``,
    and the rejections honest peers counted over the run."""
    honest = frame[(frame["client"] != attacker) & (frame["eval"] == "global")]
    final = honest[honest["round"] == honest["round"].max()]
    rates = final.groupby("method", sort=False)[["fnr", "fpr"]].mean()
    rates["rejected"] = honest.groupby("method", sort=False)["payloads_rejected"].sum()
    rates.index = [m.removeprefix("ksmote-") for m in rates.index]
    return rates


def run(topology: str, rounds: int) -> tuple[str, dict]:
    attacker = f"client-{(4 if topology == 'full' else 5) - 1}"
    results: dict[str, pd.DataFrame] = {}
    seconds: dict[str, float] = {}
    for attack in (None, *MODEL_ATTACKS, *POINT_ATTACKS):
        start = time.perf_counter()
        frame = simulate(parse_experiment(experiment(topology, attack, rounds)), device="cpu")
        seconds[attack or "clean"] = time.perf_counter() - start
        if attack:
            assert set(frame.loc[frame["adversarial"], "client"]) == {attacker}
        results[attack or "clean"] = final_rates(frame, attacker)
        print(f"  {topology}/{attack or 'clean'}: {seconds[attack or 'clean']:.0f} s", flush=True)
    clean = results["clean"]
    rules = list(clean.index)
    header = ["attack", *rules]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(rules)]
    lines.append("| clean | " + " | ".join(f"{clean.loc[r, 'fnr']:.3f} / {clean.loc[r, 'fpr']:.3f}" for r in rules) + " |")
    worst: dict[str, float] = {r: 0.0 for r in rules}
    for attack in (*MODEL_ATTACKS, *POINT_ATTACKS):
        rates = results[attack]
        cells = []
        for r in rules:
            delta = max(abs(rates.loc[r, "fnr"] - clean.loc[r, "fnr"]), abs(rates.loc[r, "fpr"] - clean.loc[r, "fpr"]))
            if attack in MODEL_ATTACKS:
                worst[r] = max(worst[r], delta)
            cells.append(f"{rates.loc[r, 'fnr']:.3f} / {rates.loc[r, 'fpr']:.3f} (Δ {delta:.3f}; {int(rates.loc[r, 'rejected'])} rej.)")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines.append("| **worst Δ, model attacks** | " + " | ".join(f"**{worst[r]:.3f}**" for r in rules) + " |")
    n = 4 if topology == "full" else 5
    title = f"### {n} clients, {'full mesh' if topology == 'full' else 'ring'}, attacker {attacker}, {rounds} rounds"
    return "\n".join([title, "", *lines, ""]), {"worst": worst, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--topologies", default="full,ring")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the tables (Markdown) to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    tables = []
    for topology in args.topologies.split(","):
        table, facts = run(topology, args.rounds)
        best = min(facts["worst"], key=facts["worst"].get)
        tables.append(table + f"\nBest rule against the model attacks: **{best}** (worst Δ {facts['worst'][best]:.3f}).\n")
        print(tables[-1], flush=True)
    note = f"Cells: honest clients' global FNR / FPR at the final round (Δ: the larger change against the clean run; rej.: publications refused by honest peers over the run). Total {time.perf_counter() - start:.0f} s."
    print(note)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(tables) + "\n" + note + "\n")


if __name__ == "__main__":
    main()
