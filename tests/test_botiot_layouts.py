"""UNSW BoT-IoT's three layouts (10-best, 5% extract, full dataset) and a ``dataset.path`` that
names several files, through ``kind: botiot`` and ``kind: tabular``; rows GENERATED in each
layout (``data_helpers.botiot_frame``), the 10-best rows are the real sample."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from data_helpers import BOTIOT, botiot_frame, write_botiot_parts

from p2p_job.cli import main
from p2p_job.datasets import DataError, load_dataset
from p2p_job.datasets import botiot as botiot_loader
from p2p_job.spec import DatasetSpec

NAMES_FILE = "UNSW_2018_IoT_Botnet_Dataset_Feature_Names.csv"
FULL_DEFAULT = ["seq", "stddev", "min", "mean", "drate", "srate", "max", "state"]


def load(**fields):
    return load_dataset(DatasetSpec.model_validate(fields))


def generated(paths) -> pd.DataFrame:
    """The generated parts read back as written (headerless full files by the layout's names)."""
    names = botiot_loader.FULL_COLUMNS
    return pd.concat([pd.read_csv(p, header=None, names=names, dtype={"sport": str, "dport": str}, keep_default_na=False, na_values=[""])
                      for p in paths], ignore_index=True)


@pytest.fixture
def full(tmp_path):
    """Three headerless parts of 120 generated rows in the full layout, with the names file."""
    return write_botiot_parts(tmp_path / "full", rows=120, parts=3)


def test_full_layout_folder_is_read_part_by_part_with_the_default_features(full):
    table = load(kind="botiot", path=str(full[0].parent))  # the folder: the names file beside the parts adds no row
    frame = generated(full)
    assert table.feature_names == FULL_DEFAULT and len(table) == 360
    assert np.array_equal(table.features[:, :7], frame[FULL_DEFAULT[:7]].to_numpy(np.float32))
    states = np.array(table.categories["state"])[table.features[:, 7].astype(int)]
    assert states.tolist() == frame["state"].tolist()
    assert table.labels.tolist() == frame["attack"].tolist()
    family = np.where(frame["attack"] == 1, frame["category"] + "/" + frame["subcategory"], "benign")
    assert table.groups["family"].tolist() == family.tolist()
    notes = {column: (action, reason) for column, action, reason in table.report.columns}
    for column, words in (("pkSeqID", "identifier"), ("stime", "timestamp"), ("ltime", "timestamp"), ("saddr", "IP address"), ("smac", "MAC address")):
        assert notes[column][0] == "dropped" and words in notes[column][1]
    assert notes["state"][0] == "categorical" and "no state_number" in notes["state"][1] and "7 of the paper's ten" in notes["state"][1]
    assert notes["pkts"] == ("dropped", "not one of the ten 'best' features the paper trains on (§5.1.1); list it in dataset.features to use it")
    assert table.report.rows_read == 360


def test_glob_and_names_file_and_natural_order(tmp_path):
    parts = write_botiot_parts(tmp_path, rows=30, parts=10)
    names = tmp_path / NAMES_FILE
    spec = {"kind": "botiot", "columnNamesFile": str(names)}
    by_glob = load(path=str(tmp_path / "UNSW_2018_IoT_Botnet_Dataset_*.csv"), **spec)  # the pattern also matches the names file: left out
    by_folder = load(path=str(tmp_path), **spec)
    frame = generated(parts)  # _1, _2, …, _10: natural order, not _1, _10, _2
    assert np.array_equal(by_glob.features, by_folder.features) and len(by_glob) == 300
    assert np.array_equal(by_glob.features[:, 0], frame["seq"].to_numpy(np.float32))


def test_five_percent_layout_has_the_ten_features(tmp_path):
    parts = write_botiot_parts(tmp_path, rows=100, parts=2, layout="5%")
    table = load(kind="botiot", path=str(tmp_path / "UNSW_2018_IoT_Botnet_Full5pc_*.csv"))
    frame = pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)
    assert table.feature_names == botiot_loader.FEATURES
    assert np.array_equal(table.features, frame[botiot_loader.FEATURES].to_numpy(np.float32))
    notes = dict((c, a) for c, a, _ in table.report.columns)
    assert notes["stime"] == notes["TnBPSrcIP"] == notes["flgs"] == "dropped"
    frame.to_csv(parts[1], header=False, index=False)  # headerless: told by its 46 columns
    assert np.array_equal(load(kind="botiot", path=str(parts[1])).features, frame[botiot_loader.FEATURES].to_numpy(np.float32))


