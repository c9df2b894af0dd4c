"""The ``tfmollify`` command end to end, including every error path.

The real entry point runs in subprocesses (``--help``, ``explain``, ``export``, ``demo``); the
error paths and the quick verbs run ``cli.main`` in this process (``run_here``), which is the same
code without the 5 s TensorFlow start-up of a new process: an uncaught exception (what would be a
traceback) fails the test there too."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfmollify.interface.cli", *args],
        capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
    )


def run_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``tfmollify ARGS`` through ``cli.main`` in this process: its exit code (argparse's
    ``SystemExit`` too), stdout and stderr, as :func:`run` gives them for a subprocess."""
    from tfmollify.interface import cli

    capsys.readouterr()  # drop what came before
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["tfmollify", *args], code, out, err)


def assert_one_line_error(res: subprocess.CompletedProcess, match: str) -> None:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    err = [line for line in res.stderr.strip().splitlines() if "error" in line]
    assert err and match in err[-1], res.stderr


@pytest.mark.slow
def test_help_on_every_subcommand(capsys):
    from tfmollify.interface import cli

    for sub in ("", "demo", "explain", "export", "epsilon", "kernels", "table1"):
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args([*([sub] if sub else []), "--help"])
        assert exit_.value.code == 0
        assert "usage: tfmollify" in capsys.readouterr().out
    res = run("--help")  # the real entry point too
    assert res.returncode == 0 and "export" in res.stdout


def test_kernels_table(capsys):
    res = run_here(capsys, "kernels")
    assert res.returncode == 0
    for name in ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect"):
        assert name in res.stdout
    assert "1 / (2 cosh^2 x)" in res.stdout


def test_epsilon(capsys):
    res = run_here(capsys, "epsilon", "--kernel", "hyperbolic", "--r", "1", "--alpha", "0.9")
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
def test_error_paths(capsys, args, match):
    assert_one_line_error(run_here(capsys, *args), match)


def test_argparse_errors_exit_nonzero(capsys):
    res = run_here(capsys, "epsilon")  # --r is required
    assert res.returncode == 2 and "required" in res.stderr and "Traceback" not in res.stderr
    res = run_here(capsys, "bogus")
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


@pytest.mark.slow
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
def test_explain_error_paths(saved_model, capsys, which, extra, match):
    d, _, _ = saved_model
    model = d / ("not_a_model.keras" if which == "bad_model" else "m.keras")
    inp = d / ("bad.npy" if which == "bad_input" else "x.npy")
    res = run_here(capsys, "explain", "--model", str(model), "--input", str(inp), *extra,
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


@pytest.mark.slow
def test_export_writes_a_servable_savedmodel(saved_model, tmp_path, capsys):
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
    again = run_here(capsys, "export", "--model", str(d / "m.keras"),
                     "--out", str(tmp_path / "srv"), "--version", "3")
    assert_one_line_error(again, "exists")
    shape = run_here(capsys, "export", "--model", str(d / "m.keras"),
                     "--out", str(tmp_path / "s2"), "--input-shape", "12,x")
    assert_one_line_error(shape, "--input-shape")


# -- explain on real images: --input-range, --preprocess, batches ---------------------------------
def explain_in_process(capsys, *args: str) -> str:
    """``tfmollify explain ARGS`` in this process (no TensorFlow start-up); returns stdout."""
    from tfmollify.interface import cli

    code = cli.main(["explain", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A 10x10 RGB classifier (ReLU conv with biases: its gradient depends on the input's
    range) and a PNG with the full 0-255 range written by Pillow, at the model's size."""
    import keras
    from PIL import Image

    d = tmp_path_factory.mktemp("rgb")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((10, 10, 3)),
        keras.layers.Conv2D(6, 3, activation="relu", bias_initializer="random_normal"),
        keras.layers.Flatten(), keras.layers.Dense(4),
    ])
    model.save(d / "rgb.keras")
    pixels = np.random.default_rng(2).integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255
    Image.fromarray(pixels).save(d / "img.png")
    return d, model, pixels


def test_input_range_explains_a_real_range_png_as_python_does(rgb_model, capsys, tmp_path):
    import tfmollify as tfm

    d, model, pixels = rgb_model
    common = ("--model", str(d / "rgb.keras"), "--input", str(d / "img.png"), "--samples", "8",
              "--target", "1")
    out = explain_in_process(capsys, *common, "--input-range", "-1", "1",
                             "--out", str(tmp_path / "r.png"))
    assert "pixels in the file range [0, 255]" in out and "not resized" in out
    assert "not greyscaled" in out and "scaled [0, 255] -> [-1, 1] (--input-range)" in out
    assert "values in [-1, 1]" in out and "seed 0" in out
    x = (pixels.astype(np.float32) / 127.5 - 1.0)[None]  # what the model expects
    want = tfm.Explainer(model, mode="sg", num_samples=8, seed=0).explain(x, [1])
    got = np.load(tmp_path / "r.npy")
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-6)
    # the default (x / 255) is another input, and says so: the flag is what made them equal
    out = explain_in_process(capsys, *common, "--out", str(tmp_path / "default.png"))
    assert "scaled [0, 255] -> [0, 1] (the default" in out
    assert np.abs(np.load(tmp_path / "default.npy") - want[0]).max() > 1e-3


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_preprocess_equals_keras_preprocess_input(rgb_model, capsys, tmp_path, name):
    import keras

    import tfmollify as tfm

    d, model, pixels = rgb_model
    out = explain_in_process(
        capsys, "--model", str(d / "rgb.keras"), "--input", str(d / "img.png"),
        "--preprocess", name, "--samples", "6", "--target", "2", "--out", str(tmp_path / "p.png"),
    )
    assert f"keras.applications.{name}.preprocess_input" in out
    module = getattr(keras.applications, name)
    x = np.asarray(module.preprocess_input(pixels.astype(np.float32)[None]))
    want = tfm.Explainer(model, mode="sg", num_samples=6, seed=0).explain(x, [2])
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want[0], rtol=1e-4, atol=1e-6)


