"""LocalServer: `python -m serving.server` in a subprocess, on a free loopback port.

    with LocalServer("runs/demo/export") as server:       # started and ready
        client = ServingClient(server.target, "mdl")

The server binds port 0 and prints the port it got; this reads that line, so no port is
guessed or raced for. Its log goes to `log_path` (or is discarded); when it exits early,
the error names the exit code and quotes the log's tail.
"""
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time

from serving.client import ServingClient


class LocalServer:
    def __init__(self, model_base_path, model_name="mdl", *, log_path=None, extra_args=(),
                 startup_timeout_s=180.0):
        self.model_base_path, self.model_name = model_base_path, model_name
        self.log_path = log_path or os.path.join(tempfile.mkdtemp(prefix="mdl-server-"),
                                                 "server.log")
        self.extra_args, self.startup_timeout_s = list(extra_args), startup_timeout_s
        self.process, self.port = None, None

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self):
        return self.process.pid

    def start(self):
        """Starts the server and returns once a model version is AVAILABLE."""
        cmd = [sys.executable, "-m", "serving.server", "--model_name", self.model_name,
               "--model_base_path", self.model_base_path, "--host", "127.0.0.1", "--port", "0",
               *self.extra_args]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_repo_root(), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            self.port = self._read_port(deadline)
            with ServingClient(self.target, self.model_name) as client:
                client.wait_until_ready(max(deadline - time.monotonic(), 1.0))
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, deadline):
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                line = self.process.stdout.readline().decode()
                if line.startswith("listening on "):
                    return int(line.rsplit(":", 1)[1])
                if not line:  # EOF: the server exited
                    break
        code = self.process.poll()
        state = f"exited with code {code}" if code is not None else "did not start in time"
        raise RuntimeError(f"model server {state}; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines=20):
        with open(self.log_path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def stop(self, timeout_s=15.0):
        """SIGTERM (the server drains in-flight requests), then SIGKILL after timeout_s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _repo_root():
    """The directory holding the `serving` package, so `-m serving.server` resolves."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
