"""The TF Serving files of an export: warmup requests, batching parameters and models.config.

The warmup records are parsed with the ``tensorflow-serving-api`` protos (byte for byte equal to
their deterministic serialization) and every one is run through the TF1 Session loader of
TensorFlow Serving (as ``tests/serving_loader.py`` does), its answer equal to the in-process
explainer.
The two text protos are parsed with ``text_format``: ``models.config`` with
``model_server_config_pb2``; ``batching_parameters.txt`` with TF Serving's ``BatchingParameters``
(``session_bundle_config.proto``), which the pip package does not ship, so its schema is built
here from that file's field numbers.
"""

from __future__ import annotations

import os
import shlex
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

import tfmollify as tfm
from tfmollify.explainers import export as serving
from tfmollify.interface import cli

RTOL, ATOL = 1e-5, 1e-6
PROTOS = "pip install --no-deps tensorflow-serving-api"


def conv_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(3),
    ])


def two_input_model() -> keras.Model:
    """Token ids (int32, no noise) and numbers: one signature input per model input."""
    keras.utils.set_random_seed(4)
    ids = keras.Input((5,), dtype="int32", name="ids")
    num = keras.Input((3,), name="num")
    emb = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    h = keras.layers.Concatenate()([emb, keras.layers.Dense(4, activation="tanh")(num)])
    return keras.Model({"ids": ids, "num": num}, keras.layers.Dense(2)(h))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """(explainer, base, version dir) per case: FG with a batch_size (5 examples per pass),
    SG with eq. 30 and no batch_size (the default 32), and a model with two inputs."""
    base = tmp_path_factory.mktemp("extras")
    model = conv_model()
    fg = tfm.Explainer(model, mode="fg", num_samples=3, num_weight_samples=2, batch_size=15,
                       seed=7)
    sg = tfm.SmoothGrad(model, num_samples=4, seed=1)
    two = tfm.SmoothGrad(two_input_model(), num_samples=3, epsilon=0.1, seed=2)
    return {
        "fg": (fg, str(base / "fg"), fg.export(str(base / "fg"), version=3)),
        "sg": (sg, str(base / "sg"), sg.export(str(base / "sg"), model_name="sg-explainer")),
        "two": (two, str(base / "two"), two.export(str(base / "two"), max_batch_size=3)),
    }


def records(version_dir: str) -> list[bytes]:
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    return [r.numpy() for r in tf.data.TFRecordDataset(path)]


def request_of(record: bytes) -> tuple[str, str, dict[str, np.ndarray]]:
    log_pb2 = require("tensorflow_serving.apis.prediction_log_pb2", PROTOS)
    log = log_pb2.PredictionLog.FromString(record)
    assert log.WhichOneof("log_type") == "predict_log"
    req = log.predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in req.inputs.items()}
    return req.model_spec.name, req.model_spec.signature_name, inputs