def test_batched_npy_gives_one_map_per_example_with_its_target(saved_model, capsys, tmp_path):
    import tfmollify as tfm

    d, model, _ = saved_model
    xs = np.random.default_rng(5).uniform(-3, 3, size=(4, 12, 12, 1)).astype(np.float32)
    np.save(tmp_path / "batch.npy", xs)
    predicted = np.argmax(model(xs).numpy(), axis=1)
    assert len(set(predicted.tolist())) > 1  # per-example targets are told apart
    common = ("--model", str(d / "m.keras"), "--input", str(tmp_path / "batch.npy"),
              "--samples", "6")
    out = explain_in_process(capsys, *common, "--out", str(tmp_path / "b.png"))
    assert "values used as they are" in out and "explaining 4 examples" in out
    explainer = tfm.Explainer(model, mode="sg", num_samples=6, seed=0)
    want = explainer.explain(xs, predicted)
    for i in range(4):
        stem = tmp_path / f"b_{i}"
        assert (f"example {i}: target {predicted[i]} (predicted); wrote {stem}.npy and "
                f"{stem}.png") in out
        np.testing.assert_allclose(np.load(f"{stem}.npy"), want[i], rtol=1e-4, atol=1e-6)
        assert (tmp_path / f"b_{i}.png").stat().st_size > 1000
    assert not (tmp_path / "b.npy").exists()
    out = explain_in_process(capsys, *common, "--target", "2", "--out", str(tmp_path / "t.png"))
    want = explainer.explain(xs, [2] * 4)
    for i in range(4):
        assert f"example {i}: target 2 (--target)" in out
        np.testing.assert_allclose(np.load(tmp_path / f"t_{i}.npy"), want[i], rtol=1e-4,
                                   atol=1e-6)


