"""N-BaIoT (Meidan et al., 2018; §5.1.1) in its original layout.

```
ROOT/<device>/benign_traffic.csv
ROOT/<device>/gafgyt_attacks/{combo,junk,scan,tcp,udp}.csv
ROOT/<device>/mirai_attacks/{ack,scan,syn,udp,udpplain}.csv     (absent for two devices)
```
Each file has a header row of 115 statistical features and no label column: the label is the
file (benign_traffic is benign, every attack file malicious). Files may be gzipped (``.csv.gz``).
Groups: ``device`` (the folder name) and ``family`` ("benign", or "<botnet>/<attack>" such as
"gafgyt/udp" and "mirai/syn").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2p_job.datasets.reading import read_chunks
from p2p_job.datasets.sampling import Rows
from p2p_job.datasets.table import BENIGN_FAMILY, DataError, Table, check_families, is_within

BENIGN_FILE = "benign_traffic"
#: Attack folders, keyed by botnet name.
ATTACK_FOLDERS = {"gafgyt": "gafgyt_attacks", "mirai": "mirai_attacks"}
SUFFIXES = (".csv", ".csv.gz")
#: The files hold only features: the label and the family come from where a file lies.
FILE_NOTE = ("(file name)", "label", "no label column: benign_traffic.csv is benign; <botnet>_attacks/<attack>.csv is malicious, family '<botnet>/<attack>'; the folder is the device")


def load(root: Path, devices: list[str] | None, families: list[str] | None, drop_bad_rows: bool, max_rows_per_kind: int | None = None) -> Table:
    """Rows of the chosen devices (default: every device folder) and attack families
    (default: all; e.g. ``["mirai"]``, ``["gafgyt/udp"]``), plus every benign row of those devices;
    each file read in chunks. ``max_rows_per_kind`` (``dataset.maxRowsPerKind``): at most that many
    rows of each (device, family), a uniform sample (:mod:`p2p_job.datasets.sampling`)."""
    if not root.is_dir():
        raise DataError(f"{root}: N-BaIoT root folder not found")
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and _data_file(p, BENIGN_FILE))
    if not available:
        raise DataError(f"{root}: no device folder holding {BENIGN_FILE}.csv (expected ROOT/<device>/{BENIGN_FILE}.csv)")
    chosen = devices or available
    unknown = [d for d in chosen if d not in available]
    if unknown:
        raise DataError(f"{root}: no device folder(s) {unknown} with {BENIGN_FILE}.csv; devices are {available}")

    files = [(device, BENIGN_FAMILY, _data_file(root / device, BENIGN_FILE)) for device in chosen]
    attacks = [(device, family, path) for device in chosen for family, path in _attack_files(root / device)]
    check_families({family for _, family, _ in attacks}, families or [], f"{root} (devices {chosen})")
    files += [a for a in attacks if not families or any(is_within(a[1], w) for w in families)]

    rows, feature_names = Rows(max_rows_per_kind), None
    for device, family, path in files:
        for sheet in read_chunks(path, drop_bad_rows=drop_bad_rows):
            names = [str(c) for c in sheet.frame.columns]
            if feature_names is None:
                feature_names = names
            elif names != feature_names:
                diff = next((i for i, (a, b) in enumerate(zip(names, feature_names)) if a != b), min(len(names), len(feature_names)))
                raise DataError(f"{path}: columns differ from {files[0][2]} at column {diff + 1} ({len(names)} vs {len(feature_names)} columns)")
            features, _, report = sheet.features(feature_names, drop_bad_rows)
            n = len(features)
            rows.add(Table(features, np.full(n, family != BENIGN_FAMILY, dtype=np.int8), {"device": np.full(n, device), "family": np.full(n, family)},
                           feature_names, report.with_columns(FILE_NOTE)))
    return rows.table()


def _data_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.csv`` or ``folder/stem.csv.gz``, whichever exists."""
    return next((folder / (stem + s) for s in SUFFIXES if (folder / (stem + s)).is_file()), None)


def _attack_files(device_dir: Path) -> list[tuple[str, Path]]:
    """(family, file) of every attack file of one device, e.g. ("gafgyt/udp", …/udp.csv.gz)."""
    found = []
    for botnet, folder in ATTACK_FOLDERS.items():
        for path in sorted((device_dir / folder).glob("*.csv*")):
            stem = path.name.removesuffix(".gz").removesuffix(".csv")
            if path.name.endswith(SUFFIXES):
                found.append((f"{botnet}/{stem}", path))
    return found
