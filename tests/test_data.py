"""tf.data input: parsing, masking of missing labels, and every bad-input path."""
import gzip
import os
import shutil

import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import data, schema as schema_lib
from mdl_tf.data import DataError

HEADER = ("user_id,age_group,gender,city,activity,recent_categories,act_feed,act_search,"
          "act_mall,item_id,category,price,hour,device,scenario,click,like,favourite")
GOOD = "12,3,1,c4,2.5,cat1|cat2,0.1,-0.2,0.3,77,cat5,19.9,21,ios,feed,1,0,"


def make_split(tmp_path, lines, name="train.csv", schema=None, header=HEADER):
    """A copy of the tiny schema whose train split is `lines`."""
    path = os.path.join(tmp_path, name)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "wt") as fh:
        fh.write("\n".join([header] + lines) + "\n")
    return path


def load(schema, tmp_path, **kwargs):
    ds = data.make_dataset(schema, "train", data_dir=str(tmp_path), batch_size=8, **kwargs)
    files = data.expand_files(schema.files_for("train", str(tmp_path)))
    with data.raise_data_errors(schema, files):
        return [(f, l) for f, l in ds]


def test_parses_values_and_masks_missing_labels(tiny_schema, tmp_path):
    make_split(tmp_path, [GOOD, GOOD.replace("feed,1,0,", "search|mall,0,,1")])
    (features, labels), = load(tiny_schema, tmp_path)
    np.testing.assert_array_equal(labels.numpy(), [[1, 0, -1], [0, -1, 1]])
    assert features["user_id"].dtype == tf.int64 and features["user_id"].numpy()[0] == 12
    assert features["price"].numpy()[0] == pytest.approx(19.9)
    assert features["scenario"].numpy().tolist() == [b"feed", b"search|mall"]
    assert features["recent_categories"].numpy()[0] == b"cat1|cat2"
    assert features["gauc_group"].numpy()[0] == b"12"


def test_gzip_csv_and_empty_dense_uses_default(tiny_schema, tmp_path):
    schema = schema_lib.from_dict({**tiny_schema.to_dict(),
                                   "files": {"train": "train.csv.gz"}}, path=tiny_schema.path)
    make_split(tmp_path, [GOOD.replace(",19.9,", ",,")], name="train.csv.gz")
    (features, _), = load(schema, tmp_path)
    assert features["price"].numpy()[0] == 0.0


@pytest.mark.parametrize("line,expected", [
    (GOOD + ",extra", "train.csv:3: expected 18 fields, got '19'"),
    (GOOD.replace(",2.5,", ",abc,"), "train.csv:3: column 'activity': not a number: 'abc'"),
    (GOOD.replace(",2.5,", ",nan,"), "train.csv:3: column 'activity': NaN in dense feature 'nan'"),
    (GOOD.replace("feed,1,0,", "cinema,1,0,"), "train.csv:3: column 'scenario': unknown scenario 'cinema'"),
    (GOOD.replace("feed,1,0,", "feed,2,0,"), "train.csv:3: column 'click': label must be 0, 1 or empty (missing), got '2'"),
    (GOOD.replace("12,3,", "u12,3,"), "train.csv:3: column 'user_id': not an int64 id: 'u12'"),
])
def test_bad_csv_row_names_file_line_and_column(tiny_schema, tmp_path, line, expected):
    make_split(tmp_path, [GOOD, line, GOOD])
    with pytest.raises(DataError) as err:
        load(tiny_schema, tmp_path)
    assert expected in str(err.value)


def test_skip_policy_drops_and_counts_bad_rows(tiny_schema, tmp_path):
    bad = [GOOD.replace(",2.5,", ",nan,"), GOOD.replace("feed,1,0,", "cinema,1,0,")]
    make_split(tmp_path, [GOOD, bad[0], GOOD, bad[1], GOOD])
    counter = data.BadRowCounter()
    batches = load(tiny_schema, tmp_path, bad_rows="skip", counter=counter)
    assert sum(int(l.shape[0]) for _, l in batches) == 3
    assert counter.count == 2


def test_missing_column_is_reported_from_the_header(tiny_schema, tmp_path):
    header = HEADER.replace(",price", "")
    make_split(tmp_path, [GOOD], header=header)
    with pytest.raises(DataError, match=r"train.csv:1: missing column\(s\) \['price'\]"):
        load(tiny_schema, tmp_path)


def test_no_matching_files_is_clear(tiny_schema, tmp_path):
    with pytest.raises(DataError, match="no input files match"):
        load(tiny_schema, tmp_path)