@pytest.mark.parametrize(
    "extra, match",
    [
        (("--input-range", "1", "-1"), "--input-range 1 -1: LOW must be below HIGH"),
        (("--input-range", "0", "0"), "--input-range 0 0: LOW must be below HIGH"),
        (("--input-range", "0", "inf"), "--input-range 0 inf: LOW must be below HIGH"),
        (("--preprocess", "mobilenet_v9"), "--preprocess 'mobilenet_v9': not a known keras"),
    ],
)
def test_bad_scaling_flags(capsys, extra, match):
    from tfmollify.interface import cli

    # checked before the model or the input is read (neither exists here)
    assert cli.main(["explain", "--model", "m.keras", "--input", "x.png", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tfmollify explain: error: "), err
    assert match in err
    if "--preprocess" in extra:
        for name in ("mobilenet_v2", "resnet50", "vgg16", "efficientnet"):
            assert name in err  # the choices are listed


def test_input_range_and_preprocess_are_exclusive(capsys):
    from tfmollify.interface import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["explain", "--model", "m.keras", "--input", "x.png", "--input-range", "-1",
                  "1", "--preprocess", "resnet50"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --preprocess: not allowed with argument --input-range" in err


def test_explain_help_states_the_defaults(capsys):
    from tfmollify.interface import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "noise seed (default: 0, so that a run can be repeated exactly" in text
    assert "(default for images: 0 1, i.e. x / 255; .npy: no scaling)" in text
    for name in cli.PREPROCESS:
        assert f"{name} (" in text


# -- checked before any work: --out, a .npy's shape, --trust-model -------------------------------
def _unwritable_dir(tmp_path) -> tuple:
    """A directory this user cannot write in, and the part of the error that names why; as root
    (who writes anywhere) a regular file stands in for it, which fails for root too."""
    if os.geteuid() == 0:
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        return blocker, "is not a directory"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked, "is not writable"


@pytest.mark.parametrize("command", ["explain", "export"])
@pytest.mark.parametrize("where", ["under_a_file", "not_writable"])
def test_out_is_checked_before_the_model_is_read(capsys, tmp_path, command, where):
    if where == "under_a_file":
        blocker, why = tmp_path / "a_file", "exists and is not a directory"
        blocker.write_text("x")
    else:
        blocker, why = _unwritable_dir(tmp_path)
    out = str(blocker / "sub" / ("heat.png" if command == "explain" else "srv"))
    args = [command, "--model", str(tmp_path / "missing.keras"), "--out", out]
    if command == "explain":
        args += ["--input", str(tmp_path / "missing.npy")]
    try:
        res = run_here(capsys, *args)  # the model does not exist: the --out error comes first
    finally:
        blocker.chmod(0o755)
    assert_one_line_error(res, f"--out {out!r}")
    assert why in res.stderr and "give --out a path in a directory" in res.stderr
    assert "missing.keras" not in res.stderr


def test_out_that_is_a_file_or_names_a_directory_is_refused(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    res = run_here(capsys, "export", "--model", "missing.keras", "--out", str(tmp_path / "f"))
    assert_one_line_error(res, "exists and is not a directory")
    res = run_here(capsys, "explain", "--model", "missing.keras", "--input", "x.npy",
                   "--out", str(tmp_path) + os.sep)
    assert_one_line_error(res, "names a directory, not a file; give the PNG path")


def test_remote_out_is_left_to_the_writer(capsys):
    res = run_here(capsys, "export", "--model", "missing.keras", "--out", "gs://bucket/srv")
    assert_one_line_error(res, "--model 'missing.keras': no such file")


@pytest.mark.parametrize("shape", [(10, 10, 1), (7,), (2, 12, 12, 3), (12, 12)])
def test_npy_of_the_wrong_shape_is_refused_not_resized(saved_model, capsys, tmp_path, shape):
    d, _, _ = saved_model
    np.save(tmp_path / "w.npy", np.zeros(shape, np.float32))
    res = run_here(capsys, "explain", "--model", str(d / "m.keras"),
                   "--input", str(tmp_path / "w.npy"), "--out", str(tmp_path / "o.png"))
    assert_one_line_error(res, f"--input {str(tmp_path / 'w.npy')!r}: a .npy array of shape "
                          f"[{', '.join(map(str, shape))}] does not fit the model's input "
                          "[None, 12, 12, 1]")
    assert "one example of shape [12, 12, 1] or a batch of shape [B, 12, 12, 1]" in res.stderr
    assert not (tmp_path / "o.npy").exists()


def test_npy_that_fits_is_used_as_it_is(saved_model, capsys, tmp_path):
    d, _, x = saved_model
    out = tmp_path / "new" / "dir" / "h.png"  # created: its nearest parent is writable
    text = explain_in_process(capsys, "--model", str(d / "m.keras"), "--input", str(d / "x.npy"),
                              "--samples", "2", "--out", str(out))
    assert "not resized: a .npy is used as it is" in text and "values used as they are" in text
    assert np.load(tmp_path / "new" / "dir" / "h.npy").shape == x.shape


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """A tiny .keras model with a ``Lambda`` layer (Python code: Keras' safe mode refuses it)
    and a fitting .npy example."""
    import keras

    d = tmp_path_factory.mktemp("lambda")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((5, 5, 1)), keras.layers.Lambda(lambda t: t * 2.0),
        keras.layers.Flatten(), keras.layers.Dense(3),
    ])
    model.save(d / "lam.keras")
    np.save(d / "x.npy", np.random.default_rng(0).uniform(size=(5, 5, 1)).astype(np.float32))
    return d


@pytest.mark.parametrize("command", ["explain", "export"])
def test_lambda_model_needs_trust_model(lambda_model, capsys, tmp_path, command):
    d = lambda_model
    args = [command, "--model", str(d / "lam.keras"), "--out", str(tmp_path / "o")]
    if command == "explain":
        args += ["--input", str(d / "x.npy")]
    res = run_here(capsys, *args)
    assert_one_line_error(res, f"--model {str(d / 'lam.keras')!r}: the file holds a Lambda layer")
    assert "refused to deserialize" in res.stderr and "add --trust-model" in res.stderr


def test_trust_model_loads_a_lambda_model(lambda_model, capsys, tmp_path):
    d = lambda_model
    explain_in_process(capsys, "--model", str(d / "lam.keras"), "--trust-model",
                       "--input", str(d / "x.npy"), "--samples", "2",
                       "--out", str(tmp_path / "t.png"))
    assert np.load(tmp_path / "t.npy").shape == (5, 5, 1)


def test_help_says_what_is_done_to_each_input(capsys):
    from tfmollify.interface import cli

    for command in ("explain", "export"):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--trust-model" in text and "safe_mode=False" in text
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "resized to the model's input size, made grey or RGB" in text
    assert "a .npy array used as it is (not resized or scaled; its shape must fit" in text