def test_ten_best_sample_keeps_its_spec(tmp_path):
    """The same spec shape reads the real 10-best sample as before."""
    table = load(kind="botiot", path=str(BOTIOT))
    assert table.feature_names == botiot_loader.FEATURES and len(table) == 999


def test_hex_ports_are_numbers_where_the_layout_or_spec_says(full):
    frame = generated(full)
    icmp = (frame["proto"] == "icmp").to_numpy()
    assert icmp.any() and frame.loc[icmp, "sport"].str.startswith("0x").all()
    ports = frame[["sport", "dport"]].map(lambda cell: int(cell, 16) if cell.startswith("0x") else int(cell)).to_numpy(np.float32)
    table = load(kind="botiot", path=str(full[0].parent), features=["pkts", "sport", "dport"], preprocessing={"categorical": ["proto"]})
    assert table.feature_names == ["pkts", "sport", "dport", "proto"]
    assert np.array_equal(table.features[:, 1:3], ports)
    notes = dict((c, r) for c, _, r in table.report.columns)
    assert notes["stime"] == "not listed in dataset.features"
    # kind: tabular reads hex only where dataset.hexColumns says so
    tabular = {"kind": "tabular", "path": str(full[0].parent), "columnNamesFile": str(full[0].parent / NAMES_FILE),
               "labelColumn": "category", "benignValues": ["Normal"], "groupColumn": "subcategory",
               "features": ["pkts", "bytes", "dur", "rate", "sport", "dport", "proto", "state"]}
    table = load(**tabular, hexColumns=["sport", "dport"])
    assert table.feature_names == tabular["features"] and set(table.categories) == {"proto", "state"}  # auto: text columns of few values
    assert np.array_equal(table.features[:, 4:6], ports)
    assert table.labels.tolist() == (frame["category"] != "Normal").astype(int).tolist()
    first_icmp = int(np.flatnonzero(icmp)[0])
    with pytest.raises(DataError) as error:
        load(**tabular)
    message = str(error.value)
    assert message.endswith(f"UNSW_2018_IoT_Botnet_Dataset_1.csv: row {first_icmp + 1} (line {first_icmp + 1}), column 6 ('sport'): "
                            "not a number (hexadecimal: for kind tabular, list the column in dataset.hexColumns) (set dataset.dropBadRows to drop such rows)")
    assert "0x" not in message.replace("0x…", "")  # the cell is not quoted


def test_tabular_parts_in_csv_with_spec_columns_and_parquet(tmp_path):
    frame = botiot_frame(60, seed=3)[["pkts", "bytes", "proto", "category", "subcategory"]]
    frame.iloc[:30].to_csv(tmp_path / "part_1.csv", header=False, index=False)
    frame.iloc[30:].to_csv(tmp_path / "part_2.csv", header=False, index=False)
    spec = {"kind": "tabular", "labelColumn": "category", "benignValues": ["Normal"], "groupColumn": "subcategory"}
    table = load(path=str(tmp_path / "part_*.csv"), columns=list(frame.columns), **spec)
    assert table.feature_names == ["pkts", "bytes", "proto"] and len(table) == 60  # proto: a text column of few values (auto)
    assert np.array_equal(table.features[:, :2], frame[["pkts", "bytes"]].to_numpy(np.float32))
    frame.iloc[:30].to_parquet(tmp_path / "p_1.parquet")
    frame.iloc[30:].drop(columns=["bytes"]).to_parquet(tmp_path / "p_2.parquet")
    with pytest.raises(DataError, match=r"p_2\.parquet: missing column\(s\) \['bytes'\]; the file has 4 column\(s\)"):
        load(path=str(tmp_path / "p_*.parquet"), **spec)
    with pytest.raises(DataError, match=r"p_1\.parquet: a Parquet file names its own columns"):
        load(path=str(tmp_path / "p_*.parquet"), columns=list(frame.columns), **spec)


