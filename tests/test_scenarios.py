"""The four §3.1 scenarios (p2p_job.scenarios), their spec rules and the presets."""

from __future__ import annotations


import numpy as np
import pytest
import yaml
from data_helpers import SMALL_BUILTIN, client, experiment, sample_csv, traceable_csv

from p2p_job import presets
from p2p_job.datasets import DataError
from p2p_job.scenarios import Shards, build_shards
from p2p_job.spec import InvalidSpec, dump_experiment, parse_experiment

DEVICES = {"cam": (200, 40), "bell": (150, 30), "plug": (100, 20)}


@pytest.fixture
def traced(tmp_path):
    """A tabular dataset whose ``row_id`` feature names the row, and its frame; the paper's
    min-max scaling (``auto: false``), whose fitted range shows which rows it saw."""
    frame = traceable_csv(tmp_path / "rows.csv", DEVICES)
    dataset = {"kind": "tabular", "path": str(tmp_path / "rows.csv"), "labelColumn": "label", "benignValues": ["normal"], "groupColumn": "device",
               "preprocessing": {"auto": False}}
    return dataset, frame


def row_ids(shards: Shards, name: str, split: str) -> np.ndarray:
    """The dataset rows of a split, from its raw ``row_id`` feature."""
    raw = getattr(shards.clients[name], split).raw
    return np.rint(raw[:, shards.feature_names.index("row_id")]).astype(int)


NON_IID = {
    "kind": "non-iid",
    "clients": [
        client("client-a", (50, 10), (20, 5), benign=["cam"], malicious=["cam"]),
        client("client-b", (40, 8), (20, 5), benign=["device=bell"], malicious=["device=bell"]),
    ],
    "globalTest": {"benign": 60, "malicious": 12},
}


def test_non_iid_rows_are_disjoint_from_their_groups_and_global_test_is_shared(traced):
    dataset, frame = traced
    shards = build_shards(parse_experiment(experiment(NON_IID, dataset)))
    used = {}
    for name, device in (("client-a", "cam"), ("client-b", "bell")):
        for split in ("train", "validation"):
            ids = row_ids(shards, name, split)
            assert set(frame.device[ids]) == {device}, (name, split)
            assert np.array_equal(frame.label[ids] == "attack", getattr(shards.clients[name], split).y == 1)
            used[name, split] = ids
    global_ids = row_ids(shards, "client-a", "global_test")
    assert np.array_equal(global_ids, row_ids(shards, "client-b", "global_test"))  # the same rows, scaled per client
    assert set(frame.device[global_ids]) <= {"cam", "bell"}  # from the union of the clients' groups
    every = np.concatenate([*used.values(), global_ids])
    assert len(np.unique(every)) == len(every)  # without replacement, disjoint across clients and splits
    assert {(name, split): getattr(shards.clients[name], split).counts for name, split in used} == {
        ("client-a", "train"): {"benign": 50, "malicious": 10},
        ("client-a", "validation"): {"benign": 20, "malicious": 5},
        ("client-b", "train"): {"benign": 40, "malicious": 8},
        ("client-b", "validation"): {"benign": 20, "malicious": 5},
    }
    assert shards.clients["client-a"].global_test.counts == {"benign": 60, "malicious": 12}


def _scaler(shard):
    return shard.preprocessor.pipeline.named_transformers_["numeric"].named_steps["scale"]


def test_scaler_is_fitted_on_the_clients_own_training_rows_only(traced):
    dataset, frame = traced
    shards = build_shards(parse_experiment(experiment(NON_IID, dataset)))
    features = frame[["row_id", "noise"]].to_numpy(np.float32)
    for name, shard in shards.clients.items():
        own_train = features[row_ids(shards, name, "train")]
        assert np.array_equal(_scaler(shard).data_min_, own_train.min(0)) and np.array_equal(_scaler(shard).data_max_, own_train.max(0))
        assert shard.train.X.min(0).tolist() == [0.0, 0.0] and shard.train.X.max(0).tolist() == [1.0, 1.0]
        np.testing.assert_array_equal(shard.train.raw, own_train)
        np.testing.assert_allclose(shard.validation.X, shard.preprocessor.transform(shard.validation.raw))
    # Other validation and global test rows leave every scaler where it was.
    changed = {**NON_IID, "clients": [dict(c, validation={"benign": 30, "malicious": 2}) for c in NON_IID["clients"]], "globalTest": {"benign": 10, "malicious": 3}}
    again = build_shards(parse_experiment(experiment(changed, dataset)))
    for name, shard in again.clients.items():
        assert not np.array_equal(row_ids(again, name, "validation"), row_ids(shards, name, "validation"))
        assert np.array_equal(_scaler(shard).data_min_, _scaler(shards.clients[name]).data_min_)
        assert np.array_equal(_scaler(shard).data_max_, _scaler(shards.clients[name]).data_max_)


