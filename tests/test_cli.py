"""The ``tfmollify`` command end to end, in subprocesses, including every error path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfmollify.cli", *args],
        capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
    )


def assert_one_line_error(res: subprocess.CompletedProcess, match: str) -> None:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    err = [line for line in res.stderr.strip().splitlines() if "error" in line]
    assert err and match in err[-1], res.stderr


def test_help_on_every_subcommand(capsys):
    from tfmollify import cli

    for sub in ("", "demo", "explain", "export", "epsilon", "kernels", "table1"):
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args([*([sub] if sub else []), "--help"])
        assert exit_.value.code == 0
        assert "usage: tfmollify" in capsys.readouterr().out
    res = run("--help")  # the real entry point too
    assert res.returncode == 0 and "export" in res.stdout


def test_kernels_table():
    res = run("kernels")
    assert res.returncode == 0
    for name in ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect"):
        assert name in res.stdout
    assert "1 / (2 cosh^2 x)" in res.stdout


def test_epsilon():
    res = run("epsilon", "--kernel", "hyperbolic", "--r", "1", "--alpha", "0.9")
    assert res.returncode == 0
    assert float(res.stdout) == pytest.approx(1 / np.arctanh(0.9), rel=1e-9)


@pytest.mark.parametrize(
    "args, match",
    [
        (("epsilon", "--r", "-1"), "`r` must be positive"),
        (("epsilon", "--r", "1", "--alpha", "1.5"), "`alpha`"),
        (("epsilon", "--kernel", "laplace", "--r", "1"), "Unknown kernel"),
        (("explain", "--model", "missing.keras", "--input", "x.npy"), "no such file"),
    ],
)
def test_error_paths(args, match):
    assert_one_line_error(run(*args), match)


def test_argparse_errors_exit_nonzero():
    res = run("epsilon")  # --r is required
    assert res.returncode == 2 and "required" in res.stderr and "Traceback" not in res.stderr
    res = run("bogus")
    assert res.returncode == 2 and "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(3),
    ])
    path = str(d / "m.keras")
    model.save(path)
    x = np.random.default_rng(0).uniform(size=(12, 12, 1)).astype(np.float32)
    np.save(d / "x.npy", x)
    (d / "bad.npy").write_bytes(b"not an array")
    (d / "not_a_model.keras").write_bytes(b"nope")
    return d, model, x


def test_explain_writes_npy_and_png(saved_model):
    d, model, x = saved_model
    res = run("explain", "--model", str(d / "m.keras"), "--input", str(d / "x.npy"),
              "--samples", "8", "--sampler", "sobol", "--out", str(d / "heat.png"))
    assert res.returncode == 0, res.stderr
    predicted = int(np.argmax(model(x[None]).numpy()))
    assert f"target {predicted}" in res.stdout  # defaults to the predicted class
    a = np.load(d / "heat.npy")
    assert a.shape == x.shape and np.all(np.isfinite(a))
    assert (d / "heat.png").stat().st_size > 1000


def test_explain_on_an_image_file(saved_model, tmp_path):
    import matplotlib.pyplot as plt

    d, _, _ = saved_model
    img = np.random.default_rng(1).uniform(size=(20, 20, 3))
    plt.imsave(tmp_path / "img.png", img)
    res = run("explain", "--model", str(d / "m.keras"), "--input", str(tmp_path / "img.png"),
              "--samples", "4", "--mode", "fg", "--weight-samples", "2", "--kernel", "rect",
              "--target", "1", "--out", str(tmp_path / "o.png"))
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "o.npy").shape == (12, 12, 1)  # resized and made grey


@pytest.mark.parametrize(
    "which, extra, match",
    [
        ("bad_input", (), "cannot read it"),
        ("bad_model", (), "cannot load it"),
        ("target", ("--target", "7"), "`targets` must be in [0, 3)"),
        ("samples", ("--samples", "0"), "`num_samples`"),
        ("replicates", ("--sampler", "sobol", "--replicates", "3"), "`replicates` must divide"),
    ],
)
def test_explain_error_paths(saved_model, which, extra, match):
    d, _, _ = saved_model
    model = d / ("not_a_model.keras" if which == "bad_model" else "m.keras")
    inp = d / ("bad.npy" if which == "bad_input" else "x.npy")
    res = run("explain", "--model", str(model), "--input", str(inp), *extra,
              "--out", str(d / "e.png"))
    assert_one_line_error(res, match)


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    res = run("demo", "--out", str(tmp_path / "demo"), "--examples", "2", "--samples", "6",
              "--weight-samples", "2", "--epochs", "1")
    assert res.returncode == 0, res.stderr
    assert "[15/15]" in res.stdout
    for name in ("demo_grid.png", "summary.md", "attributions.npz"):
        assert (tmp_path / "demo" / name).exists()
    arrays = np.load(tmp_path / "demo" / "attributions.npz")
    assert arrays["fg_rect"].shape == arrays["inputs"].shape
    assert "| sg/gaussian |" in (tmp_path / "demo" / "summary.md").read_text()


def test_export_writes_a_servable_savedmodel(saved_model, tmp_path):
    import tensorflow as tf

    import tfmollify as tfm

    d, model, x = saved_model
    res = run("export", "--model", str(d / "m.keras"), "--out", str(tmp_path / "srv"),
              "--version", "3", "--mode", "fg", "--kernel", "sigmoid", "--samples", "4",
              "--weight-samples", "2", "--seed", "5")
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and str(tmp_path / "srv" / "3") in res.stdout
    served = tf.saved_model.load(str(tmp_path / "srv" / "3")).signatures["serving_default"]
    xs = np.stack([x, x[::-1]])
    got = served(inputs=tf.constant(xs), targets=tf.constant([0, 2]),
                 seeds=tf.constant([1, 2], tf.int64))
    explainer = tfm.Explainer(model, mode="fg", kernel="sigmoid", num_samples=4,
                              num_weight_samples=2, seed=5)
    want = explainer.explain(xs, [0, 2], seeds=[1, 2])
    np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-6)
    again = run("export", "--model", str(d / "m.keras"), "--out", str(tmp_path / "srv"),
                "--version", "3")
    assert_one_line_error(again, "exists")
    shape = run("export", "--model", str(d / "m.keras"), "--out", str(tmp_path / "s2"),
                "--input-shape", "12,x")
    assert_one_line_error(shape, "--input-shape")
