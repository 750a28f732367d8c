"""Results out of a store: a finished or running experiment's metrics as one results frame.

Every worker writes each round's rows as ``<experiment>/<method>/metrics/<client>/<r:05d>.parquet``
(DESIGN, "Store layout"), wherever it runs — ``p2pk run`` on a laptop or a Kubernetes Job. This module
reads them back from any store (a directory or S3), so that ``p2pk collect`` (and ``p2pk run``
itself) writes the same ``results.parquet``, summary and figures for every runner
(``p2p_job.results.write_results``). Which methods and clients there are comes from the
experiment's stored ``spec.yaml`` (one per method, written before any worker starts).
"""

from __future__ import annotations

from urllib.parse import urlparse

import pandas as pd
import yaml

from p2p_job.datasets import DataError
from p2p_job.spec import InvalidSpec, P2PExperiment, parse_experiment, resolved_method_name
from p2p_job.store import Store, spec_key


def split_location(location: str) -> tuple[str, str]:
    """``s3://bucket/prefix/<experiment>``, ``file:///path/<experiment>`` or a folder path →
    (store URL, experiment name): the experiment is the last path segment."""
    from pathlib import Path

    if "://" not in location:
        location = Path(location).resolve().as_uri()
    parsed = urlparse(location.rstrip("/"))
    head, _, experiment = parsed.path.rpartition("/")
    if not experiment or (parsed.scheme == "s3" and not parsed.netloc):
        raise ValueError(f"{location!r}: expected s3://bucket/prefix/<experiment>, file:///path/<experiment> or a folder")
    return f"{parsed.scheme}://{parsed.netloc}{head}", experiment


def stored_methods(store: Store, experiment: str) -> tuple[P2PExperiment, list[str]]:
    """The experiment's spec and the methods with a stored ``spec.yaml``, in the spec's order."""
    prefix = f"{experiment}/"
    found = sorted({k[len(prefix):].split("/")[0] for k in store.list(prefix) if k.endswith("/spec.yaml") and k.count("/") == 2})
    if not found:
        raise DataError(f"{store!r}: no experiment {experiment!r} (no {prefix}<method>/spec.yaml)")
    text = store.get_bytes(spec_key(experiment, found[0]))
    try:
        exp = parse_experiment(yaml.safe_load(text or b""), f"{store!r}: {spec_key(experiment, found[0])}")
    except (InvalidSpec, yaml.YAMLError) as exc:
        raise DataError(f"{store!r}: {spec_key(experiment, found[0])} is not a readable experiment: {exc}") from None
    order = [resolved_method_name(m, exp.spec.aggregation.rule) for m in exp.spec.methods]
    return exp, [m for m in order if m in found] + [m for m in found if m not in order]


def store_frame(store: Store, experiment: str, methods: list[str], clients: list[str]) -> pd.DataFrame:
    """Every client's metrics parts of every method, as one results frame (a client without
    metrics yet adds no rows)."""
    from p2p_job.results import tables_frame
    from p2p_job.worker import metrics_tables

    return tables_frame(table for m in methods for c in clients for table in metrics_tables(store, experiment, m, c))


def collect(store: Store, experiment: str) -> pd.DataFrame:
    """The experiment's results so far, from its stored specs and metrics files."""
    exp, methods = stored_methods(store, experiment)
    frame = store_frame(store, experiment, methods, [c.name for c in exp.spec.scenario.clients])
    if frame.empty:
        raise DataError(f"{store!r}: experiment {experiment!r} has no metrics yet (no worker finished a round)")
    return frame
