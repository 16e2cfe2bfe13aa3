"""The shared value rules: the Python rule (pipeline, client, server) and the vectorised
TensorFlow rule (trainer) give the same verdict on the same cells."""
import mdl_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from mdl_tf import values

DENSE = {"2.5": None, " -3e2 ": None, ".5": None, "3.4028235e38": None,
         "1e39": values.NOT_FINITE, "-1e39": values.NOT_FINITE, "3.5e38": values.NOT_FINITE,
         "nan": values.NAN, "NaN": values.NAN, "inf": values.NOT_A_NUMBER,
         "1_000": values.NOT_A_NUMBER, "0x10": values.NOT_A_NUMBER, "abc": values.NOT_A_NUMBER}
IDS = {"12": False, "-7": False, "+3": False, "9223372036854775807": False,
       "-9223372036854775808": False, "0009223372036854775807": False,
       "9223372036854775808": True, "-9223372036854775809": True,
       "99999999999999999999": True, "1.5": True, "u12": True, "1e3": True}


@pytest.mark.parametrize("cell,what", DENSE.items())
def test_dense_rule_is_the_same_in_python_and_tensorflow(cell, what):
    problem = values.dense_problem(cell)
    assert (problem is None) == (what is None) and (what is None or problem.startswith(what))
    number, checks = values.dense_text_tf(tf.constant([cell]), 0.0, False)
    flagged = [w for bad, w in checks if bool(bad.numpy()[0])]
    assert flagged == ([] if what is None else [what])
    if what is None:
        assert number.numpy()[0] == pytest.approx(np.float32(float(cell)))


def test_empty_dense_cell_takes_the_default_and_log1p_needs_more_than_minus_one():
    number, checks = values.dense_text_tf(tf.constant(["", "-1", "-0.5"]), 7.0, True)
    assert number.numpy()[0] == 7.0
    assert [w for bad, w in checks if bool(bad.numpy()[1])] == [values.LOG1P]
    assert not any(bool(bad.numpy()[2]) for bad, _ in checks)
    assert values.dense_problem("-1", log1p=True).startswith(values.LOG1P)


@pytest.mark.parametrize("cell,bad", IDS.items())
def test_id_rule_is_the_same_in_python_and_tensorflow(cell, bad):
    assert (values.id_problem(cell) is not None) == bad
    ids, flagged = values.id_text_tf(tf.constant([cell, ""]))
    assert bool(flagged.numpy()[0]) == bad and not bool(flagged.numpy()[1])
    assert ids.numpy()[1] == values.EMPTY_ID
    if not bad:
        assert ids.numpy()[0] == int(cell)


@pytest.mark.parametrize("cell,bad", [("0", False), ("1.0", False), ("", False), ("2", True),
                                      ("1e0", True), ("+1", True), ("yes", True)])
def test_label_rule_is_the_same_in_python_and_tensorflow(cell, bad):
    assert (values.label_problem(cell) is not None) == bad
    label, flagged = values.label_text_tf(tf.constant([cell]))
    assert bool(flagged.numpy()[0]) == bad
    if not bad:
        assert label.numpy()[0] == (-1.0 if cell == "" else float(cell))


def test_arrays_and_the_bad_fraction_limit():
    assert values.array_problem(np.array([1.0, 2.0], np.float32)) is None
    assert "value 1: " + values.NOT_FINITE in values.array_problem(np.array([1.0, 1e39]))
    assert values.array_problem(np.array([np.nan])).startswith("value 0: " + values.NAN)
    assert values.too_many_bad(2, 100, 0.01) and not values.too_many_bad(1, 100, 0.01)
    assert not values.too_many_bad(0, 0, 0.0)
