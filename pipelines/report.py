"""report.json and report.md: row counts, bad rows by reason, splits, label rates and the
feature statistics of one preprocessing run."""
from __future__ import annotations

from mdl_tf import values
from pipelines import output_schema
from pipelines.split import SPLITS

DEAD_LETTER = "dead_letter/bad_rows-*.jsonl"


def build(opts, stats: dict, *, runner: str, input_format: str, seconds: float) -> dict:
    """The report dict; `status` is "ok" or "failed" (too many bad rows or none good)."""
    good = sum(stats["split_rows"].values())
    bad = sum(stats["bad_rows"].values())
    read = good + bad
    fraction = bad / read if read else 0.0
    failed = read == 0 or good == 0 or values.too_many_bad(bad, read, opts.max_bad_fraction)
    return {
        "status": "failed" if failed else "ok",
        "input": list(opts.inputs), "input_format": input_format, "runner": runner,
        "seconds": round(seconds, 1),
        "rows": {"read": read, "good": good, "bad": bad, "bad_fraction": fraction,
                 "max_bad_fraction": opts.max_bad_fraction},
        "bad_rows_by_reason": dict(sorted(stats["bad_rows"].items())),
        "dead_letter": DEAD_LETTER,
        "split": _split_section(opts, stats),
        "label_rates": _label_rates(stats["scenarios"]),
        "dense": {name: {**m, "quantiles": stats["quantiles"].get(name, [])}
                  for name, m in sorted(stats["dense"].items())},
        "vocabularies": {name: {**v, "file": output_schema.vocab_file(name)}
                         for name, v in sorted(stats["vocabularies"].items())},
    }


def _split_section(opts, stats):
    section = {"method": opts.split, "fractions": list(opts.split_fractions),
               "rows": dict(stats["split_rows"])}
    if opts.split == "hash":
        section.update(key=list(opts.split_key) or "whole record", hash_buckets=opts.hash_buckets)
    else:
        section.update(time_column=opts.time_column, boundaries=stats["time_boundaries"])
    return section


def _label_rates(scenarios):
    """{split: {scenario: {"rows": n, task: {count, positives, rate}}}}."""
    out = {}
    for split in SPLITS:
        for scenario, entry in sorted(scenarios.get(split, {}).items()):
            tasks = {t: {**c, "rate": c["positives"] / c["count"] if c["count"] else None}
                     for t, c in sorted(entry["tasks"].items())}
            out.setdefault(split, {})[scenario] = {"rows": entry["rows"], **tasks}
    return out


# --- markdown ----------------------------------------------------------------------------
def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _num(x, digits=4):
    return "" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def to_markdown(report: dict, task_names) -> str:
    r = report["rows"]
    lines = [f"# Preprocessing report ({report['status']})", "",
             f"Input `{', '.join(report['input'])}` ({report['input_format']}), "
             f"runner {report['runner']}, {report['seconds']} s.", "",
             f"Rows read {r['read']}, good {r['good']}, bad {r['bad']} "
             f"({r['bad_fraction']:.4%}; limit {r['max_bad_fraction']:.4%}).", "",
             "## Bad rows by reason", ""]
    lines += (_table(["reason", "rows"], report["bad_rows_by_reason"].items())
              if report["bad_rows_by_reason"] else ["None."])
    lines += ["", f"Dead letter: `{report['dead_letter']}` (JSON lines).", "", "## Splits", ""]
    sp = report["split"]
    how = (f"hash of {sp['key']} into {sp['hash_buckets']} buckets" if sp["method"] == "hash"
           else f"time column `{sp['time_column']}`, boundaries {sp['boundaries']}")
    lines += [f"{how}; fractions {sp['fractions']}.", ""]
    lines += _table(["split", "rows"], sp["rows"].items())
    lines += ["", "## Label rates (positives / labelled rows)", ""]
    rows = [[split, scen, e["rows"]] + [_rate(e.get(t)) for t in task_names]
            for split, scens in report["label_rates"].items() for scen, e in scens.items()]
    lines += _table(["split", "scenario", "rows", *task_names], rows)
    lines += ["", "## Dense features (train split; count to max: the model input, log1p(x) "
              "under log1p; quantiles: the raw value)", ""]
    lines += _table(["feature", "count", "missing", "mean", "std", "min", "max", "quantiles"],
                    [[n, d["count"], d["missing"], _num(d.get("mean")), _num(d.get("std")),
                      _num(d.get("min")), _num(d.get("max")),
                      ", ".join(_num(q, 3) for q in d["quantiles"])]
                     for n, d in report["dense"].items()])
    lines += ["", "## Vocabularies (train split)", ""]
    lines += _table(["feature", "size", "distinct", "occurrences", "coverage", "file"],
                    [[n, v["size"], v["distinct"], v["occurrences"], f"{v['coverage']:.4f}",
                      f"`{v['file']}`"] for n, v in report["vocabularies"].items()])
    return "\n".join(lines) + "\n"


def _rate(entry):
    if not entry:
        return ""
    rate = "" if entry["rate"] is None else f"{entry['rate']:.4f}"
    return f"{rate} ({entry['positives']}/{entry['count']})"
