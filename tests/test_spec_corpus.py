"""Malformed specs, tried as a user would: every one is refused by ``p2pk validate`` with exit 2
and a field path, never a traceback; ``simulate`` refuses them the same way (same loader, same
model), and the operator's ``parse_experiment`` reports the same paths (its InvalidSpec condition).

The corpus is mutations of one valid experiment (five clients on built-in data) plus raw files
(bytes that are not UTF-8, an alias bomb, a huge file, documents that are not one mapping)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from p2p_job.cli import main
from p2p_job.spec import InvalidSpec, load_experiment, parse_experiment

ROOT = Path(__file__).parent.parent
CLIENTS = ["client-a", "client-b", "client-c", "client-d", "client-e"]
DELETE = object()


def base() -> dict:
    """A valid experiment: five non-IID clients, one built-in device each."""
    return {
        "apiVersion": "p2pk.io/v1alpha1",
        "kind": "P2PExperiment",
        "metadata": {"name": "corpus"},
        "spec": {
            "seed": 1,
            "rounds": 2,
            "dataset": {"kind": "builtin", "builtin": {"devices": 5, "families": 2, "features": 8, "benignPerDevice": 100, "maliciousPerFamily": 20}},
            "scenario": {
                "kind": "non-iid",
                "clients": [
                    {"name": name, "benignGroups": [f"device-{i}"], "maliciousGroups": [f"device-{i}"],
                     "train": {"benign": 50, "malicious": 5}, "validation": {"benign": 10, "malicious": 5}}
                    for i, name in enumerate(CLIENTS)
                ],
                "globalTest": {"benign": 50, "malicious": 20},
            },
            "topology": {"kind": "full"},
            "methods": [{"rebalancing": "ksmote"}],
        },
    }


def mutate(*changes: tuple[str, object]) -> dict:
    """``base()`` with ``("spec.training.learningRate", value)`` changes (DELETE removes the field;
    a path part that is a digit indexes a list)."""
    doc = base()
    for path, value in changes:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = doc
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


C0 = "spec.scenario.clients.0"
# (case id, document or changes, the field path the error must name)
DOCUMENT_CASES = [
    # wrong types (strict: what the CRD's schema refuses too)
    ("rounds-quoted", [("spec.rounds", "5")], "spec.rounds"),
    ("rounds-fraction", [("spec.rounds", 5.5)], "spec.rounds"),
    ("rounds-bool", [("spec.rounds", True)], "spec.rounds"),
    ("seed-text", [("spec.seed", "x")], "spec.seed"),
    ("learning-rate-text", [("spec.training", {"learningRate": "fast"})], "spec.training.learningRate"),
    ("hidden-layers-text", [("spec.training", {"hiddenLayers": "80,50"})], "spec.training.hiddenLayers"),
    ("hidden-layer-text", [("spec.training", {"hiddenLayers": [80, "x"]})], "spec.training.hiddenLayers[1]"),
    ("clients-text", [("spec.scenario.clients", "a,b")], "spec.scenario.clients"),
    ("topology-text", [("spec.topology", "full")], "spec.topology"),
    ("methods-text", [("spec.methods", "ksmote")], "spec.methods"),
    ("name-number", [("metadata.name", 5)], "metadata.name"),
    ("spec-list", [("spec", [])], "spec"),
    ("lambda-quoted", [("spec.aggregation", {"lambda": "0.8"})], "spec.aggregation.lambda"),
    ("port-quoted", [("spec.runtime", {"metricsPort": "9400"})], "spec.runtime.metricsPort"),
    ("gpus-fraction", [("spec.kubernetes", {"gpus": 1.5})], "spec.kubernetes.gpus"),
    ("count-quoted", [(f"{C0}.train.benign", "50")], "spec.scenario.clients[0].train.benign"),
    ("drop-bad-rows-text", [("spec.dataset", {"kind": "nbaiot", "path": "x", "dropBadRows": "yes"})], "spec.dataset.dropBadRows"),
    # missing fields
    ("no-spec", [("spec", DELETE)], "spec"),
    ("no-metadata", [("metadata", DELETE)], "metadata"),
    ("no-name", [("metadata.name", DELETE)], "metadata.name"),
    ("no-rounds", [("spec.rounds", DELETE)], "spec.rounds"),
    ("no-scenario", [("spec.scenario", DELETE)], "spec.scenario"),
    ("no-train", [(f"{C0}.train", DELETE)], "spec.scenario.clients[0].train"),
    ("no-client-name", [(f"{C0}.name", DELETE)], "spec.scenario.clients[0].name"),
    ("no-global-test", [("spec.scenario.globalTest", DELETE)], "spec.scenario"),
    ("k-regular-no-degree", [("spec.topology", {"kind": "k-regular"})], "spec.topology.degree"),
    ("erdos-renyi-no-p", [("spec.topology", {"kind": "erdos-renyi"})], "spec.topology.p"),
    ("explicit-no-adjacency", [("spec.topology", {"kind": "explicit"})], "spec.topology.adjacency"),
    ("tabular-no-label", [("spec.dataset", {"kind": "tabular", "path": "x.csv", "benignValues": ["0"]})], "spec.dataset"),
    ("nbaiot-no-path", [("spec.dataset", {"kind": "nbaiot"})], "spec.dataset"),
    # unknown fields
    ("unknown-round", [("spec.round", 3)], "spec.round"),
    ("unknown-epochs", [("spec.training", {"epochs": 3})], "spec.training.epochs"),
    ("unknown-top-level", [("specs", {})], "specs"),
    ("unknown-client-field", [(f"{C0}.trian", {})], "spec.scenario.clients[0].trian"),
    ("unknown-gpu", [("spec.kubernetes", {"gpu": 1})], "spec.kubernetes.gpu"),
    ("builtin-with-path", [("spec.dataset.path", "data.csv")], "spec.dataset"),
    # wrong values
    ("api-version", [("apiVersion", "p2pk.io/v1")], "apiVersion"),
    ("kind", [("kind", "Experiment")], "kind"),
    ("unknown-rebalancing", [("spec.methods", [{"rebalancing": "adasyn"}])], "spec.methods[0].rebalancing"),
    ("unknown-rule", [("spec.aggregation", {"rule": "magic"})], "spec.aggregation.rule"),
    ("unknown-method-rule", [("spec.methods", [{"aggregation": "bogus"}])], "spec.methods[0].aggregation"),
    ("unknown-topology", [("spec.topology", {"kind": "star"})], "spec.topology.kind"),
    ("unknown-dataset", [("spec.dataset", {"kind": "csv"})], "spec.dataset.kind"),
    ("unknown-scenario", [("spec.scenario.kind", "iid")], "spec.scenario.kind"),
    ("unknown-device", [("spec.runtime", {"device": "tpu"})], "spec.runtime.device"),
    ("bad-name", [("metadata.name", "Bad_Name")], "metadata.name"),
    ("bad-client-name", [(f"{C0}.name", "Client A")], "spec.scenario.clients[0].name"),
    ("no-methods", [("spec.methods", [])], "spec.methods"),
    ("duplicate-methods", [("spec.methods", [{"rebalancing": "ksmote"}, {"rebalancing": "ksmote"}])], "spec"),
    ("duplicate-clients", [("spec.scenario.clients.1.name", "client-a")], "spec.scenario"),
    ("unknown-preset", [("spec.scenario", {"preset": "builtin-5.2.9"})], "spec.scenario"),
    ("preset-for-other-data", [("spec.scenario", {"preset": "nbaiot-5.2.4"})], "spec"),
    # sizes and rates: negative, zero, huge, infinite, not a number
    ("rounds-zero", [("spec.rounds", 0)], "spec.rounds"),
    ("rounds-negative", [("spec.rounds", -1)], "spec.rounds"),
    ("rounds-huge", [("spec.rounds", 10**9)], "spec.rounds"),
    ("learning-rate-nan", [("spec.training", {"learningRate": float("nan")})], "spec.training.learningRate"),
    ("learning-rate-negative", [("spec.training", {"learningRate": -1.0})], "spec.training.learningRate"),
    ("learning-rate-inf", [("spec.training", {"learningRate": float("inf")})], "spec.training.learningRate"),
    ("batch-size-zero", [("spec.training", {"batchSize": 0})], "spec.training.batchSize"),
    ("epochs-huge", [("spec.training", {"localEpochs": 10**6})], "spec.training.localEpochs"),
    ("dropout-one", [("spec.training", {"dropout": 1.0})], "spec.training.dropout"),
    ("hidden-layer-zero", [("spec.training", {"hiddenLayers": [0]})], "spec.training.hiddenLayers[0]"),
    ("hidden-layer-huge", [("spec.training", {"hiddenLayers": [10**7]})], "spec.training.hiddenLayers[0]"),
    ("hidden-layers-none", [("spec.training", {"hiddenLayers": []})], "spec.training.hiddenLayers"),
    ("hidden-layers-many", [("spec.training", {"hiddenLayers": [4] * 100})], "spec.training.hiddenLayers"),
    ("share-fraction-big", [("spec.rebalancing", {"shareFraction": 1.5})], "spec.rebalancing.shareFraction"),
    ("share-fraction-nan", [("spec.rebalancing", {"shareFraction": float("nan")})], "spec.rebalancing.shareFraction"),
    ("ratio-zero", [("spec.rebalancing", {"ratio": 0})], "spec.rebalancing.ratio"),
    ("ratio-inf", [("spec.rebalancing", {"ratio": float("inf")})], "spec.rebalancing.ratio"),
    ("k-zero", [("spec.rebalancing", {"k": 0})], "spec.rebalancing.k"),
    ("k-huge", [("spec.rebalancing", {"k": 10**12})], "spec.rebalancing.k"),
    ("max-received-negative", [("spec.rebalancing", {"maxReceived": -1})], "spec.rebalancing.maxReceived"),
    ("lambda-big", [("spec.aggregation", {"lambda": 2})], "spec.aggregation.lambda"),
    ("update-probability-zero", [("spec.aggregation", {"updateProbability": 0})], "spec.aggregation.updateProbability"),
    ("timeout-inf", [("spec.runtime", {"roundTimeoutSeconds": float("inf")})], "spec.runtime.roundTimeoutSeconds"),
    ("timeout-zero", [("spec.runtime", {"roundTimeoutSeconds": 0})], "spec.runtime.roundTimeoutSeconds"),
    ("timeout-huge", [("spec.runtime", {"roundTimeoutSeconds": 1e12})], "spec.runtime.roundTimeoutSeconds"),
    ("max-payload-inf", [("spec.runtime", {"maxPayloadMb": float("inf")})], "spec.runtime.maxPayloadMb"),
    ("max-payload-huge", [("spec.runtime", {"maxPayloadMb": 1e9})], "spec.runtime.maxPayloadMb"),
    ("max-payload-negative", [("spec.runtime", {"maxPayloadMb": -5})], "spec.runtime.maxPayloadMb"),
    ("metrics-port-big", [("spec.runtime", {"metricsPort": 70000})], "spec.runtime.metricsPort"),
    ("builtin-rows-huge", [("spec.dataset.builtin.benignPerDevice", 10**12)], "spec.dataset.builtin.benignPerDevice"),
    ("builtin-separation-inf", [("spec.dataset.builtin.separation", float("inf"))], "spec.dataset.builtin.separation"),
    ("builtin-features-huge", [("spec.dataset.builtin.features", 100_000)], "spec.dataset.builtin.features"),
    ("builtin-table-huge", [("spec.dataset.builtin", {"devices": 64, "benignPerDevice": 10_000_000, "features": 4096})], "spec.dataset.builtin"),
    ("count-negative", [(f"{C0}.train.benign", -1)], "spec.scenario.clients[0].train.benign"),
    ("count-huge", [(f"{C0}.train.benign", 10**12)], "spec.scenario.clients[0].train.benign"),
    ("global-test-negative", [("spec.scenario.globalTest.malicious", -3)], "spec.scenario.globalTest.malicious"),
    ("no-training-rows", [(f"{C0}.train", {"benign": 0, "malicious": 0})], "spec.scenario.clients[0]"),
    ("too-many-clients", [("spec.scenario.clients", [{"name": f"c{i}", "train": {"benign": 1, "malicious": 1}, "validation": {"benign": 0, "malicious": 0}} for i in range(300)])], "spec.scenario.clients"),
    ("backoff-negative", [("spec.kubernetes", {"backoffLimit": -1})], "spec.kubernetes.backoffLimit"),
    ("deadline-zero", [("spec.kubernetes", {"activeDeadlineSeconds": 0})], "spec.kubernetes.activeDeadlineSeconds"),
    # topology constraints that cannot be met
    ("k-regular-k-equals-n", [("spec.topology", {"kind": "k-regular", "degree": 5})], "spec.topology.degree"),
    ("k-regular-k-above-n", [("spec.topology", {"kind": "k-regular", "degree": 9})], "spec.topology.degree"),
    ("k-regular-odd", [("spec.topology", {"kind": "k-regular", "degree": 3})], "spec.topology.degree"),
    ("k-regular-zero", [("spec.topology", {"kind": "k-regular", "degree": 0})], "spec.topology.degree"),
    ("erdos-renyi-p-zero", [("spec.topology", {"kind": "erdos-renyi", "p": 0})], "spec.topology.p"),
    ("erdos-renyi-p-big", [("spec.topology", {"kind": "erdos-renyi", "p": 1.5})], "spec.topology.p"),
    ("erdos-renyi-p-negative", [("spec.topology", {"kind": "erdos-renyi", "p": -0.1})], "spec.topology.p"),
    ("erdos-renyi-p-nan", [("spec.topology", {"kind": "erdos-renyi", "p": float("nan")})], "spec.topology.p"),
    ("erdos-renyi-never-connected", [("spec.topology", {"kind": "erdos-renyi", "p": 0.001})], "spec.topology.p"),
    ("explicit-unknown-client", [("spec.topology", {"kind": "explicit", "adjacency": {"client-a": ["client-z"]}})], "spec.topology.adjacency.client-a"),
    ("explicit-disconnected", [("spec.topology", {"kind": "explicit", "adjacency": {"client-a": ["client-b"], "client-c": ["client-d", "client-e"]}})], "spec.topology.adjacency"),
    ("explicit-self-loop", [("spec.topology", {"kind": "explicit", "adjacency": {"client-a": ["client-a"]}})], "spec.topology.adjacency.client-a"),
    ("degree-with-full", [("spec.topology", {"kind": "full", "degree": 2})], "spec.topology.degree"),
    ("adjacency-with-ring", [("spec.topology", {"kind": "ring", "adjacency": {"client-a": ["client-b"]}})], "spec.topology.adjacency"),
    # scenario counts the built-in data cannot supply
    ("client-asks-too-much", [(f"{C0}.train.benign", 95)], "spec.scenario.clients[0]"),
    ("unknown-group", [(f"{C0}.benignGroups", ["device-9"])], "spec.scenario.clients[0].benignGroups"),
    ("global-test-too-big", [("spec.scenario.globalTest.benign", 400)], "spec.scenario"),
    ("scale-zero", [("spec.scenario", {"preset": "builtin-5.2.4", "scale": 0})], "spec.scenario.scale"),
]

# Raw files: (case id, bytes, the path the error must name)
BOMB = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                 + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"
FILE_CASES = [
    ("not-utf8", "metadata: {name: caf\xe9}\n".encode("latin-1"), "(file)"),
    ("alias-bomb", BOMB.encode(), "(document)"),
    ("huge-file", b"# padding\n" * 200_000 + yaml.safe_dump(base()).encode(), "(file)"),
    ("list-document", b"- apiVersion: p2pk.io/v1alpha1\n", "(document)"),
    ("scalar-document", b"hello\n", "(document)"),
    ("empty-file", b"", "(document)"),
    ("two-documents", yaml.safe_dump(base()).encode() + b"---\n" + yaml.safe_dump(base()).encode(), "line"),
    ("yaml-syntax", b"spec: [\n", "line"),
    ("deep-nesting", b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "(document)"),
    ("python-tag", b"spec: !!python/object/apply:os.system ['true']\n", "line"),
    ("inf-in-yaml", yaml.safe_dump(base()).replace("rounds: 2", "rounds: .inf").encode(), "spec.rounds"),
    ("max-payload-inf-in-yaml", (yaml.safe_dump(base()) + "").replace("topology:", "runtime: {maxPayloadMb: .inf}\n  topology:").encode(), "spec.runtime.maxPayloadMb"),
    ("nan-in-yaml", yaml.safe_dump(base()).replace("seed: 1", "seed: .nan").encode(), "spec.seed"),
]

KUBERNETES_CASES = [
    ("no-endpoint", [("spec.kubernetes", {"s3": {"credentialsSecret": "creds"}})], "spec.kubernetes.s3.endpoint"),
    ("no-credentials", [("spec.kubernetes", {"s3": {"endpoint": "minio:9000"}})], "spec.kubernetes.s3"),
]
MORE_KUBERNETES = [
    ("both-secrets", [("spec.kubernetes", {"s3": {"endpoint": "m:9000", "adminSecret": "a", "credentialsSecret": "c"}})], "spec.kubernetes.s3"),
    ("gpu-in-resources", [("spec.kubernetes", {"resources": {"limits": {"nvidia.com/gpu": 1}}})], "spec.kubernetes.resources"),
    ("bad-bucket", [("spec.kubernetes", {"s3": {"bucket": "A_B"}})], "spec.kubernetes.s3.bucket"),
    ("empty-image", [("spec.kubernetes", {"image": ""})], "spec.kubernetes.image"),
    ("bad-quantity", [("spec.kubernetes", {"resources": {"requests": {"cpu": "two"}}})], "spec.kubernetes.resources.requests"),
]
DOCUMENT_CASES += MORE_KUBERNETES


def write_case(tmp_path: Path, content: dict | list | bytes) -> Path:
    path = tmp_path / "exp.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(yaml.safe_dump(mutate(*content), allow_unicode=True), encoding="utf-8")
    return path


def test_the_corpus_is_large_and_the_base_is_valid(tmp_path):
    assert len(DOCUMENT_CASES) + len(FILE_CASES) + len(KUBERNETES_CASES) >= 76
    assert main(["validate", str(write_case(tmp_path, []))]) == 0
    assert main(["validate", "--kubernetes", str(write_case(tmp_path, [("spec.kubernetes", {"s3": {"endpoint": "m:9000", "credentialsSecret": "c"}})]))]) == 0


def _refused(args: list[str], path: str, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "invalid P2PExperiment" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(("changes", "path"), [c[1:] for c in DOCUMENT_CASES], ids=[c[0] for c in DOCUMENT_CASES])
def test_validate_and_simulate_refuse_a_malformed_document_naming_the_field(tmp_path, capsys, changes, path):
    spec = write_case(tmp_path, changes)
    err = _refused(["validate", str(spec)], path, capsys)
    listed = [line.strip().split(": ", 1)[0] for line in err.splitlines()[1:]]
    assert any(p == path or p.startswith(f"{path}.") for p in listed), err
    # the operator parses the same document with the same model: the same errors
    with pytest.raises(InvalidSpec) as operator_view:
        parse_experiment(mutate(*changes), "operator")
    assert [p for p, _ in operator_view.value.errors] == listed
    assert _refused(["simulate", str(spec), "--out", str(tmp_path / "out")], path, capsys) == err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("content", "path"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_validate_refuses_a_malformed_file_naming_where(tmp_path, capsys, content, path):
    spec = write_case(tmp_path, content)
    start = time.perf_counter()
    err = _refused(["validate", str(spec)], path, capsys)
    assert time.perf_counter() - start < 20  # seconds, on a loaded machine; an alias bomb would take hours
    assert path in err.splitlines()[1], err


@pytest.mark.parametrize(("changes", "path"), [c[1:] for c in KUBERNETES_CASES], ids=[c[0] for c in KUBERNETES_CASES])
def test_validate_kubernetes_refuses_what_the_operator_would(tmp_path, capsys, changes, path):
    from p2pk_operator.manifests import plan

    spec = write_case(tmp_path, changes)
    assert main(["validate", str(spec)]) == 0  # a valid spec for simulate and run
    capsys.readouterr()
    err = _refused(["validate", "--kubernetes", str(spec)], path, capsys)
    with pytest.raises(InvalidSpec) as operator_view:
        plan(load_experiment(spec))
    assert [p for p, _ in operator_view.value.errors] == [line.strip().split(": ", 1)[0] for line in err.splitlines()[1:]]


def test_missing_file_and_folder_are_refused(tmp_path, capsys):
    for target in (tmp_path / "absent.yaml", tmp_path):
        assert "(file)" in _refused(["validate", str(target)], "(file)", capsys)


def test_yaml_1_2_exponents_are_numbers(tmp_path):
    """``1e-5`` is a float for kubectl (YAML 1.2); the loader agrees, so strict types accept it."""
    text = yaml.safe_dump(base()).replace("rounds: 2", "rounds: 2\n  training: {learningRate: 1e-5, weightDecay: 2E-3}")
    (tmp_path / "exp.yaml").write_text(text)
    training = load_experiment(tmp_path / "exp.yaml").spec.training
    assert (training.learning_rate, training.weight_decay) == (1e-5, 2e-3)


# --------------------------------------------------------------------------- real processes

P2PK = [sys.executable, "-m", "p2p_job.cli"]


def _p2pk(args: list[str], env_extra: dict | None = None, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    import os

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'operator'}", **(env_extra or {})}
    start = time.perf_counter()
    done = subprocess.run([*P2PK, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("case", ["alias-bomb", "not-utf8", "deep-nesting"])
def test_every_command_refuses_a_hostile_file_quickly_without_a_traceback(tmp_path, case):
    """The loader refuses the file before building anything from it, in every command that reads
    a spec: validate, simulate, run and the worker (which logs one line and exits 2)."""
    (content,) = [c[1] for c in FILE_CASES if c[0] == case]
    spec = write_case(tmp_path, content)
    commands = [
        ["validate", str(spec)],
        ["simulate", str(spec), "--out", str(tmp_path / "sim")],
        ["run", str(spec), "--out", str(tmp_path / "run")],
        ["worker", "--spec", str(spec), "--client", "client-a", "--store", f"file://{tmp_path / 'store'}", "--metrics-port", "0"],
    ]
    for args in commands if case == "alias-bomb" else commands[:1]:
        # An expanded bomb never finishes: the subprocess timeout is the guard (a wall-clock bound
        # tighter than a loaded machine's Python and torch start-up would only test the machine).
        done, _ = _p2pk(args, timeout=300)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout
        if args[0] == "worker":
            (line,) = [json.loads(x) for x in done.stdout.splitlines() if "worker_failed" in x]
            assert line["cause"] == "spec" and "aliases are expanded" in line["error"]
        else:
            assert "aliases are expanded" in done.stderr or case != "alias-bomb"


def test_dataset_path_errors_do_not_echo_file_contents(tmp_path, capsys):
    """Pointing dataset.path at a file that is not a dataset (a key file, say) names the file and
    the problem, never its contents."""
    secret = "SECRET-TOKEN-0123456789"
    target = tmp_path / "id_key"
    target.write_text(f"{secret} {secret}\nline two {secret}\n")
    for dataset in (
        {"kind": "botiot", "path": str(target)},
        {"kind": "tabular", "path": str(target), "labelColumn": "label", "benignValues": ["0"]},
        {"kind": "nbaiot", "path": str(target)},
        {"kind": "nbaiot", "path": str(tmp_path)},
    ):
        doc = mutate(("spec.dataset", dataset), ("spec.scenario.clients", [c | {"benignGroups": None, "maliciousGroups": None} for c in base()["spec"]["scenario"]["clients"]][:1]))
        doc["spec"]["scenario"]["clients"][0] = {k: v for k, v in doc["spec"]["scenario"]["clients"][0].items() if v is not None}
        doc["spec"]["scenario"]["kind"] = "imbalanced-iid"
        spec = tmp_path / "exp.yaml"
        spec.write_text(yaml.safe_dump(doc))
        assert main(["simulate", str(spec), "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert str(target.name) in err or str(tmp_path) in err, err
        assert secret not in err and "Traceback" not in err, err
