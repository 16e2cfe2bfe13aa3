"""The command lines: `python -m serving.server` as a real subprocess (started, queried,
stopped by SIGTERM) and `python -m serving.client` against it."""
import json
import os

import mdl_tf  # noqa: F401
import pytest

from serving import client as client_cli
from serving import server as server_cli
from serving.process import LocalServer


@pytest.fixture(scope="module")
def served(tiny_run):
    server = LocalServer(os.path.dirname(tiny_run["export_path"]),
                         extra_args=["--enable_model_warmup", "false"]).start()
    yield server
    server.stop()
    assert server.process.returncode == 0, server.log_tail()


def _client(capsys, server, *args):
    code = client_cli.main(["--server", server.target, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_client_cli_status_and_signatures(served, tiny_run, capsys):
    code, out, _ = _client(capsys, served, "status")
    assert code == 0
    assert json.loads(out) == {os.path.basename(tiny_run["export_path"]): "AVAILABLE"}
    code, out, _ = _client(capsys, served, "signatures")
    assert json.loads(out)["serving_default"]["inputs"]["user_id"] == "int64"


def test_client_cli_predicts_csv_rows(served, tiny_run, tiny_schema, capsys):
    with open(os.path.join(tiny_run["model_dir"], "run.json")) as fh:
        valid_csv = os.path.join(json.load(fh)["data_dir"], "valid.csv")
    scenario, task = tiny_schema.scenario_names[0], tiny_schema.task_names[0]
    code, out, _ = _client(capsys, served, "predict", "--scenario", scenario, "--csv",
                           valid_csv, "--limit", "3")
    assert code == 0
    scores = json.loads(out)
    assert set(scores) == set(tiny_schema.task_names) and len(scores[task]) == 3
    code, out, _ = _client(capsys, served, "predict", "--scenario", scenario, "--task", task,
                           "--json", json.dumps({"user_id": [1]}))
    assert code == 2  # the client names the missing inputs before sending


def test_non_finite_scores_print_as_json_null():
    scores = {"click": [0.25, float("nan")], "like": [float("inf"), 1.0]}
    assert json.loads(json.dumps(client_cli.json_scores(scores), allow_nan=False)) == {
        "click": [0.25, None], "like": [None, 1.0]}


def test_client_cli_reports_server_errors(served, capsys):
    code, _, err = _client(capsys, served, "--model_name", "nope", "status")
    assert code == 1 and "NOT_FOUND" in err


def test_server_cli_refuses_a_missing_base_path(tmp_path, capsys):
    assert server_cli.main(["--model_base_path", str(tmp_path / "none")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_client_cli_reads_csv_in_the_trainers_dialect(served, tiny_run, tiny_schema, tmp_path,
                                                      capsys):
    """Quoted delimiters, CRLF and a byte-order mark are read; an empty dense cell takes
    the schema's default (with --schema) as in training, and is named without it."""
    with open(os.path.join(tiny_run["model_dir"], "run.json")) as fh:
        valid_csv = os.path.join(json.load(fh)["data_dir"], "valid.csv")
    with open(valid_csv) as fh:
        header, row = fh.readline().rstrip("\n"), fh.readline().rstrip("\n").split(",")
    cols = header.split(",")
    row[cols.index("city")] = '"c1,north"'
    row[cols.index("price")] = ""
    path = tmp_path / "rows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{header}\r\n{','.join(row)}\r\n".encode())
    scenario = tiny_schema.scenario_names[0]
    code, _, err = _client(capsys, served, "predict", "--scenario", scenario, "--csv", str(path))
    assert code == 2 and f"{path}:2: column 'price': empty dense cell" in err
    schema = os.path.join(tiny_run["model_dir"], "schema.yaml")
    code, out, _ = _client(capsys, served, "predict", "--scenario", scenario, "--csv",
                           str(path), "--schema", schema)
    assert code == 0 and len(json.loads(out)[tiny_schema.task_names[0]]) == 1
