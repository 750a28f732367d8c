"""Small inputs for the data-layer tests: N-BaIoT trees in the original layout built from the
real samples in ``tests/fixtures/`` (gzipped; see its README for source and licence), tabular
files whose rows can be traced through shards, experiment documents."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

#: Real rows shipped with the tests (tests/fixtures/README.md).
FIXTURES = Path(__file__).parent / "fixtures"
NBAIOT = FIXTURES / "nbaiot"
BOTIOT = FIXTURES / "botiot" / "bot_iot_10best_sample.tsv.gz"
#: Rows of each small N-BaIoT sample (benign_traffic, scan, doorbell_udp, thermostat_udp) and of
#: each ennio_doorbell_gafgyt file (the first rows of the complete tcp and udp files).
SAMPLE_ROWS = 299
ENNIO_ROWS = 5000


def sample_csv(name: str, target: Path) -> Path:
    """The N-BaIoT sample ``name`` (e.g. ``scan``) written to ``target`` as plain CSV."""
    with gzip.open(NBAIOT / f"{name}.csv.gz", "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def nbaiot_tree(root: Path, *, big: bool = False) -> Path:
    """The samples in N-BaIoT's original layout, as plain CSV: ``ennio_doorbell`` (benign,
    gafgyt scan and udp) and ``ecobee_thermostat`` (benign, gafgyt udp). ``big`` puts the
    gzipped Ennio tcp and udp files (5000 rows each) in place of the 299-row udp sample."""
    doorbell, thermostat = root / "ennio_doorbell", root / "ecobee_thermostat"
    for device in (doorbell, thermostat):
        (device / "gafgyt_attacks").mkdir(parents=True)
        sample_csv("benign_traffic", device / "benign_traffic.csv")
    sample_csv("scan", doorbell / "gafgyt_attacks" / "scan.csv")
    sample_csv("thermostat_udp", thermostat / "gafgyt_attacks" / "udp.csv")
    if big:
        for attack in ("tcp", "udp"):
            (doorbell / "gafgyt_attacks" / f"{attack}.csv.gz").symlink_to(NBAIOT / "ennio_doorbell_gafgyt" / f"{attack}.csv.gz")
    else:
        sample_csv("doorbell_udp", doorbell / "gafgyt_attacks" / "udp.csv")
    return root


def gzip_file(path: Path) -> Path:
    """``path`` compressed to ``path.gz`` (the original removed)."""
    target = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return target


def replace_cell(path: Path, row: int, column: str, text: str) -> None:
    """Write ``text`` into data row ``row`` (0-based) of a CSV with a header."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row + 1].split(",")
    cells[header.index(column)] = text
    lines[row + 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def traceable_csv(path: Path, devices: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """A tabular CSV whose feature ``row_id`` is the row number, so rows can be traced through
    scaling: ``devices`` maps a device to its (benign, malicious) row counts. Columns:
    row_id, noise, device (group), label ("normal" or "attack")."""
    parts = []
    for device, (benign, malicious) in devices.items():
        parts.append(pd.DataFrame({"device": device, "label": ["normal"] * benign + ["attack"] * malicious}))
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "row_id", np.arange(len(frame), dtype=np.float64))
    frame.insert(1, "noise", np.random.default_rng(0).uniform(-5, 5, len(frame)))
    frame.to_csv(path, index=False)
    return frame


def experiment(scenario: dict, dataset: dict | None = None, seed: int = 0) -> dict:
    """A P2PExperiment document around a scenario (and dataset) section."""
    spec = {"seed": seed, "rounds": 1, "scenario": scenario}
    if dataset is not None:
        spec["dataset"] = dataset
    return {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": "data-test"}, "spec": spec}


def client(name: str, train: tuple[int, int], validation: tuple[int, int], benign=None, malicious=None) -> dict:
    """One ``scenario.clients`` entry: (benign, malicious) counts and optional group selectors."""
    doc = {
        "name": name,
        "train": {"benign": train[0], "malicious": train[1]},
        "validation": {"benign": validation[0], "malicious": validation[1]},
    }
    if benign:
        doc["benignGroups"] = benign
    if malicious:
        doc["maliciousGroups"] = malicious
    return doc


#: A small built-in dataset for fast tests: 3 devices × (300 benign + 2 × 60 malicious), 12 features.
SMALL_BUILTIN = {"kind": "builtin", "builtin": {"devices": 3, "families": 2, "features": 12, "benignPerDevice": 300, "maliciousPerFamily": 60}}


#: Generated BoT-IoT rows: (category, subcategory, share of the rows).
BOTIOT_KINDS = [("Normal", "Normal", 0.4), ("DoS", "UDP", 0.2), ("DoS", "TCP", 0.1), ("DDoS", "HTTP", 0.1),
                ("Reconnaissance", "Service_Scan", 0.15), ("Theft", "Keylogging", 0.05)]


def botiot_frame(rows: int, layout: str = "full", seed: int = 0, first_id: int = 1) -> pd.DataFrame:
    """``rows`` GENERATED flow records in one of UNSW BoT-IoT's layouts ("full": the 35 columns
    of ``UNSW_2018_IoT_Botnet_Dataset_*.csv``; "5%": the 46 of ``…_Full5pc_*.csv``), shaped
    after the dataset's documentation, not real traffic: kinds in :data:`BOTIOT_KINDS`, normal
    rows with long sessions, attacks short and fast; ICMP rows' ports written in hexadecimal
    (``0x0303``), the MAC, vendor and country columns empty. Numbers are as a CSV writes them;
    cells of text columns are strings."""
    from p2p_job.datasets.botiot import FIVE_PERCENT_COLUMNS, FULL_COLUMNS

    rng = np.random.default_rng(seed)
    kind = rng.choice(len(BOTIOT_KINDS), rows, p=[share for *_, share in BOTIOT_KINDS])
    normal = kind == 0
    proto = np.where(kind == 1, "udp", np.where(normal, rng.choice(["tcp", "udp", "icmp"], rows, p=[0.6, 0.3, 0.1]), rng.choice(["tcp", "icmp"], rows, p=[0.9, 0.1])))
    icmp = proto == "icmp"
    pkts = np.maximum(1, np.round(np.where(normal, rng.lognormal(3, 1.5, rows), rng.lognormal(0.7, 0.6, rows)))).astype(np.int64)
    size = np.where(normal, rng.lognormal(5.5, 0.8, rows), rng.lognormal(4.2, 0.2, rows))
    dur = np.where(normal, rng.lognormal(1, 1.5, rows), rng.lognormal(-3, 1, rows))
    spkts = np.clip(np.round(pkts * rng.beta(2, 2, rows)), 1, pkts).astype(np.int64)
    sbytes, dbytes = np.round(spkts * size).astype(np.int64), np.round((pkts - spkts) * size).astype(np.int64)
    rate = (pkts - 1) / np.maximum(dur, 1e-6)
    stime = 1526344121.0 + np.sort(rng.uniform(0, 3600, rows))
    mean = (sbytes + dbytes) / pkts
    hex_port = np.array([f"0x{p:04x}" for p in rng.choice([0x0303, 0x000D, 0x0008], rows)])
    sport = np.where(icmp, hex_port, rng.integers(1024, 65535, rows).astype(str))
    dport = np.where(icmp, hex_port, rng.choice([80, 443, 1883, 53, 22], rows).astype(str))
    state = np.where(icmp, "ECO", np.where(normal, rng.choice(["CON", "FIN", "RST"], rows), rng.choice(["INT", "REQ", "RST", "URP"], rows)))
    flgs = rng.choice(["e", "e s", "e d", "e *"], rows)
    columns = {
        "pkSeqID": np.arange(first_id, first_id + rows), "stime": stime, "flgs": flgs, "proto": proto,
        "saddr": np.array([f"192.168.100.{n}" for n in rng.integers(1, 200, rows)]), "sport": sport,
        "daddr": np.array([f"192.168.100.{n}" for n in rng.integers(1, 200, rows)]), "dport": dport,
        "pkts": pkts, "bytes": sbytes + dbytes, "state": state, "ltime": stime + dur, "seq": rng.integers(1, 262_000, rows),
        "dur": dur, "mean": mean, "stddev": np.abs(rng.normal(0, 0.2, rows)) * mean, "smac": "", "dmac": "",
        "sum": dur * rng.uniform(0.5, 1, rows), "min": mean * rng.uniform(0.5, 1, rows), "max": mean * rng.uniform(1, 1.5, rows),
        "soui": "", "doui": "", "sco": "", "dco": "", "spkts": spkts, "dpkts": pkts - spkts, "sbytes": sbytes, "dbytes": dbytes,
        "rate": rate, "srate": rate * spkts / pkts, "drate": rate * (pkts - spkts) / pkts, "attack": (~normal).astype(np.int64),
        "category": np.array([BOTIOT_KINDS[k][0] for k in kind]), "subcategory": np.array([BOTIOT_KINDS[k][1] for k in kind]),
    }  # fmt: skip
    if layout == "full":
        return pd.DataFrame({c: columns[c] for c in FULL_COLUMNS})
    codes = {f"{c}_number": pd.factorize(columns[c], sort=True)[0] + 1 for c in ("flgs", "proto", "state")}
    aggregates = {c: rng.lognormal(3, 2, rows).round(3) for c in FIVE_PERCENT_COLUMNS if c not in columns and c not in codes}
    aggregates["N_IN_Conn_P_DstIP"] = rng.integers(1, 100, rows)
    aggregates["N_IN_Conn_P_SrcIP"] = np.where(normal, rng.integers(1, 10, rows), rng.integers(20, 100, rows))
    return pd.DataFrame({c: ({**columns, **codes, **aggregates})[c] for c in FIVE_PERCENT_COLUMNS})


def write_botiot_parts(folder: Path, rows: int, parts: int, layout: str = "full", seed: int = 0) -> list[Path]:
    """``parts`` files of ``rows`` generated rows each (:func:`botiot_frame`) named as UNSW
    names them; the full layout headerless, beside its one-line ``…_Feature_Names.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(1, parts + 1):
        frame = botiot_frame(rows, layout, seed=seed + i, first_id=1 + (i - 1) * rows)
        name = f"UNSW_2018_IoT_Botnet_Dataset_{i}.csv" if layout == "full" else f"UNSW_2018_IoT_Botnet_Full5pc_{i}.csv"
        frame.to_csv(folder / name, index=False, header=layout != "full")
        written.append(folder / name)
    if layout == "full":
        (folder / "UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv").write_text(",".join(frame.columns) + "\n")
    return written
