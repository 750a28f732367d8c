"""``--set path=value``, ``--rounds`` and the seed: the spec as run, validated like the file."""

from __future__ import annotations

import pytest
import services

from p2p_job.overrides import experiment_as_run, parse_assignment
from p2p_job.spec import InvalidSpec


@pytest.fixture
def spec(tmp_path):
    document = services.tiny_experiment("over", methods=[{"rebalancing": "none"}, {"rebalancing": "ksmote"}])
    return services.write_spec(tmp_path / "exp.yaml", document)


def test_set_reaches_nested_fields_list_entries_and_reads_values_as_yaml(spec):
    exp = experiment_as_run(spec, ["training.learningRate=0.001", "spec.methods[1].rebalancing=smote",
                                   "training.hidden_layers=[16, 8]", "rebalancing.shareFraction=0.25",
                                   "methods.0.aggregation=fedavg"], rounds=4, seed=11)
    s = exp.spec
    assert (s.training.learning_rate, s.training.hidden_layers, s.rebalancing.share_fraction) == (0.001, [16, 8], 0.25)
    assert [(m.rebalancing, m.aggregation) for m in s.methods] == [("none", "fedavg"), ("smote", None)]
    assert (s.rounds, s.seed) == (4, 11)


def test_set_creates_missing_sections(spec):
    assert experiment_as_run(spec, ["aggregation.lambda=0.5"]).spec.aggregation.lambda_ == 0.5
    assert experiment_as_run(spec, ["metadata.name=renamed"]).name == "renamed"


def test_bad_values_are_errors_by_field_path_naming_the_overrides(spec):
    with pytest.raises(InvalidSpec) as caught:
        experiment_as_run(spec, ["training.learnRate=3", "training.localEpochs=-1"], rounds=0)
    err = caught.value
    assert err.source == f"{spec} with --set training.learnRate=3 --set training.localEpochs=-1 --rounds 0"
    assert {path for path, _ in err.errors} == {"spec.training.learnRate", "spec.training.localEpochs", "spec.rounds"}


@pytest.mark.parametrize(("text", "message"), [
    ("rounds", "expected path=value"),
    ("=3", "expected path=value"),
    ("training..x=1", "is not a field path"),
    ("methods[7].rebalancing=smote", "spec.methods has 2 entries"),
    ("rounds.x=1", "spec.rounds is not a mapping"),
    ("training=[a", "the value is not YAML"),
])
def test_malformed_assignments_name_the_problem(spec, text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        experiment_as_run(spec, [text])


def test_paths_default_to_spec_and_snake_case_is_camel_cased():
    assert parse_assignment("training.local_epochs=3") == (["spec", "training", "localEpochs"], 3)
    assert parse_assignment("metadata.name=x") == (["metadata", "name"], "x")


def test_a_relative_dataset_path_becomes_absolute_against_the_spec_folder(tmp_path):
    document = services.tiny_experiment("rel", dataset={"kind": "botiot", "path": "data/b.tsv"})
    spec = services.write_spec(tmp_path / "specs" / "exp.yaml", document)
    assert experiment_as_run(spec).spec.dataset.path == str(tmp_path / "specs" / "data" / "b.tsv")
