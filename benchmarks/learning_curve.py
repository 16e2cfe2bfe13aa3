"""When does MDL win? MDL against the two best baselines on shares of the training rows and
on fewer (merged) scenarios.

    python -m benchmarks.learning_curve --dataset epinions --mdl mdl \\
        --baselines ple shared_bottom --train_fractions 0.1,0.3,1 --num_scenarios 3,8,15 \\
        --from_results benchmarks/results/epinions.json --steps_per_eval 100

Points: every train fraction with all scenarios, and every scenario count with all the
training rows (`--full_grid`: every combination). The valid and test rows are the same at
every point, and a smaller fraction's training rows are among a larger one's
(quality.Split.subset). k scenarios: the k-1 with the most training rows are kept and the
others merged into one, "merged" (an example of several merged scenarios belongs to it
once); the models are built from the merged schema and the baselines sized to MDL's
parameter budget at each point (quality's budget rule).

Settings per model: the learning rate and weight decay chosen in a quality results JSON
(`--from_results`, its "chosen"), else tuned on validation once, at the point with the
most rows and scenarios, with quality's tuner and flags (`--tune_each_point`: at every
point). Everything else is quality's protocol (exact-AUC early stopping, seeds, sample std).
With `--from_results`, the point with all the training rows and scenarios reuses that file's
test AUC per seed when its protocol is the same (those are the same runs). Every finished
point is cached under <work_dir>/learning_curve/: run the same command again to resume.

Writes <out_dir>/<name>_learning_curve.json (`{"points": [{"train_fraction",
"num_scenarios", "model", "auc_mean", "auc_std", "per_seed"}, ...], "gaps": [...],
"command", ...}`; auc = test AUC averaged over the point's scenario x task cells), .md and
.png (MDL's gap to the best of the baselines against data size and scenario count, with
the sample std over seeds of the per-seed gap as error bars).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time

from benchmarks import flags

# --help answers before TensorFlow loads (tens of seconds on a busy machine).
flags.start_script(__name__, __doc__, flags.learning_curve_parser)

import mdl_tf  # noqa: F401
import numpy as np
from absl import logging

from benchmarks import quality
from mdl_tf.data import SCENARIO_KEY

MERGED = "merged"


# --- scenarios -----------------------------------------------------------------------------
def merge_scenarios(bench, k):
    """(BenchData with k scenarios, {scenario: [original scenarios]}): the k-1 scenarios
    with the most training rows are kept (in schema order), the others become one."""
    schema = bench.schema
    names = schema.scenario_names
    if k >= len(names):
        return bench, {n: [n] for n in names}
    if k < 2:
        raise ValueError(f"cannot merge {len(names)} scenarios into {k}: need k >= 2")
    rows = bench.splits["train"].encoded[SCENARIO_KEY].sum(axis=0)          # [N_s]
    largest = np.argsort(-rows, kind="stable")
    keep, rest = np.sort(largest[:k - 1]), np.sort(largest[k - 1:])
    merged = MERGED if MERGED not in names else f"{MERGED}_{k}"
    new_names = [names[i] for i in keep] + [merged]
    new_schema = dataclasses.replace(
        schema, scenario=dataclasses.replace(schema.scenario, names=tuple(new_names)),
        scenario_priors={n: v for n, v in schema.scenario_priors.items() if n in new_names})

    def remap(split):
        membership = split.encoded[SCENARIO_KEY]                             # [N, N_s]
        merged_column = membership[:, rest].max(axis=1, keepdims=True)       # [N, 1]
        encoded = {**split.encoded,
                   SCENARIO_KEY: np.concatenate([membership[:, keep], merged_column], axis=1)}
        return dataclasses.replace(split, encoded=encoded)
    mapping = {**{names[i]: [names[i]] for i in keep}, merged: [names[i] for i in rest]}
    return quality.BenchData(new_schema, {s: remap(v) for s, v in bench.splits.items()}), mapping


# --- points --------------------------------------------------------------------------------
def plan(fractions, counts, full_grid):
    """[(train_fraction, num_scenarios)], the point with the most rows and scenarios first
    (the settings are tuned there)."""
    top_f, top_k = max(fractions), max(counts)
    if full_grid:
        points = [(f, k) for f in fractions for k in counts]
    else:
        points = [(f, top_k) for f in fractions] + [(top_f, k) for k in counts]
    points = sorted(set(points), key=lambda p: (p != (top_f, top_k), -p[0], -p[1]))
    return points


def point_settings(settings, fraction, chosen, tune):
    """The quality settings of one model at one point: its own rows, and either a tuning
    grid (tune) or the chosen learning rate and weight decay alone."""
    s = dataclasses.replace(settings, train_fraction=fraction,
                            tune_train_fraction=min(settings.tune_train_fraction, fraction))
    if tune or "learning_rate" not in (chosen or {}):   # the scikit-learn rows: own grid
        return s
    return dataclasses.replace(s, lrs=[chosen["learning_rate"]],
                               weight_decays=[chosen["weight_decay"]], trials=0)


def point_record(fraction, k, spec, result, train_rows):
    per_seed = [quality.nanmean(quality.cell_values(m)) for m in result["test"]]
    return {"train_fraction": fraction, "num_scenarios": k, "model": spec,
            "auc_mean": float(np.mean(per_seed)), "auc_std": quality.sample_std(per_seed),
            "per_seed": per_seed,
            "train_rows": train_rows, "chosen": result["chosen"], "params": result["params"]}


# The settings that decide which final runs a point trains, besides its learning rate and
# weight decay: a quality run's final seeds with the same values are this point's runs.
TUNING_FIELDS = ("lrs", "weight_decays", "trials", "tune_seeds", "tune_train_fraction")


def reused_point(summary, spec, settings, fraction, k, train_rows):
    """The record of the point with all training rows and scenarios from a quality results
    summary (`--from_results`) whose final seeds ran under the same protocol, else None:
    the same runs need not train twice."""
    theirs = {key: v for key, v in summary.get("settings", {}).items()
              if key not in TUNING_FIELDS}
    ours = {key: v for key, v in dataclasses.asdict(settings).items()
            if key not in TUNING_FIELDS}
    num_scenarios = len({c["scenario"] for c in summary["cells"]})
    # The settings hold the train fraction: equal settings mean the same training rows.
    if spec not in summary["models"] or theirs != json.loads(json.dumps(ours)) \
            or k != num_scenarios:
        return None
    per_seed = quality.from_json(summary["mean_over_cells"][spec]["per_seed"]["auc"])
    return {"train_fraction": fraction, "num_scenarios": k, "model": spec,
            "auc_mean": float(np.mean(per_seed)), "auc_std": quality.sample_std(per_seed),
            "per_seed": per_seed, "train_rows": train_rows,
            "chosen": summary["chosen"][spec], "params": summary["params"][spec],
            "reused": "the final seeds of --from_results"}


def gaps(points, mdl, baselines):
    """Per point: MDL's mean-over-cells test AUC minus the best baseline's (by mean), per
    seed (seed i against seed i) and its mean and sample std."""
    out = []
    for f, k in dict.fromkeys((p["train_fraction"], p["num_scenarios"]) for p in points):
        at = {p["model"]: p for p in points if (p["train_fraction"], p["num_scenarios"]) == (f, k)}
        best = max(baselines, key=lambda b: at[b]["auc_mean"])
        diff = [m - b for m, b in zip(at[mdl]["per_seed"], at[best]["per_seed"])]
        out.append({"train_fraction": f, "num_scenarios": k, "best_baseline": best,
                    "gap_mean": float(np.mean(diff)), "gap_std": quality.sample_std(diff),
                    "per_seed": diff})
    return out


# --- reports -------------------------------------------------------------------------------
def settings_source(args, settings):
    """Where each model's learning rate and weight decay come from, in words."""
    if args.from_results:
        return f"chosen in {args.from_results}"
    where = "at every point" if args.tune_each_point else "once, with the most rows and scenarios"
    return (f"tuned {where} on validation ({quality.grid_text(dataclasses.asdict(settings))}"
            f", {settings.tune_seeds} seeds per setting)")


