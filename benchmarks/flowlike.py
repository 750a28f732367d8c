"""A GENERATED flow-record table shaped like BoT-IoT's (Normal, DoS, Reconnaissance), for checking
what the README's tabular-loader instructions give on flow data. Not real traffic.

Run by hand::

    .venv/bin/python benchmarks/flowlike.py --out /tmp/flows/flows.csv [--seed 0]

It writes one CSV with BoT-IoT's flow columns (``proto``, ``flgs``, ``state`` as text;
``pkts``, ``bytes``, ``dur``, ``mean``, ``stddev``, ``sum``, ``min``, ``max``, ``spkts``,
``dpkts``, ``sbytes``, ``dbytes``, ``rate``, ``srate``, ``drate``, ``sport``, ``dport``
as numbers; ``category`` Normal / DoS / Reconnaissance and ``subcategory``), and prints the spec
fragment it was meant for. What is in it, and why it is only a stand-in:

- Normal: IoT sessions (MQTT/HTTP over TCP with log-normal packet counts, sizes and durations
  spanning four to six decades), DNS/NTP over UDP, ARP and ICMP; a few failed TCP
  connections (one or two packets, RST) that look like a scan.
- DoS: TCP SYN and UDP floods from the BoT-IoT testbed's tools: many small packets at high rate,
  REQ/INT states; some low-rate ones that overlap normal UDP.
- Reconnaissance: service scans and OS fingerprinting: one or two small packets to a random
  port, RST/REQ/URP states; overlapping the failed normal connections.

The classes overlap on purpose (a scan packet and a refused connection are the same record), so
the task is neither trivial nor hopeless; the mix, the overlaps and the tails are chosen by hand
after BoT-IoT's published feature descriptions, not fitted to the real dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _flows(rng: np.random.Generator, n: int, proto, flgs, state, pkts, size, dur, sport, dport) -> pd.DataFrame:
    """n flow records from per-record draws: packets, bytes per packet, duration (seconds)."""
    pkts = np.maximum(1, np.round(pkts)).astype(np.int64)
    share = rng.beta(2, 2, n)  # source's share of the packets
    spkts = np.clip(np.round(pkts * share), 1, pkts).astype(np.int64)
    dpkts = pkts - spkts
    per_pkt = np.maximum(42, size)
    jitter = np.exp(rng.normal(0, 0.3, n))
    sbytes = np.round(spkts * per_pkt * jitter).astype(np.int64)
    dbytes = np.round(dpkts * per_pkt / jitter).astype(np.int64)
    total = sbytes + dbytes
    dur = np.maximum(0.0, dur)
    mean_pkt = total / pkts
    rate = np.where(dur > 0, (pkts - 1) / np.maximum(dur, 1e-6), 0.0)
    return pd.DataFrame(
        {
            "proto": proto,
            "flgs": flgs,
            "state": state,
            "pkts": pkts,
            "bytes": total,
            "dur": dur,
            "mean": mean_pkt,
            "stddev": np.abs(rng.normal(0, 0.25, n)) * mean_pkt * (pkts > 1),
            "sum": dur * np.maximum(1, pkts - 1) * rng.uniform(0.2, 1.0, n),
            "min": mean_pkt * rng.uniform(0.3, 1.0, n),
            "max": mean_pkt * rng.uniform(1.0, 3.0, n),
            "spkts": spkts,
            "dpkts": dpkts,
            "sbytes": sbytes,
            "dbytes": dbytes,
            "rate": rate,
            "srate": np.where(dur > 0, np.maximum(0, spkts - 1) / np.maximum(dur, 1e-6), 0.0),
            "drate": np.where(dur > 0, np.maximum(0, dpkts - 1) / np.maximum(dur, 1e-6), 0.0),
            "sport": sport,
            "dport": dport,
        }
    )


def _choice(rng, n, values, p=None):
    return rng.choice(np.array(values, dtype=object), size=n, p=p)


def normal(rng: np.random.Generator, n: int) -> pd.DataFrame:
    kinds = rng.choice(5, size=n, p=[0.50, 0.22, 0.12, 0.08, 0.08])
    parts = []
    for kind, count in zip(*np.unique(kinds, return_counts=True)):
        m = int(count)
        eph = rng.integers(1024, 65536, m)
        if kind == 0:  # TCP sessions (MQTT, HTTP): heavy-tailed packets, sizes, durations
            parts.append(_flows(rng, m, "tcp", _choice(rng, m, ["e", "e d"], [0.8, 0.2]), _choice(rng, m, ["CON", "FIN", "RST"], [0.5, 0.45, 0.05]),
                                rng.lognormal(np.log(20), 1.4, m), rng.lognormal(np.log(300), 1.0, m), rng.lognormal(np.log(8), 1.8, m),
                                eph, _choice(rng, m, [1883, 80, 443, 8080], [0.5, 0.2, 0.25, 0.05])))
        elif kind == 1:  # DNS / NTP
            parts.append(_flows(rng, m, "udp", "e", _choice(rng, m, ["CON", "INT"], [0.85, 0.15]), rng.choice([1, 2, 2, 2, 4], m),
                                rng.lognormal(np.log(110), 0.5, m), rng.lognormal(np.log(0.05), 1.2, m), eph, _choice(rng, m, [53, 123, 5353], [0.7, 0.2, 0.1])))
        elif kind == 2:  # ARP
            parts.append(_flows(rng, m, "arp", "e", _choice(rng, m, ["CON", "REQ"], [0.7, 0.3]), rng.integers(1, 5, m), np.full(m, 60.0),
                                rng.exponential(2.0, m), np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)))
        elif kind == 3:  # ICMP echo
            parts.append(_flows(rng, m, _choice(rng, m, ["icmp", "ipv6-icmp"], [0.7, 0.3]), "e", _choice(rng, m, ["ECO", "URP"], [0.9, 0.1]),
                                rng.integers(1, 11, m), rng.lognormal(np.log(98), 0.2, m), rng.exponential(5.0, m), np.zeros(m, dtype=np.int64),
                                np.zeros(m, dtype=np.int64)))
        else:  # failed / short TCP connections: look like scans
            parts.append(_flows(rng, m, "tcp", _choice(rng, m, ["e", "e s"], [0.5, 0.5]), _choice(rng, m, ["RST", "REQ"], [0.7, 0.3]), rng.integers(1, 4, m),
                                rng.lognormal(np.log(62), 0.2, m), rng.exponential(0.3, m), eph, _choice(rng, m, [1883, 80, 443, 22, 8883])))
    return pd.concat(parts, ignore_index=True).assign(category="Normal", subcategory="Normal")


def dos(rng: np.random.Generator, n: int) -> pd.DataFrame:
    tcp = rng.random(n) < 0.55
    m_t, m_u = int(tcp.sum()), int((~tcp).sum())
    slow_t, slow_u = rng.random(m_t) < 0.15, rng.random(m_u) < 0.15  # low-rate floods, close to normal traffic
    t = _flows(rng, m_t, "tcp", _choice(rng, m_t, ["e s", "e"], [0.85, 0.15]), _choice(rng, m_t, ["REQ", "RST", "INT"], [0.6, 0.3, 0.1]),
               np.where(slow_t, rng.integers(2, 12, m_t), rng.lognormal(np.log(60), 0.9, m_t)), rng.lognormal(np.log(60), 0.08, m_t),
               np.where(slow_t, rng.lognormal(np.log(5), 1.0, m_t), rng.lognormal(np.log(2), 1.2, m_t)), rng.integers(1024, 65536, m_t),
               _choice(rng, m_t, [80, 1883, 443], [0.6, 0.2, 0.2])).assign(subcategory="TCP")
    u = _flows(rng, m_u, "udp", "e", _choice(rng, m_u, ["INT", "CON"], [0.8, 0.2]),
               np.where(slow_u, rng.integers(2, 8, m_u), rng.lognormal(np.log(80), 0.9, m_u)), rng.lognormal(np.log(120), 0.6, m_u),
               np.where(slow_u, rng.lognormal(np.log(1), 1.0, m_u), rng.lognormal(np.log(3), 1.0, m_u)), rng.integers(1024, 65536, m_u),
               _choice(rng, m_u, [53, 123, 80, 5353])).assign(subcategory="UDP")
    return pd.concat([t, u], ignore_index=True).assign(category="DoS")


def recon(rng: np.random.Generator, n: int) -> pd.DataFrame:
    os_fp = rng.random(n) < 0.3
    m_s, m_o = int((~os_fp).sum()), int(os_fp.sum())
    s = _flows(rng, m_s, "tcp", _choice(rng, m_s, ["e s", "e", "e r"], [0.6, 0.3, 0.1]), _choice(rng, m_s, ["RST", "REQ", "URP"], [0.6, 0.3, 0.1]),
               rng.integers(1, 3, m_s), rng.lognormal(np.log(60), 0.1, m_s), rng.exponential(0.01, m_s), rng.integers(1024, 65536, m_s),
               rng.integers(1, 65536, m_s)).assign(subcategory="Service_Scan")
    o = _flows(rng, m_o, _choice(rng, m_o, ["tcp", "udp", "icmp"], [0.6, 0.2, 0.2]), _choice(rng, m_o, ["e s", "e", "e r"], [0.4, 0.4, 0.2]),
               _choice(rng, m_o, ["RST", "REQ", "URP", "ECO"], [0.4, 0.3, 0.2, 0.1]), rng.integers(1, 7, m_o), rng.lognormal(np.log(70), 0.3, m_o),
               rng.exponential(0.5, m_o), rng.integers(1024, 65536, m_o), rng.integers(1, 1025, m_o)).assign(subcategory="OS_Fingerprint")
    return pd.concat([s, o], ignore_index=True).assign(category="Reconnaissance")


def generate(n_normal: int, n_dos: int, n_recon: int, seed: int) -> pd.DataFrame:
    """The table, rows shuffled."""
    rng = np.random.default_rng(seed)
    frame = pd.concat([normal(rng, n_normal), dos(rng, n_dos), recon(rng, n_recon)], ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--normal", type=int, default=6000)
    parser.add_argument("--dos", type=int, default=600)
    parser.add_argument("--recon", type=int, default=600)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame = generate(args.normal, args.dos, args.recon, args.seed)
    frame.to_csv(args.out, index=False)
    print(f"{args.out}: {len(frame)} rows; {frame['category'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
