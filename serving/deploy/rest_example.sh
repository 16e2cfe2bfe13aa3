#!/usr/bin/env bash
# TF Serving's REST API (:8501) for an MDL export, e.g. after docker-compose.yml is up.
#   serving/deploy/rest_example.sh [host:port]
# REST maps JSON numbers to the signature's dtypes itself (int64 ids are fine as JSON ints).
set -euo pipefail
HOST=${1:-localhost:8501}

# Versions and their states (AVAILABLE = ready).
curl -s "http://$HOST/v1/models/mdl"

# Signatures with their inputs and outputs.
curl -s "http://$HOST/v1/models/mdl/metadata"

# One scenario, all tasks: {"predictions": [{"click": p, "like": p, "favourite": p}, ...]}
curl -s -X POST "http://$HOST/v1/models/mdl:predict" -d '{
  "signature_name": "scenario_feed",
  "instances": [
    {"user_id": 12, "age_group": 2, "gender": 1, "city": "c11", "activity": 3.0,
     "recent_categories": "cat1|cat4", "act_feed": 0.4, "act_search": 0.6, "act_mall": -1.6,
     "item_id": 345, "category": "cat4", "price": 19.9, "hour": 20, "device": "ios"}
  ]
}'

# serving_default takes the scenario as an input ('|' joins several); one task of one
# scenario is scenario_<s>__<task> with output "probability". A pinned version (use a
# number from the status call above):
curl -s -X POST "http://$HOST/v1/models/mdl/versions/1795333549:predict" -d '{
  "signature_name": "serving_default",
  "instances": [
    {"scenario": "feed|mall", "user_id": 12, "age_group": 2, "gender": 1, "city": "c11",
     "activity": 3.0, "recent_categories": "cat1|cat4", "act_feed": 0.4, "act_search": 0.6,
     "act_mall": -1.6, "item_id": 345, "category": "cat4", "price": 19.9, "hour": 20,
     "device": "ios"}
  ]
}'

# Prometheus metrics (monitoring.config).
curl -s "http://$HOST/monitoring/prometheus/metrics" | head -20
