"""The run record: ``run.json`` in every output folder of ``p2pk simulate`` and ``p2pk run``, and
the rule for re-running into a folder that already holds results.

``run.json`` (format ``p2pk.run/v1``) holds the spec as run (after overrides), its seed and
sha256, the code version (package version, ``git describe`` and commit when the code is a git
checkout, and a sha256 of the ``p2p_job`` sources, which notices uncommitted edits too), the
versions of the packages that shape the numbers, the command line, the runner, the methods,
start and end times, the status (``running``, ``done``, ``failed``, ``interrupted``) and whether
the run resumed an earlier one (``resumed``, with the earlier runs' start times in ``history``).

Re-running into a folder (:func:`begin`):

- no work there (no results, an empty store): a fresh run;
- the same spec and the same code: the run **resumes** (finished work is kept; ``p2pk run``'s
  workers continue from their checkpoints) and says so;
- a different spec: **refused**, naming the fields that differ; choose a fresh folder or
  ``--force`` (delete the folder's results and start again);
- the same spec, different code (or results without a run record): **refused** unless
  ``--resume`` (continue with this code; the record keeps both versions) or ``--force``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml

from p2p_job.spec import P2PExperiment, dump_experiment

RECORD = "run.json"
FORMAT = "p2pk.run/v1"
#: The spec as run, next to the record (``p2pk run``'s workers read it).
SPEC = "spec.yaml"
#: What a run writes into its folder (removed by ``--force``).
OUTPUTS = (RECORD, SPEC, "results.parquet", "summary.txt", "summary.md", "figures", "logs", "store", "scores", "models")
#: Distributions whose versions go into the record (those that shape the numbers or the files).
PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "scikit-learn", "imbalanced-learn", "safetensors",
            "matplotlib", "pydantic", "minio")

_PACKAGE_DIR = Path(__file__).resolve().parent


class FolderInUse(ValueError):
    """The output folder holds results that this run must not mix with (message names the choice)."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(_PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def source_digest() -> str:
    """sha256 over the ``p2p_job`` package's Python sources and presets (paths and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in _PACKAGE_DIR.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
        digest.update(str(path.relative_to(_PACKAGE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version() -> dict:
    """The code that runs: package version, git describe/commit (None outside a checkout), the
    sources' digest."""
    try:
        version = metadata.version("p2pk")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "package": version,
        "git": _git("describe", "--always", "--dirty", "--tags"),
        "commit": _git("rev-parse", "HEAD"),
        "sources_sha256": source_digest(),
    }


def package_versions() -> dict:
    """Python and the versions of :data:`PACKAGES` that are installed."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def describe_code(code: dict) -> str:
    """``p2pk 0.1.0, git b9d2c07`` (and the sources' digest when the checkout is dirty or git is
    not there: only the digest tells two dirty states apart)."""
    parts = [f"p2pk {code.get('package') or '?'}"]
    if code.get("git"):
        parts.append(f"git {code['git']}")
    if not code.get("git") or code["git"].endswith("-dirty"):
        parts.append(f"sources {str(code.get('sources_sha256'))[:12]}")
    return ", ".join(parts)


def spec_document(exp: P2PExperiment) -> dict:
    return yaml.safe_load(dump_experiment(exp))


def spec_differences(old: dict, new: dict, path: str = "") -> list[str]:
    """``field: old → new`` for every leaf that differs between two spec documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            out += spec_differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    if old != new:
        def short(value) -> str:
            text = json.dumps(value)
            return text if len(text) <= 40 else text[:37] + "..."
        return [f"{path}: {short(old)} → {short(new)}"]
    return []


def read(out: Path) -> dict | None:
    """The folder's run record, or None (absent or unreadable)."""
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


#: What counts as work done in a folder: results, or a store with rounds in it.
WORK = ("results.parquet", "store")


def holds_results(out: Path) -> bool:
    """Whether ``out`` holds work of a run: results, a non-empty store, or a seed's folder."""
    for name in WORK:
        path = out / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return True
    return any(holds_results(sub) for sub in out.glob("seed-*") if sub.is_dir())