def test_categories_are_one_code_across_parts(tmp_path):
    """Each part codes its own text values; the table renumbers them into one vocabulary."""
    a, b = botiot_frame(50, seed=1), botiot_frame(50, seed=2, first_id=51)
    a["state"], b["state"] = "CON", np.where(np.arange(50) % 2, "REQ", "ACC")
    a.to_csv(tmp_path / "a.csv", header=False, index=False)
    b.to_csv(tmp_path / "b.csv", header=False, index=False)
    table = load(kind="botiot", path=str(tmp_path / "*.csv"), preprocessing={"categorical": ["proto"]})
    assert table.categories["state"] == ["ACC", "CON", "REQ"]
    decoded = np.array(table.categories["state"])[table.features[:, 7].astype(int)]
    assert decoded.tolist() == [*a["state"], *b["state"]]
    protos = np.array(table.categories["proto"])[table.features[:, 8].astype(int)]
    assert protos.tolist() == [*a["proto"], *b["proto"]]


def test_families_are_selected_over_all_parts(full):
    table = load(kind="botiot", path=str(full[0].parent), families=["DoS", "Theft/Keylogging"])  # 4 files: the names file is a header line
    frame = generated(full)
    keep = (frame["attack"] == 0) | frame["category"].isin(["DoS"]) | (frame["subcategory"] == "Keylogging")
    assert len(table) == int(keep.sum())
    with pytest.raises(DataError, match=r"full \(4 files\): no attack of family 'Mirai' among its 5 attack families"):
        load(kind="botiot", path=str(full[0].parent), families=["Mirai"])


def test_chunks_give_the_same_table_as_one_read(full, monkeypatch):
    from p2p_job.datasets import reading

    whole = load(kind="botiot", path=str(full[0].parent), preprocessing={"categorical": ["proto"]})
    monkeypatch.setattr(reading, "CHUNK_ROWS", 7)  # 120-row parts in 18 chunks each
    chunked = load(kind="botiot", path=str(full[0].parent), preprocessing={"categorical": ["proto"]})
    assert np.array_equal(whole.features, chunked.features) and whole.categories == chunked.categories
    assert whole.groups["family"].tolist() == chunked.groups["family"].tolist() and whole.report == chunked.report


@pytest.mark.parametrize("chunk_rows", [1000, 13])
def test_max_rows_per_kind_keeps_the_smallest_keys_of_each_kind(full, monkeypatch, chunk_rows):
    from p2p_job.datasets import reading
    from p2p_job.datasets.sampling import row_keys

    monkeypatch.setattr(reading, "CHUNK_ROWS", chunk_rows)
    every = load(kind="botiot", path=str(full[0].parent))
    sample = load(kind="botiot", path=str(full[0].parent), maxRowsPerKind=20)
    # by hand: each family's 20 rows of smallest key (SplitMix64 of the row's position), in file order
    keys, family = row_keys(0, len(every)), every.groups["family"]
    expected = np.sort(np.concatenate([np.flatnonzero(family == f)[np.argsort(keys[family == f], kind="stable")[:20]] for f in np.unique(family)]))
    assert np.array_equal(sample.features, every.features[expected])
    assert sample.groups["family"].tolist() == family[expected].tolist()
    counts = pd.Series(family).value_counts()
    assert pd.Series(sample.groups["family"]).value_counts().to_dict() == counts.clip(upper=20).to_dict()
    assert counts.min() < 20 < counts.max()  # a small kind is kept whole, a large one cut
    assert sample.report.rows_read == 360
    note = dict((c, (a, r)) for c, a, r in sample.report.columns)["(rows)"]
    assert note == ("sampled", f"dataset.maxRowsPerKind 20: {len(sample)} of the 360 rows read kept; each kind (label and group values) "
                               "with more rows is a uniform sample of 20")


def test_max_rows_per_kind_for_tabular_counts_label_and_group(full):
    spec = {"kind": "tabular", "path": str(full[0].parent / "UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv"),
            "columnNamesFile": str(full[0].parent / NAMES_FILE), "labelColumn": "category", "benignValues": ["Normal"],
            "groupColumn": "subcategory", "features": ["pkts", "bytes", "proto"], "maxRowsPerKind": 15}
    table = load(**spec)
    kinds = pd.Series(list(zip(table.groups["category"], table.groups["subcategory"]))).value_counts()
    assert kinds.max() == 15 and len(kinds) == 6


# --------------------------------------------------------------------------- bad input


