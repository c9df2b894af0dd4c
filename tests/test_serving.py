"""Exported explainers: equal to the in-process explainer, loaded the way TensorFlow Serving does.

The SavedModel is loaded with ``tf.saved_model.load`` in this process and in a fresh one, with
the TF1 Session loader of TensorFlow Serving in a fresh process, and with ``saved_model_cli``;
requests are built as REST bodies (both formats) and as gRPC ``PredictRequest`` protos answered
by a servicer on 127.0.0.1. A real ``tensorflow_model_server`` cannot be installed on the CI
machines; its test runs when the binary is on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

import tfmollify as tfm

HERE = Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
RTOL, ATOL = 1e-5, 1e-6  # float32 rounding: the same ops, traced separately

# every mode, kernel, aggregation and base attribution at least once; blocks and eq. 30 too
CONFIGS = {
    "sg_gaussian": dict(mode="sg", kernel="gaussian", num_samples=6),
    "ng_hyperbolic_vargrad_ixg": dict(
        mode="ng", kernel="hyperbolic", num_weight_samples=4, aggregation="vargrad",
        attribution="input_x_gradient",
    ),
    "fg_sigmoid_sq_ig_blocks": dict(
        mode="fg", kernel="sigmoid", num_samples=3, num_weight_samples=2,
        aggregation="smoothgrad_sq", attribution="integrated_gradients", ig_steps=3,
        batch_size=9, perturb_bias=False,
    ),
    "sg_poisson_eps_proposal_blocks": dict(
        mode="sg", kernel="poisson", num_samples=5, epsilon=0.1, proposal="gaussian",
        batch_size=4,
    ),
    "sg_rect_vargrad": dict(mode="sg", kernel="rect", num_samples=5, aggregation="vargrad"),
}


def conv_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(3),
    ])


def request(batch: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.uniform(size=(batch, 6, 6, 1)).astype(np.float32),
        "targets": (np.arange(batch) % 3).astype(np.int32),
        "seeds": rng.integers(-(2**62), 2**62, size=batch).astype(np.int64),
    }


def expected(explainer: tfm.Explainer, req: dict[str, np.ndarray]):
    return explainer.explain(
        req["inputs"], req["targets"], seeds=req["seeds"], return_stderr=True
    )


def assert_served_equal(out: dict, explainer: tfm.Explainer, req: dict) -> None:
    value, stderr = expected(explainer, req)
    np.testing.assert_allclose(np.asarray(out["attributions"]), value, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(np.asarray(out["stderr"]), stderr, rtol=RTOL, atol=ATOL)
    total = explainer.spec.samples_per_example
    np.testing.assert_array_equal(np.asarray(out["finite_samples"]), total)


def call(fn, req: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in req.items()}).items()}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One export per config, with the explainer it came from and the weights before export."""
    base = tmp_path_factory.mktemp("exports")
    model = conv_model()
    before = [w.copy() for w in model.get_weights()]
    out = {}
    for name, kw in CONFIGS.items():
        explainer = tfm.Explainer(model, seed=7, **kw)
        path = explainer.export(str(base / name))
        out[name] = (explainer, path)
    return model, before, out


@pytest.fixture(scope="module")
def loaded(exports):
    _, _, out = exports
    return {name: tf.saved_model.load(path).signatures["serving_default"]
            for name, (_, path) in out.items()}


# -- layout and equality ---------------------------------------------------------------------
def test_layout_signature_and_weights_untouched(exports):
    model, before, out = exports
    for name, (_, path) in out.items():
        assert Path(path) == Path(path).parent / "1" and (Path(path) / "saved_model.pb").exists()
        assert Path(path).parent.name == name
    fn = tf.saved_model.load(out["sg_gaussian"][1]).signatures["serving_default"]
    args = fn.structured_input_signature[1]
    assert {k: (v.dtype, v.shape.as_list()) for k, v in args.items()} == {
        "inputs": (tf.float32, [None, 6, 6, 1]),
        "targets": (tf.int32, [None]),
        "seeds": (tf.int64, [None]),
    }
    assert set(fn.structured_outputs) == {"attributions", "stderr", "finite_samples"}
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_served_equals_explain(exports, loaded, name):
    explainer, _ = exports[2][name]
    req = request(5, seed=1)
    assert_served_equal(call(loaded[name], req), explainer, req)


