#!/usr/bin/env bash
# TF Serving's REST API (:8501) for an MDL export, e.g. after docker-compose.yml is up.
#   serving/deploy/rest_example.sh [host:port] [rows.csv]
# The version and the inputs come from the server itself (model status and metadata), so
# this works for any export: with rows.csv (one of the dataset's own split files, e.g.
# data/shop/valid.csv) its first row is sent, else a neutral row (0, 0.0, "").
# curl -f: an HTTP error (400 for a bad request, 404 for an unknown model) fails the script.
# REST maps JSON numbers to the signature's dtypes itself (int64 ids are fine as JSON ints).
set -euo pipefail
HOST=${1:-localhost:8501}
CSV=${2:-}
MODEL=${MODEL:-mdl}
URL="http://$HOST/v1/models/$MODEL"

# Versions and their states (AVAILABLE = ready); the newest available one is pinned below.
STATUS=$(curl -fsS "$URL")
echo "$STATUS"
VERSION=$(python3 -c 'import json, sys
print(max(int(v["version"]) for v in json.load(sys.stdin)["model_version_status"]
          if v["state"] == "AVAILABLE"))' <<<"$STATUS")

# Signatures with their inputs and outputs.
METADATA=$(curl -fsS "$URL/versions/$VERSION/metadata")

# A request body for a signature: one instance built from the metadata's inputs.
body() {
  SIGNATURE=$1 CSV=$CSV python3 -c 'import csv, json, os, sys
defs = json.load(sys.stdin)["metadata"]["signature_def"]["signature_def"]
name = os.environ["SIGNATURE"]
inputs = defs[name]["inputs"]
row = {}
if os.environ["CSV"]:
    with open(os.environ["CSV"], newline="") as fh:
        row = next(csv.DictReader(fh))
scenarios = sorted(n[len("scenario_"):] for n in defs if n.startswith("scenario_") and "__" not in n)
features = defs["scenario_" + scenarios[0]]["inputs"]   # serving_default adds the scenario
cast = {"DT_INT64": lambda v: int(float(v or 0)), "DT_FLOAT": lambda v: float(v or 0)}
def value(key, dtype):
    if key in row:
        return cast.get(dtype, str)(row[key])
    return cast.get(dtype, str)("") if key in features else scenarios[0]
instance = {k: value(k, v["dtype"]) for k, v in inputs.items()}
print(json.dumps({"signature_name": name, "instances": [instance]}))' <<<"$METADATA"
}

SCENARIO=$(python3 -c 'import json, sys
defs = json.load(sys.stdin)["metadata"]["signature_def"]["signature_def"]
print(sorted(n for n in defs if n.startswith("scenario_") and "__" not in n)[0])' <<<"$METADATA")

# One scenario, all tasks: {"predictions": [{"<task>": p, ...}]}
curl -fsS -X POST "$URL/versions/$VERSION:predict" -d "$(body "$SCENARIO")"; echo

# serving_default takes the scenario column as an input ('|' joins several); one task of
# one scenario is scenario_<s>__<task> with output "probability".
curl -fsS -X POST "$URL/versions/$VERSION:predict" -d "$(body serving_default)"; echo

# Prometheus metrics (monitoring.config).
curl -fsS "http://$HOST/monitoring/prometheus/metrics" | head -20
