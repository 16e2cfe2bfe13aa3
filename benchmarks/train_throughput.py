"""Training throughput: MDL vs MMoE vs DeepCTR's MMoE at equal dense parameter count, XLA on
and off, on this machine; and the per-scenario serving signature's speed-up.

    python -m benchmarks.train_throughput [--batch_size 2048] [--steps 12] [--rounds 4]
        [--skip_default_run] [--out benchmarks/results/train_throughput.md]
    python -m benchmarks.train_throughput --quick     # a few minutes; writes no files

Both print, as their last line, one JSON object of the headline ratios; the full run also
writes it next to the table (train_throughput.json).

Per configuration (model x XLA, plus MDL under mixed_bfloat16; DeepCTR's MMoE from the
`bench` extra, see benchmarks/peers.py, sized to the same dense parameter count):
  train step        model.make_train_function(), the step model.fit runs: forward,
                    backward, both optimizer groups, loss and AUC updates; on encoded
                    batches held in memory, so the input pipeline is measured apart
  forward+backward  RankingModel.loss_and_gradients alone (what XLA compiles under
                    the mirrored strategies), and the forward pass alone
  FLOPs             per example, counted from the traced forward graph's contractions
                    (MatMul, BatchMatMul, Einsum); training FLOPs = 3 x forward
Per-scenario serving: the default MDL built for 3 and for 15 scenarios (the synthetic
schema with scenarios added), `serving_default` vs `scenario_<s>` vs `scenario_<s>__<task>`
(export.build_signatures, in process, not XLA-compiled) at batch 256, p50 latency over
50 alternating calls, measured before any training model is built.
Plus the input pipeline alone (parse + encode, examples/s), the retracing count of the
train function, and the wall time and peak RSS of the default training run
(`python -m mdl_tf.train`, measured as a child process).

Timing: the median step time over `rounds` x `steps` steps. Configurations take turns
step by step, so that load from other processes on a shared machine falls on all of them
alike; CPU time per step (all threads) is reported next to wall time.
Sizing: MMoE and DeepCTR's MMoE get the expert width that brings their dense parameters
(every weight but the embedding tables, benchmarks.quality's default budget) closest to
MDL's (benchmarks/quality.sized_overrides, peers.sized_deepctr_mmoe).
"""
import dataclasses
import datetime
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.train_throughput_parser)

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import peers, quality
from benchmarks.flags import DEEPCTR_MMOE
from mdl_tf import data, datasets, distribute, export, train
from mdl_tf.contract import signatures as signature_names
from mdl_tf.datasets import synthetic
from mdl_tf.layers import domain_attention
from mdl_tf.models import build_model, make_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {"train": 20_480, "valid": 2048, "test": 2048}
QUICK_ROWS = {"train": 8192, "valid": 256, "test": 256}
IN_MEMORY_BATCHES = 4
BUDGET = "dense"        # the parameter count the models are sized to (quality.param_counts)
SERVING_BATCH, SERVING_SCENARIOS = 256, (3, 15)


# --- configurations ------------------------------------------------------------------------
class Config:
    """One compiled model and its timings."""

    def __init__(self, name, overrides, schema, xla, policy=None, quick=False):
        self.name, self.xla, self.policy, self.quick = name, xla, policy, quick
        self.label = f"{name} {'XLA' if xla else 'no XLA'}" + (f" {policy}" if policy else "")
        tf.keras.utils.set_random_seed(0)
        with distribute.precision(policy):
            self.model = self.build(schema, overrides)
        self.train_step = self.model.make_train_function()
        self.forward = tf.function(lambda x: self.model(x, training=True), jit_compile=xla)
        keys = ["train step"] if quick else ["train step", "forward+backward", "forward"]
        self.times = {key: [] for key in keys}
        self.cpu = {key: [] for key in self.times}

    def build(self, schema, overrides):
        model = build_model(self.name, schema, make_config(self.name, overrides))
        model.build_from_schema()
        train.compile_model(model, train.TrainOptions(jit_compile=self.xla))
        self.gradients = tf.function(model.loss_and_gradients, jit_compile=self.xla)
        return model

    def inputs(self, batch):
        """The model's (inputs, labels) for one of our encoded batches."""
        return batch

    def param_counts(self):
        """{"dense": ..., "total": ...} parameter counts of the model."""
        return quality.param_counts(self.model)

    def batches(self, dataset):
        """The model's training batches from our encoded dataset."""
        return dataset

    def runs(self, dataset, batch):
        """{measurement: a callable running one step of it and waiting for the result}."""
        encoded, labels = self.inputs(batch)
        if not hasattr(self, "iterator"):
            self.iterator = iter(self.batches(dataset))
        runs = {"train step": lambda: float(self.train_step(self.iterator)["loss"]),
                "forward+backward": lambda: float(self.gradients(encoded, labels)[0]),
                "forward": lambda: np.asarray(tf.nest.flatten(self.forward(encoded))[0])}
        return {key: runs[key] for key in self.times}

    def timed(self, key, run):
        start, cpu = time.perf_counter(), time.process_time()
        run()
        self.times[key].append(time.perf_counter() - start)
        self.cpu[key].append(time.process_time() - cpu)

    def examples_per_second(self, key, batch_size):
        return batch_size / statistics.median(self.times[key])


