"""scikit-learn reference rows of the quality benchmark: the models users ask about first.

One estimator per task, trained on the rows where that task's label is present, with the
scenario as a feature (its multi-hot columns); evaluated per scenario x task cell like the
deep models. Inputs are the benchmark's encoded splits (FeatureEncoder output: ids in
[0, num_buckets), lists of ids padded with -1, standardised dense values, the scenario
multi-hot [N, N_s]).

  sk_logreg  LogisticRegression (lbfgs) on a sparse design: one-hot ids (already vocabulary-
             indexed or hashed by the encoder), multi-hot id lists, dense values, scenarios.
             Deterministic: one fit per setting. Grid: the inverse regularisation C.
  sk_hgb     HistGradientBoostingClassifier: ids with <= 255 buckets as native categorical
             features, larger ids target-encoded (sklearn TargetEncoder, cross-fitted on the
             training rows, so a row's own label never encodes its id), short id lists as
             multi-hot columns (longer ones: their first id, target-encoded), dense values
             and scenarios as numbers. Built-in early stopping on 10% of the training rows.
"""
import functools

import numpy as np
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import TargetEncoder

# The names live with the benchmark flags (quality --models), importable without TensorFlow.
from benchmarks.flags import REFERENCE_MODELS as MODELS  # noqa: F401
from mdl_tf.data import SCENARIO_KEY

GRIDS = {"sk_logreg": [{"C": 0.1}, {"C": 1.0}], "sk_hgb": [{"learning_rate": 0.1}]}
NATIVE_CATEGORIES = 255      # HistGradientBoosting's limit for a native categorical feature
MULTI_HOT_MAX = 64           # id lists with at most this many buckets become multi-hot
LOGREG_MAX_ITER = 1000
HGB_MAX_ITER = 500


def seeds(name, requested):
    """Fits per setting: the logistic regression is deterministic."""
    return 1 if name == "sk_logreg" else requested


def describe(name):
    if name == "sk_logreg":
        return {"estimator": f"LogisticRegression(lbfgs, max_iter={LOGREG_MAX_ITER})",
                "features": "one-hot ids, multi-hot id lists, dense, scenario multi-hot"}
    return {"estimator": f"HistGradientBoostingClassifier(max_iter={HGB_MAX_ITER}, "
                         "early_stopping on 10% of the training rows)",
            "features": f"ids <= {NATIVE_CATEGORIES} buckets categorical, larger "
                        "target-encoded (cross-fitted), dense, scenario multi-hot"}


def fit_predict(name, schema, train, predict_splits, params, seed):
    """Fits one estimator per task on `train` (rows with that label); returns the
    probabilities [N, N_t] of every split in `predict_splits`."""
    if name == "sk_logreg":
        design = functools.partial(sparse_design, schema)

        def estimator():
            return LogisticRegression(max_iter=LOGREG_MAX_ITER, **params)
    else:
        design = TabularDesign(schema)

        def estimator():
            return design.estimator(params, seed)
    x_train = design(train.encoded)
    xs = [design(s.encoded) for s in predict_splits]
    out = [np.zeros(s.labels.shape) for s in predict_splits]
    for n in range(schema.num_tasks):
        rows = train.labels[:, n] >= 0
        model = estimator().fit(x_train[rows], train.labels[rows, n] > 0)
        for probs, x in zip(out, xs):
            probs[:, n] = model.predict_proba(x)[:, 1]
    return out


# --- logistic regression -------------------------------------------------------------------
def one_hot(ids, width):
    """[N] or [N, L] ids (-1: none) -> sparse [N, width] counts."""
    ids = np.asarray(ids).reshape(len(ids), -1)                    # [N, L]
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])            # [N * L]
    flat = ids.ravel()
    keep = flat >= 0
    return sp.csr_matrix((np.ones(keep.sum()), (rows[keep], flat[keep])),
                         shape=(len(ids), width))


def sparse_design(schema, encoded):
    """Sparse [N, sum of widths]: every feature one-hot / multi-hot or dense, then the
    scenario multi-hot."""
    blocks = []
    for f in schema.features:
        x = encoded[f.name]
        blocks.append(sp.csr_matrix(np.asarray(x, float).reshape(-1, 1)) if f.type == "dense"
                      else one_hot(x, f.num_buckets))
    blocks.append(sp.csr_matrix(encoded[SCENARIO_KEY]))
    return sp.hstack(blocks, format="csr")


# --- gradient boosting ---------------------------------------------------------------------
class TabularDesign:
    """Encoded features -> a dense float matrix for HistGradientBoosting, columns ordered
    [target-encoded ids, native categorical ids, numbers] (the order ColumnTransformer
    returns them in)."""

    def __init__(self, schema):
        self.high, self.low, self.multi, self.dense = [], [], [], []
        for f in schema.features:
            if f.type == "dense":
                self.dense.append(f.name)
            elif f.type == "multi_categorical" and f.num_buckets <= MULTI_HOT_MAX:
                self.multi.append((f.name, f.num_buckets))
            elif f.type == "categorical" and f.num_buckets <= NATIVE_CATEGORIES:
                self.low.append(f.name)
            else:
                self.high.append(f.name)

    def __call__(self, encoded):
        """{name: encoded array} -> [N, columns] float."""
        def first(x):        # a single id, or an id list's first id (-1 when empty)
            return np.asarray(x).reshape(len(x), -1)[:, :1]
        blocks = [first(encoded[n]) for n in self.high + self.low]
        blocks += [one_hot(encoded[n], width).toarray() for n, width in self.multi]
        blocks += [np.asarray(encoded[n]).reshape(-1, 1) for n in self.dense]
        blocks.append(np.asarray(encoded[SCENARIO_KEY]))
        return np.hstack(blocks).astype(float)

    def estimator(self, params, seed):
        categorical = np.arange(len(self.high), len(self.high) + len(self.low))
        hgb = HistGradientBoostingClassifier(
            max_iter=HGB_MAX_ITER, early_stopping=True, validation_fraction=0.1,
            n_iter_no_change=20, categorical_features=categorical, random_state=seed,
            **params)
        if not self.high:
            return hgb
        encode = ColumnTransformer(
            [("target", TargetEncoder(target_type="binary", cv=StratifiedKFold(
                5, shuffle=True, random_state=seed)),
              list(range(len(self.high))))], remainder="passthrough")
        return make_pipeline(encode, hgb)