def clear(out: Path) -> None:
    """Remove what a run wrote into ``out`` (``--force``), seeds' folders included; nothing else."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for sub in out.glob("seed-*"):
        if (sub / RECORD).is_file():
            shutil.rmtree(sub)


@dataclass
class Run:
    """A run in progress: its folder and record (written by :meth:`save`)."""

    out: Path
    record: dict
    resumed: bool = False
    previous: dict | None = field(default=None, repr=False)

    @property
    def spec_path(self) -> Path:
        return self.out / SPEC

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".{RECORD}.tmp"
        tmp.write_text(json.dumps(self.record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / RECORD)

    def finish(self, status: str, **extra) -> None:
        """Record the end time and how the run ended (``done``, ``failed``, ``interrupted``)."""
        self.record.update({"finished": _now(), "status": status, **extra})
        self.save()

    def describe_resume(self) -> str:
        """The line a resumed run prints."""
        prev = self.previous or {}
        how = {"done": "finished", "running": "did not finish (stopped)", None: "without a run record"}.get(
            prev.get("status"), prev.get("status"))
        since = f" started {prev['started']}" if prev.get("started") else ""
        return f"resuming the run in {self.out} ({'the earlier run' + since + ', ' if prev else ''}{how}); finished work is kept"


def begin(out: Path, exp: P2PExperiment, *, runner: str, methods: list[str], argv: list[str] | None = None,
          resume: bool = False, force: bool = False, extra: dict | None = None) -> Run:
    """Open ``out`` for a run of ``exp`` (see the module docstring): write ``spec.yaml`` and a
    ``running`` record, and return the :class:`Run`. Raises :class:`FolderInUse`."""
    document = spec_document(exp)
    text = dump_experiment(exp)
    code = code_version()
    previous = read(out)
    resumed = False
    if force:
        clear(out)
        previous = None
    elif not holds_results(out):
        previous = None  # nothing done there yet (e.g. a run that failed before its first round)
    elif previous is not None:
        changes = spec_differences(previous.get("spec") or {}, document)
        if changes:
            shown = "; ".join(changes[:5]) + (f"; … {len(changes) - 5} more" if len(changes) > 5 else "")
            raise FolderInUse(
                f"{out} holds results of a different spec ({shown}); run into a fresh folder (--out), "
                "or add --force to delete its results and start again")
        old_code = previous.get("code") or {}
        if old_code.get("sources_sha256") != code["sources_sha256"] and not resume:
            raise FolderInUse(
                f"{out} holds results of other code ({describe_code(old_code)}; this is {describe_code(code)}); "
                "add --resume to continue them with this code, --force to delete them and start again, "
                "or run into a fresh folder (--out)")
        resumed = True
    else:
        if not resume:
            raise FolderInUse(
                f"{out} holds results without a run record ({RECORD}), so neither their spec nor their code is "
                "known; add --resume to continue them, --force to delete them and start again, "
                "or run into a fresh folder (--out)")
        resumed = True
    record = {
        "format": FORMAT,
        "experiment": exp.name,
        "runner": runner,
        "methods": methods,
        "seed": exp.spec.seed,
        "spec": document,
        "spec_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "code": code,
        "packages": package_versions(),
        "command": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "started": _now(),
        "finished": None,
        "status": "running",
        "resumed": resumed,
        **(extra or {}),
    }
    if resumed and previous is not None:
        history = list(previous.get("history") or [])
        history.append({k: previous.get(k) for k in ("started", "finished", "status", "code", "command")})
        record["history"] = history
    run = Run(out, record, resumed, previous if resumed else None)
    out.mkdir(parents=True, exist_ok=True)
    run.spec_path.write_text(text, encoding="utf-8")
    run.save()
    return run


#: The record beside a ``p2pk compare`` output (``comparison.json``).
COMPARISON = "comparison.json"


def write_comparison(out: Path, folders: list[Path], argv: list[str]) -> None:
    """``comparison.json`` in a comparison's folder: what was compared (each folder's run record:
    experiment, seed(s), spec sha256, code, status), the command, this code and packages, when."""
    compared = []
    for folder in folders:
        record = read(folder) or {}
        compared.append({"folder": str(folder), **{k: record.get(k) for k in
                         ("experiment", "seed", "seeds", "spec_sha256", "code", "status", "started", "finished")}})
    out.mkdir(parents=True, exist_ok=True)
    document = {"format": "p2pk.comparison/v1", "folders": compared, "command": argv, "cwd": os.getcwd(),
                "code": code_version(), "packages": package_versions(), "created": _now()}
    (out / COMPARISON).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