class DeepCTRConfig(Config):
    """DeepCTR's MMoE (benchmarks/peers.py), on our batches converted to its inputs, with
    the same optimizer (Adam, our default learning rate) and a per-task AUC."""

    def __init__(self, schema, target_params, xla, quick=False):
        self.schema, self.target_params = schema, target_params
        super().__init__(DEEPCTR_MMOE, {}, schema, xla, quick=quick)

    def build(self, schema, overrides):
        model = peers.sized_deepctr_mmoe(schema, self.target_params, BUDGET)
        model.compile(tf.keras.optimizers.Adam(train.TrainOptions.learning_rate),
                      "binary_crossentropy", metrics=[tf.keras.metrics.AUC(name="auc")],
                      jit_compile=self.xla)
        loss = tf.keras.losses.BinaryCrossentropy()

        def loss_and_gradients(x, labels):
            with tf.GradientTape() as tape:
                total = tf.add_n([loss(y, p) for y, p in zip(labels, model(x, training=True))])
            return total, tape.gradient(total, model.trainable_variables)
        self.gradients = tf.function(loss_and_gradients, jit_compile=self.xla)
        return model

    def inputs(self, batch):
        return peers.deepctr_inputs(self.schema, *batch)

    def param_counts(self):
        return peers.param_counts(self.model)

    def batches(self, dataset):
        return dataset.map(lambda x, y: peers.deepctr_inputs(self.schema, x, y))


def measure_round(configs, dataset, batch, steps):
    """`steps` timed steps of every measurement of every config, alternating configs step
    by step so that load from other jobs falls on all of them alike."""
    runs = [c.runs(dataset, batch) for c in configs]
    for key in runs[0]:
        for run in runs:
            run[key]()    # not timed: the first call traces and compiles
        for _ in range(steps):
            for config, run in zip(configs, runs):
                config.timed(key, run[key])


def make_configs(schema, models, quick=False):
    target = quality.count_params("mdl", schema, {}, BUDGET)
    configs = []
    for name in models:
        for xla in (False, True):
            if name == DEEPCTR_MMOE:
                configs.append(DeepCTRConfig(schema, target, xla, quick))
            else:
                overrides = quality.sized_overrides(name, schema, {}, target, BUDGET)
                configs.append(Config(name, overrides, schema, xla, quick=quick))
    if "mdl" in models and not quick:
        configs += [Config("mdl", {}, schema, xla, "mixed_bfloat16") for xla in (False, True)]
    return configs


# --- data ----------------------------------------------------------------------------------
def prepare(work_dir, rows=ROWS):
    """The built-in synthetic dataset's schema and distribution, with fewer rows."""
    out = os.path.join(work_dir, "data")
    synthetic.prepare(out, rows=rows)
    return datasets.load_schema(os.path.join(out, "schema.yaml")), out


def encoded_batches(model, schema, data_dir, batch_size):
    """A dataset repeating IN_MEMORY_BATCHES encoded training batches held in memory."""
    ds = data.make_dataset(schema, "train", data_dir=data_dir, batch_size=batch_size,
                           training=True, transform=train.encoder_transform(model))
    batches = list(ds.take(IN_MEMORY_BATCHES))
    stacked = tf.nest.map_structure(lambda *x: tf.stack(x), *batches)
    return batches[0], tf.data.Dataset.from_tensor_slices(stacked).repeat().prefetch(2)


def input_pipeline_rate(model, schema, data_dir, batch_size, batches=8):
    """Examples/s of parsing and encoding training batches (tf.data alone)."""
    ds = data.make_dataset(schema, "train", data_dir=data_dir, batch_size=batch_size,
                           training=True, repeat=True, transform=train.encoder_transform(model))
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


# --- FLOPs ---------------------------------------------------------------------------------
def forward_flops_per_example(config, batch):
    """Forward FLOPs of one example: 2*m*k*n summed over the traced graph's contractions."""
    encoded, _ = config.inputs(batch)
    model = config.model
    graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(encoded).graph
    size = int(next(iter(encoded.values())).shape[0])
    return sum(contraction_flops(op) for op in graph.get_operations()) / size


def contraction_flops(op):
    if op.type == "Einsum":
        inputs = op.get_attr("equation").decode().split("->")[0].split(",")
        dims = {}
        for term, tensor in zip(inputs, op.inputs):
            term = term.replace("...", "")      # broadcast dimensions are not contracted
            dims.update(zip(term, tensor.shape.as_list()[-len(term):]))
        return 2 * int(np.prod(list(dims.values())))
    if op.type == "MatMul":
        (m, k), b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
        if op.get_attr("transpose_a"):
            m, k = k, m
        return 2 * m * k * (b[0] if op.get_attr("transpose_b") else b[1])
    if op.type in ("BatchMatMulV2", "BatchMatMulV3"):
        a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
        m, k = (a[-1], a[-2]) if op.get_attr("adj_x") else (a[-2], a[-1])
        n = b[-2] if op.get_attr("adj_y") else b[-1]
        return 2 * int(np.prod(a[:-2])) * m * k * n
    return 0


