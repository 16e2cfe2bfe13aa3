"""Serving benchmark: in-process SavedModel vs the local gRPC server, serving_default vs a
per-scenario signature, at batch 1 and 256; a bounded concurrent load; server memory.

    python -m benchmarks.serving --model_dir runs/serving-bench

The model directory must hold a trained run with an export (python -m mdl_tf.train
--model_dir runs/serving-bench --epochs 1 trains the default MDL on the synthetic data).
The server runs as a subprocess (`python -m serving.server`) so its memory is its own.
All paths (in-process, gRPC; both signatures; both batch sizes) are measured in
alternating rounds, so load from other processes on a shared machine falls on all alike. Writes benchmarks/results/serving.md.

Targets (issue 3): gRPC adds <= 2 ms p50 at batch 1; a per-scenario signature is >= 1.2x
faster than serving_default; zero errors under the concurrent load; server peak RSS
<= 1.5 GB.
"""
import datetime
import os
import platform
import shlex
import sys
import threading
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.serving_parser)

import mdl_tf  # noqa: F401
import numpy as np
import psutil
import tensorflow as tf
from absl import logging

from mdl_tf import demo, runs
from mdl_tf.contract import requests, signatures
from mdl_tf.contract.versions import versions_on_disk
from serving import cost
from serving.client import ServingClient
from serving.process import LocalServer
from serving.servable import Servable

TARGETS = {"grpc_overhead_ms": 2.0, "scenario_speedup": 1.2, "errors": 0, "rss_gb": 1.5}


def latest_version(export_base):
    versions = versions_on_disk(export_base)
    if not versions:
        raise FileNotFoundError(f"no version under {export_base}; train or export first")
    return os.path.join(export_base, str(max(versions)))


def signature_inputs(columns, batch, dtypes):
    """The signature's inputs for the first `batch` rows, cycled if there are fewer."""
    index = np.arange(batch) % len(columns["scenario"])
    return {k: np.asarray(columns[k])[index] for k in dtypes}


class Path:
    """One way to answer a request: a callable on prepared inputs."""

    def __init__(self, name, call):
        self.name, self.call, self.times = name, call, []

    def run(self, n):
        for _ in range(n):
            start = time.perf_counter()
            self.call()
            self.times.append(time.perf_counter() - start)

    def stats(self, batch):
        t = np.array(self.times) * 1e3
        return {"p50": np.percentile(t, 50), "p99": np.percentile(t, 99),
                "rps": 1e3 / t.mean(), "rows_s": batch * 1e3 / t.mean()}


def build_paths(loaded, servable, client, columns, signature, batch, dtypes):
    """{name: Path} for one signature and batch: raw in-process call, the server's work
    without transport (Servable.predict on a request proto), client proto work, gRPC."""
    inputs = signature_inputs(columns, batch, dtypes)
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    function = loaded.signatures[signature]
    request = requests.make_predict_request("mdl", signature, inputs, dtypes)
    response = servable.predict(request)

    def client_protos():
        requests.response_arrays(response)
        return requests.make_predict_request("mdl", signature, inputs, dtypes)

    return {
        "in-process": Path("in-process", lambda: {k: v.numpy()
                                                  for k, v in function(**tensors).items()}),
        "server work": Path("server work", lambda: servable.predict(request)),
        "client protos": Path("client protos", client_protos),
        "gRPC": Path("gRPC", lambda: client.predict(inputs, signature=signature)),
    }


