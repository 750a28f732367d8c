"""The p2pk Helm chart: lint, render with every values file, validate what it renders.

Built-in objects are checked with kubernetes-validate (strict, Kubernetes 1.30); every
P2PExperiment against the CRD's openAPIV3Schema with jsonschema and with the project's own
spec model (p2p_job.spec.parse_experiment)."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from helmchart import CHART, KUBE_VERSION, VALUES_FILES, VALUES_IDS, hooks, of_kind, one, release_objects
from p2p_job.spec import API_GROUP, InvalidSpec, parse_experiment

#: Groups of custom resources the chart renders, validated by their own schemas below.
CUSTOM_GROUPS = {API_GROUP, "monitoring.coreos.com"}
PODMONITOR_API = "monitoring.coreos.com/v1/PodMonitor"

values_files = pytest.mark.parametrize("values_file", VALUES_FILES, ids=VALUES_IDS)


def example(name: str):
    return CHART / "examples" / f"{name}-values.yaml"


def chart_values(values_file) -> dict:
    """The values helm uses: the chart's defaults overlaid (top level) with the file's."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if values_file:
        values.update(yaml.safe_load(values_file.read_text()))
    return values


@values_files
def test_lint_strict(helm, values_file):
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", str(values_file)]
    proc = helm.run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@values_files
def test_builtin_objects_are_valid_kubernetes_1_30(render, values_file):
    # PodMonitor rendering forced, so that every template is exercised.
    objects = render(values_file, "--set", "monitoring.podMonitor.force=true")
    builtin = [o for o in objects if o["apiVersion"].split("/")[0] not in CUSTOM_GROUPS]
    assert {"Deployment", "ServiceAccount", "ConfigMap"} <= {o["kind"] for o in builtin}
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc}")


@values_files
def test_experiments_match_the_crd_and_the_spec_model(render, crd, crd_validator, values_file):
    experiments = of_kind(render(values_file), "P2PExperiment")
    assert [e["metadata"]["name"] for e in experiments] == [
        e["name"] for e in chart_values(values_file)["experiments"]
    ]
    served = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
    for exp in experiments:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator.iter_errors(exp)]
        assert not errors, f"{exp['metadata']['name']} does not match the CRD schema: {errors}"
        group, version = exp["apiVersion"].split("/")
        assert group == crd["spec"]["group"] and version in served
        parse_experiment(exp, source=f"experiment {exp['metadata']['name']}")


@pytest.mark.parametrize(
    "override, path",
    [
        ("experiments[0].spec.rounds=0", "spec.rounds"),
        ("experiments[0].spec.aggregation.updateProbability=0", "spec.aggregation.updateProbability"),
        ("experiments[0].spec.kubernetes.gpus=-1", "spec.kubernetes.gpus"),
        ("experiments[0].spec.topology.kind=star", "spec.topology.kind"),
    ],
)
def test_crd_schema_and_spec_model_reject_a_bad_experiment(render, crd_validator, override, path):
    (exp,) = of_kind(render(example("gpu-minio"), "--set", override), "P2PExperiment")
    assert [".".join(map(str, e.absolute_path)) for e in crd_validator.iter_errors(exp)] == [path]
    with pytest.raises(InvalidSpec) as raised:
        parse_experiment(exp)
    assert [p for p, _ in raised.value.errors] == [path]


def test_an_example_starts_experiments(render):
    # Every example exists to start something: the chart then does end to end.
    for values_file in VALUES_FILES[1:]:
        assert of_kind(render(values_file), "P2PExperiment"), values_file.name