# --- MDL's attention products ---------------------------------------------------------------
def attention_products_ms(config, batch_size, repeats=20):
    """Median wall ms of forward + backward of MDL's domain-attention products alone (scores,
    softmax over the feature tokens, weighted sum of the values: the part of
    layers/domain_attention.py after the projections) for all its attention layers, on
    random q, k, v of the model's shapes, in the formulation the layer uses with or
    without XLA. MMoE has no counterpart of this work."""
    layers = config.model.scenario_attention + config.model.task_attention
    product = (domain_attention.attention_broadcast if config.xla
               else domain_attention.attention_matmul)
    shapes = [([layer.num_queries, batch_size, layer.key.units],
               [layer.key.num_tokens, batch_size, layer.key.units]) for layer in layers]
    qs = [tf.random.normal(q) for q, _ in shapes]
    ks, vs = ([tf.random.normal(f) for _, f in shapes] for _ in range(2))

    @tf.function(jit_compile=config.xla)
    def forward_backward(qs, ks, vs):
        with tf.GradientTape() as tape:
            tape.watch([qs, ks, vs])
            outs = [product(q, k, v, layer.num_heads)[0]
                    for q, k, v, layer in zip(qs, ks, vs, layers)]
            loss = tf.add_n([tf.reduce_sum(out * out) for out in outs])
        return tape.gradient(loss, [qs, ks, vs])

    def run():
        tf.nest.map_structure(np.asarray, forward_backward(qs, ks, vs))
    run()                                               # traces and compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


# --- per-scenario serving ------------------------------------------------------------------
def with_scenarios(schema, count):
    """The schema with `count` scenarios: its own first, then extra ones (no priors)."""
    names = list(schema.scenario_names)[:count]
    names += [f"extra{i}" for i in range(count - len(names))]
    return dataclasses.replace(schema, scenario=dataclasses.replace(schema.scenario,
                                                                    names=tuple(names)))


def serving_latencies(schema, count, batch=SERVING_BATCH, calls=50):
    """p50 ms of serving_default, scenario_<s> and scenario_<s>__<task> (the last scenario,
    the first task; its own graph, as `export --per_task_graphs` stores it) of the default
    MDL built for `count` scenarios, at `batch` rows."""
    schema = with_scenarios(schema, count)
    tf.keras.utils.set_random_seed(0)
    model = build_model("mdl", schema, make_config("mdl", {})).build_from_schema()
    scenario, task = schema.scenario_names[-1], schema.task_names[0]
    paths = {"serving_default": signature_names.DEFAULT,
             "scenario": signature_names.scenario_signature(scenario),
             "scenario task": signature_names.task_signature(scenario, task)}
    functions = export.build_signatures(model, only=set(paths.values()), per_task_graphs=True)
    raw = model.dummy_raw_batch(batch)
    raw[data.SCENARIO_KEY] = tf.constant([schema.scenario_names[i % count]
                                          for i in range(batch)])
    features = {k: v for k, v in raw.items() if k != data.SCENARIO_KEY}
    inputs = {path: raw if name == signature_names.DEFAULT else features
              for path, name in paths.items()}
    times = {path: [] for path in paths}
    for _ in range(calls + 1):                       # the first call of each is not timed
        for path, name in paths.items():
            start = time.perf_counter()
            tf.nest.map_structure(np.asarray, functions[name](**inputs[path]))
            times[path].append(time.perf_counter() - start)
    return {path: 1000 * statistics.median(t[1:]) for path, t in times.items()}


# --- profile ---------------------------------------------------------------------------------
KERNEL_CATEGORIES = (   # (category, kernel name patterns), first match wins
    ("contractions", ("dot", "Einsum", "MatMul", "BatchMatMul")),
    ("transposes and copies", ("transpose", "copy")),
    ("reductions and scatters", ("reduce", "Sum", "AddN", "scatter", "Segment")),
    ("other kernels (elementwise, LayerNorm, softmax, ...)", ("",)),
)
NOT_KERNELS = ("Execut", "__inference", "BlockUntilReady", "FunctionRun")   # parents


