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
