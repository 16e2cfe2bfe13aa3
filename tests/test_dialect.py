"""The shared CSV dialect: the Python reader (pipeline, client) and the vectorised one
(trainer) split the same lines the same way; gzip files are verified to their end."""
import gzip
import io
import os

import mdl_tf  # noqa: F401
import pytest
import tensorflow as tf

from mdl_tf import dialect
from mdl_tf.values import DataError

LINES = {
    'a,"c1,north",3': ["a", "c1,north", "3"],
    ' a , b ,': ["a", "b", ""],
    '"x""y",,""': ['x"y', "", ""],
    '1,2,3\r': ["1", "2", "3"],
    'a,b"c,d': None,          # a quote inside an unquoted field
    'a, "b",c': None,         # a quote that does not open the field
    '"a,b,c': None,           # never closed
    'a,b': 2,                 # wrong field count
    'a,"b,c",d,e': 4,
}


@pytest.mark.parametrize("line,expected", LINES.items())
def test_python_and_tensorflow_split_lines_alike(line, expected):
    if isinstance(expected, list):
        assert dialect.split_line(line, ",") == expected
    elif expected is None:
        with pytest.raises(DataError, match="bad CSV quoting"):
            dialect.split_line(line, ",")
    else:
        assert len(dialect.split_line(line, ",")) == expected
    fields, problems = dialect.split_lines_tf(tf.constant([line.rstrip("\r")]), ",", 3)
    flagged = [what for bad, what, _ in problems if bool(bad.numpy()[0])]
    if isinstance(expected, list):
        assert flagged == [] and [f.decode() for f in fields.numpy()[0]] == expected
    elif expected is None:
        assert flagged == [dialect.BAD_QUOTING]
    else:
        assert flagged == ["expected 3 fields, got "]


def test_tab_delimiter_and_non_utf8_lines():
    fields, _ = dialect.split_lines_tf(tf.constant(['a\t"b\tc"']), "\t", 2)
    assert [f.decode() for f in fields.numpy()[0]] == ["a", "b\tc"]
    assert dialect.split_line('a\t"b\tc"', "\t") == ["a", "b\tc"]
    _, problems = dialect.split_lines_tf(tf.constant([b"a,\xff"]), ",", 2)
    assert [w for bad, w, _ in problems if bool(bad.numpy()[0])] == [dialect.NOT_UTF8]
    with pytest.raises(ValueError, match="one ASCII character"):
        dialect.check_delimiter(";;")


def test_headers_byte_order_marks_and_rows(tmp_path):
    path = os.path.join(tmp_path, "x.csv")
    with open(path, "wb") as fh:
        fh.write(b'\xef\xbb\xbfa,"b"\r\n1,"x,y"\r\n\r\n   \n2,\n')
    assert dialect.read_header(path, ",") == ["a", "b"]
    assert list(dialect.read_rows(path)) == [(f"{path}:2", {"a": "1", "b": "x,y"}),
                                             (f"{path}:5", {"a": "2", "b": ""})]
    with open(path, "wb") as fh:
        fh.write("a,b\n".encode("utf-16"))
    with pytest.raises(DataError, match="x.csv: the file is UTF-16 text"):
        dialect.read_header(path, ",")
    with open(path, "wb") as fh:
        fh.write(b"a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"x.csv:2: expected 2 fields, got '3'"):
        list(dialect.read_rows(path))


def _gzip(data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(data)
    return buf.getvalue()


def test_gzip_streams_are_verified_to_their_end():
    whole = _gzip(b"a,b\n" + b"1,2\n" * 5000)
    dialect.verify_gzip(io.BytesIO(whole + _gzip(b"3,4\n") + b"\0\0"), "ok.gz")  # 2 members
    for cut in (len(whole) * 2 // 3, len(whole) - 4):
        with pytest.raises(DataError, match="cut.gz: truncated gzip file"):
            dialect.verify_gzip(io.BytesIO(whole[:cut]), "cut.gz")
    corrupt = whole[:40] + bytes(b ^ 0xFF for b in whole[40:60]) + whole[60:]
    with pytest.raises(DataError, match="bad.gz: corrupt gzip file"):
        dialect.verify_gzip(io.BytesIO(corrupt), "bad.gz")
    with pytest.raises(DataError, match="not.gz: corrupt gzip file"):
        dialect.verify_gzip(io.BytesIO(b"plain text"), "not.gz")