def profile_categories(config, steps=3):
    """Share of kernel CPU time per category in `steps` train steps (TensorFlow profiler)."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            float(config.train_step(config.iterator)["loss"])
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            with open(path, "rb") as fh:
                space.ParseFromString(fh.read())
    totals = dict.fromkeys([c for c, _ in KERNEL_CATEGORIES], 0.0)
    for plane in space.planes:
        for line in plane.lines:
            if line.name == "python":      # host-side call stack, not kernels
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if any(n in name for n in NOT_KERNELS):
                    continue
                kernel = name.split(":")[0].split("/")[-1]
                category = next(c for c, keys in KERNEL_CATEGORIES if any(
                    k in kernel for k in keys))
                totals[category] += event.duration_ps
    total = sum(totals.values()) or 1
    return {c: v / total for c, v in totals.items()}


# --- the default training run ----------------------------------------------------------------
def default_run(work_dir):
    """(wall seconds, peak RSS in MB) of `python -m mdl_tf.train` with default flags."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": REPO}
    start, peak_kib = time.time(), 0
    with open(os.path.join(work_dir, "default_run.log"), "w") as log:
        run = subprocess.Popen([sys.executable, "-m", "mdl_tf.train", "--model_dir",
                                os.path.join(work_dir, "default_run")], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
        while run.poll() is None:
            peak_kib = max(peak_kib, high_water_mark_kib(run.pid))
            time.sleep(0.5)
    if run.returncode:
        with open(os.path.join(work_dir, "default_run.log")) as fh:
            raise SystemExit(f"default training run failed:\n{fh.read()[-3000:]}")
    return time.time() - start, peak_kib / 1024


def high_water_mark_kib(pid):
    """The process's peak RSS so far (Linux VmHWM). Not ru_maxrss of the children: that
    counts the child as forked, before exec, i.e. with this process's memory."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


# --- report ----------------------------------------------------------------------------------
# Written from the profiles and prototypes of the run that produced the committed results;
# the measured tables above it are regenerated by every run.
ANALYSIS = """## This run (2026-12-07)

Two changes, both measured on this machine against the code before them:

- **Experts, gates and towers** (`PerTokenDense` on a shared input, `mix_experts`,
  `ParallelMLP`; MDL's default configuration uses none of them). A profile of our MMoE's
  train step under XLA (HLO ops mapped to TensorFlow op names) showed the experts'
  `einsum("bd,tdo->bto")` costing 3.4x its forward in the backward pass (24 ms of kernel
  time a step, the ReLU's gradient another 7): it is now the plain
  `[B, d_in] x [d_in, E * u]` matmul the layer's docstring always described (14 ms and
  1 ms). The gates' mixture is a batched matmul instead of an einsum (forward + backward
  10.2 -> 7.6 ms without XLA at MMoE's shapes), and `ParallelMLP` runs its layers
  token-major (one transpose in, one out: MMoE's towers 12.9 -> 8.7 ms without XLA, the
  same under XLA), except a single layer on a shared input (the experts), which is
  batch-major already. Variables and checkpoints are unchanged. Our MMoE's forward +
  backward (the previous and the new code in turn, two runs each, 30 steps): 79 -> 72 ms
  without XLA, 67 -> 63 ms with it.
- **XLA policy on CPU: the whole step, with dense table gradients** (`distribute.xla_policy`,
  `base.dense_gradient`). With forward + backward compiled and the gradients applied
  outside XLA, MDL's train step took 9.8 ms longer than its forward + backward and our
  MMoE's 7.5 (this session's first full run), against DeepCTR's 1.9 with its whole step
  compiled. Compiling ours whole had been slower: Keras' optimizers merge a sparse
  gradient's repeated rows with `tf.unique`, which XLA compiles to a sort (15 of our
  MMoE's 77 ms of kernel time a step). Inside the compiled step the tables' gradients are
  now dense, which gives every optimizer here the same update (tested against the step
  without XLA, Adam and Adagrad tables). Paired train steps against the old policy (two
  runs): MDL 5-8 % faster, our MMoE 0-5 %; in this run the train step costs MDL 1.5 ms and
  our MMoE 4.0 ms over forward + backward.
- Results: **our MMoE ties DeepCTR's MMoE** (29,904 against 29,952 examples/s, each with
  XLA: 0.998x, printed 1.00x and short of the line; 0.97x in this session's first run
  with only the first change, 0.91x in the run before). **XLA 1.35x for MDL** (1.26x in
  the first run, before the policy change). MDL 0.76x our MMoE with XLA and 0.71x without,
  0.76x DeepCTR's MMoE (0.76x / 0.76x / 0.69x in the run before: the MMoE it is compared
  with got faster, and so did MDL with XLA). The per-scenario signature 1.23x at 15
  scenarios (serving did not change), `mixed_bfloat16` under XLA 0.93x fp32. This
  machine ran every configuration about 1.3x slower than the run before's: compare ratios.

What was tried for MDL this session and not taken: a GELU with its derivative written out
(`tf.custom_gradient`, the same function): 3 % faster without XLA for MDL and for MMoE
alike, slower under XLA in isolation, so it moves no ratio; the attention heads as
strided channels (`[.., e, H]`, so XLA reduces over a non-innermost axis): no change
under XLA; the products in a batch-minor layout (`[N, H, e, B]`, reductions vectorised
over the batch) with no transposes at the boundary: 5.7 against 5.9 ms under XLA, so a
batch-minor domain path would not pay either. A per-scope profile of MDL without XLA
(kernel time summed over both threads, 202 ms a step against MMoE's 122, before this
session's changes) puts the domain path at about 140 ms against MMoE's head at 63 ms for
about the same FLOPs: the attention products 42 ms, the Q/K/V projections 30, the domain
FFNs 40 (GELU 16 of it), the tokenizers 9. Under XLA (108 against 74 ms) the layers that
hold matmuls (with their bias and activation, the backbone's FFNs included) cost about
the same in both (57 against 52 ms); the difference is the attention products (21 ms) and
small elementwise work. Even with the products free, MDL (78.5 ms in the products table
above) would run at 0.82x MMoE (64.5 ms) under XLA, so the 1.0x target needs the products
and the per-token layers fused (see the run before).

## The run before (2026-12-01, second session)

Two changes to what is measured, two to MDL:

- **Equal dense parameters.** MMoE and DeepCTR's MMoE are now sized to MDL's *dense*
  parameter count (every weight but the embedding tables), as the issue states and as
  `benchmarks.quality` does by default; the runs before sized them to the total count.
  MDL keeps separate tables for its domain tokens (145k of its 686k parameters are
  embeddings, MMoE's are 73k), so at equal totals MMoE got wider experts (380 units
  against 321 now) and ran slower: that had flattered MDL. The params column shows
  both counts.
- **Serving latencies first.** They are measured before any training model is built,
  as in a serving process, with 50 calls instead of 20.
- **The domain attention's gradient written out** (`attention_broadcast`, the XLA
  formulation). Under XLA the derivative of the broadcast product `q * k` was
  materialised as a `[Q, F, B, d]` tensor and reduced several times (for q, for k and for
  the projections' biases; an HLO dump mapped to op names showed those fusions among the
  largest of the step). Written out, dq and dk are each one multiply-reduce of the score
  gradients; values and gradients agree with automatic differentiation of the matmul
  formulation (`tests/layers/test_token_major.py`). This session's first full run (same
  command and machine, before the change): MDL with XLA 23,598 examples/s, XLA 1.13x for
  MDL, MDL 0.70x our MMoE with XLA; this run: 26,610 examples/s, 1.20x (1.195, short of
  the line by rounding), 0.76x. Without XLA MDL is 0.74x -> 0.76x (run to run).