def _set_cell(path, line: int, column: str, value: str) -> None:
    """Write ``value`` into ``column`` of the 0-based ``line`` of a headerless full-layout part."""
    lines = path.read_text().splitlines()
    cells = lines[line].split(",")
    cells[botiot_loader.FULL_COLUMNS.index(column)] = value
    lines[line] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def test_a_bad_cell_in_a_later_part_names_that_file_row_and_column(full):
    _set_cell(full[1], 6, "mean", "SECRET")
    with pytest.raises(DataError) as error:
        load(kind="botiot", path=str(full[0].parent))
    message = str(error.value)
    assert message == f"{full[1]}: row 7 (line 7), column 15 ('mean'): not a number (set dataset.dropBadRows to drop such rows)"
    table = load(kind="botiot", path=str(full[0].parent), dropBadRows=True)
    assert len(table) == 359 and table.report.rows_dropped == 1 and table.report.rows_read == 360
    assert "SECRET" not in " ".join(table.report.problems)


def test_bad_label_bad_hex_and_a_malformed_line(full):
    _set_cell(full[2], 0, "attack", "7")
    with pytest.raises(DataError, match=r"Dataset_3\.csv: row 1 \(line 1\), column 33 \('attack'\): label must be 0 or 1"):
        load(kind="botiot", path=str(full[0].parent))
    frame = botiot_frame(20, seed=5)
    frame.loc[3, "sport"] = "0xZZ17"
    frame.to_csv(full[2], header=False, index=False)
    with pytest.raises(DataError) as error:
        load(kind="botiot", path=str(full[0].parent), features=["sport"])
    assert str(error.value).startswith(f"{full[2]}: row 4 (line 4), column 6 ('sport'): not a number (decimal, or hexadecimal written 0x…)")
    assert "ZZ" not in str(error.value)
    frame = botiot_frame(400, seed=6)  # the sniffer reads 64 KiB: the bad lines lie beyond
    frame.to_csv(full[2], header=False, index=False)
    lines = full[2].read_text().splitlines()
    lines[349] += ",1"
    full[2].write_text("\n".join([*lines, "1,2,3"]) + "\n")
    with pytest.raises(DataError, match=r"Dataset_3\.csv: Error tokenizing data. C error: Expected 35 fields in line 350, saw 36$"):
        load(kind="botiot", path=str(full[0].parent))
    table = load(kind="botiot", path=str(full[0].parent), dropBadRows=True)
    assert table.report.rows_dropped == 2 and len(table) == 240 + 399
    assert table.report.problems[0] == f"{full[2]}: a line with 36 fields, expected 35"
    assert table.report.problems[1] == f"{full[2]}: row 400, column 33 ('attack'): label must be 0 or 1"  # the short line, after the dropped one