def test_same_seed_same_shards_other_seed_other_rows(traced):
    dataset, _ = traced
    one, same, other = (build_shards(parse_experiment(experiment(NON_IID, dataset, seed=s))) for s in (3, 3, 4))
    for name in one.clients:
        for split in ("train", "validation", "global_test"):
            a, b = getattr(one.clients[name], split), getattr(same.clients[name], split)
            assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
        assert not np.array_equal(row_ids(one, name, "train"), row_ids(other, name, "train"))


def test_too_many_rows_names_client_split_class_and_count(traced):
    dataset, _ = traced
    greedy = {**NON_IID, "clients": [NON_IID["clients"][0], client("client-b", (40, 8), (20, 30), benign=["bell"], malicious=["bell"])]}
    # bell has 30 malicious rows; client-b's training took 8
    with pytest.raises(DataError, match=r"client 'client-b', validation: needs 30 malicious rows but only 22 are available"):
        build_shards(parse_experiment(experiment(greedy, dataset)))
    # cam 200 + bell 150 benign rows, less the 50 + 20 and 40 + 20 the clients took
    with pytest.raises(DataError, match=r"globalTest \(from the clients' groups\): needs 1000 benign rows but only 220 are available"):
        build_shards(parse_experiment(experiment({**NON_IID, "globalTest": {"benign": 1000, "malicious": 1}}, dataset)))
    wrong = {**NON_IID, "clients": [NON_IID["clients"][0], client("client-b", (1, 1), (1, 1), benign=["door"])]}
    with pytest.raises(DataError, match=r"client 'client-b', benignGroups: group selector 'door' matches no row"):
        build_shards(parse_experiment(experiment(wrong, dataset)))


@pytest.mark.parametrize(
    "preset, minority",
    [
        ("builtin-5.2.1", {"client-a": None, "client-b": None, "client-c": None}),
        ("builtin-5.2.2", {"client-a": 1, "client-b": 1, "client-c": 1}),
        ("builtin-5.2.3", {"client-a": 0, "client-b": 0, "client-c": 1}),
        ("builtin-5.2.4", {"client-a": 1, "client-b": 1, "client-c": 1}),
    ],
)
def test_builtin_presets_give_each_client_its_counts_and_minority(preset, minority):
    exp = parse_experiment(experiment({"preset": preset}))
    shards = build_shards(exp)
    assert list(shards.clients) == [c.name for c in exp.spec.scenario.clients]
    for spec in exp.spec.scenario.clients:
        shard = shards.clients[spec.name]
        assert shard.train.counts == spec.train.model_dump() and shard.validation.counts == spec.validation.model_dump()
        benign, malicious = shard.train.counts["benign"], shard.train.counts["malicious"]
        assert (None if benign == malicious else int(malicious < benign)) == minority[spec.name]
    has_global = preset == "builtin-5.2.4"
    assert all((s.global_test is not None) == has_global for s in shards.clients.values())


def test_builtin_5_2_4_gives_each_client_one_device():
    """The quickstart's layout: device-i's rows only on client i; a global test from all three."""
    exp = parse_experiment(experiment({"preset": "builtin-5.2.4"}))
    assert [(c.benign_groups, c.malicious_groups) for c in exp.spec.scenario.clients] == [([f"device-{i}"], [f"device-{i}"]) for i in range(3)]
    assert all(20 <= c.train.malicious <= 60 and 1000 <= c.train.benign <= 2000 for c in exp.spec.scenario.clients)
    assert exp.spec.scenario.global_test.model_dump(exclude_none=True) == {"benign": 900, "malicious": 90}


