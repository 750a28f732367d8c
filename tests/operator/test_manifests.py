"""Spec → Kubernetes objects: valid for Kubernetes 1.30 (strict), with the labels, names,
worker environment, GPU limits and security settings the design asks for."""

from __future__ import annotations

import hashlib
from pathlib import Path

import kopf
import kubernetes_validate
import pytest
import yaml
from operator_fakes import SHARED_SECRET, experiment, resource

from p2p_job.spec import InvalidSpec, parse_experiment
from p2pk_operator import manifests
from p2pk_operator.manifests import job_name, plan

FULL = {
    "gpus": 2,
    "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "activeDeadlineSeconds": 7200,
    "ttlSecondsAfterFinished": 86400,
    "serviceAccountName": "p2pk-worker",
    "backoffLimit": 5,
}
DOCS = {
    "scoped-cpu": experiment(),
    "scoped-gpu-full": experiment(**FULL),
    "shared": experiment(s3={"endpoint": "https://s3.example.org", "bucket": "lab-runs", "prefix": "", "credentialsSecret": SHARED_SECRET}),
    "long-names": experiment("e" * 40, clients=("c" * 40, "d" * 40), methods=("ksmote",)),
    "data-volume": experiment(dataVolume={"claimName": "nbaiot-data"}),
}


def objects(doc: dict) -> list[dict]:
    """Every object the operator makes for ``doc``, adopted by the resource as the handler does."""
    p = plan(parse_experiment(doc))
    made = [manifests.config_map(p)]
    if p.scoped:
        made += [manifests.client_secret(p, c, f"user-{c}", "s3cr3t-s3cr3t") for c in p.clients]
    made += [manifests.job(p, m, c) for m in p.methods for c in p.clients]
    kopf.adopt(made, owner=resource(doc))
    return made


def env_of(job: dict) -> dict[str, object]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("name", DOCS)
def test_every_object_passes_kubernetes_validate_strict_for_1_30(name):
    for obj in objects(DOCS[name]):
        kubernetes_validate.validate(obj, "1.30.0", strict=True)


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_runs_as_valid_objects_once_given_a_store(path):
    """Given a store and, for a real dataset, its shards in it (docs/deploy.md)."""
    doc = yaml.safe_load(path.read_text())
    doc["spec"].setdefault("kubernetes", {})["s3"] = {"endpoint": "minio:9000", "adminSecret": "minio-admin"}
    if doc["spec"].get("dataset", {}).get("kind", "builtin") != "builtin":
        doc["spec"]["dataset"]["shards"] = "store"
    made = objects(doc)
    exp = parse_experiment(doc)
    assert len([o for o in made if o["kind"] == "Job"]) == len(exp.spec.methods) * len(exp.spec.scenario.clients)
    for obj in made:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)


def test_one_job_per_method_and_client_named_labelled_and_owned():
    doc = DOCS["scoped-cpu"]
    owner = resource(doc)
    jobs = [manifests.job(plan(parse_experiment(doc)), m, c) for m in ("ksmote", "none") for c in ("a", "b", "c")]
    kopf.adopt(jobs, owner=owner)
    assert [j["metadata"]["name"] for j in jobs] == [f"exp-{m}-{c}" for m in ("ksmote", "none") for c in ("a", "b", "c")]
    for j in jobs:
        method, client = j["metadata"]["name"].split("-")[1:]
        labels = j["metadata"]["labels"]
        assert (labels["p2pk.io/experiment"], labels["p2pk.io/method"], labels["p2pk.io/client"]) == ("exp", method, client)
        assert j["spec"]["template"]["metadata"]["labels"] == labels
        (ref,) = j["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("P2PExperiment", "exp", owner["metadata"]["uid"], True)
        assert j["metadata"]["namespace"] == owner["metadata"]["namespace"]


def test_worker_environment_in_scoped_mode():
    job = manifests.job(plan(parse_experiment(DOCS["scoped-cpu"])), "ksmote", "b")
    assert env_of(job) == {
        "P2PK_SPEC": "/etc/p2pk/spec.yaml",
        "P2PK_CLIENT": "b",
        "P2PK_METHOD": "ksmote",
        "P2PK_STORE": "s3://p2pk/experiments/lab",  # <prefix>/<namespace>
        "P2PK_S3_ENDPOINT": "http://minio.lab.svc:9000",
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "exp-b-store", "key": "accessKey"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {"name": "exp-b-store", "key": "secretKey"}},
        "P2PK_METRICS_PORT": "9400",
        # Everything the worker, Python, PyTorch and matplotlib write goes to the scratch emptyDir.
        "HOME": "/tmp/home", "TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/cache", "MPLCONFIGDIR": "/tmp/matplotlib",
        "TORCH_HOME": "/tmp/torch", "PYTHONDONTWRITEBYTECODE": "1",
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "spec", "configMap": {"name": "exp-spec"}}, {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "spec", "mountPath": "/etc/p2pk", "readOnly": True},
                                                    {"name": "scratch", "mountPath": "/tmp"}]


