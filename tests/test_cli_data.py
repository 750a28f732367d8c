"""``p2pk data prepare | describe | presets``."""

from __future__ import annotations

import pandas as pd
import yaml
from data_helpers import SMALL_BUILTIN, client, experiment

from p2p_job.cli import main
from p2p_job.shards import read_shards


def write_spec(path, scenario, dataset=None):
    path.write_text(yaml.safe_dump(experiment(scenario, dataset)))
    return path


def printed_table(text: str) -> dict[str, list[str]]:
    """The rows of a printed rich table: first cell -> the other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]] or [c.strip() for c in line.split("┃")[1:-1]]
        if cells:
            rows[cells[0]] = cells[1:]
    return rows


def test_prepare_writes_shards_and_prints_table_1_then_describe_repeats_it(tmp_path, capsys):
    spec = write_spec(tmp_path / "exp.yaml", {"preset": "builtin-5.2.4", "scale": 0.1}, SMALL_BUILTIN)
    assert main(["data", "prepare", str(spec), "--out", str(tmp_path / "shards")]) == 0
    prepared = capsys.readouterr().out
    table = printed_table(prepared)
    expected = {
        "": ["client-a", "client-b", "client-c"],
        "Training_benign": ["150", "120", "180"],  # builtin-5.2.4's counts × 0.1
        "Training_anomaly": ["3", "4", "5"],
        "Local_Val_benign": ["40", "40", "40"],
        "Local_Val_anomaly": ["4", "4", "4"],
        "Global_benign": ["90", "90", "90"],
        "Global_anomaly": ["9", "9", "9"],
    }
    assert {row: table[row] for row in expected} == expected
    # The second table: malicious rows per attack kind (the built-in families), adding up per split.
    for split, anomaly in (("Training", ["3", "4", "5"]), ("Global", ["9", "9", "9"])):
        per_kind = [table.get(f"{split}_family-{f}", ["0"] * 3) for f in range(2)]
        assert [str(int(a) + int(b)) for a, b in zip(*per_kind)] == anomaly
    assert "malicious rows per attack kind (family)" in " ".join(prepared.split())
    assert "12 features; dataset rows read: 1260, bad rows dropped: 0" in prepared  # 3 × (300 + 2 × 60)
    assert list(read_shards(tmp_path / "shards").clients) == ["client-a", "client-b", "client-c"]
    assert main(["data", "describe", str(tmp_path / "shards")]) == 0
    described = capsys.readouterr().out
    assert {row: printed_table(described)[row] for row in expected} == expected
    # Then each column's range and skew, and a dataset.preprocessing section to start from.
    assert "f000" in described and "suggested" in described and "scaling: quantile" in described and "auto: false" in described
    assert main(["data", "describe", str(spec)]) == 0  # the same from the spec, nothing written
    from_spec = capsys.readouterr().out
    assert {row: printed_table(from_spec)[row] for row in expected} == expected and "scaling: quantile" in from_spec


def test_relative_dataset_path_is_read_from_the_spec_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "exp" / "data").mkdir(parents=True)
    rows = pd.DataFrame({"x": range(40), "y": ["1.5"] * 40, "label": ["ok"] * 26 + ["bad"] * 14})
    rows.loc[3, "y"] = "oops"
    rows.to_csv(tmp_path / "exp" / "data" / "rows.csv", index=False)
    dataset = {"kind": "tabular", "path": "data/rows.csv", "labelColumn": "label", "benignValues": ["ok"], "dropBadRows": True}
    spec = write_spec(tmp_path / "exp" / "exp.yaml", {"kind": "balanced-iid", "clients": [client("a", (8, 5), (4, 2)), client("b", (8, 4), (4, 2))]}, dataset)
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    assert main(["data", "prepare", str(spec), "--out", "out"]) == 0
    out = capsys.readouterr().out
    assert printed_table(out)["Training_benign"] == ["8", "8"]
    assert "dataset rows read: 40, bad rows dropped: 1" in out
    assert "row 4 (line 5), column 2: not a number" in out and "oops" not in out


def test_bad_spec_exits_2_with_the_errors(tmp_path, capsys):
    spec = write_spec(tmp_path / "exp.yaml", {"kind": "mixed-iid", "clients": [client("a", (10, 1), (1, 1)), client("b", (10, 1), (1, 1))]})
    assert main(["data", "prepare", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "invalid P2PExperiment" in err and "mixed-iid: the minority class must be benign on some clients" in err
    assert not (tmp_path / "out").exists()


def test_data_that_does_not_fit_exits_1_naming_the_client(tmp_path, capsys):
    family_0 = ["family-0"]  # 3 devices × 60 rows: enough for a or b, not for both
    clients = [client(name, (10, 100), (1, 1), malicious=family_0, benign=["benign"]) for name in ("a", "b")]
    spec = write_spec(tmp_path / "exp.yaml", {"kind": "imbalanced-iid", "clients": clients}, SMALL_BUILTIN)
    assert main(["data", "prepare", str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "client 'b', train: needs 100 malicious rows but only 79 are available" in err
    assert main(["data", "describe", str(tmp_path / "nothing")]) == 1
    assert "manifest.json: not found" in capsys.readouterr().err


def test_presets_are_listed(capsys):
    assert main(["data", "presets"]) == 0
    listed = printed_table(capsys.readouterr().out)
    names = [name for name in listed if name and name != "preset"]
    assert names == [f"botiot-5.2.{i}" for i in (2, 4)] + [f"builtin-5.2.{i}" for i in (1, 2, 3, 4)] + [f"nbaiot-5.2.{i}" for i in (1, 2, 3, 4)]
    assert listed["builtin-5.2.4"][:2] == ["builtin", "non-iid"]
