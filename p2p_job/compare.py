"""``p2pk compare``: finished (or running) result folders side by side.

A result folder is what ``p2pk simulate``/``p2pk run`` write: ``results.parquet`` (one run), or
``seed-<s>/results.parquet`` in each seed's subfolder (a ``--seeds`` run, whose lines are the mean
over seeds with a band across them). Several folders give one line per (folder, method); one
folder is simply re-plotted (a line per method, and a figure per method with a line per client).
The table and figures are written by ``p2p_job.results.write_results``, as every run's are; ROC
curves come from the scores each folder kept (``p2p_job.scores``), drawn without retraining.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from p2p_job.datasets import DataError
from p2p_job.results import read_parquet, write_results
from p2p_job.scores import read_scores

#: Subfolder of one seed of a ``--seeds`` run: ``seed-<s>``.
SEED_FOLDER = "seed-{seed}"


def seed_folders(folder: Path) -> dict[int, Path]:
    """The ``seed-<s>`` subfolders of a ``--seeds`` run that hold results, by seed."""
    found = {}
    for sub in folder.glob("seed-*"):
        suffix = sub.name.removeprefix("seed-")
        if suffix.isdigit() and (sub / "results.parquet").is_file():
            found[int(suffix)] = sub
    return dict(sorted(found.items()))


def load_folder(folder: Path) -> pd.DataFrame:
    """A result folder's rows; a ``--seeds`` folder's with a ``seed`` column. A folder without
    results is a :class:`DataError` naming it."""
    if (folder / "results.parquet").is_file():
        return read_parquet(folder / "results.parquet")
    seeds = seed_folders(folder)
    if not seeds:
        raise DataError(f"{folder}: no results.parquet (nor seed-<s>/results.parquet): not a p2pk result folder")
    return pd.concat([read_parquet(path / "results.parquet").assign(seed=seed) for seed, path in seeds.items()],
                     ignore_index=True)


def run_labels(folders: list[Path]) -> list[str]:
    """Short distinct labels: each folder's name, with as many parent names as it takes."""
    parts = [folder.resolve().parts for folder in folders]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(folder) for folder in folders]


def combined(folders: list[Path]) -> pd.DataFrame:
    """The rows of every folder; with more than one, a ``run`` column labels each folder's."""
    frames = [load_folder(folder) for folder in folders]
    if len(frames) == 1:
        return frames[0]
    frame = pd.concat([f.assign(run=label) for f, label in zip(frames, run_labels(folders))], ignore_index=True)
    if "seed" in frame.columns:
        frame["seed"] = frame["seed"].fillna(0).astype("int64")
    return frame


def compare(folders: list[Path], out_dir: Path, *, last: int, autoscale: bool = False,
            say: Callable[[str], None] = lambda message: None) -> pd.DataFrame:
    """Write ``comparison.md``/``comparison.txt`` and ``figures/`` for ``folders`` into
    ``out_dir``; return the combined rows."""
    frame = combined(folders)
    write_results(frame, out_dir, name="comparison", last=last, autoscale=autoscale, say=say, scores=combined_scores(folders))
    return frame


def combined_scores(folders: list[Path]) -> pd.DataFrame:
    """The scores kept in every folder (``p2p_job.scores``), labelled like :func:`combined`'s
    rows; a ``--seeds`` folder's are not drawn (its curves would mix seeds)."""
    frames = [read_scores(folder) for folder in folders]
    if len(frames) == 1:
        return frames[0]
    return pd.concat([f.assign(run=label) for f, label in zip(frames, run_labels(folders)) if not f.empty]
                     or [frames[0].assign(run=pd.Series(dtype=str))], ignore_index=True)