@pytest.mark.parametrize("name", ["sg_gaussian", "fg_sigmoid_sq_ig_blocks"])
def test_one_example_alone_equals_it_inside_a_batch(loaded, name):
    req = request(4, seed=2)
    batch = call(loaded[name], req)
    for b in (0, 3):
        one = call(loaded[name], {k: v[b : b + 1] for k, v in req.items()})
        np.testing.assert_allclose(one["attributions"][0], batch["attributions"][b],
                                   rtol=RTOL, atol=ATOL)


def test_empty_batch_returns_empty_result(loaded):
    for name in ("sg_gaussian", "fg_sigmoid_sq_ig_blocks", "ng_hyperbolic_vargrad_ixg"):
        out = call(loaded[name], request(0))
        assert out["attributions"].shape == (0, 6, 6, 1)
        assert out["stderr"].shape == (0, 6, 6, 1) and out["finite_samples"].shape == (0,)


def test_concurrent_requests_equal_serial(loaded):
    fn = loaded["ng_hyperbolic_vargrad_ixg"]
    reqs = [request(3, seed=s) for s in range(8)]
    serial = [call(fn, r)["attributions"] for r in reqs]
    with futures.ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            got = list(pool.map(lambda r: call(fn, r)["attributions"], reqs))
            for g, s in zip(got, serial, strict=True):
                np.testing.assert_array_equal(g, s)


def test_bad_requests_are_invalid_argument(loaded):
    fn = loaded["sg_gaussian"]
    req = request(2)
    bad_target = {**req, "targets": np.array([0, 3], np.int32)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="targets"):
        call(fn, bad_target)
    with pytest.raises(tf.errors.InvalidArgumentError, match="seeds"):
        call(fn, {**req, "seeds": req["seeds"][:1]})
    nan = req["inputs"].copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        call(fn, {**req, "inputs": nan})
    constant = np.full_like(req["inputs"], 0.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="they are constant"):
        call(fn, {**req, "inputs": constant})


