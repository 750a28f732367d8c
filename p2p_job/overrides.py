"""The experiment as a command runs it: the spec file plus ``--set path=value``, ``--rounds`` and
``--seeds`` overrides (``p2pk simulate`` and ``p2pk run``), validated like the file itself.

- ``--set spec.training.learningRate=0.001`` sets one field. The path is the YAML's
  (camelCase; ``snake_case`` is accepted too), ``spec.`` may be left out, list entries are
  ``methods[0].rebalancing`` (or ``methods.0.rebalancing``), and the value is read as YAML the
  way the file is (``1e-5``, ``true``, ``[16, 8]``, ``{rebalancing: smote}``). Missing mappings
  are created.
- The edited document is validated by :func:`p2p_job.spec.parse_experiment`: every error names
  its field path, and the source names the overrides (``exp.yaml with --set …``).
- A relative ``dataset.path`` is made absolute against the spec file's folder, so the spec as
  run (``<out>/spec.yaml``, the run record) reads the same data from anywhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel

from p2p_job.spec import InvalidSpec, P2PExperiment, load_yaml, parse_experiment, read_document

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_assignment(text: str) -> tuple[list[str | int], Any]:
    """``path=value`` → (path segments, YAML value). Raises ValueError naming the problem."""
    path, sep, value = text.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ValueError(f"--set {text!r}: expected path=value, e.g. spec.training.learningRate=0.001")
    if not re.fullmatch(r"([^.\[\]]+|\[\d+\])(\.?([^.\[\]]+|\[\d+\]))*", path):
        raise ValueError(f"--set {text!r}: {path!r} is not a field path like spec.methods[0].rebalancing")
    segments: list[str | int] = []
    for name, index in _SEGMENT.findall(path):
        if index:
            segments.append(int(index))
        elif name.isdigit():
            segments.append(int(name))
        else:
            segments.append(to_camel(name) if "_" in name else name)
    if segments[0] not in ("spec", "metadata", "apiVersion", "kind"):
        segments.insert(0, "spec")
    if not value.strip():
        raise ValueError(f"--set {text!r}: no value after '='")
    try:
        parsed = load_yaml(value, f"--set {text}")
    except InvalidSpec as exc:
        raise ValueError(f"--set {text!r}: the value is not YAML: {exc.errors[0][1]}") from None
    return segments, parsed


def _dotted(segments: list[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(segments))


def apply(document: dict, segments: list[str | int], value: Any) -> None:
    """Set ``value`` at ``segments`` in ``document`` (in place), creating missing mappings."""
    node: Any = document
    for i, (key, nxt) in enumerate(zip(segments, segments[1:] + [None])):
        last = nxt is None
        if isinstance(key, int):
            if not isinstance(node, list):
                raise ValueError(f"--set {_dotted(segments)}: {_dotted(segments[:i]) or '(document)'} is not a list")
            if not 0 <= key < len(node):
                raise ValueError(f"--set {_dotted(segments)}: {_dotted(segments[:i])} has {len(node)} entries")
        elif not isinstance(node, dict):
            raise ValueError(f"--set {_dotted(segments)}: {_dotted(segments[:i])} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(key, str) and node.get(key) is None:
                node[key] = [] if isinstance(nxt, int) else {}
            node = node[key]


def experiment_as_run(spec_path: str | Path, sets: list[str] = (), *, rounds: int | None = None,
                      seed: int | None = None) -> P2PExperiment:
    """The spec file with its overrides applied, validated, with an absolute ``dataset.path`` (and
    ``dataset.columnNamesFile``).
    Raises :class:`InvalidSpec` (every error by field path) or ValueError (a malformed
    ``--set``)."""
    spec_path = Path(spec_path)
    document = copy.deepcopy(read_document(spec_path))
    if not isinstance(document, dict):
        return parse_experiment(document, str(spec_path))  # raises, naming the document
    given = []
    for text in sets:
        segments, value = parse_assignment(text)
        apply(document, segments, value)
        given.append(f"--set {text}")
    for flag, path, value in (("--rounds", ["spec", "rounds"], rounds), ("seed", ["spec", "seed"], seed)):
        if value is not None:
            apply(document, path, value)
            given.append(f"{flag} {value}")
    source = f"{spec_path} with {' '.join(given)}" if given else str(spec_path)
    exp = parse_experiment(document, source)
    dataset = exp.spec.dataset
    relative = {field: str((spec_path.resolve().parent / Path(value).expanduser()).resolve())
                for field, value in (("path", dataset.path), ("column_names_file", dataset.column_names_file))
                if value and not Path(value).expanduser().is_absolute()}
    if relative:
        exp = exp.model_copy(update={"spec": exp.spec.model_copy(update={"dataset": dataset.model_copy(update=relative)})})
    return exp

