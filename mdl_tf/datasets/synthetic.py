"""Built-in synthetic multi-scenario, multi-task click log (the default dataset).

Generative process (everything is drawn from `numpy.random.default_rng(seed)` streams, so a
seed fixes the whole dataset; rows are produced in chunks and never held all at once):

1. **Users** (`num_users`): age_group (6), gender (2), city (30, as the string "c<k>"),
   activity ~ LogNormal, a latent taste vector u ~ N(0, I_8), and one engagement
   propensity per scenario b_s ~ N(0, 1), exposed as the dense features act_<scenario>
   (the scenario-specific prior features of the scenario tokens).
   recent_categories: the user's 3 favourite of 20 categories (highest c_k . u), "|"-joined.
2. **Items** (`num_items`): category k (20, as "cat<k>"), price ~ LogNormal, quality
   q ~ N(0, 1), latent v = c_k + 0.5 * N(0, I_8) (items of a category are similar).
3. **Scenarios** feed / search / mall, with traffic shares 55% / 30% / 15% (mall is the
   sparse one) and *different input distributions*: feed draws items by popularity,
   search draws them from the user's favourite categories (intent), mall draws pricier
   items. With probability `overlap` an example also belongs to a second scenario
   (its scenario cell is then e.g. "feed|mall"); labels follow the first.
4. **Context**: hour (24) and device (ios / android / web).
5. **Labels**, with *shared structure* (the affinity a = u.v / sqrt(8) drives every
   scenario and task) and *scenario-specific label functions* (each scenario weighs
   affinity, quality, price and the hour differently):
     click      ~ Bernoulli(sigmoid(w_s . [a, q, -log price, evening, b_s] + bias_s))
     like       = click * Bernoulli(sigmoid(1.5 a + 0.5 q + 0.5 [female] + bias))
     favourite  = click * Bernoulli(sigmoid(0.8 a + 1.5 q + 0.4 log price + bias))
   The three tasks are correlated (like and favourite imply click). Biases are calibrated
   per scenario so the positive rates are about click 10% / like 3% / favourite 1%
   (CLICK_RATE, LIKE_RATE, FAVOURITE_RATE). With `missing_rate` > 0, that fraction of
   like/favourite labels is blanked (missing, masked from the loss).

`prepare(out_dir)` writes train/valid/test CSVs matching `synthetic.yaml`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np

from mdl_tf import schema as schema_lib

SCENARIOS = ("feed", "search", "mall")
TRAFFIC = (0.55, 0.30, 0.15)
CLICK_RATE = {"feed": 0.10, "search": 0.14, "mall": 0.06}
LIKE_RATE = {"feed": 0.30, "search": 0.20, "mall": 0.25}       # given click
FAVOURITE_RATE = {"feed": 0.08, "search": 0.07, "mall": 0.16}  # given click
# Per-scenario weights of [affinity, quality, -log price, evening, engagement b_s].
CLICK_WEIGHTS = {"feed": (1.6, 0.9, 0.2, 0.3, 0.8),
                 "search": (2.4, 0.4, 0.1, 0.0, 0.6),
                 "mall": (1.0, 0.6, 1.2, 0.6, 0.9)}
NUM_CATEGORIES, LATENT = 20, 8
DEVICES = ("ios", "android", "web")
COLUMNS = ("user_id", "age_group", "gender", "city", "activity", "recent_categories",
           "act_feed", "act_search", "act_mall", "item_id", "category", "price", "hour",
           "device", "scenario", "click", "like", "favourite")
SPLIT_SEEDS = {"train": 1, "valid": 2, "test": 3}
DEFAULT_ROWS = {"train": 240_000, "valid": 40_000, "test": 40_000}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class SyntheticLog:
    """The world (users, items, label functions) for one seed; rows are drawn lazily."""

    def __init__(self, seed=0, num_users=3000, num_items=1500, overlap=0.05,
                 missing_rate=0.0):
        rng = np.random.default_rng([seed, 0])
        self.seed, self.overlap, self.missing_rate = seed, overlap, missing_rate
        self.num_users, self.num_items = num_users, num_items
        self.cat_vec = rng.normal(size=(NUM_CATEGORIES, LATENT))
        self.user = {
            "age_group": rng.integers(0, 6, num_users),
            "gender": rng.integers(0, 2, num_users),
            "city": rng.integers(0, 30, num_users),
            "activity": rng.lognormal(1.0, 0.8, num_users),
            "u": rng.normal(size=(num_users, LATENT)),
            "b": rng.normal(size=(num_users, len(SCENARIOS))),
        }
        prefs = self.user["u"] @ self.cat_vec.T                       # [users, categories]
        self.user["top_cats"] = np.argsort(-prefs, axis=1)[:, :3]
        category = rng.integers(0, NUM_CATEGORIES, num_items)
        self.item = {
            "category": category,
            "price": rng.lognormal(3.0, 0.9, num_items),
            "q": rng.normal(size=num_items),
            "v": self.cat_vec[category] + 0.5 * rng.normal(size=(num_items, LATENT)),
            "pop": rng.zipf(1.6, num_items).astype(float),
        }
        self.item["pop"] /= self.item["pop"].sum()
        price = self.item["price"]
        self.mall_p = price / price.sum()
        self.by_cat = [np.flatnonzero(category == k) for k in range(NUM_CATEGORIES)]
        self.bias = self._calibrate()

    # --- label functions ---------------------------------------------------------------
    def _scores(self, users, items, scen, hour):
        """Un-biased logits of click, like|click, favourite|click for arrays of rows."""
        u, it = self.user, self.item
        aff = np.einsum("nd,nd->n", u["u"][users], it["v"][items]) / np.sqrt(LATENT)
        q, logp = it["q"][items], np.log(it["price"][items])
        evening = (hour >= 18).astype(float)
        b = u["b"][users, scen]
        w = np.array([CLICK_WEIGHTS[s] for s in SCENARIOS])[scen]    # [n, 5]
        feats = np.stack([aff, q, -(logp - 3.0), evening, b], axis=1)
        click = np.einsum("nk,nk->n", w, feats)
        like = 1.5 * aff + 0.5 * q + 0.5 * u["gender"][users]
        fav = 0.8 * aff + 1.5 * q + 0.4 * (logp - 3.0)
        return click, like, fav

    def _calibrate(self):
        """Per scenario and task, the bias that gives the target positive rate."""
        rng = np.random.default_rng([self.seed, 99])
        bias = {}
        for k, name in enumerate(SCENARIOS):
            n = 20_000
            scen = np.full(n, k)
            users = rng.integers(0, self.num_users, n)
            items = self._draw_items(rng, users, scen)
            click, like, fav = self._scores(users, items, scen, rng.integers(0, 24, n))
            click_bias = _solve_bias(click, CLICK_RATE[name])
            # like/favourite happen only after a click: calibrate on clicked rows' weights.
            p_click = _sigmoid(click + click_bias)
            bias[name] = (click_bias, _solve_bias(like, LIKE_RATE[name], p_click),
                          _solve_bias(fav, FAVOURITE_RATE[name], p_click))
        return bias

    def _draw_items(self, rng, users, scen):
        n = len(users)
        items = rng.choice(self.num_items, n, p=self.item["pop"])        # feed: popularity
        search = np.flatnonzero(scen == 1)
        if len(search):
            cats = self.user["top_cats"][users[search], rng.integers(0, 3, len(search))]
            items[search] = [rng.choice(self.by_cat[c]) if len(self.by_cat[c]) else 0
                             for c in cats]
        mall = np.flatnonzero(scen == 2)
        if len(mall):
            items[mall] = rng.choice(self.num_items, len(mall), p=self.mall_p)
        return items

    # --- rows --------------------------------------------------------------------------
    def chunks(self, num_rows, split="train", chunk_size=20_000):
        """Yields dicts of column -> numpy array (string columns as str arrays)."""
        for start in range(0, num_rows, chunk_size):
            n = min(chunk_size, num_rows - start)
            rng = np.random.default_rng([self.seed, SPLIT_SEEDS[split], start])
            yield self._chunk(rng, n)

    def _chunk(self, rng, n):
        u, it = self.user, self.item
        scen = rng.choice(len(SCENARIOS), n, p=TRAFFIC)
        users = rng.integers(0, self.num_users, n)
        items = self._draw_items(rng, users, scen)
        hour = rng.integers(0, 24, n)
        click_s, like_s, fav_s = self._scores(users, items, scen, hour)
        bias = np.array([self.bias[s] for s in SCENARIOS])[scen]         # [n, 3]
        click = rng.random(n) < _sigmoid(click_s + bias[:, 0])
        like = click & (rng.random(n) < _sigmoid(like_s + bias[:, 1]))
        fav = click & (rng.random(n) < _sigmoid(fav_s + bias[:, 2]))
        names = np.array(SCENARIOS)
        scenario = names[scen].astype(object)
        extra = rng.random(n) < self.overlap
        other = (scen + rng.integers(1, len(SCENARIOS), n)) % len(SCENARIOS)
        scenario[extra] = scenario[extra] + "|" + names[other[extra]]
        labels = {"click": click.astype(int).astype(str)}
        for name, values in (("like", like), ("favourite", fav)):
            col = values.astype(int).astype(str).astype(object)
            col[rng.random(n) < self.missing_rate] = ""
            labels[name] = col
        top = u["top_cats"][users]
        return {
            "user_id": users, "age_group": u["age_group"][users], "gender": u["gender"][users],
            "city": np.char.add("c", u["city"][users].astype(str)),
            "activity": np.round(u["activity"][users], 3),
            "recent_categories": np.array(["|".join(f"cat{c}" for c in row) for row in top]),
            **{f"act_{s}": np.round(u["b"][users, k], 3) for k, s in enumerate(SCENARIOS)},
            "item_id": items, "category": np.char.add("cat", it["category"][items].astype(str)),
            "price": np.round(it["price"][items], 2), "hour": hour,
            "device": np.array(DEVICES)[rng.choice(3, n, p=(0.45, 0.45, 0.1))],
            "scenario": scenario, **labels,
        }


def _solve_bias(scores, rate, weights=None):
    """Bisection for b with weighted mean of sigmoid(scores + b) == rate."""
    weights = np.ones_like(scores) if weights is None else weights
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        mean = np.average(_sigmoid(scores + mid), weights=weights)
        lo, hi = (mid, hi) if mean < rate else (lo, mid)
    return (lo + hi) / 2


def write_csv(path, log, num_rows, split):
    with open(path, "w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for chunk in log.chunks(num_rows, split):
            cols = [chunk[c].astype(str) for c in COLUMNS]
            fh.write("\n".join(",".join(row) for row in zip(*cols)) + "\n")


def prepare(out_dir, raw_dir=None, seed=0, rows=None, overlap=0.05, missing_rate=0.0):
    """Writes train.csv / valid.csv / test.csv, plus schema.yaml describing them.

    The schema.yaml written here has no recipe: `--dataset <out_dir>/schema.yaml` trains
    on exactly these files (tests use it for small copies).
    """
    del raw_dir  # generated, not read
    rows = {**DEFAULT_ROWS, **(rows or {})}
    os.makedirs(out_dir, exist_ok=True)
    log = SyntheticLog(seed=seed, overlap=overlap, missing_rate=missing_rate)
    for split, n in rows.items():
        write_csv(os.path.join(out_dir, f"{split}.csv"), log, n, split)
    schema = schema_lib.load(os.path.join(os.path.dirname(__file__), "synthetic.yaml"))
    schema_lib.dump(dataclasses.replace(schema, recipe=None), os.path.join(out_dir, "schema.yaml"))
    return out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_rows", type=int, default=DEFAULT_ROWS["train"])
    p.add_argument("--valid_rows", type=int, default=DEFAULT_ROWS["valid"])
    p.add_argument("--test_rows", type=int, default=DEFAULT_ROWS["test"])
    p.add_argument("--overlap", type=float, default=0.05)
    p.add_argument("--missing_rate", type=float, default=0.0)
    a = p.parse_args(argv)
    prepare(a.out_dir, seed=a.seed, overlap=a.overlap, missing_rate=a.missing_rate,
            rows={"train": a.train_rows, "valid": a.valid_rows, "test": a.test_rows})
    print(f"wrote {a.out_dir}/{{train,valid,test}}.csv")


if __name__ == "__main__":
    main()
