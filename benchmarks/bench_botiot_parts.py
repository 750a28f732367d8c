"""Peak memory of loading a BoT-IoT dataset in parts: the project's loader (``kind: botiot`` and
``kind: tabular`` on the full layout's headerless files, read part by part in chunks keeping only
the columns in use) against the plain way — ``pandas.read_csv`` of every part whole, then
``pandas.concat`` — in the same run, on the same files.

The files are GENERATED in the full dataset's layout (35 columns, no header, the names in
``UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv``; ``tests/data_helpers.botiot_frame``), as
many parts of as many rows as asked (the real parts hold ~1M rows, ~200 MB each). They are
written to a temporary folder (or ``--dir``, kept) and never committed. Usage::

    .venv/bin/python benchmarks/bench_botiot_parts.py [--parts 3] [--rows 500000] [--dir DIR]

Each loader runs in its own fresh process (Linux): after the imports its peak RSS is reset
(``/proc/self/clear_refs``), so "loading" is the peak RSS while loading (``VmHWM``) minus the RSS
before (the imports, the same for all).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES_FILE = "UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv"

#: Each loader, run as ``python -c`` with the folder as argv[1]; prints rows read.
LOADERS = {
    "pandas read_csv whole parts + concat": """
import pandas as pd
from pathlib import Path
names = Path(folder, "{names}").read_text().strip().split(",")
frames = [pd.read_csv(p, header=None, names=names) for p in sorted(Path(folder).glob("UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv"))]
rows = len(pd.concat(frames, ignore_index=True))
""",
    "p2pk kind: botiot (defaults)": """
table = load_dataset(DatasetSpec.model_validate({{"kind": "botiot", "path": folder}}))
rows = len(table)
""",
    "p2pk kind: botiot, maxRowsPerKind 5000": """
table = load_dataset(DatasetSpec.model_validate({{"kind": "botiot", "path": folder, "maxRowsPerKind": 5000}}))
rows = len(table)
""",
    "p2pk kind: tabular (8 features, hexColumns)": """
table = load_dataset(DatasetSpec.model_validate({{"kind": "tabular", "path": folder + "/UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv",
    "columnNamesFile": folder + "/{names}", "labelColumn": "category", "benignValues": ["Normal"], "groupColumn": "subcategory",
    "features": ["pkts", "bytes", "dur", "rate", "sport", "dport", "proto", "state"], "hexColumns": ["sport", "dport"]}}))
rows = len(table)
""",
}

PROLOGUE = """
import json, sys, time
import numpy as np, pandas as pd
from p2p_job.datasets import load_dataset
from p2p_job.spec import DatasetSpec
def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
folder = sys.argv[1]
open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the RSS now: the imports' peak is left out
base = status("VmRSS")
start = time.perf_counter()
"""
EPILOGUE = """
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start, "base_kib": base, "peak_kib": status("VmHWM")}))
"""


def generate(folder: Path, parts: int, rows: int) -> float:
    """Write the parts (if not there yet); their size in MiB."""
    sys.path.insert(0, str(ROOT / "tests"))
    from data_helpers import write_botiot_parts

    if not (folder / NAMES_FILE).exists():
        write_botiot_parts(folder, rows=rows, parts=parts)
    return sum(p.stat().st_size for p in folder.glob("UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv")) / 2**20


def measure(folder: Path) -> dict[str, dict]:
    results = {}
    for name, body in LOADERS.items():
        code = PROLOGUE + body.format(names=NAMES_FILE) + EPILOGUE
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": f"{ROOT}:{ROOT / 'operator'}", "PATH": "/usr/bin:/bin"})
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per part")
    parser.add_argument("--dir", type=Path, help="folder for the generated parts (kept; reused when there)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        started = time.perf_counter()
        size = generate(folder, args.parts, args.rows)
        print(f"{args.parts} parts x {args.rows:,} rows, {size:,.0f} MiB of CSV (generated in {time.perf_counter() - started:.0f} s)")
        results = measure(folder)
    plain = results[next(iter(LOADERS))]
    plain_load = plain["peak_kib"] - plain["base_kib"]
    print(f"| loader | rows | seconds | peak RSS MiB | loading MiB (peak - after imports) | loading / pandas whole |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        load = r["peak_kib"] - r["base_kib"]
        print(f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['peak_kib'] / 1024:,.0f} | {load / 1024:,.0f} | {load / max(plain_load, 1):.2f} |")


if __name__ == "__main__":
    main()