def tfrecord_schema(tiny_schema):
    return schema_lib.from_dict({**tiny_schema.to_dict(), "format": "tfrecord",
                                 "files": {"train": "train.tfrecord.gz"}}, path=tiny_schema.path)


def rows_from_csv(tiny_dataset, n):
    import csv
    with open(os.path.join(tiny_dataset, "train.csv")) as fh:
        return [r for _, r in zip(range(n), csv.DictReader(fh))]


def test_tfrecord_round_trip_matches_csv(tiny_schema, tiny_dataset, tmp_path):
    rows = rows_from_csv(tiny_dataset, 8)
    rows[0]["like"] = ""                                      # a missing label
    schema = tfrecord_schema(tiny_schema)
    data.write_tfrecord(os.path.join(tmp_path, "train.tfrecord.gz"),
                        [data.example_from_row(schema, r) for r in rows])
    make_split(tmp_path, [",".join(r[c] for c in HEADER.split(",")) for r in rows])
    (tf_feats, tf_labels), = load(schema, tmp_path)
    (csv_feats, csv_labels), = load(tiny_schema, tmp_path)
    np.testing.assert_array_equal(tf_labels.numpy(), csv_labels.numpy())
    assert tf_labels.numpy()[0, 1] == -1
    for key in csv_feats:
        np.testing.assert_array_equal(tf_feats[key].numpy(), csv_feats[key].numpy(), err_msg=key)


def test_tfrecord_bad_records_are_located(tiny_schema, tiny_dataset, tmp_path):
    schema = tfrecord_schema(tiny_schema)
    rows = rows_from_csv(tiny_dataset, 3)
    examples = [data.example_from_row(schema, r) for r in rows]
    path = os.path.join(tmp_path, "train.tfrecord.gz")
    with tf.io.TFRecordWriter(path, "GZIP") as w:
        w.write(examples[0].SerializeToString())
        w.write(b"\x08garbage that is not an Example")
    with pytest.raises(DataError, match=r"train.tfrecord.gz:record 1: not a serialized "
                                        r"tf.train.Example"):
        load(schema, tmp_path)
    rows[1]["click"] = "3"
    data.write_tfrecord(path, [data.example_from_row(schema, r) for r in rows])
    with pytest.raises(DataError, match=r"train.tfrecord.gz:record 1: feature 'click': label "
                                        r"must be 0, 1 or missing, got '3'"):
        load(schema, tmp_path)


def test_truncated_tfrecord_is_reported(tiny_schema, tiny_dataset, tmp_path):
    schema = schema_lib.from_dict({**tfrecord_schema(tiny_schema).to_dict(),
                                   "files": {"train": "train.tfrecord"}}, path=tiny_schema.path)
    path = os.path.join(tmp_path, "train.tfrecord")
    data.write_tfrecord(path, [data.example_from_row(schema, r)
                               for r in rows_from_csv(tiny_dataset, 4)])
    with open(path, "rb") as fh:
        blob = fh.read()
    with open(path, "wb") as fh:
        fh.write(blob[:-7])
    with pytest.raises(DataError, match="train.tfrecord"):
        load(schema, tmp_path)


def test_training_batches_have_a_fixed_shape(tiny_schema, tiny_dataset, tmp_path):
    shutil.copy(os.path.join(tiny_dataset, "valid.csv"), os.path.join(tmp_path, "train.csv"))
    ds = data.make_dataset(tiny_schema, "train", data_dir=str(tmp_path), batch_size=300,
                           training=True)
    sizes = {int(l.shape[0]) for _, l in ds}
    assert sizes == {300}                                    # 2000 rows: the rest is dropped
    cached = data.make_dataset(tiny_schema, "train", data_dir=str(tmp_path), batch_size=300,
                               training=True, cache=True)
    assert {int(l.shape[0]) for _, l in cached} == {300}


# --- the shared input contract (mdl_tf.values, mdl_tf.dialect) ---------------------------
@pytest.mark.parametrize("line,expected", [
    (GOOD.replace(",2.5,", ",1e39,"), "train.csv:3: column 'activity': not finite as float32"),
    (GOOD.replace(",2.5,", ",-1e39,"), "train.csv:3: column 'activity': not finite as float32"),
    (GOOD.replace("12,3,", "99999999999999999999,3,"),
     "train.csv:3: column 'user_id': not an int64 id: '99999999999999999999'"),
    (GOOD.replace(",c4,", ',"c4,',), "train.csv:3: bad CSV quoting"),
])
def test_values_beyond_float32_and_int64_are_bad_rows(tiny_schema, tmp_path, line, expected):
    make_split(tmp_path, [GOOD, line])
    with pytest.raises(DataError) as err:
        load(tiny_schema, tmp_path)
    assert expected in str(err.value)