# -- fresh processes: tf.saved_model.load and the Session loader of TF Serving ---------------
@pytest.mark.slow
@pytest.mark.parametrize("how", ["eager", "session"])
def test_fresh_process_loaders_equal_in_process(exports, tmp_path, how):
    _, _, out = exports
    names = list(out)
    req = request(3, seed=4)
    np.savez(tmp_path / "req.npz", **req)
    res = subprocess.run(
        [sys.executable, str(HERE / "serving_loader.py"), how, str(tmp_path / "req.npz"),
         str(tmp_path / "out.npz"), *[out[n][1] for n in names]],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for i, name in enumerate(names):
        served = {k: got[f"{i}/{k}"] for k in ("attributions", "stderr", "finite_samples")}
        assert_served_equal(served, out[name][0], req)


@pytest.mark.slow
def test_saved_model_cli_show_scan_and_run(exports, tmp_path):
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed next to this Python")
    explainer, path = exports[2]["fg_sigmoid_sq_ig_blocks"]
    show = subprocess.run([str(cli), "show", "--dir", path, "--all"],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "signature_def['serving_default']" in show.stdout
    assert "Method name is: tensorflow/serving/predict" in show.stdout
    for name in ("inputs", "targets", "seeds", "attributions", "stderr", "finite_samples"):
        assert f"['{name}']" in show.stdout
    scan = subprocess.run([str(cli), "scan", "--dir", path],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert scan.returncode == 0, scan.stderr[-2000:]
    assert "does not contain the default denylisted ops" in scan.stdout, scan.stdout
    req = request(2, seed=5)
    for k, v in req.items():
        np.save(tmp_path / f"{k}.npy", v)
    spec = ";".join(f"{k}={tmp_path / k}.npy" for k in req)
    run = subprocess.run(
        [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def",
         "serving_default", "--inputs", spec, "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    served = {k: np.load(tmp_path / "out" / f"{k}.npy")
              for k in ("attributions", "stderr", "finite_samples")}
    assert_served_equal(served, explainer, req)


# -- request formats -------------------------------------------------------------------------
def decode_rest(body: dict, signature) -> dict[str, np.ndarray]:
    """TF Serving's JSON rules: row format stacks the named inputs of each instance along a new
    batch dimension; columnar format gives each input already batched."""
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        cols = {k: np.stack([np.asarray(i[k]) for i in body["instances"]]) for k in specs}
    else:
        cols = {k: np.asarray(v) for k, v in body["inputs"].items()}
    return {k: cols[k].astype(specs[k].dtype.as_numpy_dtype) for k in specs}


@pytest.fixture(scope="module")
def flat_export(tmp_path_factory):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                              keras.layers.Dense(3)])
    explainer = tfm.Explainer(model, mode="fg", num_samples=4, num_weight_samples=3, seed=1)
    base = tmp_path_factory.mktemp("flat")
    explainer.export(str(base))
    return explainer, str(base), str(base / "1")


def test_rest_bodies_in_both_formats(flat_export):
    explainer, _, path = flat_export
    fn = tf.saved_model.load(path).signatures["serving_default"]
    row = json.loads((HERE / "data" / "rest_row.json").read_text())
    col = json.loads((HERE / "data" / "rest_columnar.json").read_text())
    assert row["signature_name"] == col["signature_name"] == "serving_default"
    req_row, req_col = decode_rest(row, fn), decode_rest(col, fn)
    for k in req_row:
        np.testing.assert_array_equal(req_row[k], req_col[k])
    assert_served_equal(call(fn, req_row), explainer, req_row)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_predict_request(flat_export):
    """A ``PredictRequest`` as a client sends it, answered by a servicer backed by the export."""
    import grpc

    apis = require(
        "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "pip install --no-deps tensorflow-serving-api",
    )
    from tensorflow_serving.apis import predict_pb2

    explainer, _, path = flat_export
    fn = tf.saved_model.load(path).signatures["serving_default"]

    class Servicer(apis.PredictionServiceServicer):
        def Predict(self, req, context):  # the gRPC method name
            if req.model_spec.signature_name not in ("", "serving_default"):
                context.abort(grpc.StatusCode.NOT_FOUND, "no such signature")
            got = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in req.inputs.items()})
            resp = predict_pb2.PredictResponse()
            resp.model_spec.CopyFrom(req.model_spec)
            for k, v in got.items():
                resp.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
            return resp

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    apis.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        col = json.loads((HERE / "data" / "rest_columnar.json").read_text())["inputs"]
        req = {"inputs": np.asarray(col["inputs"], np.float32),
               "targets": np.asarray(col["targets"], np.int32),
               "seeds": np.asarray(col["seeds"], np.int64)}
        msg = predict_pb2.PredictRequest()
        msg.model_spec.name = "explainer"
        msg.model_spec.signature_name = "serving_default"
        for k, v in req.items():
            msg.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = apis.PredictionServiceStub(channel).Predict(msg, timeout=60)
        out = {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}
        assert out["finite_samples"].dtype == np.int32
        assert_served_equal(out, explainer, req)
    finally:
        server.stop(None)


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (it cannot be installed here)")
def test_real_tensorflow_model_server_rest(flat_export):
    explainer, base, _ = flat_export
    rest = free_port()
    proc = subprocess.Popen(
        ["tensorflow_model_server", f"--port={free_port()}", f"--rest_api_port={rest}",
         "--model_name=explainer", f"--model_base_path={base}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{rest}/v1/models/explainer"
        for _ in range(120):
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if b"AVAILABLE" in r.read():
                        break
            except OSError:
                time.sleep(0.5)
        for fmt, key in (("rest_row.json", "predictions"), ("rest_columnar.json", "outputs")):
            body = (HERE / "data" / fmt).read_bytes()
            post = urllib.request.Request(url + ":predict", data=body, method="POST")
            with urllib.request.urlopen(post, timeout=60) as r:
                answer = json.loads(r.read())[key]
            if key == "predictions":
                answer = {k: [p[k] for p in answer] for k in answer[0]}
            req = decode_rest(json.loads(body), tf.saved_model.load(base + "/1")
                              .signatures["serving_default"])
            assert_served_equal({k: np.asarray(v) for k, v in answer.items()}, explainer, req)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- what cannot be exported, and the file system --------------------------------------------
def test_export_errors(tmp_path):
    model = conv_model()
    with pytest.raises(ValueError, match="seed=None"):
        tfm.Explainer(model, mode="ng").export(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="one `epsilon` per example"):
        tfm.Explainer(model, epsilon=[0.1, 0.2]).export(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="`version`"):
        tfm.Explainer(model).export(str(tmp_path / "a"), version=-1)
    with pytest.raises(TypeError, match="Keras"):
        tfm.Explainer(lambda x: model(x)).export(str(tmp_path / "a"), input_shape=(6, 6, 1))
    with pytest.raises(TypeError, match=r"tfmollify\.Explainer"):
        tfm.export(model, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="rejected"):
        tfm.Explainer(model).export(str(tmp_path / "a"), input_shape=(5, 5, 2))
    with pytest.raises(ValueError, match="input_shape"):
        tfm.Explainer(model).export(str(tmp_path / "a"), input_shape=(6, None, 1))
    explainer = tfm.Explainer(model, num_samples=2)
    first = explainer.export(str(tmp_path / "b"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        explainer.export(str(tmp_path / "b"))
    assert explainer.export(str(tmp_path / "b"), overwrite=True) == first
    assert explainer.export(str(tmp_path / "b"), version=2).endswith(os.path.join("b", "2"))
    assert sorted(os.listdir(tmp_path / "b")) == ["1", "2"]  # no temporary directory left


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):  # no `training` argument
        return self.dense(tf.tanh(x))


def test_subclassed_model_needs_input_shape(tmp_path):
    model = Subclassed()
    x = np.random.default_rng(0).uniform(size=(3, 4)).astype(np.float32)
    model(x)
    explainer = tfm.Explainer(model, mode="fg", num_samples=3, num_weight_samples=2, seed=2)
    with pytest.raises(ValueError, match="input_shape"):
        explainer.export(str(tmp_path))
    path = explainer.export(str(tmp_path), input_shape=(4,))
    fn = tf.saved_model.load(path).signatures["serving_default"]
    req = {"inputs": x, "targets": np.array([0, 1, 2], np.int32),
           "seeds": np.array([5, 6, 7], np.int64)}
    assert_served_equal(call(fn, req), explainer, req)



def test_overwrite_swaps_the_version_in_atomically(tmp_path, monkeypatch):
    """Defect 6 of the redesign: the live version directory was deleted before the new one was
    renamed in. Now it is never missing, and a failed write leaves the old version intact."""
    from tfmollify.explainers import export as serving

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    old = tfm.export(tfm.SmoothGrad(model, num_samples=2, seed=0), tmp_path)
    marker = os.path.join(old, "old-marker")
    open(marker, "w").close()
    removed = []
    real_rmtree = serving.shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        removed.append((str(path), os.path.isdir(old)))  # the version, after each removal

    monkeypatch.setattr(serving.shutil, "rmtree", watching_rmtree)
    new = tfm.export(tfm.SmoothGrad(model, num_samples=4, seed=0), tmp_path, overwrite=True)
    assert new == old and not os.path.exists(marker)  # replaced ...
    assert all(present for _, present in removed)  # ... and never missing meanwhile
    open(marker, "w").close()

    def failing_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        tfm.export(tfm.SmoothGrad(model, num_samples=8, seed=0), tmp_path, overwrite=True)
    assert os.path.exists(marker)  # the old version is still there
    assert sorted(os.listdir(tmp_path)) == ["1"]  # and no temporary directory is left


def test_export_to_a_file_is_a_clear_error(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"Argument `path` must be a directory.*a_file"):
        tfm.export(e, tmp_path / "a_file")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "1").write_text("")
    with pytest.raises(ValueError, match=r"`path/<version>` must be a directory"):
        tfm.export(e, tmp_path / "base", overwrite=True)
