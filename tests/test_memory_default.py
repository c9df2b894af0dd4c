"""The default ``batch_size="auto"`` fits a laptop (#31): the peak memory of a call measured in a
fresh process.

The case of the issue: a 128 x 128 conv net (one ``Conv2D`` of 16 channels), 4 images,
integrated gradients with 16 steps, ``N = 50``, every other setting at its default: 3,200
evaluations per call. It peaked at 8.3 GB of RSS when ``"auto"`` counted only the layer outputs
within 4 GiB; the bound must keep it under 3 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, resource
    import numpy as np, keras
    import tfmollify as tfm

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((128, 128, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    x = np.random.default_rng(0).random((4, 128, 128, 3), dtype=np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    explainer = tfm.Explainer(model, attribution="integrated_gradients", ig_steps=16,
                              num_samples=50, seed=0)
    a = explainer.explain(x, [0, 1, 2, 3])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": peak,
                      "batch_size": explainer.runner.batch_size,
                      "finite": bool(np.isfinite(a).all()), "shape": list(a.shape)}))
""")


@pytest.mark.slow
def test_the_default_bound_keeps_a_large_integrated_gradients_call_under_3_gb():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["finite"] and got["shape"] == [4, 128, 128, 3]
    assert got["batch_size"] < 3200  # the bound binds: several passes
    peak_gb = got["peak_kib"] * 1024 / 1e9
    assert peak_gb < 3.0, f"peak RSS {peak_gb:.2f} GB with batch_size={got['batch_size']}"