def test_a_data_volume_is_mounted_read_only():
    doc = experiment(dataVolume={"claimName": "nbaiot", "mountPath": "/data", "subPath": "shards"})
    pod = manifests.job(plan(parse_experiment(doc)), "ksmote", "a")["spec"]["template"]["spec"]
    assert pod["volumes"][-1] == {"name": "data", "persistentVolumeClaim": {"claimName": "nbaiot", "readOnly": True}}
    assert pod["containers"][0]["volumeMounts"][-1] == {"name": "data", "mountPath": "/data", "readOnly": True, "subPath": "shards"}


def test_shared_mode_reads_the_shared_secret_and_keeps_the_endpoint_scheme():
    doc = DOCS["shared"]
    p = plan(parse_experiment(doc))
    assert not p.scoped
    env = env_of(manifests.job(p, "none", "a"))
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": SHARED_SECRET, "key": "accessKey"}}
    assert (env["P2PK_STORE"], env["P2PK_S3_ENDPOINT"]) == ("s3://lab-runs/lab", "https://s3.example.org")


def test_gpu_job_gets_the_gpu_limit_cuda_device_placement_and_deadlines():
    doc = experiment(**FULL, **{"s3": {"endpoint": "minio:9000", "adminSecret": "a"}})
    doc["spec"]["runtime"] = {"pushgateway": "pushgateway.monitoring:9091", "metricsPort": 9500}
    job = manifests.job(plan(parse_experiment(doc)), "ksmote", "a")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": 2}}
    env = env_of(job)
    assert (env["P2PK_DEVICE"], env["P2PK_PUSHGATEWAY"], env["P2PK_METRICS_PORT"]) == ("cuda", "pushgateway.monitoring:9091", "9500")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "p2pk-worker"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (5, 7200, 86400)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9500", "prometheus.io/path": "/metrics",
    }


def test_the_operators_default_pushgateway_fills_in_only_where_the_spec_names_none():
    p = plan(parse_experiment(DOCS["scoped-cpu"]))
    assert "P2PK_PUSHGATEWAY" not in env_of(manifests.job(p, "none", "a"))
    assert env_of(manifests.job(p, "none", "a", "pg.monitoring:9091"))["P2PK_PUSHGATEWAY"] == "pg.monitoring:9091"
    doc = experiment()
    doc["spec"]["runtime"] = {"pushgateway": "own.monitoring:9091"}
    own = manifests.job(plan(parse_experiment(doc)), "none", "a", "pg.monitoring:9091")
    assert env_of(own)["P2PK_PUSHGATEWAY"] == "own.monitoring:9091"


def test_cpu_job_has_no_gpu_no_device_override_and_no_optional_limits():
    job = manifests.job(plan(parse_experiment(DOCS["scoped-cpu"])), "none", "a")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {}
    assert "P2PK_DEVICE" not in env_of(job)
    assert not {"activeDeadlineSeconds", "ttlSecondsAfterFinished"} & set(job["spec"])
    assert job["spec"]["backoffLimit"] == 20


