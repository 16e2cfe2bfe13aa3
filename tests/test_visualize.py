"""python -m mdl_tf.visualize: attention-map PNGs and the page that shows them."""
import json
import os

import mdl_tf  # noqa: F401
import numpy as np
import pytest

from mdl_tf import visualize


def test_visualize_writes_pngs_and_a_page(tiny_run, tiny_schema, tmp_path):
    page = visualize.visualize(tiny_run["model_dir"], split="test", out_dir=str(tmp_path))
    layers = tiny_run["model"].config.num_layers
    pngs = [f"{kind}_attention_layer{l}.png" for kind in ("task", "scenario")
            for l in range(layers)]
    for png in pngs:
        with open(tmp_path / png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(page).read()
    assert all(f"]({png})" in text for png in pngs)
    assert all(group in text for group in tiny_schema.groups)

    averages = json.load(open(tmp_path / "attention.json"))
    task = averages["task"][0]
    assert set(task) == set(tiny_schema.task_names)
    scenario = averages["scenario"][0]
    assert set(scenario) == set(tiny_schema.scenario_names) | {"global"}
    for row in list(task.values()) + list(scenario.values()):
        assert set(row) == set(tiny_schema.groups)
        np.testing.assert_allclose(sum(row.values()), 1.0, rtol=1e-4)


def test_visualize_cli_default_out_dir(tiny_run, tmp_path):
    """The CLI path: max_batches bounds the work, output defaults under the model dir."""
    import shutil
    model_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run["model_dir"], model_dir)
    page = visualize.visualize(model_dir, split="valid", max_batches=1)
    assert page == os.path.join(model_dir, "attention", "attention.md")


def test_visualize_rejects_a_model_without_domain_attention(tiny_dataset, tmp_path):
    from conftest import TINY_CONFIG
    from mdl_tf import runs, schema as schema_lib
    from mdl_tf.models import build_model, make_config
    s = schema_lib.load(os.path.join(tiny_dataset, "schema.yaml"))
    config = make_config("mmoe", TINY_CONFIG)
    model = build_model("mmoe", s, config).build_from_schema()
    runs.save_run(str(tmp_path), "mmoe", config, s, tiny_dataset)
    ckpt, _ = runs.checkpoint(model)
    ckpt.save(str(tmp_path / "checkpoints" / "ckpt"))
    with pytest.raises(ValueError, match="no domain attention"):
        visualize.visualize(str(tmp_path), split="test")
