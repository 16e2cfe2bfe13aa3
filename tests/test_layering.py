"""The package's layering, read from the source (ast: nothing is imported or run).

`serving` may import mdl_tf, never the reverse: mdl_tf/demo.py, the end-to-end driver,
is the one exception; the serving contract both sides share is mdl_tf.contract. A layer
never reads flags, so nothing under mdl_tf/layers imports absl.flags.
"""
import ast
import os

from conftest import REPO

PACKAGE = os.path.join(REPO, "mdl_tf")
SERVING_ALLOWED = {os.path.join("mdl_tf", "demo.py")}


def package_modules(root=PACKAGE):
    """Paths (relative to REPO) of every .py file under `root`."""
    return sorted(os.path.relpath(os.path.join(d, f), REPO)
                  for d, _, files in os.walk(root) for f in files if f.endswith(".py"))


def imported_names(path):
    """Every module name `path` imports, with `from m import n` giving both m and m.n."""
    with open(os.path.join(REPO, path)) as fh:
        tree = ast.parse(fh.read(), filename=path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def importers_of(top, paths):
    """The paths among `paths` that import `top` or a module inside it."""
    return [p for p in paths
            if any(n == top or n.startswith(top + ".") for n in imported_names(p))]


def test_imported_names_sees_every_import_form(tmp_path):
    source = ("import serving\nimport serving.client as c\nfrom serving import errors\n"
              "def f():\n    from absl import flags\n")
    (tmp_path / "m.py").write_text(source)
    names = imported_names(str(tmp_path / "m.py"))
    assert {"serving", "serving.client", "serving.errors", "absl.flags"} <= names


def test_mdl_tf_never_imports_serving_except_demo():
    modules = package_modules()
    assert os.path.join("mdl_tf", "contract", "signatures.py") in modules
    assert importers_of("serving", modules) == sorted(SERVING_ALLOWED)


def test_layers_never_import_absl_flags():
    layers = package_modules(os.path.join(PACKAGE, "layers"))
    assert layers
    assert importers_of("absl.flags", layers) == []
