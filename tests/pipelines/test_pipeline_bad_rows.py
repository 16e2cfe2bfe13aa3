"""Bad input: injected bad rows reach the dead letter with their reasons, the fraction guard
fails the run, and input that cannot work at all is refused before launching."""
import csv
import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_helpers import (ALI_CCP_SCENARIOS, BEAM_ARGS, RECIPES, ali_ccp_rows,
                              preprocess, read_dead_letter, read_examples)
from pipelines import preprocess as cli
from pipelines import sources
from pipelines.pipeline import PreprocessError

SCHEMA = os.path.join(RECIPES, "ali_ccp.yaml")
SPLITS = ("train", "valid", "test")


def _line(row, **changes):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow({**row, **changes}.values())
    return buf.getvalue()


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """The Ali-CCP fixture (100 rows), gzipped, with one bad line per CSV reason and a line
    that is not UTF-8: (path, {line: reason})."""
    _, rows = ali_ccp_rows()
    bad = {
        "1,0,1": "unparseable",                                          # 3 fields, not 33
        _line(rows[0], click="2"): "label_out_of_range",
        _line(rows[1], purchase="x"): "label_out_of_range",
        _line(rows[2], **{"301": "9"}): "unknown_scenario",
        _line(rows[3], **{"301": ""}): "unknown_scenario",
        _line(rows[4], D508="abc"): "bad_value",
        _line(rows[5], D509="nan"): "bad_value",
    }
    lines = [",".join(rows[0]), *map(_line, rows[:50]), *bad, *map(_line, rows[50:])]
    not_utf8 = _line(rows[6]).encode().replace(b",", b",\xff", 1)
    path = tmp_path_factory.mktemp("injected") / "ali_ccp.csv.gz"
    with gzip.open(path, "wb") as fh:
        fh.write("\n".join(lines).encode() + b"\n" + not_utf8 + b"\n")
    return str(path), bad


def test_bad_rows_reach_the_dead_letter_and_the_guard_fails_the_run(tmp_path, injected, capsys):
    path, bad = injected
    code = cli.main(["--schema", SCHEMA, "--input", path, "--output_dir", str(tmp_path),
                     "--scenario_map", "1=s1,2=s2,3=s3", "--max_bad_fraction", "0.05",
                     *BEAM_ARGS])
    # Each injected line is in the dead letter with its reason, source and detail.
    dead = read_dead_letter(tmp_path)
    assert {d["record"]: d["reason"] for d in dead if "\\xff" not in d["record"]} == bad
    not_utf8 = [d for d in dead if "\\xff" in d["record"]]
    assert len(not_utf8) == 1 and "not UTF-8" in not_utf8[0]["detail"]
    assert all(d["source"] == path and d["detail"] for d in dead)
    # The good rows are all written; 8 of 108 bad is over the 5% limit, so the run fails.
    assert sum(len(read_examples(tmp_path, s)) for s in SPLITS) == 100
    err = capsys.readouterr().err
    assert code == 1
    assert "8 of 108 rows (7.41%) are bad" in err and "--max_bad_fraction=0.05" in err
    assert "unparseable: 2" in err and "No schema.yaml was written" in err
    assert not (tmp_path / "schema.yaml").exists()
    with open(tmp_path / "report.json") as fh:
        report = json.load(fh)
    assert report["status"] == "failed"
    assert report["rows"] == {"read": 108, "good": 100, "bad": 8, "bad_fraction": 8 / 108,
                              "max_bad_fraction": 0.05}
    assert report["bad_rows_by_reason"] == {"bad_value": 2, "label_out_of_range": 2,
                                            "unknown_scenario": 2, "unparseable": 2}


def test_json_lines_missing_columns_and_parquet(tmp_path):
    _, rows = ali_ccp_rows()
    jsonl = tmp_path / "rows.jsonl"
    with open(jsonl, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows[:60])
        fh.write(json.dumps({k: v for k, v in rows[0].items() if k != "D853"}) + "\n")
        fh.write("not json\n")
    report = preprocess(SCHEMA, [str(jsonl)], tmp_path / "json",
                        scenario_map=ALI_CCP_SCENARIOS, max_bad_fraction=0.05)
    assert report["input_format"] == "json" and report["rows"]["good"] == 60
    assert report["bad_rows_by_reason"] == {"missing_column": 1, "unparseable": 1}
    dead = {d["reason"]: d for d in read_dead_letter(tmp_path / "json")}
    assert "['D853']" in dead["missing_column"]["detail"]

    parquet = tmp_path / "rows.parquet"
    table = [{**r, "click": int(r["click"]), "D508": float(r["D508"])} for r in rows[60:]]
    table[0]["301"] = None
    pq.write_table(pa.Table.from_pylist(table), parquet)
    report = preprocess(SCHEMA, [str(parquet)], tmp_path / "parquet",
                        scenario_map=ALI_CCP_SCENARIOS, max_bad_fraction=0.05)
    assert report["input_format"] == "parquet"
    assert report["rows"]["good"] == 39 and report["bad_rows_by_reason"] == {"unknown_scenario": 1}
    assert sum(len(read_examples(tmp_path / "parquet", s)) for s in SPLITS) == 39


def test_unusable_input_is_refused_before_launching(tmp_path):
    path, rows = ali_ccp_rows()
    with pytest.raises(sources.InputError, match="no input files match"):
        preprocess(SCHEMA, [str(tmp_path / "none-*.csv")], tmp_path / "a",
                   scenario_map=ALI_CCP_SCENARIOS)
    short = tmp_path / "short.csv"
    short.write_text("click,purchase\n0,0\n")
    with pytest.raises(sources.InputError, match=r"header lacks column\(s\) \['101'"):
        preprocess(SCHEMA, [str(short)], tmp_path / "b", scenario_map=ALI_CCP_SCENARIOS)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(sources.InputError, match="empty first line"):
        preprocess(SCHEMA, [str(tmp_path / "empty.csv")], tmp_path / "e")
    with pytest.raises(sources.InputError, match="--input_format must be"):
        preprocess(SCHEMA, [path], tmp_path / "c", input_format="xml")
    headerless = tmp_path / "headerless.yaml"
    with open(SCHEMA) as fh:
        headerless.write_text(fh.read() + "csv: {header: false}\n")
    with pytest.raises(sources.InputError, match="needs a header line"):
        preprocess(str(headerless), [path], tmp_path / "d", scenario_map=ALI_CCP_SCENARIOS)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "schema.yaml").write_text("old")
    with pytest.raises(PreprocessError, match="is not empty"):
        preprocess(SCHEMA, [path], tmp_path / "used", scenario_map=ALI_CCP_SCENARIOS)


@pytest.mark.parametrize("flags", [["--scenario_map", "1s1"], ["--split_fractions", "a,b"],
                                   ["--input_format", "xml"]])
def test_malformed_flags_are_refused(flags, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--schema", SCHEMA, "--input", "x.csv", "--output_dir", "out", *flags])
    assert e.value.code == 2 and flags[0] in capsys.readouterr().err


def test_no_good_rows_is_an_error_even_without_a_limit(tmp_path):
    path, _ = ali_ccp_rows()
    with pytest.raises(PreprocessError, match=r"100 of 100 rows .* unknown_scenario: 100"):
        preprocess(SCHEMA, [path], tmp_path, max_bad_fraction=1.0,
                   scenario_from_path="no_such_dir_(x)")