def _settings_text(summary):
    """The protocol's sentence on where each model's settings come from."""
    return (f"Learning rate and weight decay per model: {summary['settings_source']}; "
            f"{summary['settings']['seeds']} seeds per point, evaluated on the test split.")


def markdown(summary):
    lines = [f"# When does MDL win? {summary['name']}", "", f"Command: `{summary['command']}`",
             "", quality.protocol_text(summary["settings"], _settings_text(summary)), "",
             "## Test AUC, mean over the scenario x task cells (± sample std over seeds)", "",
             "| train fraction | scenarios | model | AUC | per seed |", "|---|---|---|---|---|"]
    for p in summary["points"]:
        lines.append(f"| {p['train_fraction']:g} | {p['num_scenarios']} | {p['model']} | "
                     f"{quality.pm(p['auc_mean'], p['auc_std'])} | "
                     f"{[round(v, 4) for v in p['per_seed']]} |")
    lines += ["", "## MDL minus the best baseline", "",
              "| train fraction | scenarios | best baseline | gap | per seed |",
              "|---|---|---|---|---|"]
    for g in summary["gaps"]:
        lines.append(f"| {g['train_fraction']:g} | {g['num_scenarios']} | "
                     f"{g['best_baseline']} | {g['gap_mean']:+.4f}"
                     + ("" if np.isnan(g["gap_std"]) else f" ± {g['gap_std']:.4f}")
                     + f" | {[round(v, 4) for v in g['per_seed']]} |")
    lines += ["", "Merged scenarios: " + "; ".join(
        f"{k}: {m}" for k, m in summary["scenario_merges"].items()), ""]
    return "\n".join(lines)


