"""Exported explainers in data-parallel engines: the per-worker callable, and Ray Data."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from crosscheck import require

import tfmollify as tfm
from tfmollify.core import sampling
from tfmollify.integrations.parallel import SavedModelExplainer, explain_ray_dataset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((5, 5, 1)), keras.layers.Conv2D(2, 3, activation="tanh"),
        keras.layers.Flatten(), keras.layers.Dense(3),
    ])
    explainer = tfm.Explainer(model, mode="fg", kernel="rect", num_samples=3,
                              num_weight_samples=2, seed=11)
    path = explainer.export(str(tmp_path_factory.mktemp("par")))
    rng = np.random.default_rng(0)
    n = 11
    rows = {
        "inputs": rng.uniform(size=(n, 5, 5, 1)).astype(np.float32),
        "targets": np.arange(n) % 3,
        "seeds": sampling.example_seeds(explainer.seed, n),  # the seeds of one explain() call
    }
    return explainer, path, rows


def test_worker_equals_explain(exported):
    explainer, path, rows = exported
    worker = SavedModelExplainer(path, stderr="err")
    out = worker(rows)
    want, err = explainer.explain(rows["inputs"], rows["targets"], return_stderr=True)
    np.testing.assert_allclose(out["attributions"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["err"], err, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["inputs"], rows["inputs"])  # the row is kept
    # any split into batches gives the same rows
    parts = [worker({k: v[i : i + 4] for k, v in rows.items()})["attributions"]
             for i in range(0, 11, 4)]
    np.testing.assert_allclose(np.concatenate(parts), out["attributions"], rtol=1e-6, atol=1e-7)


def test_worker_errors(exported, tmp_path):
    _, path, rows = exported
    with pytest.raises(ValueError, match="exported explainer"):
        SavedModelExplainer(str(tmp_path))
    with pytest.raises(ValueError, match=r"no column\(s\) \['seeds'\]"):
        SavedModelExplainer(path)({k: v for k, v in rows.items() if k != "seeds"})
    renamed = SavedModelExplainer(path, inputs="x", output="a")
    out = renamed({"x": rows["inputs"][:2], "targets": rows["targets"][:2],
                   "seeds": rows["seeds"][:2]})
    assert out["a"].shape == (2, 5, 5, 1)


@pytest.mark.slow
def test_ray_data_local_cluster_equals_one_call(exported):
    ray = require("ray", 'pip install "tfmollify[ray]"')
    explainer, path, rows = exported
    want = explainer.explain(rows["inputs"], rows["targets"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, ignore_reinit_error=True)
    try:
        items = [{"id": i, **{k: v[i] for k, v in rows.items()}} for i in range(11)]
        ds = ray.data.from_items(items, override_num_blocks=4)
        with pytest.raises(ValueError, match="no column"):
            explain_ray_dataset(path, ds.drop_columns(["seeds"]))
        out = explain_ray_dataset(path, ds, concurrency=2, batch_size=3).take_all()
        got = np.stack([r["attributions"] for r in sorted(out, key=lambda r: r["id"])])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    finally:
        ray.shutdown()