def measure(combos, iterations, rounds=20):
    """Runs every path of every (signature, batch) in alternating rounds, so background load
    on a shared machine falls on all of them alike. `iterations(batch)`: calls per path."""
    paths = [(batch, path) for (_, batch), by_name in combos.items()
             for path in by_name.values()]
    for _, path in paths:
        path.run(5)  # first calls: lazy initialisation
        path.times.clear()
    for _ in range(rounds):
        for batch, path in paths:
            path.run(max(iterations(batch) // rounds, 1))


def concurrent_load(target, columns, signature, dtypes, threads, duration_s, batch):
    """Several client threads for a bounded time; returns counts and latency."""
    inputs = signature_inputs(columns, batch, dtypes)
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + duration_s

    def worker():
        with ServingClient(target, "mdl") as client:
            request = requests.make_predict_request("mdl", signature, inputs, dtypes)
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    client.predictions.Predict(request, timeout=30)
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception as e:  # every failure counts, whatever its kind
                    with lock:
                        errors.append(repr(e)[:200])

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    t = np.array(latencies) * 1e3
    return {"threads": threads, "batch": batch, "duration_s": elapsed, "requests": len(t),
            "errors": len(errors), "first_errors": errors[:3], "rps": len(t) / elapsed,
            "p50": np.percentile(t, 50) if len(t) else float("nan"),
            "p99": np.percentile(t, 99) if len(t) else float("nan")}


def peak_rss_gb(pid):
    """VmHWM (peak resident set) of a live process, in GB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return psutil.Process(pid).memory_info().rss / 1e9


def run(args):
    version_dir = latest_version(args.export_base or os.path.join(args.model_dir, "export"))
    model, schema, info = runs.restore_model(args.model_dir)
    flops = cost.signature_flops(model, batch_size=64)
    columns, _ = demo.validation_rows(args.model_dir, max(args.batches))
    scenario_sig = signatures.scenario_signature(schema.scenario_names[0])
    loaded = tf.saved_model.load(version_dir)
    load_before = os.getloadavg()
    servable = Servable("mdl", int(os.path.basename(version_dir)), version_dir)
    servable.warm_up()
    results = {}
    with LocalServer(os.path.dirname(version_dir), "mdl") as server, \
            ServingClient(server.target, "mdl") as client:
        combos = {(signature, batch): build_paths(loaded, servable, client, columns, signature,
                                                  batch, client.input_dtypes(signature))
                  for signature in (signatures.DEFAULT, scenario_sig) for batch in args.batches}
        measure(combos, lambda b: args.iterations if b == 1 else args.iterations // 3)
        for (signature, batch), paths in combos.items():
            results[(signature, batch)] = {k: p.stats(batch) for k, p in paths.items()}
            print(f"{signature} batch {batch}: " + ", ".join(
                f"{k} p50 {v['p50']:.2f} ms" for k, v in results[(signature, batch)].items()),
                flush=True)
        load = concurrent_load(server.target, columns, scenario_sig,
                               client.input_dtypes(scenario_sig), args.threads,
                               args.duration, args.load_batch)
        print(f"concurrent load: {load['requests']} requests, {load['errors']} errors",
              flush=True)
        rss = peak_rss_gb(server.pid)
    return {"version_dir": version_dir, "info": info, "schema": schema, "flops": flops,
            "results": results, "load": load, "rss_gb": rss, "scenario_sig": scenario_sig,
            "loadavg": (load_before, os.getloadavg())}


# --- report ------------------------------------------------------------------------------
def report(args, r):
    res, sig, batches = r["results"], r["scenario_sig"], args.batches
    b1 = batches[0]
    overhead = res[(signatures.DEFAULT, b1)]["gRPC"]["p50"] - \
        res[(signatures.DEFAULT, b1)]["in-process"]["p50"]
    speedups = {(mode, b): res[(signatures.DEFAULT, b)][mode]["p50"] / res[(sig, b)][mode]["p50"]
                for mode in ("in-process", "gRPC") for b in batches}
    best_speedup = max(speedups.values())
    flop_ratio = r["flops"][signatures.DEFAULT] / r["flops"][sig]
    lines = [
        "# Serving benchmark",
        "",
        f"Command: `python -m benchmarks.serving {shlex.join(sys.argv[1:])}`",
        "",
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on {platform.node()}: "
        f"{psutil.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"TensorFlow {tf.__version__}. **The machine is shared with other agents running "
        f"TensorFlow**: load average {r['loadavg'][0][0]:.1f} at the start, "
        f"{r['loadavg'][1][0]:.1f} at the end, on {psutil.cpu_count()} cores. Absolute numbers "
        "are noisy; all paths were measured in alternating rounds, so the comparisons are "
        "fairer than the absolute values.",
        "",
        f"Model: `{r['version_dir']}`, {r['info']['model']} {r['info']['config']}, "
        f"{r['schema'].num_scenarios} scenarios x {r['schema'].num_tasks} tasks. "
        f"Per-scenario signature measured: `{sig}`.",
        "",
        "## Latency and throughput (one client, sequential requests)",
        "",
        "`in-process`: the loaded SavedModel's signature called in the benchmark process "
        "(numpy in, numpy out). `gRPC`: `serving.client.ServingClient.predict` against "
        "`python -m serving.server` on 127.0.0.1 (request building, transport, the "
        "server's checks, decoding). Two components of the gRPC path, measured alone: "
        "`server work` (Servable.predict on a request proto: checks, proto -> numpy, the "
        "call, numpy -> proto) and `client protos` (building the request, decoding the "
        "response).",
        "",
        "| signature | batch | path | p50 ms | p99 ms | req/s | rows/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (signature, batch), paths in res.items():
        for name, s in paths.items():
            lines.append(f"| `{signature}` | {batch} | {name} | {s['p50']:.2f} | "
                         f"{s['p99']:.2f} | {s['rps']:.0f} | {s['rows_s']:.0f} |")
    lines += [
        "",
        "## Per-scenario signature vs serving_default",
        "",
        f"Contraction FLOPs per example (serving/cost.py): serving_default "
        f"{r['flops'][signatures.DEFAULT]:,.0f}, `{sig}` {r['flops'][sig]:,.0f} "
        f"({flop_ratio:.3f}x fewer).",
        "",
        "| path | batch | p50 serving_default / p50 per-scenario |",
        "|---|---|---|",
    ]
    lines += [f"| {mode} | {b} | {v:.2f}x |" for (mode, b), v in speedups.items()]
    load = r["load"]
    lines += [
        "",
        "## Concurrent load",
        "",
        f"{load['threads']} client threads (one channel each) sending `{sig}` requests of "
        f"batch {load['batch']} for {load['duration_s']:.1f} s: {load['requests']} requests, "
        f"**{load['errors']} errors**, {load['rps']:.0f} req/s, p50 {load['p50']:.1f} ms, "
        f"p99 {load['p99']:.1f} ms." + (f" First errors: {load['first_errors']}"
                                         if load["errors"] else ""),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| gRPC adds <= {TARGETS['grpc_overhead_ms']} ms p50 at batch 1 | {overhead:.2f} ms | "
        f"{_met(overhead <= TARGETS['grpc_overhead_ms'])} |",
        f"| per-scenario >= {TARGETS['scenario_speedup']}x faster than serving_default | best "
        f"{best_speedup:.2f}x (FLOPs {flop_ratio:.2f}x) | "
        f"{_met(best_speedup >= TARGETS['scenario_speedup'])} |",
        f"| zero errors under concurrent load | {load['errors']} | "
        f"{_met(load['errors'] == TARGETS['errors'])} |",
        f"| server peak RSS <= {TARGETS['rss_gb']} GB | {r['rss_gb']:.2f} GB | "
        f"{_met(r['rss_gb'] <= TARGETS['rss_gb'])} |",
        "",
    ]
    lines += analysis(res, sig, b1, overhead, flop_ratio)
    return "\n".join(lines)


def analysis(res, sig, b1, overhead, flop_ratio):
    """Where the time goes, from the component measurements."""
    default = res[(signatures.DEFAULT, b1)]
    server_extra = default["server work"]["p50"] - default["in-process"]["p50"]
    protos = default["client protos"]["p50"]
    return [
        "## Analysis",
        "",
        f"- gRPC overhead at batch {b1} ({overhead:.2f} ms over in-process): the server's "
        f"checks and proto conversions add {server_extra:.2f} ms, the client's request "
        f"building and response decoding {protos:.2f} ms; the remaining "
        f"{overhead - server_extra - protos:.2f} ms is gRPC Python and the loopback "
        "transport, with client and server sharing the same 2 busy cores.",
        f"- Per-scenario saving: `{sig}` computes 2 of the N_s + 1 scenario tokens (its own "
        "and the global one) in the scenario tokenizer, the scenario attention's queries "
        "and the scenario FFN. Everything else is scenario-independent and stays: string "
        "preprocessing, embeddings, feature tokenizer, interaction blocks, the key/value "
        "projections of both domain attentions and the whole task path. The FLOP ratio "
        f"({flop_ratio:.2f}x) bounds the speedup; at batch 1 fixed per-call costs "
        "dominate and the ratio is closer to 1.",
        "",
    ]


def _met(ok):
    return "yes" if ok else "**no**"


def main(argv=None):
    args = flags.serving_parser(__doc__).parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    text = report(args, run(args))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write(text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
