"""The built-in generator: a synthetic stand-in for N-BaIoT with the same structure.

Each device has its own benign distribution; each attack family is a separate cluster per
device, ``separation`` spreads away from that device's benign centre. A family's clusters on
different devices point in related but different directions (a shared direction plus a
device-specific one), so attacks are separable from benign traffic but not trivially, and a
client that never saw another device's traffic does not recognise that device's attacks —
the non-IID difficulty of §3.1, scenario 4.

Clusters are isotropic Gaussians in a low-dimensional latent space (unit spread), embedded in
``features`` dimensions by an orthonormal map (so distances are kept), plus a little
independent noise per feature, then put in heterogeneous units (per-feature scale and offset,
like traffic statistics that range from fractions to thousands) for min-max scaling to undo.
Everything is drawn from ``seeding.rng(spec.seed, "builtin-dataset")``: the same spec always
gives the same table.
"""

from __future__ import annotations

import numpy as np

from p2p_job.datasets.table import BENIGN_FAMILY, LoadReport, Table
from p2p_job.seeding import rng
from p2p_job.spec import BuiltinDataSpec

#: Dimension of the latent space the clusters live in (capped by the feature count).
LATENT_DIM = 16
#: Standard deviation of the independent per-feature noise, in units of the cluster spread.
FEATURE_NOISE = 0.1
#: Weight of the family's shared direction against the device-specific one.
SHARED_DIRECTION = 0.5


def generate(spec: BuiltinDataSpec) -> Table:
    """``devices × (benign_per_device + families × malicious_per_family)`` rows, device by device.
    Groups: ``device`` ("device-0", …) and ``family`` ("benign", "family-0", …)."""
    gen = rng(spec.seed, "builtin-dataset")
    latent_dim = min(spec.features, LATENT_DIM)
    embedding, _ = np.linalg.qr(gen.standard_normal((spec.features, latent_dim)))  # orthonormal columns
    scale = 10.0 ** gen.uniform(-1, 3, spec.features)
    offset = gen.uniform(0, 10, spec.features) * scale
    shared = _unit(gen.standard_normal((spec.families, latent_dim)))

    centres, sizes, devices, families = [], [], [], []
    for device, family, size in _cells(spec):
        if family == BENIGN_FAMILY:
            benign_centre = spec.separation * _unit(gen.standard_normal(latent_dim))
            centres.append(benign_centre)
        else:
            f = int(family.removeprefix("family-"))
            direction = _unit(SHARED_DIRECTION * shared[f] + _unit(gen.standard_normal(latent_dim)))
            centres.append(benign_centre + spec.separation * direction)
        sizes.append(size)
        devices.append(device)
        families.append(family)

    latent = np.repeat(np.array(centres), sizes, axis=0) + gen.standard_normal((sum(sizes), latent_dim))
    X = latent @ embedding.T + FEATURE_NOISE * gen.standard_normal((sum(sizes), spec.features))
    family = np.repeat(np.array(families), sizes)
    return Table(
        features=(X * scale + offset).astype(np.float32),
        labels=(family != BENIGN_FAMILY).astype(np.int8),
        groups={"device": np.repeat(np.array(devices), sizes), "family": family},
        feature_names=[f"f{j:03d}" for j in range(spec.features)],
        report=LoadReport(rows_read=sum(sizes)),
    )


def _cells(spec: BuiltinDataSpec) -> list[tuple[str, str, int]]:
    """The generated clusters in order: (device, family, rows), each device's benign cluster
    followed by its attack families."""
    return [
        (f"device-{d}", family, size)
        for d in range(spec.devices)
        for family, size in [(BENIGN_FAMILY, spec.benign_per_device), *((f"family-{f}", spec.malicious_per_family) for f in range(spec.families))]
    ]


def group_table(spec: BuiltinDataSpec) -> tuple[Table, np.ndarray]:
    """One row per generated cluster (no features) with its groups and label, and the rows
    each cluster has: what the spec checks scenario counts and group selectors against
    without generating the data."""
    cells = _cells(spec)
    table = Table(
        features=np.zeros((len(cells), 0), dtype=np.float32),
        labels=np.array([family != BENIGN_FAMILY for _, family, _ in cells], dtype=np.int8),
        groups={"device": np.array([c[0] for c in cells]), "family": np.array([c[1] for c in cells])},
        feature_names=[],
    )
    return table, np.array([size for _, _, size in cells], dtype=np.int64)


def _unit(v: np.ndarray) -> np.ndarray:
    """``v`` (or each row of ``v``) scaled to unit length."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