# -- warmup requests -------------------------------------------------------------------------
def session_run(path: str, requests: list[dict[str, np.ndarray]]):
    """Loads ``path`` once with the TF1 Session loader of TF Serving (as
    ``serving_loader.session``) and runs every request: (signature, answers)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        fetch = {k: t.name for k, t in sig.outputs.items()}
        answers = [
            sess.run(fetch, feed_dict={sig.inputs[k].name: v for k, v in req.items()})
            for req in requests
        ]
    return sig, answers


@pytest.mark.slow  # over 10 s (fits/exports and traces)
@pytest.mark.parametrize(("case", "name", "sizes"), [
    ("fg", "explainer", [1, 2, 4, 5]),
    ("sg", "sg-explainer", [1, 2, 4, 8, 16, 32]),
    ("two", "explainer", [1, 2, 3]),
])
def test_every_warmup_record_runs_through_the_session_loader(exports, case, name, sizes):
    """Each record is a ``PredictionLog`` of the signature (byte for byte what the protos
    write) that the Session loader answers, as TF Serving does at load time (it refuses the
    version if a record fails), equal to the in-process explainer."""
    predict_pb2 = require("tensorflow_serving.apis.predict_pb2", PROTOS)
    log_pb2 = require("tensorflow_serving.apis.prediction_log_pb2", PROTOS)
    explainer, _, path = exports[case]
    got = records(path)
    assert len(got) == len(sizes)
    requests = []
    for record in got:
        model_name, signature_name, inputs = request_of(record)
        assert (model_name, signature_name) == (name, "serving_default")
        requests.append(inputs)
        msg = log_pb2.PredictionLog()
        msg.predict_log.request.CopyFrom(predict_pb2.PredictRequest())
        req = msg.predict_log.request
        req.model_spec.name, req.model_spec.signature_name = name, "serving_default"
        for k, v in inputs.items():
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
        assert record == msg.SerializeToString(deterministic=True)
    sig, answers = session_run(path, requests)
    for req, b in zip(requests, sizes, strict=True):
        assert set(req) == set(sig.inputs)
        for k, info in sig.inputs.items():
            assert tf.as_dtype(req[k].dtype).as_datatype_enum == info.dtype, k
            dims = [d.size for d in info.tensor_shape.dim]
            assert req[k].shape == (b, *dims[1:]), k
    # one explain call for all records: an example's answer depends only on it and its seed
    joined = {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}
    out = {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}
    targets, seeds = joined.pop("targets"), joined.pop("seeds")
    if case == "two":
        value, err = explainer.explain(joined, targets, seeds=seeds, return_stderr=True)
        np.testing.assert_allclose(out["attributions_num"], value["num"], RTOL, ATOL)
        np.testing.assert_array_equal(out["attributions_ids"], 0)
        np.testing.assert_allclose(out["stderr_num"], err["num"], RTOL, ATOL)
    else:
        value, err = explainer.explain(joined["inputs"], targets, seeds=seeds,
                                       return_stderr=True)
        np.testing.assert_allclose(out["attributions"], value, RTOL, ATOL)
        np.testing.assert_allclose(out["stderr"], err, RTOL, ATOL)
    np.testing.assert_array_equal(out["finite_samples"], explainer.spec.samples_per_example)


def test_the_warmup_needs_no_tensorflow_serving_api(tmp_path, monkeypatch):
    """Written from the wire format: the export works where the protos are not installed."""
    for name in [m for m in sys.modules if m.startswith("tensorflow_serving")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)  # `import` raises
    with pytest.raises(ImportError):
        import tensorflow_serving.apis  # noqa: F401
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tfm.export(tfm.SmoothGrad(model, num_samples=2, seed=0), tmp_path, max_batch_size=2)
    assert len(records(path)) == 2


def test_warmup_batch_sizes():
    assert serving.warmup_batch_sizes(1) == [1]
    assert serving.warmup_batch_sizes(32) == [1, 2, 4, 8, 16, 32]
    assert serving.warmup_batch_sizes(33) == [1, 2, 4, 8, 16, 32, 33]


# -- batching parameters and models.config ---------------------------------------------------
def batching_parameters_class():
    """TF Serving's ``BatchingParameters``: from the package if it has it, else built from
    ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto``'s field numbers."""
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(
        name="session_bundle_config_test.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    m = f.message_type.add(name="BatchingParameters")
    types = descriptor_pb2.FieldDescriptorProto
    for number, name, wrapper in [
        (1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
        (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
        (5, "thread_pool_name", "StringValue"),
    ]:
        m.field.add(name=name, number=number, type=types.TYPE_MESSAGE,
                    label=types.LABEL_OPTIONAL, type_name=f".google.protobuf.{wrapper}")
    m.field.add(name="allowed_batch_sizes", number=6, type=types.TYPE_INT64,
                label=types.LABEL_REPEATED)
    m.field.add(name="pad_variable_length_inputs", number=7, type=types.TYPE_BOOL,
                label=types.LABEL_OPTIONAL)
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def parse_batching(version_dir: str):
    from google.protobuf import text_format

    path = os.path.join(version_dir, "assets.extra", "batching_parameters.txt")
    with open(path) as f:
        return text_format.Parse(f.read(), batching_parameters_class()())


@pytest.mark.parametrize(("case", "max_batch"), [("fg", 5), ("sg", 32), ("two", 3)])
def test_batching_parameters_parse_and_match_the_explainer(exports, case, max_batch):
    explainer, _, path = exports[case]
    params = parse_batching(path)
    assert params.max_batch_size.value == max_batch
    assert params.num_batch_threads.value >= 1 and params.max_enqueued_batches.value >= 1
    assert params.batch_timeout_micros.value >= 0
    assert max(serving.warmup_batch_sizes(max_batch)) == max_batch
    if case == "fg":  # one server batch is one pass of the explainer: within batch_size
        plan = explainer.runner.plan(max_batch)
        assert plan.block == max_batch and plan.rows_per_pass <= explainer.batch_size
        assert explainer.runner.plan(max_batch + 1).block == max_batch


@pytest.mark.parametrize(("case", "name", "version"), [
    ("fg", "explainer", 3), ("sg", "sg-explainer", 1), ("two", "explainer", 1),
])
def test_models_config_parses_with_the_version_policy(exports, case, name, version):
    from google.protobuf import text_format

    config_pb2 = require("tensorflow_serving.config.model_server_config_pb2", PROTOS)
    _, base, path = exports[case]
    with open(os.path.join(path, "assets.extra", "models.config")) as f:
        config = text_format.Parse(f.read(), config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == name and model.model_platform == "tensorflow"
    assert model.base_path == os.path.abspath(base)
    assert os.path.isdir(os.path.join(model.base_path, str(version)))
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert list(model.model_version_policy.specific.versions) == [version]


def test_a_path_with_quotes_is_escaped_and_warmup_off(tmp_path):
    from google.protobuf import text_format

    config_pb2 = require("tensorflow_serving.config.model_server_config_pb2", PROTOS)
    base = tmp_path / 'od"d \\ dir'
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tfm.export(tfm.SmoothGrad(model, num_samples=2, seed=0), base, warmup=False)
    assert sorted(os.listdir(os.path.join(path, "assets.extra"))) == [
        "batching_parameters.txt", "models.config", "tfmollify_request_rules.json"
    ]
    with open(os.path.join(path, "assets.extra", "models.config")) as f:
        config = text_format.Parse(f.read(), config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].base_path == str(base)


def test_overwrite_swaps_the_files_in_with_their_version(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    path = tfm.export(e, tmp_path, max_batch_size=4)
    assert parse_batching(path).max_batch_size.value == 4 and len(records(path)) == 3
    assert tfm.export(e, tmp_path, max_batch_size=2, overwrite=True) == path
    assert parse_batching(path).max_batch_size.value == 2 and len(records(path)) == 2
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_bad_extras_arguments(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    for bad in ("", "a/b", "has space", 3):
        with pytest.raises(ValueError, match=r"`model_name`.*Received: model_name="):
            e.export(str(tmp_path), model_name=bad)
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match=r"`max_batch_size`.*Received: max_batch_size="):
            e.export(str(tmp_path), max_batch_size=bad)
    with pytest.raises(TypeError, match=r"`warmup`.*Received: warmup='yes'"):
        e.export(str(tmp_path), warmup="yes")
    assert not os.listdir(tmp_path)  # checked before anything is written


# -- the command line ------------------------------------------------------------------------
def test_cli_export_prints_the_server_command(tmp_path, capsys):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "m.keras")
    out = tmp_path / "srv"
    assert cli.main(["export", "--model", str(tmp_path / "m.keras"), "--out", str(out),
                     "--version", "2", "--samples", "4", "--batch-size", "8",
                     "--model-name", "mine"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (command,) = [line.strip() for line in lines if "tensorflow_model_server" in line]
    words = shlex.split(command)
    assert words[0] == "tensorflow_model_server"
    flags = dict(w[2:].split("=", 1) for w in words[1:])
    extra = out / "2" / "assets.extra"
    assert flags["model_config_file"] == str(extra / "models.config")
    assert flags["batching_parameters_file"] == str(extra / "batching_parameters.txt")
    assert flags["enable_batching"] == "true"
    assert (extra / "tf_serving_warmup_requests").is_file()
    assert "mine" in (extra / "models.config").read_text()
    assert parse_batching(str(out / "2")).max_batch_size.value == 2  # 8 rows / 4 per example
    assert command == serving.server_command(str(out / "2"))


def test_warmup_inputs_lie_in_input_range(tmp_path):
    """AdaptGrad's bounds are checked in the graph: warmup records outside them would make TF
    Serving refuse the version."""
    from tfmollify.adapter.spec import ARGUMENTS

    if "input_range" not in ARGUMENTS:
        pytest.skip("this explainer has no input_range")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    e = tfm.SmoothGrad(model, num_samples=2, seed=0, input_range=(2.0, 3.0))
    path = tfm.export(e, tmp_path, max_batch_size=2)
    requests = [request_of(r)[2] for r in records(path)]
    for req in requests:
        assert req["inputs"].min() >= 2.0 and req["inputs"].max() <= 3.0
    _, answers = session_run(path, requests)
    assert [a["finite_samples"].tolist() for a in answers] == [[2], [2, 2]]