- **DomainFusion** (token-major) is a weighted sum over the token axis instead of an
  einsum, which TensorFlow ran as a transpose first: forward + backward 2.9 -> 2.3 ms.

**Why MDL still trails MMoE.** The new table "MDL's domain-attention products" times the
four attention products (scores, softmax over the feature tokens, weighted values)
alone at the model's shapes: 19.5 ms of MDL's 88.4 ms forward + backward without XLA, and
MDL less those products (68.9 ms) runs as fast as MMoE's whole forward + backward
(66.9 ms). Under XLA the products cost 7.4 ms of 69.9 and the rest of MDL (62.5 ms) is
still 10 ms above MMoE (52.2 ms): the domain tokens' own projections (a Q projection per
query token and a K and a V projection per feature token, per attention), FFNs and
tokenizers, work MMoE has no counterpart of at equal dense parameters. Other
formulations of the products were timed in isolation (forward + backward, Q 4, N_f 4-8,
batch 2048) and were slower: outside XLA, any batched-matmul form needs the heads moved
next to the batch (the transposes alone cost about as much as the whole product); the
broadcast form materialises `[Q, F, B, d]`; under XLA, matmuls over B x H come with
transposes XLA's CPU backend does poorly, a batch-minor layout (`[N, H, e, B]`) costs
2-3x, and a head-sum matmul 1.4x. Joining the scenario and task projections into one
wider matmul gave nothing (the per-token matmuls already run near the rate of bigger
ones). Closing the rest needs fused per-token kernels (projection + product + softmax in
one pass), which neither TensorFlow's CPU kernels nor XLA's CPU code generation provide.

Our MMoE is 0.91x DeepCTR's MMoE at equal dense parameters (each with XLA): DeepCTR's
experts read the concatenated embeddings directly, ours read the backbone's feature
tokens after two RankMixer blocks; the earlier 1.03x was at equal totals.

## The run before (2026-12-01, first session; sized at equal *total* parameters)

Since the run before (2026-11-30): the input pipeline is about 4x faster (BUILD.md,
"Performance notes (input)"), TokenMixing has an XLA formulation (below), and the run is
on another machine of the same kind, whose cores ran every configuration 1.5-2.5x
faster. The previous code, run on this machine the same day (same command): MDL 11,612 /
10,232 examples/s without / with XLA, our MMoE 15,756 / 11,759, DeepCTR's MMoE 12,305 /
19,138; XLA 0.88x for MDL.

**TokenMixing under XLA.** The RankMixer block's token mixing is a transpose of the
token-major activations (`[N, B, N, d/N]`, tokens and chunks swapped). XLA fused that
transpose into the LayerNorm after it, `LN(x + mixing(x))`, as a reduction over strided
memory: forward + backward of that pair at `[8, 2048, 64]` took 17.4 ms under XLA and
12.6 ms without. Written as slices and concatenations (the same permutation, value for
value: `tests/layers/test_layers.py`) it takes 10.9 ms under XLA (17.0 ms without, so
outside XLA the transpose stays). A whole RankMixer block went from 47 to 26 ms under XLA
(40 ms without). In a full run with it (same day, whole step compiled): MDL with XLA
10,232 -> 14,057 examples/s, so XLA was 1.16x
for MDL (1.19x by CPU time); our MMoE, whose backbone has the same blocks, 11,759 ->
16,276 with XLA (as fast as without). MDL is 0.86x our MMoE (each with XLA; 0.75x
without) and 0.74x DeepCTR's MMoE. `mixed_bfloat16` under XLA is now slower than fp32
under XLA (0.91x). The per-scenario signature is 1.22x `serving_default` at 15
scenarios (1.28x and 1.19x in the two runs before: serving does not use XLA and did not
change, so that spread is this machine's noise).

**XLA policy on CPU.** Those numbers (14,057 examples/s for MDL with XLA, XLA 1.16x) came
from compiling the whole train step. The train step took 16 ms (MDL) and 26 ms (our MMoE)
longer than forward + backward alone under XLA, against about nothing without XLA: the
optimizer updates (the embedding tables' sparse ones included) cost more compiled. On
CPU `--jit_compile` now compiles forward + backward only and applies the gradients
outside XLA (as Keras' optimizers turn their own XLA off on CPU; on GPU the whole step is
still compiled). Paired train steps (scratch script, same process, 40 steps each): MDL
1.08x and our MMoE 1.15x faster than the whole step compiled. This run, the committed
tables above: XLA 1.23x for MDL (by CPU time 1.24x); our MMoE with XLA 1.03x DeepCTR's
MMoE with XLA; MDL 0.78x DeepCTR's; MDL 0.76x our MMoE with XLA (our MMoE gained more
from the change) and 0.74x without. The machine ran slower in this run than in the one
before it on the same day (MDL without XLA 10,672 against 12,168 examples/s): compare
ratios. The per-scenario signature: 1.18x at 15 scenarios (1.28x, 1.19x and 1.22x in the
three runs before; serving did not change).

Still short of the targets: MDL against MMoE (0.76x / 0.74x) and against DeepCTR's MMoE
(0.78x), and the per-scenario signature in this run. The reasons in "Why MDL trails
MMoE" below still hold (the sections below are the earlier runs' analysis, with those
runs' numbers).

## Shared-input experts (2026-11-30 run)

The experts, gates and towers of the baselines are `PerTokenDense` layers with one kernel
per expert. Where they all read the same input (MMoE's experts and gates read the
flattened feature tokens; SharedBottom's towers the bottom's output; PLE's first level,
HMoE, PEPNet), the input used to be copied once per expert (`[B, d_in] -> [B, E, d_in]`)
and pushed through a batched matmul. A 2-D input now means "the same for every token"
and runs as one `[B, d_in] x [d_in, E * units]` matmul, with the same variables and
losses (`tests/layers/test_token_major.py`). Our MMoE's train step went from 0.83x to
0.99x DeepCTR's MMoE (each at its faster setting; ours without XLA, DeepCTR's with it).
MDL did not change, so MDL against our MMoE fell from 0.91x to 0.77x without XLA (and
from 1.12x to 0.82x with it): the earlier ratio flattered MDL by comparing it with an
MMoE that spent about a fifth of its step on copies.

