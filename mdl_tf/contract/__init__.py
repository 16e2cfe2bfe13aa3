"""The serving contract: what an export writes and a server or client reads.

  signatures  the signature names an export has (serving_default, scenario_<s>, ...)
  requests    PredictRequests from Python values with the signature's dtypes, and back
  warmup      TF Serving's assets.extra/tf_serving_warmup_requests file
  versions    the numeric version directories under an export base

mdl_tf.export writes to it and `serving` reads by it; both import it from here, so
`serving` may import mdl_tf and mdl_tf never imports `serving` (mdl_tf/demo.py aside).
Only `versions` loads without TensorFlow: this package imports none of its modules.
"""
