"""ModelManager: serves the newest version under a base path, like TF Serving's "latest 1".

Every poll lists the numeric directories under the base path (anything else, such as the
export's `.tmp-*` directories, is ignored). When the newest one is not the version being
served, it is loaded and warmed up in the polling thread while the old version keeps
answering; then one reference is swapped. A request holds the Servable it started with,
so in-flight requests finish on the old version and none fails during a swap. Removing
the newest directory rolls back to the next newest.

A version that fails to load (or to warm up), e.g. a copy still in progress, is retried
as TF Serving does: up to `max_load_retries` more times (--max_num_load_retries, default
5), `load_retry_interval_s` apart (--load_retry_interval_micros, default 1 minute), at the
polls due then; meanwhile the previous version keeps serving and GetModelStatus says
LOADING. After the last failure it says END with the error. A failed version whose
directory is removed and created again starts over.
"""
import dataclasses
import logging
import os
import threading
import time

from tensorflow_serving.apis import get_model_status_pb2

from mdl_tf.contract.versions import versions_on_disk
from serving import errors
from serving.servable import Servable

State = get_model_status_pb2.ModelVersionStatus.State
log = logging.getLogger("serving.manager")


@dataclasses.dataclass(frozen=True)
class LoadFailure:
    error: str
    attempts: int
    retry_at: float | None     # time.monotonic() of the next try; None: no more tries

    def due(self, now):
        return self.retry_at is not None and now >= self.retry_at


@dataclasses.dataclass(frozen=True)
class VersionState:
    version: int
    state: int                 # get_model_status_pb2.ModelVersionStatus.State
    error: str = ""            # why loading failed (state END)


class ModelManager:
    def __init__(self, model_name, base_path, warmup=True, on_change=None,
                 max_load_retries=5, load_retry_interval_s=60.0):
        self.model_name, self.base_path, self.warmup = model_name, base_path, warmup
        self.on_change = on_change          # called with the new Servable after a swap
        self.max_load_retries = max_load_retries
        self.load_retry_interval_s = max(load_retry_interval_s, 0.0)
        self._current = None                # the Servable answering requests
        self._loading = None                # version being loaded, if any
        self._failed = {}                   # version -> LoadFailure
        self._stop = threading.Event()
        self._thread = None

    # --- versions ----------------------------------------------------------------------
    def poll(self):
        """One scan; loads and swaps in the newest loadable version. Returns the version served."""
        on_disk, now = versions_on_disk(self.base_path), time.monotonic()
        self._failed = {v: f for v, f in self._failed.items() if v in on_disk}
        candidates = [v for v in on_disk if v not in self._failed or self._failed[v].due(now)]
        current = self._current
        if not candidates or (current is not None and candidates[-1] == current.version):
            return current.version if current is not None else None
        self._load(candidates[-1])
        return self._current.version if self._current is not None else None

    def _load(self, version):
        path = os.path.join(self.base_path, str(version))
        self._loading = version
        try:
            servable = Servable(self.model_name, version, path)
            warmed = servable.warm_up() if self.warmup else 0
        except Exception as e:  # any failure of one version must not stop the server
            self._record_failure(version, path, f"{type(e).__name__}: {e}")
            return
        finally:
            self._loading = None
        self._current = servable
        log.warning("serving %s version %d from %s (%d warm-up requests)", self.model_name,
                    version, path, warmed)
        if self.on_change is not None:
            self.on_change(servable)

    def _record_failure(self, version, path, error):
        previous = self._failed.get(version)
        attempts = previous.attempts + 1 if previous else 1
        retry = attempts <= self.max_load_retries
        self._failed[version] = LoadFailure(
            error, attempts, time.monotonic() + self.load_retry_interval_s if retry else None)
        then = (f"retrying in {self.load_retry_interval_s:g} s" if retry
                else "giving up")
        log.error("failed to load %s version %d from %s (attempt %d of %d, %s): %s",
                  self.model_name, version, path, attempts, self.max_load_retries + 1, then,
                  errors.log_line(error))

    # --- polling thread ----------------------------------------------------------------
    def start(self, poll_seconds):
        """Polls every `poll_seconds` in a daemon thread (0: never)."""
        if poll_seconds <= 0:
            return
        self._thread = threading.Thread(target=self._run, args=(poll_seconds,),
                                        name="version-poller", daemon=True)
        self._thread.start()

    def _run(self, poll_seconds):
        while not self._stop.wait(poll_seconds):
            try:
                self.poll()
            except Exception:  # e.g. the base path vanished: keep serving, keep polling
                log.exception("polling %s failed", self.base_path)

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    # --- lookups for requests ----------------------------------------------------------
    def servable(self, model_spec):
        """The Servable a request's ModelSpec names; raises ServingError like TF Serving."""
        which = model_spec.WhichOneof("version_choice")
        if which == "version_label":
            raise errors.invalid_argument(
                f"Unrecognized servable version label: {model_spec.version_label}")
        current = self._current
        if which == "version":
            request = f"Specific({model_spec.name}, {model_spec.version.value})"
            ok = current is not None and current.version == model_spec.version.value
        else:
            request = f"Latest({model_spec.name})"
            ok = current is not None
        if model_spec.name != self.model_name or not ok:
            raise errors.not_found(f"Servable not found for request: {request}")
        return current

    def version_states(self, model_name, version=None):
        """[VersionState] for GetModelStatus; raises ServingError NOT_FOUND like TF Serving."""
        states = {v: VersionState(v, State.END, errors.truncate(f.error)) if f.retry_at is None
                  else VersionState(v, State.LOADING) for v, f in self._failed.items()}
        loading, current = self._loading, self._current
        if loading is not None:
            states[loading] = VersionState(loading, State.LOADING)
        if current is not None:
            states[current.version] = VersionState(current.version, State.AVAILABLE)
        if model_name != self.model_name:
            states = {}
        if version is not None:
            if version not in states:
                raise errors.not_found(f"Could not find version {version} of model {model_name}")
            return [states[version]]
        if not states:
            raise errors.not_found(f"Could not find any versions of model {model_name}")
        return [states[v] for v in sorted(states)]

