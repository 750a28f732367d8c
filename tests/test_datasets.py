"""Loaders (p2p_job.datasets): real samples, generated files with bad rows, the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from data_helpers import BOTIOT, ENNIO_ROWS, NBAIOT, SAMPLE_ROWS, gzip_file, nbaiot_tree, replace_cell
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from p2p_job.datasets import DataError, Table, load_dataset, select_groups
from p2p_job.datasets import botiot as botiot_loader
from p2p_job.spec import BuiltinDataSpec, DatasetSpec



def nbaiot(path, **fields) -> Table:
    return load_dataset(DatasetSpec(kind="nbaiot", path=str(path), **fields))


def botiot(path, **fields) -> Table:
    return load_dataset(DatasetSpec(kind="botiot", path=str(path), **fields))


def tabular(path, **fields) -> Table:
    fields = {"label_column": "label", "benign_values": ["normal"], **fields}
    return load_dataset(DatasetSpec(kind="tabular", path=str(path), **fields))


def family_counts(table: Table) -> dict[str, int]:
    values, counts = np.unique(table.groups["family"], return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


# --------------------------------------------------------------------------- N-BaIoT


@pytest.fixture(scope="module")
def big_nbaiot(tmp_path_factory):
    """The sample tree with the gzipped Ennio tcp and udp files, loaded once."""
    root = nbaiot_tree(tmp_path_factory.mktemp("nbaiot"), big=True)
    return nbaiot(root)


def test_nbaiot_original_layout_with_gzipped_files(big_nbaiot):
    table = big_nbaiot
    assert table.features.dtype == np.float32 and table.labels.dtype == np.int8
    assert table.features.shape == (2 * SAMPLE_ROWS + SAMPLE_ROWS + ENNIO_ROWS + ENNIO_ROWS + SAMPLE_ROWS, 115)
    assert table.feature_names == list(pd.read_csv(NBAIOT / "benign_traffic.csv.gz", nrows=0).columns)
    assert family_counts(table) == {"benign": 2 * SAMPLE_ROWS, "gafgyt/scan": SAMPLE_ROWS, "gafgyt/tcp": ENNIO_ROWS, "gafgyt/udp": ENNIO_ROWS + SAMPLE_ROWS}
    # The label is the file: benign_traffic is 0, every attack file 1.
    assert np.array_equal(table.labels == 0, table.groups["family"] == "benign")
    doorbell = table.groups["device"] == "ennio_doorbell"
    assert doorbell.sum() == SAMPLE_ROWS * 2 + ENNIO_ROWS + ENNIO_ROWS
    # Values are the file's: the first tcp row as pandas reads it.
    first_tcp = pd.read_csv(NBAIOT / "ennio_doorbell_gafgyt" / "tcp.csv.gz", nrows=1).to_numpy(np.float32)[0]
    assert np.array_equal(table.features[np.flatnonzero(table.groups["family"] == "gafgyt/tcp")[0]], first_tcp)
    assert table.report.rows_read == len(table) and table.report.rows_dropped == 0


def test_nbaiot_max_rows_per_kind_samples_each_device_and_family(big_nbaiot, tmp_path_factory, monkeypatch):
    from p2p_job.datasets import reading

    monkeypatch.setattr(reading, "CHUNK_ROWS", 1200)  # the Ennio files in five chunks: the same table
    root = nbaiot_tree(tmp_path_factory.mktemp("nbaiot"), big=True)
    assert np.array_equal(nbaiot(root).features, big_nbaiot.features)
    sample = nbaiot(root, maxRowsPerKind=1000)
    kinds = pd.Series(list(zip(sample.groups["device"], sample.groups["family"]))).value_counts()
    every = pd.Series(list(zip(big_nbaiot.groups["device"], big_nbaiot.groups["family"]))).value_counts()
    assert kinds.to_dict() == every.clip(upper=1000).to_dict()  # the 299-row samples whole, the 5000-row files cut
    rows = {r.tobytes() for r in big_nbaiot.features}
    assert all(r.tobytes() in rows for r in sample.features)  # rows of the data, unchanged
    assert ("(rows)", "sampled") in [(c, a) for c, a, _ in sample.report.columns]


@pytest.mark.parametrize(
    "families, expected",
    [
        (["gafgyt/udp"], {"benign": 2 * SAMPLE_ROWS, "gafgyt/udp": 2 * SAMPLE_ROWS}),
        (["gafgyt"], {"benign": 2 * SAMPLE_ROWS, "gafgyt/scan": SAMPLE_ROWS, "gafgyt/udp": 2 * SAMPLE_ROWS}),
        (["gafgyt/scan"], {"benign": 2 * SAMPLE_ROWS, "gafgyt/scan": SAMPLE_ROWS}),
    ],
)
def test_nbaiot_families_pick_attack_files(tmp_path, families, expected):
    assert family_counts(nbaiot(nbaiot_tree(tmp_path), families=families)) == expected


def test_nbaiot_devices_and_csv_gz(tmp_path):
    root = nbaiot_tree(tmp_path)
    plain = nbaiot(root, devices=["ecobee_thermostat"])
    gzip_file(root / "ecobee_thermostat" / "gafgyt_attacks" / "udp.csv")
    zipped = nbaiot(root, devices=["ecobee_thermostat"])
    assert set(zipped.groups["device"]) == {"ecobee_thermostat"}
    assert np.array_equal(plain.features, zipped.features) and family_counts(zipped) == {"benign": SAMPLE_ROWS, "gafgyt/udp": SAMPLE_ROWS}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"devices": ["danmini_doorbell"]}, r"no device folder\(s\) \['danmini_doorbell'\].*devices are \['ecobee_thermostat', 'ennio_doorbell'\]"),
        ({"families": ["mirai"]}, r"no attack of family 'mirai' among its 2 attack families"),
    ],
)
def test_nbaiot_unknown_device_or_family_is_named(tmp_path, fields, message):
    with pytest.raises(DataError, match=message):
        nbaiot(nbaiot_tree(tmp_path), **fields)


def test_nbaiot_missing_root_and_inconsistent_columns(tmp_path):
    with pytest.raises(DataError, match="N-BaIoT root folder not found"):
        nbaiot(tmp_path / "nowhere")
    root = nbaiot_tree(tmp_path)
    scan = root / "ennio_doorbell" / "gafgyt_attacks" / "scan.csv"
    frame = pd.read_csv(scan)
    frame.rename(columns={frame.columns[3]: "renamed"}).to_csv(scan, index=False)
    with pytest.raises(DataError, match=r"scan\.csv: columns differ from .*benign_traffic\.csv at column 4"):
        nbaiot(root)


@pytest.mark.parametrize(
    "text, reason",
    [("abc", "not a number"), ("", "missing value"), ("inf", "a number that is not finite or beyond float32"),
     ("1e40", "a number that is not finite or beyond float32")],
)
def test_nbaiot_bad_cell_names_file_row_and_column(tmp_path, text, reason):
    root = nbaiot_tree(tmp_path)
    udp = root / "ecobee_thermostat" / "gafgyt_attacks" / "udp.csv"
    replace_cell(udp, 2, "MI_dir_L1_mean", text)
    position = list(pd.read_csv(udp, nrows=0).columns).index("MI_dir_L1_mean") + 1
    with pytest.raises(DataError) as err:
        nbaiot(root)
    # the column by its position (its name comes from the file's header, not the spec), no cell value
    assert str(err.value).startswith(f"{udp}: row 3 (line 4), column {position}: {reason}")
    assert "dropBadRows" in str(err.value) and "MI_dir" not in str(err.value)


def test_nbaiot_drop_bad_rows_drops_and_counts(tmp_path, caplog):
    root = nbaiot_tree(tmp_path)
    udp = root / "ecobee_thermostat" / "gafgyt_attacks" / "udp.csv"
    replace_cell(udp, 2, "MI_dir_L1_mean", "abc")
    replace_cell(udp, 10, "H_L5_weight", "nan")
    replace_cell(udp, 11, "H_L5_weight", "-inf")
    clean = nbaiot(nbaiot_tree(tmp_path / "clean"), devices=["ecobee_thermostat"])
    table = nbaiot(root, devices=["ecobee_thermostat"], drop_bad_rows=True)
    assert table.report.rows_dropped == 3 and table.report.rows_read == 2 * SAMPLE_ROWS
    position = list(pd.read_csv(udp, nrows=0).columns).index("MI_dir_L1_mean") + 1
    assert table.report.problems[0] == f"{udp}: row 3 (line 4), column {position}: not a number"
    assert len(table) == len(clean) - 3
    kept = np.ones(len(clean), dtype=bool)
    kept[[SAMPLE_ROWS + 2, SAMPLE_ROWS + 10, SAMPLE_ROWS + 11]] = False  # the udp file follows the benign one
    assert np.array_equal(table.features, clean.features[kept])
    assert "dropped 3 bad row(s)" in caplog.text


def test_malformed_line_is_an_error_or_dropped(tmp_path):
    root = nbaiot_tree(tmp_path)
    udp = root / "ecobee_thermostat" / "gafgyt_attacks" / "udp.csv"
    lines = udp.read_text().splitlines()
    lines[5] += ",1.0,2.0"
    udp.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"udp\.csv: .*Expected 115 fields in line 6, saw 117"):
        nbaiot(root)
    table = nbaiot(root, drop_bad_rows=True)
    assert table.report.rows_dropped == 1 and "a line with 117 fields, expected 115" in table.report.problems[0]
    assert (table.groups["device"] == "ecobee_thermostat").sum() == 2 * SAMPLE_ROWS - 1


# --------------------------------------------------------------------------- BoT-IoT


@pytest.fixture(scope="module")
def bot_sample() -> pd.DataFrame:
    return pd.read_csv(BOTIOT, sep="\t")


def test_botiot_sample(bot_sample):
    table = botiot(BOTIOT)
    assert table.feature_names == botiot_loader.FEATURES
    assert table.features.shape == (999, 10) and table.features.dtype == np.float32
    assert np.array_equal(table.features, bot_sample[botiot_loader.FEATURES].to_numpy(np.float32))
    assert (table.labels == 1).all()  # the sample has no normal rows
    counts = family_counts(table)
    assert sum(n for f, n in counts.items() if f.startswith("DDoS/")) == 522
    assert sum(n for f, n in counts.items() if f.startswith("DoS/")) == 450
    assert counts["Reconnaissance/Service_Scan"] == 20 and counts["Reconnaissance/OS_Fingerprint"] == 7


def _with_normal_rows(sample: pd.DataFrame) -> pd.DataFrame:
    """Ten normal rows (copies of the first ten, relabelled) followed by the whole sample."""
    normal = sample.head(10).assign(attack=0, category="Normal", subcategory="Normal")
    return pd.concat([normal, sample], ignore_index=True)


@pytest.mark.parametrize("sep, header", [(",", True), (";", False), ("\t", False), (";", True)], ids=["comma", "semicolon-headerless", "tab-headerless", "semicolon"])
def test_botiot_sniffs_delimiter_and_header(tmp_path, bot_sample, sep, header):
    frame = _with_normal_rows(bot_sample)
    path = tmp_path / "bot.csv"
    frame.to_csv(path, sep=sep, header=header, index=False)
    table = botiot(path)
    assert np.array_equal(table.features, frame[botiot_loader.FEATURES].to_numpy(np.float32))
    assert table.labels.tolist() == frame["attack"].tolist()
    assert table.groups["family"][:10].tolist() == ["benign"] * 10 and table.groups["family"][10] == f"{frame.category[10]}/{frame.subcategory[10]}"


@pytest.mark.parametrize(
    "families, expected",
    [(["DoS"], {"DoS/HTTP": 1, "DoS/TCP": 163, "DoS/UDP": 286}), (["Reconnaissance/Service_Scan", "DoS/HTTP"], {"DoS/HTTP": 1, "Reconnaissance/Service_Scan": 20})],
)
def test_botiot_families_keep_benign_rows(tmp_path, bot_sample, families, expected):
    path = tmp_path / "bot.csv"
    _with_normal_rows(bot_sample).to_csv(path, index=False)
    assert family_counts(botiot(path, families=families)) == {"benign": 10, **expected}


def test_botiot_bad_label_and_bad_feature(tmp_path, bot_sample):
    frame = bot_sample.copy()
    frame.loc[4, "attack"] = 2
    frame["srate"] = frame["srate"].astype(object)
    frame.loc[7, "srate"] = "fast"
    path = tmp_path / "bot.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bot\.csv: row 5 \(line 6\), column 17 \('attack'\): label must be 0 or 1 \(set"):
        botiot(path)
    table = botiot(path, drop_bad_rows=True)
    assert table.report.rows_dropped == 2 and len(table) == 997
    assert table.report.problems[1].endswith("row 8 (line 9), column 15 ('srate'): not a number")  # the README's names


def test_botiot_headerless_file_must_have_the_readme_columns(tmp_path, bot_sample):
    path = tmp_path / "bot.csv"
    bot_sample.drop(columns=["pkSeqID"]).to_csv(path, header=False, index=False)
    with pytest.raises(DataError, match=r"no header naming .attack., and 18 columns where a headerless BoT-IoT file has 19 \(10-best\), 35 \(full\), 46 \(5%\)"):
        botiot(path)
    bot_sample.drop(columns=["drate"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['drate'\]"):
        botiot(path)


# --------------------------------------------------------------------------- tabular


@pytest.fixture
def sites(tmp_path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bytes": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "site": ["north", "north", "south", "south", "south", "east"],
            "packets": [1, 2, 3, 4, 5, 6],
            "kind": ["normal", "dos", "normal", "scan", "normal", "dos"],
            "note": ["a", "b", "c", "d", "e", "f"],
        }
    )


def test_tabular_csv_and_parquet(tmp_path, sites):
    sites.to_csv(tmp_path / "t.csv", sep=";", index=False)
    sites.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        table = tabular(tmp_path / name, label_column="kind", group_column="site")
        assert table.feature_names == ["bytes", "packets"]  # numeric columns but label and group
        assert table.features.tolist() == [[10, 1], [20, 2], [30, 3], [40, 4], [50, 5], [60, 6]]
        assert table.labels.tolist() == [0, 1, 0, 1, 0, 1]
        assert table.groups["site"].tolist() == sites.site.tolist() and table.groups["kind"].tolist() == sites.kind.tolist()
    named = tabular(tmp_path / "t.csv", label_column="kind", features=["packets"], benign_values=["normal", "scan"])
    assert named.feature_names == ["packets"] and named.labels.tolist() == [0, 1, 0, 0, 0, 1]


def test_tabular_numeric_label_values_compare_as_text(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_csv(tmp_path / "t.csv", index=False)
    assert tabular(tmp_path / "t.csv", label_column="y", benign_values=["0"]).labels.tolist() == [0, 1, 0]


def test_tabular_errors(tmp_path, sites):
    path = tmp_path / "t.csv"
    sites.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"benignValues 'norm' never occurs in column 'kind' \(3 distinct value\(s\) there\)$"):
        tabular(path, label_column="kind", benign_values=["norm"])
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]; the file has 5 column\(s\)$"):
        tabular(path)
    with pytest.raises(DataError, match=r"row 1 \(line 2\), column 5 \('note'\): not a number \(set"):  # named in dataset.features
        tabular(path, label_column="kind", features=["bytes", "note"])
    with pytest.raises(DataError, match="file not found"):
        tabular(tmp_path / "absent.parquet", label_column="kind")
    sites.loc[2, "kind"] = None
    sites.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 3 \(line 4\), column 4 \('kind'\): missing value"):
        tabular(path, label_column="kind")
    assert len(tabular(path, label_column="kind", drop_bad_rows=True)) == 5


def test_relative_path_is_resolved_against_base_dir(tmp_path, sites):
    (tmp_path / "data").mkdir()
    sites.to_csv(tmp_path / "data" / "t.csv", index=False)
    spec = DatasetSpec(kind="tabular", path="data/t.csv", label_column="kind", benign_values=["normal"])
    assert len(load_dataset(spec, base_dir=tmp_path)) == 6


def test_unsniffable_and_empty_files(tmp_path):
    (tmp_path / "one.csv").write_text("a\n1\n2\n")
    with pytest.raises(DataError, match="cannot tell the delimiter"):
        tabular(tmp_path / "one.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        tabular(tmp_path / "empty.csv")


@pytest.mark.parametrize("drop_bad_rows", [False, True])
def test_a_file_that_is_not_utf8_is_a_data_error(tmp_path, drop_bad_rows):
    (tmp_path / "latin1.csv").write_bytes("x,label\n1,caf\u00e9\n2,normal\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8 text \(") as err:
        tabular(tmp_path / "latin1.csv", drop_bad_rows=drop_bad_rows)
    assert "\\x" not in str(err.value) and "caf" not in str(err.value)  # the offending byte is not echoed


def test_data_errors_never_echo_the_files_contents(tmp_path):
    """dataset.path may name a file that is not data (a key, a token): no message quotes a
    header, a cell or a byte of it; each names the file, the column by position (by name only
    where the spec gave it) and the row."""
    secret = "TOKEN-9f8e7d"
    path = tmp_path / "t.csv"
    path.write_text(f"x,{secret}_header,label\n1,2,ok\n3,{secret},bad\n")
    with pytest.raises(DataError) as err:
        tabular(path)  # no column 'label' named by the spec? it is named: the default labelColumn
    messages = [str(err.value)]
    for kwargs in ({"label_column": "label", "benign_values": [secret[:5]]},           # benign value never occurs
                   {"label_column": "missing"},                                       # missing column
                   {"label_column": "label", "benign_values": ["ok"]},                # a non-numeric cell
                   {"label_column": "label", "benign_values": ["ok"], "group_column": "x"}):
        try:
            tabular(path, **kwargs)
        except DataError as exc:
            messages.append(str(exc))
    assert len(messages) >= 4
    assert any("row 2 (line 3), column 2: not a number" in m for m in messages)
    for message in messages:
        assert secret not in message, message


# --------------------------------------------------------------------------- groups


def test_group_selectors():
    table = Table(
        np.zeros((5, 1), np.float32),
        np.array([0, 1, 1, 1, 0], np.int8),
        {"device": np.array(["cam", "cam", "bell", "bell", "bell"]), "family": np.array(["benign", "gafgyt/udp", "gafgyt/tcp", "mirai/syn", "benign"])},
        ["x"],
    )
    assert select_groups(table, ["bell"]).tolist() == [False, False, True, True, True]
    assert select_groups(table, ["gafgyt"]).tolist() == [False, True, True, False, False]
    assert select_groups(table, ["family=gafgyt/udp", "device=bell"]).tolist() == [False, True, True, True, True]
    with pytest.raises(DataError, match=r"'gafgyt/junk' matches no row \(distinct group values: 2 in 'device', 4 in 'family'\)"):
        select_groups(table, ["gafgyt/junk"])
    with pytest.raises(DataError, match="no group column 'site'"):
        select_groups(table, ["site=north"])


# --------------------------------------------------------------------------- built-in generator


def test_builtin_structure_and_determinism():
    spec = BuiltinDataSpec(devices=2, families=3, features=7, benign_per_device=50, malicious_per_family=10, seed=5)
    table = load_dataset(DatasetSpec(builtin=spec))
    assert table.features.shape == (2 * (50 + 3 * 10), 7) and table.features.dtype == np.float32
    assert family_counts(table) == {"benign": 100, "family-0": 20, "family-1": 20, "family-2": 20}
    assert set(table.groups["device"]) == {"device-0", "device-1"}
    assert table.labels.sum() == 60 and np.array_equal(table.labels == 0, table.groups["family"] == "benign")
    again = load_dataset(DatasetSpec(builtin=spec))
    other = load_dataset(DatasetSpec(builtin=spec.model_copy(update={"seed": 6})))
    assert np.array_equal(table.features, again.features)
    assert not np.allclose(table.features, other.features)
    # Heterogeneous units, as traffic statistics: feature ranges span orders of magnitude.
    spans = np.ptp(table.features, axis=0)
    assert spans.max() / spans.min() > 10


def test_builtin_attacks_are_learnable_but_device_specific():
    """A client that saw only device-0 misses most of device-1's attacks; one that saw every
    device catches them; and no single hyperplane separates attacks from benign traffic."""
    table = load_dataset(DatasetSpec(builtin=BuiltinDataSpec(features=20, benign_per_device=600, malicious_per_family=100, seed=0)))
    X = (table.features - table.features.min(0)) / np.ptp(table.features, axis=0)
    y, device = table.labels, table.groups["device"]
    train = np.arange(len(y)) % 2 == 0
    device0, device1_attacks = device == "device-0", ~train & (device == "device-1") & (y == 1)

    def recall(model, rows):
        return model.predict(X[rows]).mean()

    own_device = KNeighborsClassifier(5).fit(X[train & device0], y[train & device0])
    every_device = KNeighborsClassifier(5).fit(X[train], y[train])
    linear = LogisticRegression(max_iter=2000).fit(X[train], y[train])
    assert recall(own_device, ~train & device0 & (y == 1)) > 0.9
    assert recall(own_device, device1_attacks) < 0.5
    assert recall(every_device, device1_attacks) > 0.9
    assert recall(linear, device1_attacks) < 0.9
