"""Row validation and record parsing, without Beam: every bad-row reason and its detail."""
import gzip

import pytest

import pipeline_helpers  # noqa: F401  (before `pipelines`: puts the repository on sys.path)
from mdl_tf import schema as schema_lib
from pipelines import sources
from pipelines.validate import BadRow, RowValidator

SCHEMA = schema_lib.from_dict({
    "features": [
        {"name": "user", "type": "categorical", "hash_buckets": 10},
        {"name": "item", "type": "categorical", "dtype": "int64", "vocab_size": 100},
        {"name": "tags", "type": "multi_categorical", "separator": "|", "hash_buckets": 10},
        {"name": "price", "type": "dense", "log1p": True},
    ],
    "groups": {"a": ["user", "item"], "b": ["tags", "price"]},
    "scenario": {"column": "scene", "names": ["feed", "search"]},
    "tasks": ["click"],
    "gauc_group": ["session"],
    "important_features": ["user"],
})
GOOD = {"user": "u1", "item": "7", "tags": "a|b", "price": "2.5", "scene": "feed",
        "click": "1", "session": "s9"}


def check(cells, validator=None, source="data.csv"):
    return (validator or RowValidator(SCHEMA))({**GOOD, **cells}, source)


def reason_of(cells, validator=None, source="data.csv"):
    with pytest.raises(BadRow) as e:
        check(cells, validator, source)
    return e.value.reason, e.value.detail


def test_good_row_is_typed_for_example_from_row():
    row, extras = check({})
    assert row == {"user": "u1", "item": 7, "tags": ["a", "b"], "price": 2.5,
                   "scene": ["feed"], "click": 1, "session": "s9"}
    assert extras == {}


def test_empty_cells_are_missing_values_not_errors():
    row, _ = check({"user": "", "item": " ", "tags": "", "price": "", "click": ""})
    assert (row["user"], row["item"], row["tags"], row["price"], row["click"]) == (
        None, None, [], None, None)


def test_json_typed_values():
    row, _ = check({"item": 7.0, "tags": ["x", "", None, "y"], "price": 3, "click": True,
                    "scene": 1})
    assert (row["item"], row["tags"], row["price"], row["click"], row["scene"]) == (
        7, ["x", "y"], 3.0, 1, ["search"])


def test_scenario_indices_multi_scenarios_and_map():
    assert check({"scene": "1|feed"})[0]["scene"] == ["search", "feed"]
    mapped = RowValidator(SCHEMA, scenario_map={"10": "feed", "20": "search"})
    assert check({"scene": "20"}, mapped)[0]["scene"] == ["search"]


def test_numeric_scenario_names_are_names_not_indices():
    numeric = RowValidator(schema_lib.from_dict({**SCHEMA.to_dict(), "scenario": {
        "column": "scene", "names": ["1", "2"]}}))
    assert check({"scene": "1|2"}, numeric)[0]["scene"] == ["1", "2"]
    assert reason_of({"scene": "0"}, numeric) == ("unknown_scenario", "column 'scene': "
                                                  "unknown scenario '0' (known: 1, 2)")


def test_scenario_from_path():
    by_path = RowValidator(SCHEMA, scenario_from_path=r"logs_([A-Za-z]+)/")
    cells = {k: v for k, v in GOOD.items() if k != "scene"}
    row, _ = by_path(cells, "gs://b/logs_SEARCH/part-0.csv")
    assert row["scene"] == ["search"]
    assert reason_of({}, by_path, source="other/part-0.csv")[0] == "unknown_scenario"


@pytest.mark.parametrize("cells, reason, detail", [
    ({"scene": "shop"}, "unknown_scenario", "unknown scenario 'shop'"),
    ({"scene": "2"}, "unknown_scenario", "unknown scenario '2'"),
    ({"scene": ""}, "unknown_scenario", "empty scenario"),
    ({"scene": "feed|"}, "unknown_scenario", "empty scenario"),
    ({"click": "2"}, "label_out_of_range", "got '2'"),
    ({"click": "-1"}, "label_out_of_range", "got '-1'"),
    ({"click": "yes"}, "label_out_of_range", "got 'yes'"),
    ({"click": "nan"}, "label_out_of_range", "got 'nan'"),
    ({"price": "abc"}, "bad_value", "not a number: 'abc'"),
    ({"price": "NaN"}, "bad_value", "NaN in dense feature 'NaN'"),
    ({"price": "inf"}, "bad_value", "not a number: 'inf'"),
    ({"price": "1e39"}, "bad_value", "column 'price': not finite as float32"),
    ({"price": 1e39}, "bad_value", "not finite as float32"),      # a JSON number
    ({"price": "1_000"}, "bad_value", "not a number"),
    ({"item": "99999999999999999999"}, "bad_value", "not an int64 id"),
    ({"click": "+1"}, "label_out_of_range", "got '+1'"),
    ({"price": "-1"}, "bad_value", "log1p needs a value > -1"),
    ({"item": "7.5"}, "bad_value", "not an int64 id: '7.5'"),
    ({"item": "x7"}, "bad_value", "not an int64 id"),
    ({"item": str(2 ** 63)}, "bad_value", "not an int64 id"),
])
def test_bad_values(cells, reason, detail):
    got_reason, got_detail = reason_of(cells)
    assert got_reason == reason and detail in got_detail


