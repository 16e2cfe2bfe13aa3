"""Entry points: --help answers before TensorFlow loads and exits 0; the static lists the
help shows match the registry; the README's commands use flags that exist."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from mdl_tf import cli, options

BENCHMARKS = ["quality", "learning_curve", "extend", "train_throughput", "serving", "scaling",
              "optimizers", "pipelines"]
ENTRY_POINTS = ["mdl_tf.train", "mdl_tf.evaluate", "mdl_tf.export", "mdl_tf.visualize",
                "mdl_tf.demo", "mdl_tf.infer", "mdl_tf.schema infer", "serving.client",
                "serving.server", *(f"benchmarks.{name}" for name in BENCHMARKS)]
HEAVY = ("tensorflow", "grpc", "apache_beam", "sklearn")
# Runs the module as a script, then reports whether TensorFlow (or another slow import) was
# imported.
PROBE = ("import runpy, sys\nsys.argv = [sys.argv[1]] + sys.argv[2:]\ntry:\n"
         "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
         "except SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
         "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_NOT_LOADED')\n"
         f"print('SLOW_IMPORTS=' + ','.join(sorted({HEAVY!r} & sys.modules.keys())))\n"
         "sys.exit(code)\n")


def help_text(entry):
    module, *args = entry.split()
    run = subprocess.run([sys.executable, "-c", PROBE, module, *args, "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "PYTHONPATH": REPO})
    return run


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help_exits_0_without_importing_tensorflow(entry):
    run = help_text(entry)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "TF_NOT_LOADED" in run.stdout, f"{entry} --help imported TensorFlow"
    assert "SLOW_IMPORTS=\n" in run.stdout, f"{entry} --help: {run.stdout.splitlines()[-1]}"
    assert "--" in run.stdout


@pytest.mark.parametrize("entry, flags", [
    ("serving.server", ["--model_base_path", "--max_batch_size", "(default: 512)",
                        "microseconds"]),
    ("benchmarks.quality", ["--models", "--budget", "--train_fraction", "(default: 1024)",
                            "sk_hgb"]),
    ("benchmarks.learning_curve", ["--baselines", "--num_scenarios", "--budget"]),
    ("benchmarks.extend", ["--holdout", "--fractions", "(default: movielens)"]),
    ("benchmarks.train_throughput", ["--quick", "--rounds", "deepctr_mmoe"]),
    ("benchmarks.serving", ["--model_dir", "--threads", "seconds"]),
    ("benchmarks.scaling", ["--d_models", "--layers", "(default: 16,32,64)"]),
    ("benchmarks.optimizers", ["--epochs", "--out"]),
    ("benchmarks.pipelines", ["--rows", "--direct_running_mode", "(default: 1000000)"]),
])
def test_argparse_help_names_flags_and_defaults(entry, flags):
    out = help_text(entry).stdout
    assert f"usage: python -m {entry}" in out
    for text in flags:
        assert text in out, f"{entry} --help lacks {text!r}"


def test_every_argparse_flag_has_help():
    from benchmarks import flags
    from serving import options
    parsers = [options.parser()] + [getattr(flags, f"{name}_parser")("doc")
                                    for name in BENCHMARKS]
    for parser in parsers:
        for action in parser._actions:
            assert action.help, f"{parser.prog}: {action.option_strings} has no help"


def test_train_help_lists_models_config_keys_and_defaults():
    out = help_text("mdl_tf.train").stdout
    assert "<hmoe|mdl|mmoe|pepnet|ple|rankmixer|shared_bottom|star>" in out
    assert "d_model" in out and "domain_attention" in out and "(default: '2048')" in out


def test_static_lists_match_the_registry_and_distribute():
    from mdl_tf import distribute
    from mdl_tf.models.registry import MODELS, model_names
    assert list(cli.MODEL_NAMES) == model_names()
    for name, cls in MODELS.items():
        assert cli.config_keys(name) == tuple(f.name for f in dataclasses.fields(
            cls.config_class)), name
    assert cli.STRATEGIES == distribute.STRATEGIES
    from mdl_tf import calibration
    assert cli.CALIBRATION_METHODS == calibration.METHODS
    assert options.DEFAULT_PS_MIN_SHARD_BYTES == distribute.DEFAULT_PS_MIN_SHARD_BYTES
    from benchmarks import flags
    from mdl_tf.models.registry import BASELINES
    assert flags.BASELINES == BASELINES


def readme_blocks(*languages):
    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S)
            if lang in languages]


def test_readme_python_blocks_compile():
    blocks = readme_blocks("python")
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def readme_commands():
    blocks = readme_blocks("", "sh", "bash")
    lines = [line.split("#")[0].strip() for b in blocks for line in b.splitlines()]
    return [re.sub(r"^\.venv/bin/python", "python", line) for line in lines
            if re.match(r"(\.venv/bin/)?python -m ", line)]


def test_readme_commands_use_existing_flags():
    commands = readme_commands()
    assert len(commands) >= 6
    helps = {}
    for command in commands:
        words = command.split()
        entry = " ".join(words[2:4]) if words[3:4] == ["infer"] else words[2]
        if entry not in helps:
            run = help_text(entry)
            assert run.returncode == 0, (command, run.stderr[-1000:])
            helps[entry] = run.stdout
        if entry == "serving.client" and "predict" in words:
            helps[entry] += help_text("serving.client predict").stdout
        for flag in re.findall(r"(--[a-z_]+)", command):
            assert flag in helps[entry], f"README: {command}: {flag} is not a flag of {entry}"


def test_quality_benchmark_names_custom_outputs_and_protects_committed_results(tmp_path):
    from benchmarks import quality
    schema = os.path.join(REPO, "mdl_tf", "datasets", "synthetic.yaml")
    args = quality.parse_args(["--schema", schema])
    with pytest.raises(SystemExit, match="do not write into .*results"):
        quality.output_name(args)
    args = quality.parse_args(["--schema", schema, "--out_dir", str(tmp_path)])
    assert quality.output_name(args) == "synthetic"
    args = quality.parse_args(["--schema", schema, "--out_dir", str(tmp_path), "--name", "mine"])
    assert quality.output_name(args) == "mine"
    assert quality.output_name(quality.parse_args(["--dataset", "census"])) == "census"