def test_experiment_spec_merges_minio_then_defaults_then_its_own(render):
    by_name = {e["metadata"]["name"]: e for e in of_kind(render(example("gpu-minio")), "P2PExperiment")}
    kube = by_name["nbaiot-like-noniid"]["spec"]["kubernetes"]
    # From the chart's MinIO: endpoint, bucket and the admin Secret of the same release.
    assert kube["s3"] == {"endpoint": "exp-p2pk-minio.p2pk.svc:9000", "bucket": "p2pk", "adminSecret": "exp-p2pk-minio"}
    # From experimentDefaults.
    assert kube["gpus"] == 1 and kube["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert by_name["nbaiot-like-noniid"]["metadata"]["labels"]["team"] == "iot-security"

    by_name = {e["metadata"]["name"]: e for e in of_kind(render(example("cluster-wide")), "P2PExperiment")}
    # The experiment's own value wins, also over a default of 0 (sprig's merge would keep it).
    assert by_name["balanced-iid-local"]["spec"]["kubernetes"]["gpus"] == 1
    assert by_name["imbalanced-iid-ring"]["spec"]["kubernetes"]["gpus"] == 0
    assert by_name["imbalanced-iid-ring"]["spec"]["kubernetes"]["s3"]["credentialsSecret"] == "p2pk-s3"


def test_own_false_and_zero_override_defaults(render):
    objects = render(
        None,
        "--set", "experimentDefaults.spec.kubernetes.gpus=2",
        "--set", "experimentDefaults.spec.kubernetes.purgeOnDelete=true",
        "--set", "experiments[0].name=e1",
        "--set", "experiments[0].spec.rounds=3",
        "--set", "experiments[0].spec.kubernetes.gpus=0",
        "--set", "experiments[0].spec.kubernetes.purgeOnDelete=false",
        "--set", "experiments[1].name=e2",
        "--set", "experiments[1].spec.rounds=3",
    )
    spec = {e["metadata"]["name"]: e["spec"] for e in of_kind(objects, "P2PExperiment")}
    assert spec["e1"] == {"rounds": 3, "kubernetes": {"gpus": 0, "purgeOnDelete": False}}
    assert spec["e2"] == {"rounds": 3, "kubernetes": {"gpus": 2, "purgeOnDelete": True}}


def test_large_integers_survive_the_merge(render):
    objects = render(None, "--set", "experiments[0].name=e1", "--set", "experiments[0].spec.seed=2147483647",
                     "--set", "experiments[0].spec.rounds=99999")
    assert one(objects, "P2PExperiment")["spec"] == {"seed": 2147483647, "rounds": 99999}


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def test_operator_rbac_is_least_privilege_and_namespaced_by_default(render):
    objects = release_objects(render(None))
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "p2pk"
    # Hand-derived from the operator's calls (docs/operator.md, "RBAC"): kopf reads, lists,
    # watches and patches experiments and their status, posts events; p2pk_operator.cluster creates and reads ConfigMaps, Secrets
    # and Jobs and lists Jobs. Nothing is deleted (ownerReferences do that).
    assert rules_of(role) == {
        ("p2pk.io", "p2pexperiments"): {"get", "list", "watch", "patch"},
        ("p2pk.io", "p2pexperiments/status"): {"get", "patch"},
        ("p2pk.io", "p2pexperiments/finalizers"): {"update"},
        ("batch", "jobs"): {"create", "get", "list"},
        ("", "configmaps"): {"create", "get"},
        ("", "secrets"): {"create", "get"},
        ("", "events"): {"create"},
    }
    binding = one(objects, "RoleBinding")
    sa = one(objects, "ServiceAccount")
    deployment = one(objects, "Deployment")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "p2pk"}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_covers_every_kind_the_operator_calls(render):
    from p2pk_operator.cluster import _ENDPOINTS

    granted = {resource for _group, resource in rules_of(one(release_objects(render(None)), "Role"))}
    assert {kind.lower() + "s" for kind in _ENDPOINTS} <= granted


SECRET_RULES = {("", "secrets"): {"create", "get"}}


def test_cluster_wide_operator_gets_a_cluster_role_with_the_same_rules_but_secrets(render):
    """Secrets are never granted cluster-wide: a Role per namespace of operator.secretNamespaces
    and the release's holds them, bound to the operator's ServiceAccount."""
    namespaced = one(release_objects(render(None)), "Role")
    objects = release_objects(render(example("cluster-wide")))
    cluster_role = one(objects, "ClusterRole")
    assert "namespace" not in cluster_role["metadata"]
    assert rules_of(cluster_role) == {k: v for k, v in rules_of(namespaced).items() if k not in SECRET_RULES}
    assert one(objects, "ClusterRoleBinding")["roleRef"]["kind"] == "ClusterRole"
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["lab", "p2pk"]  # the example's secretNamespaces + the release's
    assert all(rules_of(r) == SECRET_RULES for r in roles)
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["lab", "p2pk"]
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "p2pk"}] and b["roleRef"]["kind"] == "Role" for b in bindings)
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args