def test_iid_clients_share_one_pool(traced):
    dataset, frame = traced
    scenario = {"kind": "imbalanced-iid", "clients": [client("a", (100, 10), (50, 5)), client("b", (100, 10), (50, 5))]}
    shards = build_shards(parse_experiment(experiment(scenario, dataset)))
    devices = set(frame.device[np.concatenate([row_ids(shards, n, "train") for n in ("a", "b")])])
    assert devices == set(DEVICES)  # pooled rows: every device appears


# --------------------------------------------------------------------------- spec rules


def _error(scenario: dict, dataset: dict | None = None) -> str:
    with pytest.raises(InvalidSpec) as err:
        parse_experiment(experiment(scenario, dataset))
    return str(err.value)


@pytest.mark.parametrize(
    "scenario, message",
    [
        ({"kind": "balanced-iid", "clients": [client("a", (100, 40), (1, 1))]}, "client 'a' trains on 100 benign vs 40 malicious rows"),
        ({"kind": "imbalanced-iid", "clients": [client("a", (100, 5), (1, 1)), client("b", (5, 100), (1, 1))]}, "every client needs the same minority class"),
        ({"kind": "imbalanced-iid", "clients": [client("a", (10, 10), (1, 1))]}, "'a': 'neither (balanced)'"),
        ({"kind": "mixed-iid", "clients": [client("a", (100, 5), (1, 1)), client("b", (90, 5), (1, 1))]}, "benign on some clients and malicious on others"),
        ({"kind": "mixed-iid", "clients": [client("a", (100, 5), (1, 1), benign=["x"]), client("b", (5, 90), (1, 1))]}, "give them all the same benignGroups"),
        ({"kind": "non-iid", "clients": [client("a", (100, 5), (1, 1)), client("b", (90, 5), (1, 1))], "globalTest": {"benign": 1, "malicious": 1}}, "non-iid clients draw from different groups"),
        ({"kind": "non-iid", "clients": [client("a", (100, 5), (1, 1), benign=["x"])]}, "globalTest is required"),
        ({"preset": "builtin-5.2.9"}, "unknown preset 'builtin-5.2.9'; presets are ['botiot-5.2.2'"),
        ({"preset": "builtin-5.2.4", "kind": "mixed-iid"}, "scenario.kind conflicts with preset 'builtin-5.2.4'"),
        ({"preset": "builtin-5.2.4", "clients": [client("a", (1, 1), (1, 1))]}, "scenario.clients conflicts with preset"),
        ({"kind": "balanced-iid", "scale": 0.5, "clients": [client("a", (1, 1), (1, 1))]}, "scenario.scale applies to a preset only"),
        ({"kind": "balanced-iid", "clients": [client("a", (0, 0), (1, 1))]}, "spec.scenario.clients[0]: client 'a' has no training rows"),
    ],
)
def test_scenario_rules_of_section_3_1(scenario, message):
    assert message in _error(scenario)


def test_valid_kinds_pass():
    for kind, counts in (("balanced-iid", [(100, 60), (60, 100)]), ("imbalanced-iid", [(5, 100), (9, 200)]), ("mixed-iid", [(5, 100), (100, 5)])):
        exp = parse_experiment(experiment({"kind": kind, "clients": [client(f"c{i}", c, (1, 1)) for i, c in enumerate(counts)]}))
        assert exp.spec.scenario.kind == kind


def test_preset_must_match_the_dataset_kind():
    assert "scenario.preset 'nbaiot-5.2.4' is written for dataset kind 'nbaiot', not 'builtin'" in _error({"preset": "nbaiot-5.2.4"})


def test_dataset_fields_other_kinds_do_not_read_are_refused():
    assert "dataset.devices: not used by dataset kind 'botiot'" in _error({"preset": "botiot-5.2.2"}, {"kind": "botiot", "path": "x.csv", "devices": ["cam"]})
    assert "dataset.labelColumn, dataset.path: not used by dataset kind 'builtin'" in _error({"preset": "builtin-5.2.1"}, {"path": "x", "labelColumn": "y"})


