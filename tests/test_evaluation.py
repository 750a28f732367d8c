"""Evaluation a researcher can trust: the FNR per attack kind (metrics, shards, results,
summary), the global test set's make-up from the spec, and sharing real rows only by choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import SMALL_BUILTIN, client, experiment

from p2p_job.cli import main
from p2p_job.datasets import DataError
from p2p_job.figures import roc_curves
from p2p_job.metrics import evaluate, fnr_by_kind
from p2p_job.model import build_model, load_model_state
from p2p_job.results import read_parquet, write_results
from p2p_job.scenarios import build_shards
from p2p_job.scores import decode_model, model_path, read_scores
from p2p_job.shards import kind_counts, read_shards, write_shards
from p2p_job.simulate import simulate
from p2p_job.spec import InvalidSpec, parse_experiment
from p2p_job.summary import UNSEEN, kind_summary, summary_markdown
from p2p_job.training import predict_scores

# --------------------------------------------------------------------------- metric


def test_fnr_by_kind_by_hand():
    y = np.array([0, 1, 1, 1, 1, 1, 0])
    scores = np.array([0.9, 0.1, 0.6, 0.5, 0.2, 0.7, 0.1])
    kinds = np.array(["benign", "udp", "udp", "scan", "scan", "scan", "benign"])
    # udp: one of two missed; scan: 0.5 is caught at threshold 0.5, 0.2 missed, 0.7 caught.
    assert fnr_by_kind(y, scores, kinds, 0.5) == {"scan": pytest.approx(1 / 3), "udp": 0.5}
    assert fnr_by_kind(y, scores, kinds, 0.65) == {"scan": pytest.approx(2 / 3), "udp": 1.0}


def test_fnr_by_kind_weighted_mean_is_the_overall_fnr():
    gen = np.random.default_rng(3)
    y = gen.integers(0, 2, 500)
    scores = gen.uniform(size=500)
    kinds = gen.choice(["a", "b", "c"], 500)
    rates = fnr_by_kind(y, scores, kinds)
    sizes = {k: int(np.sum((kinds == k) & (y == 1))) for k in rates}
    overall = np.mean(scores[y == 1] < 0.5)
    assert sum(rates[k] * sizes[k] for k in rates) / sum(sizes.values()) == pytest.approx(overall)


def test_fnr_by_kind_without_attacks_is_empty():
    assert fnr_by_kind(np.zeros(3), np.ones(3), np.array(["x"] * 3)) == {}


# --------------------------------------------------------------------------- global test make-up

#: Non-IID by attack kind on the small built-in data: each client sees one family only.
def by_kind_scenario(global_test: dict) -> dict:
    return {
        "kind": "non-iid",
        "clients": [
            client("client-a", (200, 20), (50, 10), benign=["device-0"], malicious=["family-0"]),
            client("client-b", (200, 20), (50, 10), benign=["device-1"], malicious=["family-1"]),
        ],
        "globalTest": global_test,
    }


def test_global_test_make_up_is_taken_as_asked():
    scenario = by_kind_scenario({"benign": 60, "maliciousKinds": {"family-0": 7, "family-1": 23}, "benignGroups": {"device-0": 10, "device-1": 50}})
    exp = parse_experiment(experiment(scenario, SMALL_BUILTIN))
    assert exp.spec.scenario.global_test.malicious == 30  # filled from the make-up
    shards = build_shards(exp)
    for shard in shards.clients.values():
        assert shard.global_test.attack_kinds == {"family-0": 7, "family-1": 23}
        assert shard.global_test.counts == {"benign": 60, "malicious": 30}
    assert shards.clients["client-a"].train.attack_kinds == {"family-0": 20}
    assert shards.clients["client-b"].validation.attack_kinds == {"family-1": 10}
    table = kind_counts(shards)
    assert table["Global_family-1"] == {"client-a": 23, "client-b": 23}
    assert table["Training_family-0"] == {"client-a": 20, "client-b": 0}


def test_global_test_may_hold_a_kind_and_a_device_that_no_client_has():
    scenario = {
        "kind": "non-iid",
        "clients": [client("client-a", (100, 10), (20, 5), benign=["device-0"], malicious=["family-0"]),
                    client("client-b", (100, 10), (20, 5), benign=["device-1"], malicious=["family-0"])],
        "globalTest": {"maliciousKinds": {"family-0": 10, "family-1": 15}, "benignGroups": {"device-2": 30}},
    }
    shards = build_shards(parse_experiment(experiment(scenario, SMALL_BUILTIN)))
    for shard in shards.clients.values():
        assert shard.global_test.attack_kinds == {"family-0": 10, "family-1": 15}  # family-1: unseen by the whole mesh
        assert shard.global_test.counts == {"benign": 30, "malicious": 25}
        assert "family-1" not in shard.train.attack_kinds and "family-1" not in shard.validation.attack_kinds
    a = shards.clients["client-a"]
    train_rows = {r.tobytes() for r in np.concatenate([s.train.raw for s in shards.clients.values()] + [s.validation.raw for s in shards.clients.values()])}
    assert not any(r.tobytes() in train_rows for r in a.global_test.raw)  # still no row a client uses


def test_global_test_rows_are_disjoint_from_training_and_deterministic():
    scenario = by_kind_scenario({"maliciousKinds": {"family-0": 10, "family-1": 10}, "benign": 40})
    exp = parse_experiment(experiment(scenario, SMALL_BUILTIN))
    a, b = build_shards(exp), build_shards(exp)
    test = a.clients["client-a"].global_test
    assert np.array_equal(test.X, b.clients["client-a"].global_test.X)
    raw_test, raw_train = test.raw, a.clients["client-a"].train.raw
    assert not (np.abs(raw_test[:, None, :] - raw_train[None, :, :]).max(axis=2) < 1e-3).any()


def test_global_test_make_up_must_add_up_with_the_field_path():
    scenario = by_kind_scenario({"benign": 40, "malicious": 25, "maliciousKinds": {"family-0": 10, "family-1": 10}})
    with pytest.raises(InvalidSpec) as err:
        parse_experiment(experiment(scenario, SMALL_BUILTIN))
    assert err.value.errors == [("spec.scenario.globalTest", "maliciousKinds adds up to 20 rows, but malicious is 25")]


def test_a_kind_the_data_lacks_is_a_data_error_naming_the_field_and_the_kinds():
    scenario = by_kind_scenario({"benign": 40, "maliciousKinds": {"family-7": 10}})
    with pytest.raises(DataError, match=r"scenario.globalTest.maliciousKinds\['family-7'\]: no attack of kind 'family-7' among the data's 2 attack kinds \(group 'family'\)"):
        build_shards(parse_experiment(experiment(scenario, SMALL_BUILTIN)))


def test_more_rows_of_a_kind_than_left_is_a_data_error_naming_the_field():
    # 3 devices × 60 rows of family-0; the clients take 20 + 10 of them.
    scenario = by_kind_scenario({"benign": 40, "maliciousKinds": {"family-0": 151}})
    with pytest.raises(DataError, match=r"scenario.globalTest.maliciousKinds\['family-0'\]: needs 151 malicious rows but only 150"):
        build_shards(parse_experiment(experiment(scenario, SMALL_BUILTIN)))


def test_an_unknown_kind_column_is_a_data_error():
    doc = experiment(by_kind_scenario({"benign": 10, "malicious": 10}), SMALL_BUILTIN)
    doc["spec"]["evaluation"] = {"kindColumn": "attack"}
    with pytest.raises(DataError, match=r"evaluation.kindColumn: no group column 'attack' in the data \(have \['device', 'family'\]\)"):
        build_shards(parse_experiment(doc))


def test_shards_keep_kinds_on_disk(tmp_path):
    exp = parse_experiment(experiment(by_kind_scenario({"benign": 40, "maliciousKinds": {"family-0": 5, "family-1": 5}}), SMALL_BUILTIN))
    shards = build_shards(exp)
    write_shards(shards, tmp_path)
    back = read_shards(tmp_path)
    assert back.kind_column == "family"
    for name, shard in shards.clients.items():
        for split in ("train", "validation", "global_test"):
            assert np.array_equal(getattr(back.clients[name], split).kinds, getattr(shard, split).kinds)


# --------------------------------------------------------------------------- sharing real rows


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ({"rebalancing": "random-over", "share": True}, "rebalancing random-over with share: true publishes exact copies of real rows to neighbours; set shareRealRows: true to allow it"),
        ({"rebalancing": "ksmote", "shareRealRows": True}, "shareRealRows applies only to rebalancing random-over with share: true"),
        ({"rebalancing": "random-over", "shareRealRows": True}, "shareRealRows applies only to rebalancing random-over with share: true"),
    ],
)
def test_sharing_real_rows_needs_an_explicit_choice(method, error):
    doc = experiment(by_kind_scenario({"benign": 10, "malicious": 10}), SMALL_BUILTIN)
    doc["spec"]["methods"] = [{"rebalancing": "none"}, method]
    with pytest.raises(InvalidSpec) as err:
        parse_experiment(doc)
    assert err.value.errors == [("spec.methods[1]", error)]


def test_sharing_real_rows_when_asked():
    doc = experiment(by_kind_scenario({"benign": 10, "malicious": 10}), SMALL_BUILTIN)
    doc["spec"]["methods"] = [{"rebalancing": "random-over", "share": True, "shareRealRows": True}]
    assert parse_experiment(doc).spec.methods[0].share_real_rows


# --------------------------------------------------------------------------- end to end


def test_non_iid_summary_has_fnr_per_kind_for_every_method_and_client(tmp_path):
    """The paper's claim as a table: each client trains on one attack family, the global test
    holds both; the summary marks the family each client never saw."""
    doc = experiment(by_kind_scenario({"benign": 60, "maliciousKinds": {"family-0": 20, "family-1": 20}}), SMALL_BUILTIN)
    doc["spec"].update(rounds=2, methods=[{"rebalancing": "none"}, {"rebalancing": "ksmote"}],
                       training={"learningRate": 0.01, "hiddenLayers": [8]}, rebalancing={"k": 5, "neighbours": 5})
    frame = simulate(parse_experiment(doc), device="cpu")
    final = frame[frame["round"] == 2]
    for row in final.itertuples():
        own = "family-0" if row.client == "client-a" else "family-1"
        assert dict(row.fnr_by_kind).keys() == ({"family-0", "family-1"} if row.eval == "global" else {own})
        assert list(row.train_kinds) == [own]
    kinds = kind_summary(frame)
    assert len(kinds) == 2 * 2 * (2 + 1)  # method × client × (global: both kinds, local: its own)
    unseen = kinds[(kinds["eval"] == "global") & ~kinds["seen"]]
    assert sorted(zip(unseen["method"], unseen["client"], unseen["kind"])) == [
        ("ksmote", "client-a", "family-1"), ("ksmote", "client-b", "family-0"),
        ("none", "client-a", "family-1"), ("none", "client-b", "family-0"),
    ]
    write_results(frame, tmp_path)
    back = read_parquet(tmp_path / "results.parquet")
    assert [dict(v) for v in back["fnr_by_kind"]] == [dict(v) for v in frame["fnr_by_kind"]]
    markdown = (tmp_path / "summary.md").read_text()
    assert "## FNR per attack kind, global set, last round" in markdown
    assert "| method | client | trained on | family-0 | family-1 |" in markdown
    global_part = markdown.split("global set")[1]
    for method in ("none", "ksmote"):
        row_a = next(line for line in global_part.splitlines() if line.startswith(f"| {method} | client-a | family-0 |"))
        assert row_a.count(UNSEEN) == 1 and row_a.rstrip(" |").endswith(UNSEEN)
    assert markdown == summary_markdown(frame)
    assert (tmp_path / "figures" / "kinds-global.png").stat().st_size > 0


# --------------------------------------------------------------------------- kept scores and models


def _kept_run(tmp_path, rounds=5, every=2):
    doc = experiment(by_kind_scenario({"benign": 40, "maliciousKinds": {"family-0": 10, "family-1": 10}}), SMALL_BUILTIN)
    doc["spec"].update(rounds=rounds, methods=[{"rebalancing": "none"}, {"rebalancing": "ksmote"}], evaluation={"scoresEvery": every},
                       training={"learningRate": 0.01, "hiddenLayers": [8], "localEpochs": 1}, rebalancing={"k": 5, "neighbours": 5})
    exp = parse_experiment(doc)
    out = tmp_path / "run"
    frame = simulate(exp, device="cpu", keep_in=out)
    return exp, frame, out


def test_scores_are_kept_at_the_chosen_rounds_and_reproduce_the_metrics(tmp_path):
    exp, frame, out = _kept_run(tmp_path)
    kept = read_scores(out)
    assert sorted(set(kept["round"])) == [2, 4, 5]  # every 2 rounds, and the last
    assert set(kept["method"]) == {"none", "ksmote"} and set(kept["client"]) == {"client-a", "client-b"}
    shards = build_shards(exp)
    for (method, client, r, eval_set), rows in kept.groupby(["method", "client", "round", "eval"]):
        split = shards.clients[client].validation if eval_set == "local" else shards.clients[client].global_test
        assert np.array_equal(rows["label"].to_numpy(), split.y) and list(rows["kind"]) == list(split.kinds)
        recorded = frame[(frame["method"] == method) & (frame["client"] == client) & (frame["round"] == r) & (frame["eval"] == eval_set)].iloc[0]
        again = evaluate(rows["label"].to_numpy(), rows["score"].to_numpy(), exp.spec.training.threshold)
        assert again == pytest.approx({m: recorded[m] for m in again}, nan_ok=True)
        assert fnr_by_kind(rows["label"], rows["score"], rows["kind"]) == pytest.approx(dict(recorded["fnr_by_kind"]))


def test_a_kept_model_scores_the_global_test_again(tmp_path):
    """The final model file and the preprocessing it names reproduce the last round's kept scores
    from the raw rows."""
    from p2p_job.preprocessing import Preprocessor
    from p2p_job.spec import PreprocessingSpec

    exp, _, out = _kept_run(tmp_path, rounds=2, every=0)
    shards = build_shards(exp)
    state, meta = decode_model(model_path(out, "ksmote", "client-b").read_bytes())
    assert meta["client"] == "client-b" and meta["round"] == "2" and json.loads(meta["feature_names"]) == shards.feature_names
    shard = shards.clients["client-b"]
    preprocessor = Preprocessor.fit(PreprocessingSpec.model_validate(json.loads(meta["preprocessing"])), json.loads(meta["feature_names"]),
                                    shard.train.raw, json.loads(meta["categories"]))
    model = build_model(len(json.loads(meta["input_names"])), exp.spec.training)
    load_model_state(model, state)
    kept = read_scores(out)
    kept = kept[(kept["method"] == "ksmote") & (kept["client"] == "client-b") & (kept["eval"] == "global")]
    assert set(kept["round"]) == {2}  # scoresEvery 0: the last round only
    rescored = predict_scores(model, preprocessor.transform(shard.global_test.raw), "cpu")
    assert np.array_equal(rescored, kept["score"].to_numpy())


def test_roc_curves_are_drawn_from_kept_scores_and_compared(tmp_path):
    _, frame, out = _kept_run(tmp_path, rounds=2)
    write_results(frame, out)  # as `p2pk simulate` does after the run
    assert (out / "figures" / "roc-global.png").stat().st_size > 0
    curves = roc_curves(read_scores(out))
    assert set(curves) == {"local", "global"} and set(curves["global"]) == {"client-a", "client-b"}
    fpr, tpr, auc, r = curves["global"]["client-a"]["ksmote"]
    assert r == 2 and fpr[0] == 0 and tpr[-1] == 1 and 0 <= auc <= 1
    # ROC curves again, later, without retraining: `p2pk compare` on the finished folder.
    assert main(["compare", str(out), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "figures" / "roc-global.png").stat().st_size > 0


# --------------------------------------------------------------------------- no silent choices


def test_botiot_loader_names_every_column_it_does_not_take(tmp_path):
    from data_helpers import BOTIOT

    from p2p_job.choices import data_notes
    from p2p_job.datasets import botiot

    report = botiot.load([BOTIOT], None, None, False).report
    notes = {column: action for column, action, _ in report.columns}
    assert notes == {"pkSeqID": "dropped", "proto": "dropped", "saddr": "dropped", "sport": "dropped", "daddr": "dropped",
                     "dport": "dropped", "attack": "label", "category": "group", "subcategory": "group"}
    assert "column 'proto': dropped — not one of the ten 'best' features the paper trains on (§5.1.1); list it in dataset.features to use it" in data_notes(report)


def test_tabular_loader_names_text_columns_it_drops(tmp_path):
    from p2p_job.datasets import tabular

    path = tmp_path / "flows.csv"
    path.write_text("bytes,proto,site,label\n10,tcp,s1,normal\n20,udp,s2,attack\n")
    report = tabular.load([path], None, "label", ["normal"], "site", False).report
    assert report.columns == (
        ("label", "label", "dataset.labelColumn: dataset.benignValues are benign, every other value malicious"),
        ("site", "group", "dataset.groupColumn: a group column for the scenario's selectors"),
        ("proto", "dropped", "holds no number (text): not a feature by default; list it in dataset.features or encode it "
                               "(dataset.preprocessing.categorical; dataset.preprocessing.auto does for text columns of at most 32 values)"),
    )
    listed = tabular.load([path], ["bytes"], "label", ["normal"], None, False).report
    assert ("proto", "dropped", "not listed in dataset.features") in listed.columns


def test_choices_reach_shards_data_prepare_and_the_summary(tmp_path, capsys):
    import yaml

    from p2p_job.cli import main
    from p2p_job.shards import read_load_report

    path = tmp_path / "flows.csv"
    rows = ["bytes,proto,label"] + [f"{i},tcp,{'attack' if i % 5 == 0 else 'normal'}" for i in range(200)]
    path.write_text("\n".join(rows) + "\n")
    doc = experiment({"kind": "imbalanced-iid", "clients": [client("a", (100, 20), (40, 10))]},
                     {"kind": "tabular", "path": str(path), "labelColumn": "label", "benignValues": ["normal"]})
    doc["spec"]["methods"] = [{"rebalancing": "random-over", "share": True, "shareRealRows": True}]
    doc["spec"]["training"] = {"hiddenLayers": [4]}
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["data", "prepare", str(spec), "--out", str(tmp_path / "shards")]) == 0
    assert "column 'proto': categorical — dataset.preprocessing.auto: a text column" in capsys.readouterr().out
    assert ("proto", "categorical") == read_load_report(tmp_path / "shards").columns[1][:2]
    assert main(["data", "describe", str(tmp_path / "shards")]) == 0
    assert "column 'proto': categorical — dataset.preprocessing.auto: a text column" in capsys.readouterr().out
    assert main(["simulate", str(spec), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "WARNING: method 'random-over' publishes exact copies of real training rows" in err and "column 'proto'" in err
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Data and choices" in summary and "- WARNING: method 'random-over'" in summary and "- column 'proto': categorical" in summary
    recorded = json.loads((tmp_path / "out" / "run.json").read_text())["choices"]
    assert recorded[0].startswith("WARNING: method 'random-over'") and any(n.startswith("column 'proto': categorical") for n in recorded)


def test_real_nbaiot_non_iid_summary_marks_the_attack_kind_each_client_never_saw(tmp_path):
    """The shipped real N-BaIoT samples, one gafgyt attack kind per client, the global test set
    made of both kinds: every method's summary has the FNR of both kinds for both clients, the
    other client's kind marked unseen."""
    from data_helpers import nbaiot_tree

    root = nbaiot_tree(tmp_path / "nbaiot")
    scenario = {
        "kind": "non-iid",
        "clients": [
            client("client-a", (100, 8), (30, 4), benign=["device=ennio_doorbell"], malicious=["gafgyt/scan"]),
            client("client-b", (100, 8), (30, 4), benign=["device=ecobee_thermostat"], malicious=["gafgyt/udp"]),
        ],
        "globalTest": {"benign": 40, "maliciousKinds": {"gafgyt/scan": 30, "gafgyt/udp": 30}},
    }
    dataset = {"kind": "nbaiot", "path": str(root), "preprocessing": {"transforms": [{"columns": ["*"], "transform": "signed-log"}]}}
    doc = experiment(scenario, dataset)
    doc["spec"].update(rounds=2, methods=[{"rebalancing": "none"}, {"rebalancing": "smote", "share": True}, {"rebalancing": "ksmote"}],
                       training={"learningRate": 0.003, "hiddenLayers": [16], "batchSize": 32}, rebalancing={"k": 4, "neighbours": 4})
    exp = parse_experiment(doc)
    out = tmp_path / "out"
    frame = simulate(exp, device="cpu", keep_in=out)
    write_results(frame, out)
    kinds = kind_summary(frame)
    final_global = kinds[kinds["eval"] == "global"]
    assert len(final_global) == 3 * 2 * 2  # method × client × kind
    unseen = final_global[~final_global["seen"]]
    assert sorted(set(zip(unseen["client"], unseen["kind"]))) == [("client-a", "gafgyt/udp"), ("client-b", "gafgyt/scan")]
    global_part = (out / "summary.md").read_text().split("FNR per attack kind, global set")[1]
    assert "| method | client | trained on | gafgyt/scan | gafgyt/udp |" in global_part
    for method in ("none", "smote", "ksmote"):
        assert f"| {method} | client-a | gafgyt/scan |" in global_part and f"| {method} | client-b | gafgyt/udp |" in global_part
    assert global_part.count(UNSEEN) == 3 * 2 + 1  # one cell per (method, client), and the note
    assert {"roc-global.png", "kinds-global.png"} <= {p.name for p in (out / "figures").iterdir()}
