"""The operator's allowlists and its rule for Secrets, as pure functions."""

from __future__ import annotations

from operator_fakes import experiment, secret

from p2p_job.spec import parse_experiment
from p2pk_operator.admission import Admission, image_allowed, secret_refusal


def test_image_patterns_are_exact_or_a_prefix_before_a_final_star():
    patterns = ("registry.lab/p2pk/worker:*", "ghcr.io/p2pk/worker:0.1.0")
    assert image_allowed("registry.lab/p2pk/worker:0.2.0", patterns)
    assert image_allowed("registry.lab/p2pk/worker:0.2.0@sha256:" + "0" * 64, patterns)
    assert image_allowed("ghcr.io/p2pk/worker:0.1.0", patterns)
    assert not image_allowed("ghcr.io/p2pk/worker:0.1.0-evil", patterns)
    assert not image_allowed("registry.lab/p2pk/worker-evil:1", patterns)  # the ':' is part of the prefix
    assert not image_allowed("registry.lab/p2pk/worker", patterns)
    assert not image_allowed("x", ("registry.lab/*/worker:1",))  # a '*' elsewhere is literal


def test_empty_allowlists_allow_anything_and_no_service_account_is_always_allowed():
    exp = parse_experiment(experiment(image="anything:1", serviceAccountName="some-sa"))
    assert Admission().errors(exp) == []
    strict = Admission(images=("anything:1",), service_accounts=("other",))
    assert strict.errors(exp) == [("spec.kubernetes.serviceAccountName",
                                   "ServiceAccount 'some-sa' is not allowed by this operator; allowed: other (or none)")]
    assert strict.errors(parse_experiment(experiment(image="anything:1"))) == []  # the pods' default, without a token


def test_settings_come_from_flags_else_the_environment():
    env = {"P2PK_ALLOWED_IMAGES": " registry.lab/p2pk/worker:* ,ghcr.io/p2pk/worker:0.1.0,", "P2PK_ALLOWED_SERVICE_ACCOUNTS": "p2pk-worker"}
    assert Admission.from_settings(None, None, env) == Admission(("registry.lab/p2pk/worker:*", "ghcr.io/p2pk/worker:0.1.0"), ("p2pk-worker",))
    assert Admission.from_settings(["a:1"], ["sa"], env) == Admission(("a:1",), ("sa",))
    assert Admission.from_settings(None, None, {}) == Admission()


def test_only_secrets_labelled_for_the_operator_are_read():
    assert secret_refusal(secret("minio-admin", accessKey="k", secretKey="s"), "Secret lab/minio-admin") is None
    other = secret("minio-root", labelled=False, accessKey="k", secretKey="s")
    assert "Secret lab/minio-root is not meant for the p2pk operator" in secret_refusal(other, "Secret lab/minio-root")
    other["metadata"]["labels"] = {"p2pk.io/store-credentials": "false"}
    assert secret_refusal(other, "x") is not None