def chart(summary, path):
    """Two panels: the gap against the train fraction, and against the scenario count;
    one line per value of the other variable, error bars = sample std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (x, other, label) in zip(axes, [("train_fraction", "num_scenarios",
                                             "share of the training rows"),
                                            ("num_scenarios", "train_fraction",
                                             "number of scenarios")]):
        for value in sorted({g[other] for g in summary["gaps"]}):
            line = sorted((g for g in summary["gaps"] if g[other] == value),
                          key=lambda g: g[x])
            if len(line) < 2:
                continue
            ax.errorbar([g[x] for g in line], [g["gap_mean"] for g in line],
                        yerr=[np.nan_to_num(g["gap_std"]) for g in line], marker="o",
                        capsize=3, label=f"{other.replace('_', ' ')} = {value:g}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        if x == "train_fraction":
            ax.set_xscale("log")
        values = sorted({g[x] for g in summary["gaps"]})
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel(label)
        if ax.get_legend_handles_labels()[0]:          # a sweep of one point draws no line
            ax.legend(fontsize=8)
    axes[0].set_ylabel("MDL - best baseline, test AUC\n(mean over cells; ± std over seeds)")
    fig.suptitle(f"{summary['name']}: when does MDL win?")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- CLI -----------------------------------------------------------------------------------
def parse_args(argv):
    return flags.learning_curve_parser(__doc__).parse_args(argv)


def load_results(path, specs):
    """A quality results summary (None without a path); every spec must have been run."""
    if not path:
        return None
    with open(path) as fh:
        summary = json.load(fh)
    missing = [s for s in specs if s not in summary["chosen"]]
    if missing:
        raise SystemExit(f"{path} has no chosen settings for {', '.join(missing)}")
    return summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.dataset:
        raise SystemExit("--dataset is required")
    logging.set_verbosity(logging.WARNING)
    settings = quality.settings_from_args(args)
    specs = [args.mdl, *args.baselines]
    for spec in specs:
        quality.parse_spec(spec)
    results = load_results(args.from_results, specs)
    chosen = {s: results["chosen"][s] for s in specs} if results else {}
    bench = quality.load_data(args)
    counts = sorted({min(k, bench.schema.num_scenarios) for k in args.num_scenarios})
    points = plan(args.train_fractions, counts, args.full_grid)

    def tuned(spec, i):
        return args.tune_each_point or (spec not in chosen and i == 0)
    progress = quality.Progress(sum(
        quality.planned_work(spec, point_settings(settings, f, None, True))
        if tuned(spec, i) else settings.seeds * f
        for i, (f, _) in enumerate(points) for spec in specs))
    start, records, merges, name = time.time(), [], {}, args.name or args.dataset
    for i, (fraction, k) in enumerate(points):
        merged, merges[k] = merge_scenarios(bench, k)
        target = quality.budget_target(merged.schema, settings)
        rows = len(merged.train(fraction))
        for spec in specs:
            s = point_settings(settings, fraction, chosen.get(spec), tuned(spec, i))
            progress.log(f"point: {fraction:g} of the training rows, {k} scenarios, {spec}")
            record = results and reused_point(results, spec, s, fraction, k, rows)
            if record:
                progress.log(f"{spec}: test AUC per seed reused from {args.from_results}")
            else:
                # Each point's result is cached: an interrupted curve resumes after it.
                cache = quality.ResultCache(os.path.join(
                    args.work_dir, "learning_curve", name, f"{fraction:g}x{k}"), s, rows)
                result = cache.get(spec, lambda spec=spec, s=s: quality.run_model(
                    spec, merged, s, target, progress), progress)
                record = point_record(fraction, k, spec, result, rows)
            chosen.setdefault(spec, record["chosen"])
            records.append(record)
    summary = {"name": name, "dataset": args.dataset,
               "command": "python -m benchmarks.learning_curve " + shlex.join(argv),
               "mdl": args.mdl, "baselines": args.baselines, "points": records,
               "gaps": gaps(records, args.mdl, args.baselines),
               "chosen": chosen, "settings_source": settings_source(args, settings),
               "scenario_merges": {str(k): v for k, v in merges.items()},
               "settings": dataclasses.asdict(settings),
               "wall_seconds": round(time.time() - start, 1)}
    base = os.path.join(args.out_dir, f"{name}_learning_curve")
    quality.write_json(summary, base + ".json")
    with open(base + ".md", "w") as fh:
        fh.write(markdown(summary))
    chart(summary, base + ".png")
    progress.log(f"wrote {base}.json, .md, .png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
