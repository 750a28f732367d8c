"""Every file in examples/ is a valid experiment, and together they cover the paper's §5.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2p_job.peer import method_rule
from p2p_job.spec import load_experiment, resolved_method_name

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_experiment(path):
    exp = load_experiment(path)
    assert exp.spec.scenario.clients, f"{path.name}: the preset gave no clients"
    if exp.spec.dataset.kind != "builtin":
        assert not Path(exp.spec.dataset.path).is_absolute(), f"{path.name}: dataset.path should be relative to the file"


def test_examples_cover_every_experiment_of_section_5_2():
    presets = {load_experiment(p).spec.scenario.preset for p in EXAMPLES} - {None}  # attack-*.yaml spell their clients out
    assert presets == {
        "nbaiot-5.2.1",
        "nbaiot-5.2.2",
        "botiot-5.2.2",
        "nbaiot-5.2.3",
        "nbaiot-5.2.4",
        "botiot-5.2.4",
        "builtin-5.2.4",
    }


def test_experiment_5_2_1_compares_central_fedavg_with_p2p():
    (path,) = [p for p in EXAMPLES if "5.2.1" in p.name]
    exp = load_experiment(path)
    assert sorted(method_rule(exp, m) for m in exp.spec.methods) == ["fedavg", "p2p"]
    assert {m.rebalancing for m in exp.spec.methods} == {"none"}


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "5.2.2" in p.name or "5.2.3" in p.name or "5.2.4" in p.name], ids=lambda p: p.name)
def test_rebalancing_experiments_compare_ksmote_with_every_baseline(path):
    exp = load_experiment(path)
    assert {m.rebalancing for m in exp.spec.methods} == {"none", "random-over", "random-under", "smote", "ksmote"}


def test_quickstart_runs_on_builtin_non_iid_data():
    exp = load_experiment(Path(__file__).parent.parent / "examples" / "quickstart.yaml")
    assert exp.spec.dataset.kind == "builtin" and exp.spec.scenario.kind == "non-iid"
    assert [resolved_method_name(m, exp.spec.aggregation.rule) for m in exp.spec.methods] == ["none", "smote", "ksmote"]
    assert exp.spec.scenario.global_test is not None


def test_attack_examples_name_one_adversary_among_honest_clients():
    attacks = [p for p in EXAMPLES if p.name.startswith("attack-")]
    assert len(attacks) >= 2
    for path in attacks:
        exp = load_experiment(path)
        (adversary,) = exp.spec.adversaries
        assert adversary.client in {c.name for c in exp.spec.scenario.clients}


def test_the_real_data_example_cuts_its_shards_from_the_shipped_fixtures():
    """examples/nbaiot-real-5.2.4.yaml runs from a clone: its data are the fixtures (linked),
    laid out as N-BaIoT, and each client log-compresses before min-max scaling."""
    from p2p_job.scenarios import build_shards

    path = Path(__file__).parent.parent / "examples" / "nbaiot-real-5.2.4.yaml"
    exp = load_experiment(path)
    assert exp.spec.dataset.preprocessing.transforms[0].transform == "signed-log"
    shards = build_shards(exp, path.parent)
    assert len(shards.feature_names) == 115
    for name, kind in (("client-a", "gafgyt/scan"), ("client-b", "gafgyt/tcp"), ("client-c", "gafgyt/udp")):
        shard = shards.clients[name]
        assert shard.train.attack_kinds == {kind: 5} and shard.train.counts == {"benign": 65, "malicious": 5}
        assert shard.train.X.min() == 0.0 and shard.train.X.max() == 1.0  # quantile: [0, 1]
    assert shards.clients["client-a"].global_test.attack_kinds == {"gafgyt/scan": 50, "gafgyt/tcp": 50, "gafgyt/udp": 50}


def test_the_unseen_attacks_example_gives_each_client_one_family_and_tests_on_all():
    exp = load_experiment(Path(__file__).parent.parent / "examples" / "builtin-unseen-attacks.yaml")
    assert [c.malicious_groups for c in exp.spec.scenario.clients] == [["family-0"], ["family-1"], ["family-2"]]
    assert exp.spec.scenario.global_test.malicious_kinds == {"family-0": 60, "family-1": 60, "family-2": 60}
