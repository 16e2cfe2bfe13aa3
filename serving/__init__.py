"""Serving MDL SavedModels through TensorFlow Serving's gRPC API.

  servable    one loaded SavedModel version answering PredictRequests
  manager     the versions under a base path: load the newest, warm up, swap
  server      PredictionService + ModelService (+ health, reflection), and its CLI
  options     the server's options and flags (no gRPC or TensorFlow: --help answers at once)
  client      the library and CLI clients use, against this server or real TF Serving
  errors      ServingError: a gRPC status code with TF Serving's wording
  process     runs the server as a subprocess (demo, benchmark, tests)
  cost        contraction FLOPs per example of the export's signatures
  deploy/     configuration for the real tensorflow/serving image

The contract with the export (signature names, request <-> tensor conversion, warm-up
records, version directories) lives in mdl_tf.contract: serving imports mdl_tf, never the
reverse. Code written against `serving.client` works unchanged against
`tensorflow_model_server`.
"""
