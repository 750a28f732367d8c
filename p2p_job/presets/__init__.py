"""Built-in client layouts (``scenario.preset``): the paper's experiments 5.2.1–5.2.4
(Tables 1–3) for N-BaIoT and UNSW BoT-IoT, and the same four structures for the built-in
generator (``builtin-5.2.4`` is the quickstart's).

Each layout is a YAML file beside this module: a description, the dataset kind it is written
for, and the ``scenario`` it expands to (kind, clients, globalTest). ``scenario.scale``
multiplies every count, to fit the paper's layouts to a smaller copy of a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    dataset: str  # the dataset kind it is written for
    scenario: dict[str, Any]  # camelCase: kind, clients, globalTest


@cache
def available() -> dict[str, Preset]:
    """Every built-in preset by name, in name order."""
    found = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            doc = yaml.safe_load(entry.read_text(encoding="utf-8"))
            name = entry.name.removesuffix(".yaml")
            found[name] = Preset(name, " ".join(doc["description"].split()), doc["dataset"], doc["scenario"])
    return found


def expand(name: str, scale: float = 1.0) -> dict[str, Any]:
    """The scenario fields of preset ``name`` with every count multiplied by ``scale``
    (rounded, and at least 1 where the preset has any)."""
    if name not in available():
        raise ValueError(f"unknown preset {name!r}; presets are {sorted(available())}")
    return _scaled(available()[name].scenario, scale)


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, dict):
        if set(value) == {"benign", "malicious"}:
            return {k: max(1, round(n * scale)) if n else 0 for k, n in value.items()}
        return {k: _scaled(v, scale) for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v, scale) for v in value]
    return value