def test_every_preset_parses_and_round_trips_through_the_dumped_spec():
    datasets = {"builtin": None, "nbaiot": {"kind": "nbaiot", "path": "n"}, "botiot": {"kind": "botiot", "path": "b.csv"}}
    assert len(presets.available()) == 10
    for name, preset in presets.available().items():
        exp = parse_experiment(experiment({"preset": name}, datasets[preset.dataset]))
        assert exp.spec.scenario.kind == preset.scenario["kind"] and len(exp.spec.scenario.clients) == 3
        assert parse_experiment(yaml.safe_load(dump_experiment(exp))) == exp


def test_paper_tables_are_reproduced():
    """Table 1 (N-BaIoT and BoT-IoT), Table 2 and Table 3, client by client."""
    def table(name):
        exp = presets.expand(name)
        return [(c["train"]["benign"], c["train"]["malicious"], c["validation"]["benign"], c["validation"]["malicious"]) for c in exp["clients"]]

    assert table("nbaiot-5.2.2") == [(11821, 23, 17732, 208), (11821, 34, 17732, 312), (15762, 58, 23643, 521)]
    assert table("botiot-5.2.2") == [(79, 6815, 35, 4847), (90, 10905, 59, 4154), (68, 4089, 47, 5539)]
    assert table("nbaiot-5.2.3") == [(54, 2131, 151, 2150), (75, 2486, 64, 2458), (9721, 21, 19486, 30)]
    assert [row[:2] for row in table("nbaiot-5.2.4")] == [(11821, 23), (5590, 66), (7927, 102)]
    assert presets.expand("nbaiot-5.2.4")["globalTest"] == {"benign": 5067, "malicious": 37}
    assert [row[:2] for row in table("botiot-5.2.4")] == [(38, 3187), (47, 5775), (38, 6743)]
    assert presets.expand("botiot-5.2.4")["globalTest"] == {"benign": 52, "malicious": 10099}


def test_scale_shrinks_a_preset_keeping_every_class_present():
    scaled = parse_experiment(experiment({"preset": "nbaiot-5.2.2", "scale": 0.01}, {"kind": "nbaiot", "path": "n"})).spec.scenario
    assert [(c.train.benign, c.train.malicious, c.validation.benign, c.validation.malicious) for c in scaled.clients] == [
        (118, 1, 177, 2),  # 23 × 0.01 rounds to 0: kept at 1
        (118, 1, 177, 3),
        (158, 1, 236, 5),
    ]


def test_builtin_preset_runs_on_small_builtin_data_when_scaled():
    exp = parse_experiment(experiment({"preset": "builtin-5.2.4", "scale": 0.1}, SMALL_BUILTIN))
    shards = build_shards(exp)
    assert shards.clients["client-a"].train.counts == {"benign": 150, "malicious": 3}
    assert shards.feature_names == [f"f{j:03d}" for j in range(12)]


def test_nbaiot_5_2_4_preset_on_the_samples_under_the_papers_device_names(tmp_path):
    """Table 3's layout at 1 %, on real N-BaIoT rows laid out as the three devices it names."""
    attacks = {"Provision_PT_838_Security_Camera": "scan", "SimpleHome_XCS7_1002_WHT_Security_Camera": "thermostat_udp", "Danmini_Doorbell": "doorbell_udp"}
    for device, attack in attacks.items():
        (tmp_path / device / "gafgyt_attacks").mkdir(parents=True)
        sample_csv("benign_traffic", tmp_path / device / "benign_traffic.csv")
        sample_csv(attack, tmp_path / device / "gafgyt_attacks" / "udp.csv")
    exp = parse_experiment(experiment({"preset": "nbaiot-5.2.4", "scale": 0.01}, {"kind": "nbaiot", "path": str(tmp_path)}))
    shards = build_shards(exp)
    assert [s.train.counts for s in shards.clients.values()] == [
        {"benign": 118, "malicious": 1},  # 11821 and 23 × 1 %, at least one row per class
        {"benign": 56, "malicious": 1},
        {"benign": 79, "malicious": 1},
    ]
    assert shards.clients["client-a"].global_test.counts == {"benign": 51, "malicious": 1}
    assert len(shards.feature_names) == 115