def test_layout_and_path_errors(tmp_path, full):
    short = tmp_path / "short.csv"
    botiot_frame(5).drop(columns=["dco"]).to_csv(short, header=False, index=False)
    with pytest.raises(DataError, match=r"short\.csv: no header naming 'attack', and 34 columns where a headerless BoT-IoT file has 19 \(10-best\), 35 \(full\)"):
        load(kind="botiot", path=str(short))
    with pytest.raises(DataError, match=r"short\.csv: 34 fields on the first line where dataset.columns / dataset.columnNamesFile names 35"):
        load(kind="botiot", path=str(short), columnNamesFile=str(full[0].parent / NAMES_FILE))
    with pytest.raises(DataError, match=r"nothing_\*\.csv: no file matches the pattern dataset.path"):
        load(kind="botiot", path=str(tmp_path / "nothing_*.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder holds no data file"):
        load(kind="botiot", path=str(tmp_path / "empty"))
    names = tmp_path / "names.csv"
    names.write_text("a,b,a\n")
    with pytest.raises(DataError, match=r"names\.csv \(dataset.columnNamesFile\): column 3 repeats an earlier name"):
        load(kind="botiot", path=str(short), columnNamesFile=str(names))
    with pytest.raises(ValueError, match="dataset.columns and dataset.columnNamesFile: give one of them"):
        DatasetSpec.model_validate({"kind": "botiot", "path": "x", "columns": ["a"], "columnNamesFile": "n.csv"})
    with pytest.raises(ValueError, match=r"dataset.hexColumns: not used by dataset kind 'botiot'"):
        DatasetSpec.model_validate({"kind": "botiot", "path": "x", "hexColumns": ["sport"]})


def test_columns_given_in_the_spec_and_a_header_line_equal_to_them(tmp_path):
    frame = botiot_frame(40)
    frame.iloc[:20].to_csv(tmp_path / "part_1.csv", index=False)  # with the header line
    frame.iloc[20:].to_csv(tmp_path / "part_2.csv", header=False, index=False)
    table = load(kind="botiot", path=str(tmp_path), columns=botiot_loader.FULL_COLUMNS)
    assert len(table) == 40 and np.array_equal(table.features[:, 0], frame["seq"].to_numpy(np.float32))
    (tmp_path / "part_1.csv").write_text("\ufeff" + (tmp_path / "part_1.csv").read_text())  # a byte-order mark before the header
    assert np.array_equal(load(kind="botiot", path=str(tmp_path), columns=botiot_loader.FULL_COLUMNS).features, table.features)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_describe_and_simulate_on_the_full_layout(tmp_path, capsys):
    write_botiot_parts(tmp_path / "data", rows=400, parts=2)
    clients = [{"name": name, "benignGroups": ["benign"], "maliciousGroups": [kind],
                "train": {"benign": 60, "malicious": 6}, "validation": {"benign": 20, "malicious": 3}}
               for name, kind in (("a", "DoS"), ("b", "Reconnaissance"), ("c", "DoS"))]
    doc = {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": "botiot-full"},
           "spec": {"seed": 1, "rounds": 2, "topology": {"kind": "full"},
                    "dataset": {"kind": "botiot", "path": "data", "columnNamesFile": f"data/{NAMES_FILE}"},
                    "scenario": {"kind": "non-iid", "clients": clients, "globalTest": {"benign": 60, "maliciousKinds": {"DoS": 20, "Reconnaissance": 20}}},
                    "methods": [{"rebalancing": "none"}, {"rebalancing": "ksmote"}]}}
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(doc))
    assert main(["data", "describe", str(spec)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "8 features; dataset rows read: 800, bad rows dropped: 0" in out
    assert "column 'pkSeqID': dropped — the row's number in the dataset: an identifier" in out
    assert "column 'state': categorical — the full layout has no state_number" in out
    assert main(["simulate", str(spec), "--out", str(tmp_path / "out")]) == 0
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    final = results[(results["round"] == 2) & (results["eval"] == "global")]
    assert set(final["method"]) == {"none", "ksmote"} and len(final) == 6
    assert final[["fnr", "fpr"]].notna().all().all()


def test_spec_paths_as_run_preflight_and_kubernetes(tmp_path):
    """dataset.columnNamesFile is a path like dataset.path: made absolute against the spec file,
    checked before a run (a glob by its matches), absolute on Kubernetes."""
    from p2p_job.local import RunSettings, preflight
    from p2p_job.overrides import experiment_as_run
    from p2p_job.spec import kubernetes_errors, parse_experiment

    write_botiot_parts(tmp_path / "data", rows=20, parts=2)
    dataset = {"kind": "botiot", "path": "data/UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv", "columnNamesFile": f"data/{NAMES_FILE}"}
    doc = {"apiVersion": "p2pk.io/v1alpha1", "kind": "P2PExperiment", "metadata": {"name": "paths"},
           "spec": {"rounds": 1, "dataset": dataset, "scenario": {"kind": "balanced-iid", "clients": [
               {"name": "a", "train": {"benign": 3, "malicious": 3}, "validation": {"benign": 1, "malicious": 1}}]}}}
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(doc))
    exp = experiment_as_run(spec)
    assert exp.spec.dataset.path == str(tmp_path / "data" / "UNSW_2018_IoT_Botnet_Dataset_[0-9]*.csv")
    assert exp.spec.dataset.column_names_file == str(tmp_path / "data" / NAMES_FILE)
    preflight(exp, spec, RunSettings(out=tmp_path / "out"))  # the pattern matches: no error
    fields = [field for field, _ in kubernetes_errors(parse_experiment(doc))]
    assert "spec.dataset.path" in fields and "spec.dataset.columnNamesFile" in fields
    for field, value in (("path", "data/none_*.csv"), ("columnNamesFile", "data/names.csv")):
        doc["spec"]["dataset"] = {**dataset, field: value}
        spec.write_text(yaml.safe_dump(doc))
        with pytest.raises(DataError, match=re.escape(f"dataset.{field} {value}: no such file or folder (or no file matches the pattern)")):
            preflight(parse_experiment(doc), spec, RunSettings(out=tmp_path / "out"))
