"""Helpers for the preprocessing pipeline tests: a one-call runner and real-data inputs.

Not a conftest.py: the tests import `conftest` (tests/conftest.py) by name, and a second
conftest module would shadow it.
"""
import csv
import json
import os

import pytest

from conftest import REPO, TINY_CONFIG, shared_data

# In-process DirectRunner on one worker: the machine's cores are shared.
BEAM_ARGS = ["--runner=DirectRunner", "--direct_num_workers=1",
             "--direct_running_mode=in_memory"]
RECIPES = os.path.join(REPO, "mdl_tf", "datasets")
HERE = os.path.dirname(os.path.abspath(__file__))
ALI_CCP_SCENARIOS = {"1": "s1", "2": "s2", "3": "s3"}


def preprocess(schema, inputs, output_dir, **options):
    """Runs the pipeline with test Beam flags; returns its report."""
    from pipelines import pipeline
    from pipelines.options import PreprocessOptions
    opts = PreprocessOptions(schema=schema, inputs=list(inputs), output_dir=str(output_dir),
                             **options)
    return pipeline.run(opts, BEAM_ARGS)


def read_examples(output_dir, split):
    """The split's tf.train.Examples as {column: [values]} dicts (strings decoded)."""
    import glob

    import mdl_tf  # noqa: F401
    import tensorflow as tf
    rows = []
    for path in sorted(glob.glob(os.path.join(output_dir, f"{split}-*.tfrecord.gz"))):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            ex = tf.train.Example.FromString(raw.numpy())
            rows.append({k: _values(v) for k, v in ex.features.feature.items()})
    return rows


def _values(feature):
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    return [v.decode() for v in values] if kind == "bytes_list" else values


def read_dead_letter(output_dir):
    import glob
    entries = []
    for path in glob.glob(os.path.join(output_dir, "dead_letter", "bad_rows-*.jsonl")):
        with open(path) as fh:
            entries += [json.loads(line) for line in fh if line.strip()]
    return entries


def read_vocabulary(output_dir, feature):
    with open(os.path.join(output_dir, "vocab", f"{feature}.txt")) as fh:
        return fh.read().splitlines()


def expected_vocabulary(values):
    """Tokens by descending count, ties by token: the pipeline's order."""
    from collections import Counter
    counts = Counter(values)
    return sorted(counts, key=lambda t: (-counts[t], t))


def train_tiny(schema_path, model_dir):
    """One small epoch on the pipeline's output; returns train()'s result."""
    from mdl_tf import train
    opts = train.TrainOptions(dataset=schema_path, model_dir=str(model_dir),
                              config={k: TINY_CONFIG[k] for k in ("d_model", "num_layers",
                                                                  "num_heads")},
                              epochs=1, batch_size=64, jit_compile=False,
                              early_stopping_patience=0, export=False, verbose=0)
    return train.train(opts)


def ali_ccp_rows():
    path = shared_data("schema_fixtures", "ali_ccp", "swr_ali_ccp_train_sample_3scen.csv")
    with open(path) as fh:
        return path, list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def movielens_slice(tmp_path_factory):
    """A CSV joining the first 1,500 ML-100K ratings with user and item attributes.

    Columns: user_id,item_id,timestamp,age,gender,occupation,zip3,genres,scenario,click,like
    with the README's protocol (scenario = age group 0/1/2, click = rating > 3,
    like = rating > 4). Built at test time: MovieLens may not be copied into the repo.
    """
    raw = shared_data("movielens_100k_mdmt", "raw")
    users = {}
    with open(os.path.join(raw, "u.user"), encoding="latin-1") as fh:
        for line in fh:
            uid, age, gender, occupation, zip_code = line.rstrip("\n").split("|")
            users[uid] = (int(age), gender, occupation, zip_code[:3])
    with open(os.path.join(raw, "u.genre"), encoding="latin-1") as fh:
        genre_names = [line.split("|")[0] for line in fh if line.strip()]
    genres = {}
    with open(os.path.join(raw, "u.item"), encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            genres[parts[0]] = "|".join(g for g, flag in zip(genre_names, parts[5:]) if flag == "1")
    path = os.path.join(str(tmp_path_factory.mktemp("movielens_slice")), "ratings.csv")
    with open(os.path.join(raw, "u.data")) as fh, open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "item_id", "timestamp", "age", "gender", "occupation",
                         "zip3", "genres", "scenario", "click", "like"])
        for _, line in zip(range(1500), fh):
            uid, iid, rating, ts = line.split()
            age, gender, occupation, zip3 = users[uid]
            scenario = 0 if age < 25 else 1 if age < 35 else 2
            writer.writerow([uid, iid, ts, age, gender, occupation, zip3, genres[iid],
                             scenario, int(int(rating) > 3), int(int(rating) > 4)])
    return path