Why MDL trails MMoE at about the same FLOPs per example (1.08M against 1.22M forward):
MDL's contractions are many small per-token matmuls (d = 32 -> 64, batched over the
tokens) where MMoE's are a few wide GEMMs (`[2048, 640] x [640, 4 x 155]`), so MDL gets
21 train GFLOP/s against MMoE's 31; and about 40 % of MDL's kernel time is elementwise
work on `[T, B, d]` activations (LayerNorm, GELU, softmax, residual adds) that MMoE does
not have. Closing that needs fused per-token kernels (an FFN + LayerNorm in one pass),
which TensorFlow's CPU executor does not provide and XLA on this CPU did not produce
(XLA 0.95x for MDL in fp32; with `mixed_bfloat16` 1.33x, the fastest MDL set-up here).

## What the layout changed (2026-11-30, the run before that)

The previous results (2026-11-22: MDL 0.70x MMoE without XLA, 0.84x with it, XLA 1.08x
for MDL, per-scenario signature 1.11x) came from layout, not arithmetic: every per-token
layer computed `einsum("btd,tdo->bto")`, so the token axis sat between batch and features
and each call copied its input and output into another layout (30% of XLA's kernel time
was transposes and copies), and the domain attention was a batch of 2048 x 4 heads of 4x16
by 16x4 matmuls. Now the per-token layers run token-major (`[T, B, d]`, one batched matmul
each, the token as batch axis) through the interaction blocks and MDL's domain layers,
with one transpose before and one after; the variables and checkpoint keys are the same.
The domain attention is a broadcast multiply reduced over the 16-wide head inside XLA
(XLA fuses it into a few loops, no transposes) and batched matmuls over B x H outside XLA
(TensorFlow's kernels would materialise the broadcast); the layer picks by the tracing
context, as Keras does for its own XLA-specific paths. The baselines' backbone (MMoE's
included) runs its interaction blocks token-major too, so the comparison stays like for
like. The per-task serving signatures (`scenario_<s>__<task>`) now compute only their
task's token (`MDL.call(task_indices=...)`), on top of the scenario subset. (Exports
now keep those graphs only under `mdl_tf.export --per_task_graphs`; by default a per-task
signature reads its scenario's graph. This benchmark times the per-task graphs.)

DeepCTR's MMoE (benchmarks/peers.py) has no feature tokens and no interaction blocks: its
experts read the concatenated embeddings, so at the same parameter count its experts are
wider. Its train step is Keras's own (`compile(jit_compile=...)`), with Adam at our
default learning rate and a per-task AUC, on the same in-memory batches.

On this shared 2-core machine XLA is hit harder by other jobs than TensorFlow's executor
(it splits each op over the threads and waits for the slowest); the CPU-time ratio next
to the wall-time ratio shows how much of a gap is load.

