"""One file, one meaning: the trainer (mdl_tf.data), the pipeline (pipelines.sources and
validate, written as the TFRecord the trainer reads) and the client (mdl_tf.contract.requests) read
the same CSV file, with a byte-order mark, CRLF line ends, a blank line, quoted fields
holding the delimiter and empty cells, into the same values."""
import os

import mdl_tf  # noqa: F401
import numpy as np
import tensorflow as tf

from mdl_tf import data, dialect, schema as schema_lib
from mdl_tf.contract import requests

HEADER = ("user_id,age_group,gender,city,activity,recent_categories,act_feed,act_search,"
          "act_mall,item_id,category,price,hour,device,scenario,click,like,favourite")
LINES = [
    '12,3,1,"c4,north",2.5,cat1|cat2,0.1,-0.2,0.3,77,cat5,19.9,21," ios ",feed,1,0,',
    "",
    ',3,1,,,cat1,0.1,-0.2,0.3,77,cat5,,21,ios,search|mall,0,,1',     # empty cells
]
DTYPES = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}


def _write(tmp_path):
    path = os.path.join(tmp_path, "train.csv")
    with open(path, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + "\r\n".join([HEADER] + LINES).encode() + b"\r\n")
    return path


def _trainer(schema, tmp_path):
    ds = data.make_dataset(schema, "train", data_dir=str(tmp_path), batch_size=8)
    (features, labels), = list(ds)
    return {k: v.numpy() for k, v in features.items()}, labels.numpy()


def _pipeline(schema, path, tmp_path):
    from pipelines import sources
    from pipelines.validate import RowValidator
    headers = sources.read_csv_headers([path], ",")
    parse, validate = sources.CsvLineParser(headers, ","), RowValidator(schema)
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")[1:]
    rows = [validate(parse((path, line.rstrip(b"\r")))[2], path)[0]
            for line in lines if line.strip()]
    tfrecord = schema_lib.from_dict({**schema.to_dict(), "format": "tfrecord",
                                     "files": {"train": "p.tfrecord"}}, path=schema.path)
    data.write_tfrecord(os.path.join(tmp_path, "p.tfrecord"),
                        [data.example_from_row(tfrecord, r) for r in rows])
    return _trainer(tfrecord, tmp_path)


def _client(schema, path):
    located = list(dialect.read_rows(path))
    dtypes = {f.name: DTYPES[f.dtype] for f in schema.features}
    defaults = {f.name: f.default for f in schema.features if f.type == "dense"}
    columns = requests.columns_from_rows([row for _, row in located], list(dtypes), dtypes,
                                         defaults, [where for where, _ in located])
    return {n: requests.to_array(v, dtypes[n], n) for n, v in columns.items()}


def test_trainer_pipeline_and_client_read_the_same_values(tiny_schema, tmp_path):
    schema = schema_lib.from_dict({**tiny_schema.to_dict(), "files": {"train": "train.csv"}},
                                  path=tiny_schema.path)
    path = _write(tmp_path)
    trainer, labels = _trainer(schema, tmp_path)
    assert trainer["city"].tolist() == [b"c4,north", b""]
    assert trainer["device"].tolist() == [b"ios", b"ios"]
    assert trainer["user_id"].tolist() == [12, -1]
    np.testing.assert_array_equal(labels, [[1, 0, -1], [0, -1, 1]])
    pipeline, pipeline_labels = _pipeline(schema, path, tmp_path)
    client = _client(schema, path)
    np.testing.assert_array_equal(pipeline_labels, labels)
    for f in schema.features:
        np.testing.assert_array_equal(pipeline[f.name], trainer[f.name], err_msg=f.name)
        np.testing.assert_array_equal(client[f.name], trainer[f.name], err_msg=f.name)
