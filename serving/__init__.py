"""Serving MDL SavedModels through TensorFlow Serving's gRPC API.

  signatures  the signature names an export has (serving_default, scenario_<s>, ...)
  requests    PredictRequests from Python values with the signature's dtypes, and back
  warmup      TF Serving's assets.extra/tf_serving_warmup_requests file
  servable    one loaded SavedModel version answering PredictRequests
  manager     the versions under a base path: load the newest, warm up, swap
  server      PredictionService + ModelService (+ health, reflection), and its CLI
  client      the library and CLI clients use, against this server or real TF Serving
  errors      ServingError: a gRPC status code with TF Serving's wording
  process     runs the server as a subprocess (demo, benchmark, tests)
  cost        contraction FLOPs per example of the export's signatures
  deploy/     configuration for the real tensorflow/serving image

Code written against `serving.client` works unchanged against `tensorflow_model_server`.
"""