def test_tfrecord_inf_is_a_bad_row(tiny_schema, tiny_dataset, tmp_path):
    schema = tfrecord_schema(tiny_schema)
    rows = rows_from_csv(tiny_dataset, 2)
    rows[1]["price"] = "inf"
    data.write_tfrecord(os.path.join(tmp_path, "train.tfrecord.gz"),
                        [data.example_from_row(schema, r) for r in rows])
    with pytest.raises(DataError, match=r"train.tfrecord.gz:record 1: feature 'price': not "
                                        r"finite as float32"):
        load(schema, tmp_path)


def test_quotes_crlf_bom_blank_lines_and_empty_cells(tiny_schema, tmp_path):
    quoted = GOOD.replace(",c4,", ',"c4,north",').replace(",ios,", ',"  ios ",')
    path = os.path.join(tmp_path, "train.csv")
    with open(path, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + "\r\n".join([HEADER, quoted, "", "  ", GOOD.replace(
            "12,3,", ",3,")]).encode() + b"\r\n")
    (features, labels), = load(tiny_schema, tmp_path)
    assert features["city"].numpy().tolist() == [b"c4,north", b"c4"]
    assert features["device"].numpy().tolist() == [b"ios", b"ios"]
    assert features["user_id"].numpy().tolist() == [12, -1]     # empty id: the OOV id
    assert labels.shape[0] == 2


@pytest.mark.parametrize("name", ["train.csv.gz", "train.tfrecord.gz"])
@pytest.mark.parametrize("cut", ["trailer", "middle"])
def test_truncated_gzip_is_an_error_naming_the_file(tiny_schema, tiny_dataset, tmp_path,
                                                    name, cut):
    rows = rows_from_csv(tiny_dataset, 400)
    if name.endswith(".csv.gz"):
        schema = schema_lib.from_dict({**tiny_schema.to_dict(), "files": {"train": name}},
                                      path=tiny_schema.path)
        make_split(tmp_path, [",".join(r[c] for c in HEADER.split(",")) for r in rows],
                   name=name)
    else:
        schema = tfrecord_schema(tiny_schema)
        data.write_tfrecord(os.path.join(tmp_path, name),
                            [data.example_from_row(schema, r) for r in rows])
    path = os.path.join(tmp_path, name)
    with open(path, "rb") as fh:
        blob = fh.read()
    with open(path, "wb") as fh:   # "trailer": every row is there, only the CRC is not
        fh.write(blob[:-8] if cut == "trailer" else blob[:len(blob) * 2 // 3])
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match=f"{name}: truncated gzip file"):
            load(schema, tmp_path, bad_rows=mode)


def test_skip_counts_per_file_and_reason(tiny_schema, tmp_path):
    schema = schema_lib.from_dict({**tiny_schema.to_dict(), "files": {"train": "train*.csv"}},
                                  path=tiny_schema.path)
    make_split(tmp_path, [GOOD, GOOD.replace(",2.5,", ",1e39,"), GOOD + ",x"],
               name="train1.csv")
    make_split(tmp_path, [GOOD.replace("feed,1,0,", "feed,7,0,"), GOOD], name="train2.csv")
    counter = data.BadRowCounter()
    load(schema, tmp_path, bad_rows="skip", counter=counter)
    report = counter.report()
    assert (report["rows_read"], report["bad_rows"]) == (5, 3)
    first, second = (report["by_file"][os.path.join(tmp_path, n)]
                     for n in ("train1.csv", "train2.csv"))
    assert first == {"rows_read": 3, "bad_rows": 2, "bad_value": 1, "unparseable": 1}
    assert second == {"rows_read": 2, "bad_rows": 1, "label_out_of_range": 1}
    with pytest.raises(DataError, match=r"3 of 5 rows read are bad \(60.00%\).*"
                                        r"--max_bad_fraction=0.5"):
        counter.check("split 'train'", 0.5)
    counter.check("split 'train'", 0.6)


def test_a_split_without_usable_rows_is_an_error(tiny_schema, tmp_path):
    make_split(tmp_path, [])
    with pytest.raises(DataError, match="split 'train' .* has no usable rows"):
        data.check_usable(tiny_schema, "train", str(tmp_path))
    make_split(tmp_path, [GOOD.replace(",2.5,", ",x,")] * 3)
    with pytest.raises(DataError, match="no usable rows: 3 of 3 rows read are bad"):
        data.check_usable(tiny_schema, "train", str(tmp_path), "skip")
    with pytest.raises(DataError, match="train.csv:2: column 'activity': not a number"):
        data.check_usable(tiny_schema, "train", str(tmp_path), "error")
