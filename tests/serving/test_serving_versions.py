"""Version management: a new version swaps in under load with no failed request; a broken
version is reported and skipped; removing the newest version rolls back."""
import os
import shutil
import threading
import time

import grpc
import mdl_tf  # noqa: F401
import pytest

from mdl_tf.contract import requests, signatures
from serving.client import ServingClient

from serving_helpers import publish_version, start_server, validation_columns

POLL_S = 0.1
DEADLINE_S = 90.0   # bounds every wait; a loaded machine can take tens of seconds to load


def _wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    pytest.fail(f"timed out waiting for {what}")


class LoadLoop:
    """Client threads sending one Predict after another until stopped; records the version
    of every answer and every error."""

    def __init__(self, target, columns, threads=1):
        self.versions, self.errors, self.count = set(), [], 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(target, columns))
                         for _ in range(threads)]

    def _send(self, target, columns):
        with ServingClient(target, "mdl") as client:
            dtypes = client.input_dtypes(signatures.DEFAULT)
            request = requests.make_predict_request(
                "mdl", signatures.DEFAULT, {k: columns[k] for k in dtypes}, dtypes)
            while not self._stop.is_set():
                try:
                    response = client.predictions.Predict(request, timeout=60)
                    self.versions.add(response.model_spec.version.value)
                    self.count += 1
                except grpc.RpcError as e:
                    self.errors.append(f"{e.code().name}: {e.details()}")

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=DEADLINE_S)


@pytest.fixture
def export_base(tmp_path):
    base = str(tmp_path / "export")
    os.makedirs(base)
    return base


def test_new_version_swaps_in_while_requests_keep_succeeding(tiny_run, export_base):
    publish_version(tiny_run["export_path"], export_base, 1)
    server = start_server(export_base, poll_seconds=POLL_S, enable_warmup=False)
    try:
        with LoadLoop(f"127.0.0.1:{server.port}", validation_columns(tiny_run, 4)) as load:
            _wait_for(lambda: load.count > 0, "the first answer")
            publish_version(tiny_run["export_path"], export_base, 2)
            _wait_for(lambda: 2 in load.versions, "answers from version 2")
            answered = load.count
            _wait_for(lambda: load.count > answered + 5, "more answers after the swap")
    finally:
        server.stop()
    assert load.errors == []
    assert load.versions == {1, 2}


def test_broken_version_is_reported_and_removing_the_newest_rolls_back(tiny_run, tiny_schema,
                                                                      export_base):
    publish_version(tiny_run["export_path"], export_base, 1)
    publish_version(tiny_run["export_path"], export_base, 2)
    server = start_server(export_base, poll_seconds=POLL_S, enable_warmup=False,
                          max_num_load_retries=0)
    try:
        with ServingClient(f"127.0.0.1:{server.port}", "mdl") as client:
            assert client.status() == {2: "AVAILABLE"}
            os.makedirs(os.path.join(export_base, "3"))  # no saved_model.pb: cannot load
            _wait_for(lambda: client.status().get(3) == "END", "version 3 to fail")
            assert client.status()[2] == "AVAILABLE"
            shutil.rmtree(os.path.join(export_base, "3"))
            shutil.rmtree(os.path.join(export_base, "2"))
            _wait_for(lambda: client.status().get(1) == "AVAILABLE", "rollback to version 1")
            columns = validation_columns(tiny_run, 2)
            assert set(client.predict(columns)) == set(tiny_schema.task_names)
    finally:
        server.stop()


def test_failed_load_is_retried_so_a_completed_copy_loads(tiny_run, export_base):
    publish_version(tiny_run["export_path"], export_base, 1)
    os.makedirs(os.path.join(export_base, "2"))     # a copy still in progress: no files yet
    server = start_server(export_base, poll_seconds=POLL_S, enable_warmup=False,
                          max_num_load_retries=5, load_retry_interval_s=1.0)
    try:
        with ServingClient(f"127.0.0.1:{server.port}", "mdl") as client:
            _wait_for(lambda: client.status().get(1) == "AVAILABLE", "version 1")
            assert client.status()[2] == "LOADING"   # failed once, will be tried again
            shutil.copytree(tiny_run["export_path"], os.path.join(export_base, "2"),
                            dirs_exist_ok=True)      # the copy completes in place
            _wait_for(lambda: client.status().get(2) == "AVAILABLE", "version 2 to load")
    finally:
        server.stop()