**GPU model-FLOPs utilisation (target 30%).** Not measured: no GPU was lent to this
work (the device tool reports this task as not drawn). On a GPU machine the same command
reports train GFLOP/s; divide by the GPU's peak (bf16/fp16 tensor-core FLOP/s with
`--mixed_precision`) for the utilisation.
"""

def report(configs, flops, params, extra, args):
    rate = {c.label: c.examples_per_second("train step", args.batch_size) for c in configs}
    lines = [
        "# Training throughput", "",
        f"`{command(args)}`"
        f" on {datetime.date.today()}: batch {args.batch_size}, median of {args.rounds} x "
        f"{args.steps} timed steps per configuration, configurations taking turns step by "
        "step.", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"TensorFlow {tf.__version__}. **No GPU or TPU was available**: every number is CPU. "
        "The cores are shared with other jobs running at the same time, so absolute numbers "
        "vary from run to run; ratios within one run are the comparison.", "",
        "Wall ms are medians of wall-clock step times (examples/s derive from them); CPU ms "
        "are medians of the process's CPU time per step, summed over its threads: the work a "
        "step costs, less sensitive to the other jobs than wall time.", "",
        "| configuration | dense / total params | train step wall ms | examples/s | "
        "train step CPU ms | fwd+bwd wall / CPU ms | forward wall / CPU ms | train GFLOP/s |",
        "|---|---|---|---|---|---|---|---|"]
    for c in configs:
        ms = {k: 1000 * statistics.median(v) for k, v in c.times.items()}
        cpu = {k: 1000 * statistics.median(v) for k, v in c.cpu.items()}
        gflops = 3 * flops[c.name] * rate[c.label] / 1e9
        count = params[c.name]
        lines.append(f"| {c.label} | {count['dense']:,} / {count['total']:,} | "
                     f"{ms['train step']:.1f} | {rate[c.label]:,.0f} | {cpu['train step']:.1f} | "
                     f"{ms['forward+backward']:.1f} / {cpu['forward+backward']:.1f} | "
                     f"{ms['forward']:.1f} / {cpu['forward']:.1f} | {gflops:.1f} |")
    lines += ["", "Model FLOPs per example (forward contractions; training = 3x): " + ", ".join(
        f"{m} {flops[m]:,.0f} forward / {3 * flops[m]:,.0f} training" for m in flops) + ".", ""]
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, value, goal in targets(rate, extra):
        lines.append(f"| {name} | {value} | {'yes' if goal else '**no**'} |")
    categories = [c for c, _ in KERNEL_CATEGORIES]
    lines += ["", "## Where a train step's CPU time goes", "",
              "TensorFlow profiler, 3 train steps per configuration; share of the summed "
              "kernel time (both threads). Without XLA the Einsum kernels include their own "
              "transposes.", "",
              "| configuration | " + " | ".join(categories) + " |",
              "|---|" + "---|" * len(categories)]
    for label, shares in extra["profile"].items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * shares[c]:.0f}%"
                                                    for c in categories) + " |")
    lines += attention_lines(configs, extra["attention_ms"])
    lines += ["", f"## Per-scenario serving (default MDL, batch {SERVING_BATCH}, in process)", "",
              "| scenarios | serving_default p50 ms | scenario_<s> p50 ms | "
              "scenario_<s>__<task> p50 ms | speed-up | speed-up (one task) |",
              "|---|---|---|---|---|---|"]
    for count, ms in extra["serving"].items():
        lines.append(f"| {count} | {ms['serving_default']:.1f} | {ms['scenario']:.1f} | "
                     f"{ms['scenario task']:.1f} | "
                     f"{ms['serving_default'] / ms['scenario']:.2f}x | "
                     f"{ms['serving_default'] / ms['scenario task']:.2f}x |")
    lines += ["", "## Other measurements", "",
              f"- Input pipeline alone (parse CSV + encode, batch {args.batch_size}): "
              f"{extra['input_rate']:,.0f} examples/s.",
              f"- Train-function tracings per configuration: "
              f"{', '.join(f'{k}: {v}' for k, v in extra['tracings'].items())}."]
    if "default_run_s" in extra:
        lines.append(f"- Default training run (`python -m mdl_tf.train`, 240k rows incl. "
                     f"generating them, 3 epochs, evaluation, export): "
                     f"{extra['default_run_s']:.0f} s wall, peak RSS "
                     f"{extra['peak_rss_mb']:,.0f} MB.")
    return "\n".join(lines) + "\n\n" + ANALYSIS


def attention_lines(configs, attention_ms):
    """MDL's forward + backward next to its attention products alone and to MMoE's."""
    if not attention_ms:
        return []
    fwd_bwd = {c.label: 1000 * statistics.median(c.times["forward+backward"])
               for c in configs}
    lines = ["", "## MDL's domain-attention products", "",
             "Forward + backward wall ms of MDL's domain-attention products alone (scores, "
             "softmax, weighted values of all its attention layers; `attention_products_ms`), "
             "timed after the rounds, next to the whole model's forward + backward from the "
             "rounds.", "",
             "| configuration | MDL fwd+bwd ms | attention products ms | MDL less the products "
             "| MMoE fwd+bwd ms |", "|---|---|---|---|---|"]
    for label, ms in attention_ms.items():
        mmoe = fwd_bwd.get(label.replace("mdl", "mmoe", 1))
        lines.append(f"| {label} | {fwd_bwd[label]:.1f} | {ms:.1f} | "
                     f"{fwd_bwd[label] - ms:.1f} | "
                     f"{'-' if mmoe is None else f'{mmoe:.1f}'} |")
    return lines


def ratios(rate, extra):
    """The headline ratios (examples/s, or p50 latency for serving) for the JSON line;
    those whose configurations were not run (--models) are left out."""
    rate = {**rate, **{f"{m} best": max(rate[f"{m} XLA"], rate[f"{m} no XLA"])
                       for m in {label.split()[0] for label in rate}}}
    cpu_rate = {label: 1 / ms for label, ms in extra["cpu_ms"].items()}
    pairs = {"mdl_vs_mmoe_xla": ("mdl XLA", "mmoe XLA"),
             "mdl_vs_mmoe_no_xla": ("mdl no XLA", "mmoe no XLA"),
             "mdl_vs_mmoe_best": ("mdl best", "mmoe best"),
             "xla_speedup_mdl": ("mdl XLA", "mdl no XLA"),
             "mmoe_vs_deepctr_mmoe": ("mmoe best", f"{DEEPCTR_MMOE} best"),
             "mdl_vs_deepctr_mmoe": ("mdl best", f"{DEEPCTR_MMOE} best")}
    out = {key: rate[a] / rate[b] for key, (a, b) in pairs.items() if a in rate and b in rate}
    if "xla_speedup_mdl" in out:
        out["xla_speedup_mdl_cpu_time"] = cpu_rate["mdl XLA"] / cpu_rate["mdl no XLA"]
    for label in ("mdl no XLA mixed_bfloat16", "mdl XLA mixed_bfloat16"):
        if label in rate:
            key = "bf16_speedup_mdl_" + ("xla" if " XLA" in label else "no_xla")
            out[key] = rate[label] / rate[label.replace(" mixed_bfloat16", "")]
    for count, ms in extra["serving"].items():
        suffix = "" if count == max(extra["serving"]) else f"_{count}"
        out[f"per_scenario_speedup{suffix}"] = ms["serving_default"] / ms["scenario"]
        out[f"per_task_speedup{suffix}"] = ms["serving_default"] / ms["scenario task"]
    out["per_scenario_speedup_scenarios"] = max(extra["serving"])
    return {k: round(v, 3) for k, v in out.items()}


RATIO_TARGETS = (   # (target, ratio key, goal); issue 11
    ("MDL >= 1.0x MMoE examples/s at equal dense params (XLA)", "mdl_vs_mmoe_xla", 1.0),
    ("MDL >= 1.0x MMoE examples/s at equal dense params (no XLA)", "mdl_vs_mmoe_no_xla", 1.0),
    ("XLA >= 1.2x no XLA for MDL on CPU (examples/s)", "xla_speedup_mdl", 1.2),
    (f"per-scenario signature >= 1.2x serving_default at batch {SERVING_BATCH}, "
     f"{max(SERVING_SCENARIOS)} scenarios (p50)", "per_scenario_speedup", 1.2),
    ("our MMoE >= 1.0x DeepCTR's MMoE examples/s (each at its faster setting)",
     "mmoe_vs_deepctr_mmoe", 1.0),
    ("MDL >= 0.9x DeepCTR's MMoE examples/s (each at its faster setting)",
     "mdl_vs_deepctr_mmoe", 0.9),
)


def targets(rate, extra):
    r = ratios(rate, extra)
    out = [(name, f"{r[key]:.2f}x", r[key] >= goal) for name, key, goal in RATIO_TARGETS
           if key in r]
    if "peak_rss_mb" in extra:
        out.append(("peak RSS of the default training run <= 4 GB",
                    f"{extra['peak_rss_mb']:,.0f} MB", extra["peak_rss_mb"] <= 4096))
    out.append(("GPU: >= 30% model-FLOPs utilisation at batch 2048, mixed precision",
                "not measured: no GPU lent to this run", False))
    return out


def main():
    args = flags.train_throughput_parser(__doc__).parse_args()
    if args.quick:
        args.steps, args.rounds, args.skip_default_run = 4, 2, True
    logging.set_verbosity(logging.WARNING)
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as work_dir:
        schema, data_dir = prepare(work_dir, QUICK_ROWS if args.quick else ROWS)
        # Serving first, while the process holds no training models, as a serving process
        # would: after even two training configurations every latency came out longer
        # (serving_default at 15 scenarios 13.8 -> 15.7 ms, scratch run of 2026-12-01).
        serving = {n: serving_latencies(schema, n) for n in SERVING_SCENARIOS}
        configs = make_configs(schema, models, args.quick)
        first, ds = encoded_batches(configs[0].model, schema, data_dir, args.batch_size)
        for r in range(args.rounds):
            measure_round(configs, ds, first, args.steps)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{c.label} {1000 * statistics.median(c.times['train step']):.0f} ms"
                for c in configs), flush=True)
        rate = {c.label: c.examples_per_second("train step", args.batch_size)
                for c in configs}
        extra = {"cpu_ms": {c.label: 1000 * statistics.median(c.cpu["train step"])
                            for c in configs},
                 "serving": serving}
        if not args.quick:
            write_report(configs, schema, data_dir, work_dir, first, extra, args)
    result = ratios(rate, extra)
    if not args.quick:
        with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
            json.dump({"command": command(args), "date": str(datetime.date.today()),
                       "examples_per_s": {k: round(v) for k, v in rate.items()},
                       "ratios": result}, fh, indent=1)
    for label, value in rate.items():
        print(f"{label}: {value:,.0f} examples/s")
    print(json.dumps(result))


def command(args):
    return "python -m benchmarks.train_throughput" + (
        " --skip_default_run" if args.skip_default_run else "")


def write_report(configs, schema, data_dir, work_dir, first, extra, args):
    """The full run's measurements beyond the train steps, and the Markdown report."""
    first_of = {c.name: c for c in reversed(configs)}
    flops = {m: forward_flops_per_example(c, first) for m, c in first_of.items()}
    params = {m: c.param_counts() for m, c in first_of.items()}
    extra["input_rate"] = input_pipeline_rate(configs[0].model, schema, data_dir,
                                              args.batch_size)
    extra["tracings"] = {c.label: c.train_step.experimental_get_tracing_count()
                         for c in configs}
    extra["profile"] = {c.label: profile_categories(c) for c in configs if c.policy is None}
    extra["attention_ms"] = {c.label: attention_products_ms(c, args.batch_size)
                             for c in configs if c.name == "mdl" and c.policy is None}
    if not args.skip_default_run:
        extra["default_run_s"], extra["peak_rss_mb"] = default_run(work_dir)
    text = report(configs, flops, params, extra, args)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