def test_operator_runs_p2pk_operator_non_root_with_a_liveness_probe(render):
    pod = one(render(None), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/p2pk/operator:0.1.0"
    assert container["args"] == ["--namespace=$(POD_NAMESPACE)", "--liveness=http://0.0.0.0:8080/healthz", "--deletion-timeout=120"]
    assert {"name": "health", "containerPort": 8080} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"]


def test_pushgateway_reaches_the_experiments_the_operator_reads(render):
    (exp,) = of_kind(render(example("gpu-minio")), "P2PExperiment")
    assert exp["spec"]["runtime"] == {"pushgateway": "prometheus-pushgateway.monitoring.svc:9091",
                                      "device": "cuda", "roundTimeoutSeconds": 300}
    for exp in of_kind(render(example("cluster-wide")), "P2PExperiment"):
        assert "pushgateway" not in exp["spec"].get("runtime", {})

    # The operator gets it too, as the default for experiments applied without one.
    args = one(render(example("gpu-minio")), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--pushgateway=prometheus-pushgateway.monitoring.svc:9091" in args
    args = one(render(example("cluster-wide")), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--pushgateway")]


def test_minio_statefulset_service_and_generated_secret(render):
    objects = release_objects(render(example("gpu-minio")))
    sts, svc, secret = one(objects, "StatefulSet"), one(objects, "Service"), one(objects, "Secret")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not container["image"].endswith(":latest") and ":RELEASE." in container["image"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs == {
        "MINIO_ROOT_USER": {"name": secret["metadata"]["name"], "key": "accessKey"},
        "MINIO_ROOT_PASSWORD": {"name": secret["metadata"]["name"], "key": "secretKey"},
    }
    assert set(secret["data"]) == {"accessKey", "secretKey"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The bucket is made before the pod can be Ready.
    assert "mb --ignore-existing" in container["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert {e["name"]: e.get("value") for e in container["env"]}["MINIO_BUCKET"] == "p2pk"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"] == sts["spec"]["template"]["metadata"]["labels"]
    assert pod["securityContext"]["runAsNonRoot"]


def test_minio_secret_is_looked_up_so_upgrades_keep_it():
    template = (CHART / "templates" / "minio" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template


def test_minio_existing_secret_is_used_and_none_generated(render):
    objects = release_objects(render(example("gpu-minio"), "--set", "minio.existingSecret=my-minio"))
    assert not of_kind(objects, "Secret")
    (container,) = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e} == {"my-minio"}
    assert one(objects, "P2PExperiment")["spec"]["kubernetes"]["s3"]["adminSecret"] == "my-minio"


def test_no_minio_by_default(render):
    kinds = {o["kind"] for o in render(None)}
    assert not kinds & {"StatefulSet", "Service", "Secret", "P2PExperiment"}


def test_podmonitor_only_when_the_api_is_served_or_forced(render):
    assert not of_kind(render(None), "PodMonitor")
    served = one(render(None, "--api-versions", PODMONITOR_API), "PodMonitor")
    assert served == one(render(None, "--set", "monitoring.podMonitor.force=true"), "PodMonitor")
    assert not of_kind(render(None, "--api-versions", PODMONITOR_API, "--set", "monitoring.podMonitor.enabled=false"), "PodMonitor")
    spec = served["spec"]
    # Worker pods carry p2pk.io/experiment (set by the operator) and serve metrics on port "metrics".
    assert spec["selector"] == {"matchExpressions": [{"key": "p2pk.io/experiment", "operator": "Exists"}]}
    assert spec["namespaceSelector"] == {"matchNames": ["p2pk"]}
    assert spec["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    cluster_wide = one(render(example("cluster-wide")), "PodMonitor")
    assert cluster_wide["spec"]["namespaceSelector"] == {"any": True}
    assert cluster_wide["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap_for_the_grafana_sidecar(render):
    dashboard = json.loads((CHART / "dashboards" / "p2pk.json").read_text())
    cm = one(release_objects(render(None)), "ConfigMap")  # the only ConfigMap without experiments
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["p2pk.json"]) == dashboard
    custom = one(release_objects(render(example("cluster-wide"), "--set", "monitoring.dashboard.labelKey=dash",
                        "--set", "monitoring.dashboard.labelValue=yes")), "ConfigMap")
    assert custom["metadata"]["labels"]["dash"] == "yes" and "grafana_dashboard" not in custom["metadata"]["labels"]
    assert custom["metadata"]["namespace"] == "monitoring"
    assert custom["metadata"]["annotations"] == {"grafana_folder": "P2PK"}
    assert not of_kind(release_objects(render(None, "--set", "monitoring.dashboard.enabled=false")), "ConfigMap")


def test_helm_test_hook_waits_for_every_experiment_with_read_only_rights(render):
    test_hooks = hooks(render(example("cluster-wide")), "test")
    assert {o["kind"] for o in test_hooks} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Pod"}
    pod = one(test_hooks, "Pod")
    (container,) = pod["spec"]["containers"]
    assert container["args"][2:] == ["imbalanced-iid-ring", "balanced-iid-local"]
    assert container["args"][:2] == ["--namespace=p2pk", "--timeout=900"]
    assert pod["spec"]["serviceAccountName"] == one(test_hooks, "ServiceAccount")["metadata"]["name"]
    assert rules_of(one(test_hooks, "Role")) == {("p2pk.io", "p2pexperiments"): {"get"}}
    script = one(test_hooks, "ConfigMap")["data"]["check_running.py"]
    assert script == (CHART / "files" / "check_running.py").read_text().rstrip("\n")
    # No experiments, nothing to wait for: no test hook.
    assert not hooks(render(None), "test")


def test_uninstall_first_deletes_every_watched_experiment_with_delete_only_rights(render):
    cleanup = hooks(render(None), "pre-delete")
    assert {o["kind"] for o in cleanup} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"}
    job = one(cleanup, "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "/hooks/delete_experiments.py"]
    # Every experiment of the namespace the operator watches, not only the release's.
    assert container["args"] == ["--namespace=p2pk", "--timeout=300"]
    assert job["spec"]["activeDeadlineSeconds"] == 420
    assert pod["serviceAccountName"] == one(cleanup, "ServiceAccount")["metadata"]["name"]
    assert rules_of(one(cleanup, "Role")) == {("p2pk.io", "p2pexperiments"): {"list", "delete"}}
    script = one(cleanup, "ConfigMap")["data"]["delete_experiments.py"]
    assert script == (CHART / "files" / "delete_experiments.py").read_text().rstrip("\n")
    # The RBAC exists before the Job runs; every hook object goes once it succeeded.
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in cleanup}
    assert max(weights[k] for k in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap")) < weights["Job"]
    assert {o["metadata"]["annotations"]["helm.sh/hook-delete-policy"] for o in cleanup} == {"before-hook-creation,hook-succeeded"}
    assert not hooks(render(None, "--set", "operator.cleanup.enabled=false"), "pre-delete")


def test_a_cluster_wide_operators_uninstall_deletes_the_experiments_of_every_namespace(render):
    cleanup = hooks(render(example("cluster-wide")), "pre-delete")
    assert {o["kind"] for o in cleanup} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Job"}
    (container,) = one(cleanup, "Job")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["--all-namespaces", "--timeout=300"]
    assert rules_of(one(cleanup, "ClusterRole")) == {("p2pk.io", "p2pexperiments"): {"list", "delete"}}
    binding = one(cleanup, "ClusterRoleBinding")
    assert binding["roleRef"]["kind"] == "ClusterRole" and "namespace" not in binding["metadata"]


def test_the_operator_bounds_a_deletion_below_the_uninstall_hooks_wait(helm, render):
    (container,) = one(release_objects(render(None, "--set", "operator.deletionTimeoutSeconds=90")),
                       "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--deletion-timeout=90" in container["args"]
    proc = helm.run("template", "exp", str(CHART), "--set", "operator.deletionTimeoutSeconds=300")
    assert proc.returncode != 0
    assert "operator.cleanup.timeoutSeconds must be longer than operator.deletionTimeoutSeconds" in proc.stderr


@pytest.mark.parametrize(
    "override, complaint",
    [
        ("operator.replicas=2", "additional properties 'replicas' not allowed"),
        ("experiments[0].name=Not_A_Label", "does not match pattern"),
        ("experiments[0].rounds=3", "missing properties 'name', 'spec'"),
        ("monitoring.pushgateway=http://pgw:9091", "does not match pattern"),
        ("minio.persistence.accessModes[0]=ReadEverything", "/minio/persistence/accessModes/0"),
    ],
)
def test_values_schema_rejects_bad_values(helm, override, complaint):
    proc = helm.run("template", "exp", str(CHART), "--set", override)
    assert proc.returncode != 0
    assert complaint in proc.stderr, proc.stderr


def test_notes_tell_how_to_watch_the_run(helm):
    proc = helm.run("install", "exp", str(CHART), "--dry-run=client", "--namespace", "p2pk",
                    "-f", str(example("gpu-minio")))
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    for command in (
        "kubectl -n p2pk get p2px -w",
        "kubectl -n p2pk describe p2px nbaiot-like-noniid",
        "kubectl -n p2pk logs -l p2pk.io/experiment=nbaiot-like-noniid",
        "helm test exp -n p2pk --logs",
        "kubectl -n p2pk logs deploy/exp-p2pk-operator",
    ):
        assert command in notes


def test_allowlists_become_operator_flags(render):
    objects = render(None, "--set", "operator.allowedImages={registry.lab/p2pk/worker:*,ghcr.io/p2pk/worker:0.1.0}",
                     "--set", "operator.allowedServiceAccounts={p2pk-worker}")
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--allowed-")] == [
        "--allowed-image=registry.lab/p2pk/worker:*", "--allowed-image=ghcr.io/p2pk/worker:0.1.0",
        "--allowed-service-account=p2pk-worker"]
    from p2p_job.cli import build_parser

    parsed = build_parser().parse_args(["operator", *args[:1], *[a for a in args if a.startswith("--allowed-")]])
    assert parsed.allowed_image == ["registry.lab/p2pk/worker:*", "ghcr.io/p2pk/worker:0.1.0"]


def test_the_minio_secret_is_labelled_for_the_operator(render):
    secret = one(render(None, "--set", "minio.enabled=true"), "Secret")
    from p2pk_operator.admission import CREDENTIALS_LABEL, secret_refusal

    assert secret["metadata"]["labels"][CREDENTIALS_LABEL] == "true" and secret_refusal(secret, "chart") is None


def test_network_policy_lets_workers_reach_only_the_store_pushgateway_and_dns(render):
    assert not of_kind(render(None), "NetworkPolicy")
    objects = render(None, "--set", "networkPolicy.enabled=true", "--set", "minio.enabled=true",
                     "--set", "monitoring.pushgateway=pgw.monitoring:9091",
                     "--set-json", 'networkPolicy.pushgateway.to=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]')
    policy = one(objects, "NetworkPolicy")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchExpressions": [{"key": "p2pk.io/experiment", "operator": "Exists"}]}
    assert spec["policyTypes"] == ["Egress"]  # egress only: scraping /metrics still works
    dns, store, pushgateway = spec["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    minio_pods = one(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]
    assert store == {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "p2pk"}}, "podSelector": {"matchLabels": minio_pods}}],
                     "ports": [{"protocol": "TCP", "port": 9000}]}
    assert pushgateway["ports"] == [{"protocol": "TCP", "port": 9091}]
    # Every Job the operator makes is selected (its pods carry p2pk.io/experiment); the chart's own pods are not.
    from p2pk_operator import manifests

    exp = of_kind(render(example("gpu-minio")), "P2PExperiment")[0]
    exp["metadata"]["namespace"] = "p2pk"
    p = manifests.plan(parse_experiment(exp))
    job = manifests.job(p, p.methods[0], p.clients[0])
    assert "p2pk.io/experiment" in job["spec"]["template"]["metadata"]["labels"]
    for pod in (o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")):
        assert "p2pk.io/experiment" not in pod["metadata"].get("labels", {})


@pytest.mark.parametrize("extra, complaint", [
    ((), "networkPolicy.store.to: give the store's NetworkPolicyPeers"),
    (("--set", "minio.enabled=true", "--set", "monitoring.pushgateway=pgw:9091"), "networkPolicy.pushgateway.to: give the Pushgateway's NetworkPolicyPeers"),
])
def test_network_policy_without_peers_is_refused_naming_the_value(helm, extra, complaint):
    proc = helm.run("template", "exp", str(CHART), "--set", "networkPolicy.enabled=true", *extra)
    assert proc.returncode != 0 and complaint in proc.stderr, proc.stderr


def test_network_policy_with_an_external_store_in_listed_namespaces(render):
    objects = render(None, "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.namespaces={lab,prod}",
                     "--set-json", 'networkPolicy.store.to=[{"ipBlock":{"cidr":"10.0.5.0/24"}}]', "--set", "networkPolicy.store.ports={443}")
    policies = of_kind(objects, "NetworkPolicy")
    assert [p["metadata"]["namespace"] for p in policies] == ["lab", "prod"]
    assert policies[0]["spec"]["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.0.5.0/24"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    assert len(policies[0]["spec"]["egress"]) == 2  # no Pushgateway rule without one
