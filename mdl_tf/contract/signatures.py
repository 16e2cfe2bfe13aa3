"""Signature names of an MDL export: the contract between the export and its clients.

mdl_tf.export names its signatures with these, and `serving` (server, client) and the
benchmarks find them by them: both sides import this module (mdl_tf.contract).

  serving_default            raw features + "scenario" -> {<task>: [B]}
  predict_examples           "examples": serialized tf.train.Example -> {<task>: [B]}
  scenario_<s>               raw features, scenario fixed in the graph -> {<task>: [B]}
  scenario_<s>__<task>       raw features -> {"probability": [B]}

Names use only [a-z0-9_]: "/" and upper case break some servers and URL paths.
"""
import re

DEFAULT = "serving_default"
EXAMPLES = "predict_examples"
EXAMPLES_INPUT = "examples"
TASK_OUTPUT = "probability"
NAME_RE = re.compile(r"^[a-z0-9_]+$")


def scenario_signature(scenario):
    return check_name(f"scenario_{scenario}")


def task_signature(scenario, task):
    return check_name(f"scenario_{scenario}__{task}")


def signature_for(scenario=None, task=None):
    """The signature that answers for `scenario` (and `task`); neither: serving_default."""
    if task is not None:
        if scenario is None:
            raise ValueError(f"task '{task}' needs a scenario: per-task signatures are "
                             "scenario_<s>__<task>")
        return task_signature(scenario, task)
    return DEFAULT if scenario is None else scenario_signature(scenario)


def check_name(name):
    """Returns `name`, or raises ValueError when it has characters outside [a-z0-9_]."""
    if not NAME_RE.match(name):
        raise ValueError(f"signature name '{name}' must match [a-z0-9_]+ (scenario and task "
                         "names become part of signature names)")
    return name
