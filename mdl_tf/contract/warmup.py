"""TF Serving's warm-up file: `<version>/assets.extra/tf_serving_warmup_requests`.

Part of the serving contract (mdl_tf.contract): mdl_tf.export writes it, and
serving.servable replays it when it loads a version.

A TFRecord of `PredictionLog` protos. TF Serving replays them when it loads a version,
before the version serves traffic, so first requests don't pay for lazy initialisation;
a record that fails makes the load fail. It reads at most 1000 records. The model name in
the requests is ignored (a version does not know the name it is served under).
"""
import os

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def write(version_dir, requests):
    """Writes PredictRequests as the warm-up file of `version_dir`; returns its path."""
    requests = list(requests)
    if len(requests) > MAX_RECORDS:
        raise ValueError(f"{len(requests)} warm-up requests; TF Serving reads at most "
                         f"{MAX_RECORDS}")
    path = os.path.join(version_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read(version_dir):
    """The PredictRequests of `version_dir`'s warm-up file ([] when it has none).

    Raises ValueError for records that are not predict logs (this server replays only
    Predict) or for more than MAX_RECORDS records, as TF Serving refuses those too.
    """
    path = os.path.join(version_dir, WARMUP_PATH)
    if not os.path.exists(path):
        return []
    requests = []
    for i, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if i >= MAX_RECORDS:
            raise ValueError(f"{path}: more than {MAX_RECORDS} warm-up records")
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{path}: record {i} is a {log.WhichOneof('log_type')}; "
                             "only predict_log records are supported")
        requests.append(log.predict_log.request)
    return requests