def test_missing_columns_are_named():
    cells = {k: v for k, v in GOOD.items() if k not in ("click", "session")}
    with pytest.raises(BadRow) as e:
        RowValidator(SCHEMA)(cells, "x.json")
    assert e.value.reason == "missing_column" and "'click'" in e.value.detail
    assert "'session'" in e.value.detail


def test_split_columns_are_required_and_returned():
    v = RowValidator(SCHEMA, extra_columns=("user", "day"), time_column="ts")
    _, extras = check({"day": " 3 ", "ts": "2024-05-01T00:00:10"}, v)
    assert extras == {"user": "u1", "day": "3", "ts": 1714521610.0}
    assert check({"day": "3", "ts": "12.5"}, v)[1]["ts"] == 12.5
    assert reason_of({"day": "3", "ts": "yesterday"}, v)[0] == "bad_value"
    assert reason_of({"ts": "1"}, v)[0] == "missing_column"


# --- record parsing (sources) ------------------------------------------------------------
def test_csv_line_parser_quotes_field_count_and_encoding():
    parse = sources.CsvLineParser({"f.csv": ["a", "b", "c"]}, ",")
    assert parse(("f.csv", b'1,"x,y",3'))[2] == {"a": "1", "b": "x,y", "c": "3"}
    assert parse(("f.csv", b"1,2"))[3] == ("unparseable", "expected 3 fields, got 2")
    assert parse(("f.csv", b'1,"x"y,3'))[3][1].startswith("bad CSV quoting")
    assert parse(("f.csv", b'1,"x,3'))[3][1].startswith("bad CSV quoting")
    source, text, cells, error = parse(("f.csv", b"1,\xff,3"))
    assert cells is None and error[0] == "unparseable" and "UTF-8" in error[1]
    assert text == "1,\\xff,3"


def test_csv_headers_per_file(tmp_path):
    (tmp_path / "a.csv").write_bytes(b'\xef\xbb\xbfx,"y"\n1,2\n')    # with a byte-order mark
    (tmp_path / "b.csv").write_text("y;x\n")
    files = sources.match_files([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")])
    assert sources.read_csv_headers(files[:1], ",") == {files[0]: ["x", "y"]}
    assert sources.read_csv_headers(files[1:], ";") == {files[1]: ["y", "x"]}


def test_json_line_parser():
    assert sources.parse_json_line(("f", b'{"a": 1}'))[2] == {"a": 1}
    assert sources.parse_json_line(("f", b"{oops"))[3][0] == "unparseable"
    assert sources.parse_json_line(("f", b"[1]"))[3] == (
        "unparseable", "a JSON line must hold an object")


def test_format_detection():
    assert sources.detect_format(["a/*.csv.gz", "b.tsv"]) == "csv"
    assert sources.detect_format(["x.jsonl"]) == "json"
    assert sources.detect_format(["gs://b/p/*.parquet"]) == "parquet"
    with pytest.raises(sources.InputError, match="--input_format"):
        sources.detect_format(["data/part-*"])
    with pytest.raises(sources.InputError, match="mix formats"):
        sources.detect_format(["a.csv", "b.json"])


def test_truncated_gzip_input_is_refused_before_launching(tmp_path):
    path = tmp_path / "part.csv.gz"
    blob = gzip.compress(b"a,b\n" + b"1,2\n" * 2000)
    path.write_bytes(blob[:len(blob) // 2])
    files = sources.match_files([str(path)])
    with pytest.raises(sources.InputError, match="part.csv.gz: truncated gzip file"):
        sources.verify_compressed(files)
    path.write_bytes(blob)
    sources.verify_compressed(files)


def test_csv_dialect_is_the_trainers(tmp_path):
    """The same lines as tests/test_dialect.py: quoted delimiters, stripped cells, CRLF."""
    parse = sources.CsvLineParser({"f.csv": ["a", "b", "c"]}, ",")
    assert parse(("f.csv", b' 1 ,"x,y", 3\r\n'))[2] == {"a": "1", "b": "x,y", "c": "3"}
    assert parse(("f.csv", b'1, "x",3'))[3][1].startswith("bad CSV quoting")