def test_pods_run_as_non_root_without_privileges_and_retry_as_fresh_pods():
    job = manifests.job(plan(parse_experiment(DOCS["scoped-cpu"])), "none", "a")
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]} and ctx["runAsNonRoot"]
    assert ctx["readOnlyRootFilesystem"] is True  # writes go to the scratch emptyDir only (tests/test_worker_writes.py)
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    # Evictions and preemptions are not failures; a fatal exit (bad spec, data, device, corrupt
    # checkpoint, refusing store, crash loop) fails the Job at once instead of using up backoffLimit.
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2, 3, 4, 5, 6, 7]}},
    ]


def test_job_names_longer_than_63_characters_are_cut_and_hashed():
    assert job_name("exp", "ksmote", "a") == "exp-ksmote-a"
    full = "e" * 40 + "-ksmote-" + "c" * 40
    name = job_name("e" * 40, "ksmote", "c" * 40)
    assert name == full[:54] + "-" + hashlib.sha256(full.encode()).hexdigest()[:8]
    assert len(name) == 63
    assert job_name("e" * 40, "ksmote", "c" * 39 + "d") != name  # same cut, different hash


def test_config_map_holds_the_spec_and_it_parses_back_equal():
    exp = parse_experiment(DOCS["scoped-gpu-full"])
    cm = manifests.config_map(plan(exp))
    assert cm["metadata"]["name"] == "exp-spec"
    assert parse_experiment(yaml.safe_load(cm["data"]["spec.yaml"])) == exp


def test_client_secret_values_decode_from_the_api_form():
    secret = manifests.client_secret(plan(parse_experiment(DOCS["scoped-cpu"])), "a", "p2pkuser", "s3cr3t")
    assert manifests.secret_values(secret) == {"accessKey": "p2pkuser", "secretKey": "s3cr3t"}
    api_form = {"data": {"accessKey": "cDJwa3VzZXI=", "secretKey": "czNjcjN0"}}  # base64, as read back
    assert manifests.secret_values(api_form) == {"accessKey": "p2pkuser", "secretKey": "s3cr3t"}


@pytest.mark.parametrize(
    "kubernetes, topology, path, words",
    [
        ({"s3": {"credentialsSecret": "x"}}, {"kind": "ring"}, "spec.kubernetes.s3.endpoint", "required on Kubernetes"),
        ({"s3": {"endpoint": "m:9000"}}, {"kind": "ring"}, "spec.kubernetes.s3", "adminSecret"),
    ],
)
def test_plan_rejects_what_only_a_kubernetes_run_needs(kubernetes, topology, path, words):
    doc = experiment()
    doc["spec"]["kubernetes"] = kubernetes
    doc["spec"]["topology"] = topology
    with pytest.raises(InvalidSpec) as info:
        plan(parse_experiment(doc))
    assert [(p, words in m) for p, m in info.value.errors] == [(path, True)]


@pytest.mark.parametrize("dataset, path, words", [
    ({"kind": "builtin", "shards": "shards/exp"}, "spec.dataset.shards", "'store' (the experiment's store) or an absolute path"),
    ({"kind": "nbaiot", "path": "data/N-BaIoT"}, "spec.dataset.path", "an absolute path in the pod"),
])
def test_plan_rejects_data_paths_a_pod_cannot_reach(dataset, path, words):
    doc = experiment()
    doc["spec"]["dataset"] = dataset
    with pytest.raises(InvalidSpec) as info:
        plan(parse_experiment(doc))
    assert [(p, words in m) for p, m in info.value.errors] == [(path, True)]
    for fine in ({**dataset, "shards": "store"}, {**dataset, "shards": "/data/shards"}):
        doc["spec"]["dataset"] = {k: v for k, v in fine.items() if k != "path"} if fine["kind"] == "builtin" else fine
        plan(parse_experiment(doc))


def test_plan_has_methods_clients_and_the_neighbour_sets():
    p = plan(parse_experiment(experiment(clients=("a", "b", "c", "d"), methods=("ksmote",))))
    assert (p.methods, p.clients) == (["ksmote"], ["a", "b", "c", "d"])
    assert p.neighbours == {"a": ["b", "d"], "b": ["a", "c"], "c": ["b", "d"], "d": ["a", "c"]}  # a ring
