"""explain_dataset: dataset order, seeds, .npy streaming, errors, and tf.distribute.

Several replicas need TensorFlow to be configured before it initialises its devices, which the
test process has already done, so the MirroredStrategy (two logical CPUs) and
MultiWorkerMirroredStrategy (two local worker processes) runs happen in fresh subprocesses that
save their results for the tests to compare.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfmollify as tfm
from tfmollify.integrations import dataset as dataset_lib
from tfmollify.integrations.dataset import explain_dataset

ROOT = Path(__file__).resolve().parents[1]
TIGHT = {"rtol": 1e-5, "atol": 1e-6}  # float rounding of differently sized batches at most

# The model and data of the subprocess scripts too (they exec this source).
MODEL_SOURCE = """
import keras, numpy as np

def conv_model():
    # a small CNN that cannot run an empty batch: with oneDNN on CPU the gradient of Conv2D +
    # ReLU fails on it (ReluGrad gets [0,4,4,3] and [0,6,6,1]), as a replica whose shard of the
    # last batch is empty would
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(3, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(4),
    ])

def data(n, seed=0):
    rng = np.random.default_rng(seed + n)
    return rng.normal(size=(n, 6, 6, 1)).astype("float32"), (np.arange(n) % 4).astype("int32")

def explainer(model, mode, seed=0, **kw):
    import tfmollify as tfm
    return tfm.Explainer(model, mode=mode, num_samples=4, num_weight_samples=3, seed=seed, **kw)
"""
_helpers: dict = {}
exec(MODEL_SOURCE, _helpers)
conv_model, data, explainer = _helpers["conv_model"], _helpers["data"], _helpers["explainer"]


@pytest.fixture(scope="module")
def model():
    return conv_model()


def make(model, mode="sg", seed=0, **kw) -> tfm.Explainer:
    return explainer(model, mode, seed=seed, **kw)


def batched(n: int, batch: int = 4) -> tuple[np.ndarray, np.ndarray, tf.data.Dataset]:
    x, y = data(n)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


# -- one device ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_equals_one_explain_call(model, mode):
    """Seeds follow the global position: the batches give what one call on everything gives."""
    x, y, ds = batched(11)
    ex = make(model, mode)
    got, err = explain_dataset(ex, ds, return_stderr=True, progress=False)
    want, want_err = ex.explain(x, y, return_stderr=True)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got, want, **TIGHT)
    np.testing.assert_allclose(err, want_err, **TIGHT)
    assert ex.last_nonfinite_count.shape == (11,) and not ex.last_nonfinite_count.any()


def test_memory_bound_and_uneven_batches(model):
    """A batch_size bound (several calls per batch) and batches of any size give the same."""
    x, y = data(10)
    ex = make(model, "fg", batch_size=8)  # 2 input draws per pass: blocks of 1 example
    batches = [(x[:3], y[:3]), (x[3:4], y[3:4]), (x[4:4], y[4:4]), (x[4:], y[4:])]
    got = explain_dataset(ex, batches, progress=False)
    np.testing.assert_allclose(got, make(model, "fg").explain(x, y), **TIGHT)


def test_dataset_order_is_kept(model):
    """Rows come back in the order the data set yields them, seeded by that position."""
    x, y = data(9)
    order = [slice(6, 9), slice(0, 3), slice(3, 6)]
    batches = [(x[s], y[s]) for s in order]
    ex = make(model)
    got = explain_dataset(ex, iter(batches), progress=False)  # a plain iterator works too
    xs, ys = np.concatenate([x[s] for s in order]), np.concatenate([y[s] for s in order])
    np.testing.assert_allclose(got, ex.explain(xs, ys), **TIGHT)
    # same examples, other positions: other seeds, so other noise
    assert not np.allclose(got, ex.explain(x, y))


def test_targets_forms(model):
    """Targets as for explain: one int per batch, or a callable in a Python iterable."""
    x, _ = data(6)
    ex = make(model)
    got = explain_dataset(ex, [(x[:4], 2), (x[4:], 2)], progress=False)
    np.testing.assert_allclose(got, ex.explain(x, 2), **TIGHT)

    def pick(scores):
        return scores[:, 1] - scores[:, 0]

    got = explain_dataset(ex, [(x[:2], pick), (x[2:], pick)], progress=False)
    np.testing.assert_allclose(got, ex.explain(x, pick), **TIGHT)


def test_seed_none_draws_one_seed_per_run(model, monkeypatch):
    """seed=None: one random seed for the whole run, shared by all batches (one ensemble)."""
    x, y, ds = batched(9)
    unseeded = make(model, "fg", seed=None)
    first = explain_dataset(unseeded, ds, progress=False)
    second = explain_dataset(unseeded, ds, progress=False)
    assert not np.allclose(first, second)  # new noise per run
    monkeypatch.setattr(dataset_lib.secrets, "randbits", lambda bits: 1234)
    got = explain_dataset(unseeded, ds, progress=False)
    np.testing.assert_allclose(got, make(model, "fg", seed=1234).explain(x, y), **TIGHT)


def test_one_device_strategy_and_enclosing_scope(model):
    """The replica path with one replica, given explicitly or by an enclosing scope."""
    x, y, ds = batched(7)
    ex = make(model, "fg")
    want = ex.explain(x, y)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    np.testing.assert_allclose(
        explain_dataset(ex, ds, strategy=strategy, progress=False), want, **TIGHT
    )
    with strategy.scope():
        np.testing.assert_allclose(explain_dataset(ex, ds, progress=False), want, **TIGHT)


# -- .npy output --------------------------------------------------------------------------------
@pytest.mark.slow
def test_output_streams_to_npy(model, tmp_path):
    x, y, ds = batched(11)
    ex = make(model, "fg")
    want, want_err = explain_dataset(ex, ds, return_stderr=True, progress=False)
    path = tmp_path / "attr.npy"
    path.write_bytes(b"old")  # replaced
    got, err = explain_dataset(ex, ds, output=path, return_stderr=True, progress=False)
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(err, want_err)
    np.testing.assert_array_equal(np.load(path), want)
    np.testing.assert_array_equal(np.load(tmp_path / "attr_stderr.npy"), want_err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attr.npy", "attr_stderr.npy"]
    # a str path, float64 inputs
    x64 = x.astype(np.float64)
    ds64 = tf.data.Dataset.from_tensor_slices((x64, y)).batch(5)
    got = explain_dataset(ex, ds64, output=str(tmp_path / "a64.npy"), progress=False)
    assert got.dtype == np.float64 and got.shape == x.shape
    np.testing.assert_allclose(got, ex.explain(x64, y), rtol=1e-12, atol=1e-14)


def test_output_is_not_left_behind_on_error(model, tmp_path):
    x, y = data(8)

    def failing():
        yield x[:4], y[:4]
        raise RuntimeError("reader broke")

    path = tmp_path / "attr.npy"
    with pytest.raises(RuntimeError, match="reader broke"):
        explain_dataset(make(model), failing(), output=path, progress=False)
    with pytest.raises(ValueError, match=r"batch 1 has examples of .* dtype float64, but"):
        batches = [(x[:4], y[:4]), (x[4:].astype(np.float64), y[4:])]
        explain_dataset(make(model), batches, output=path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_npy_header_fits_any_length():
    for shape in [(0,), (3, 4), (2**62, 10**6, 10**6, 3)]:
        header = dataset_lib._npy_header(np.dtype("<f8"), shape)
        assert len(header) == dataset_lib._HEADER_BYTES
        stream = io.BytesIO(header)
        assert np.lib.format.read_magic(stream) == (1, 0)
        assert np.lib.format.read_array_header_1_0(stream) == (shape, False, np.dtype("<f8"))


# -- progress: tests/test_progress.py (explain_dataset's bar is tfmollify.explainers.progress.bar)
# -----------


# -- errors ---------------------------------------------------------------------------------------
def test_argument_errors(model, tmp_path):
    x, y, ds = batched(4)
    ex = make(model)
    cases = [
        (TypeError, "`explainer` must be a tfmollify.Explainer", dict(explainer=model)),
        (TypeError, "`strategy` must be a tf.distribute.Strategy", dict(strategy="mirrored")),
        (TypeError, "`output` must be None or a path", dict(output=3)),
        (ValueError, r"must be a path ending in \.npy.*attr\.csv", dict(output="attr.csv")),
        (ValueError, "folder .* does not exist", dict(output=str(tmp_path / "no" / "a.npy"))),
        (TypeError, "`dataset` must be a tf.data.Dataset or an iterable", dict(dataset=3)),
        (
            TypeError,
            r"\(inputs, targets\) pairs. Received: batch 0 is a ndarray",
            dict(dataset=[x]),
        ),
        (
            TypeError,
            "pairs. Received: batch 0 is a tuple of length 3",
            dict(dataset=tf.data.Dataset.from_tensor_slices((x, y, y)).batch(2)),
        ),
        (ValueError, "yielded no examples", dict(dataset=[])),
        (ValueError, "yielded no examples", dict(dataset=[(x[:0], y[:0])])),
        (ValueError, r"`targets` must be in \[0, 4\)", dict(dataset=[(x, y + 4)])),
    ]
    for error, message, kwargs in cases:
        args = {"explainer": ex, "dataset": ds, "progress": False, **kwargs}
        with pytest.raises(error, match=message):
            explain_dataset(**args)


def test_shards_split_contiguously():
    assert dataset_lib._shards(11, 2) == [(0, 6), (6, 11)]
    assert dataset_lib._shards(3, 4) == [(0, 1), (1, 2), (2, 3), (3, 3)]
    assert dataset_lib._shards(1, 2) == [(0, 1), (1, 1)]  # an empty shard


# -- several replicas (subprocesses) --------------------------------------------------------------
def run_script(source: str, args: list[str], env: dict[str, str] | None = None, timeout=180):
    """Starts ``source`` (with MODEL_SOURCE prepended) in a fresh Python; returns the Popen."""
    script = Path(args[0])
    script.write_text(MODEL_SOURCE + textwrap.dedent(source))
    full_env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": "tensorflow",
        "CUDA_VISIBLE_DEVICES": "",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"subprocess timed out:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]
    return out


MIRRORED = """
import sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tfmollify as tfm
from tfmollify.integrations.dataset import explain_dataset

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
model = conv_model()
out = {}
for mode in ("sg", "ng", "fg"):
    ex = explainer(model, mode)  # one for both sizes: its core is traced once
    for n in (11, 9):  # last batches of 3 and 1 examples: shards of 2 + 1 and 1 + 0
        x, y = data(n)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        out[f"{mode}{n}/want"] = ex.explain(x, y)
        out[f"{mode}{n}/one"] = explain_dataset(ex, ds, progress=False)
        out[f"{mode}{n}/got"] = explain_dataset(ex, ds, strategy=strategy, progress=False)
x, y = data(9)
ds = tf.data.Dataset.from_tensor_slices((x, y))
# one example per batch: replica 1 always has an empty shard; stderr; a memory bound per replica
ex = explainer(model, "fg", batch_size=8)
want, want_err = ex.explain(x, y, return_stderr=True)
out["b1/want"], out["b1err/want"] = want, want_err
out["b1/got"], out["b1err/got"] = explain_dataset(
    ex, ds.batch(1), strategy=strategy, return_stderr=True, progress=False
)
out["bound/want"] = want
out["bound/got"] = explain_dataset(ex, ds.batch(5), strategy=strategy, progress=False)
# the strategy of an enclosing scope, streaming to .npy
with strategy.scope():
    explain_dataset(ex, ds.batch(4), output=sys.argv[2], progress=False)
out["npy/want"], out["npy/got"] = want, np.load(sys.argv[2])
# a model built under the strategy (mirrored variables)
with strategy.scope():
    mirrored = conv_model()
ex = explainer(mirrored, "fg")
out["mirrored_vars/want"] = explainer(model, "fg").explain(x, y)
out["mirrored_vars/got"] = explain_dataset(ex, ds.batch(4), strategy=strategy, progress=False)
# a model with two inputs (a dict), FusionGrad with the Sobol sampler
import keras
keras.utils.set_random_seed(1)
a_in, b_in = keras.Input((3,), name="a"), keras.Input((6, 6, 1), name="b")
h = keras.layers.Concatenate()([
    keras.layers.Dense(4, activation="tanh")(a_in),
    keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b_in)),
])
two = keras.Model({"a": a_in, "b": b_in}, keras.layers.Dense(4)(h))
a = np.random.default_rng(5).normal(size=(9, 3)).astype("float32")
ex = explainer(two, "fg", sampler="sobol", replicates=3)
want = ex.explain({"a": a, "b": x}, y)
ds2 = tf.data.Dataset.from_tensor_slices(({"a": a, "b": x}, y)).batch(4)
got = explain_dataset(ex, ds2, strategy=strategy, progress=False)
for k in ("a", "b"):
    out[f"inputs_{k}/want"], out[f"inputs_{k}/got"] = want[k], got[k]
np.savez(sys.argv[1], **out)
"""


@pytest.fixture(scope="module")
def mirrored_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mirrored")
    proc = run_script(
        MIRRORED, [str(tmp / "mirrored.py"), str(tmp / "out.npz"), str(tmp / "attr.npy")]
    )
    finish(proc)
    with np.load(tmp / "out.npz") as f:
        return dict(f)


MIRRORED_CASES = [
    *(f"{m}{n}" for m in ("sg", "ng", "fg") for n in (11, 9)),
    "b1",
    "b1err",
    "bound",
    "npy",
    "mirrored_vars",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", MIRRORED_CASES)
def test_mirrored_strategy_equals_one_device(mirrored_results, case):
    got, want = mirrored_results[f"{case}/got"], mirrored_results[f"{case}/want"]
    assert got.shape == want.shape == (11 if case.endswith("11") else 9, 6, 6, 1)
    np.testing.assert_allclose(got, want, **TIGHT)
    if f"{case}/one" in mirrored_results:  # the one-device explain_dataset, same process
        np.testing.assert_allclose(got, mirrored_results[f"{case}/one"], **TIGHT)


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("a", (9, 3)), ("b", (9, 6, 6, 1))])
def test_mirrored_strategy_with_several_inputs_and_sobol(mirrored_results, name, shape):
    got, want = mirrored_results[f"inputs_{name}/got"], mirrored_results[f"inputs_{name}/want"]
    assert got.shape == want.shape == shape
    np.testing.assert_allclose(got, want, **TIGHT)


MULTI_WORKER = """
import json, os, sys
import numpy as np, tensorflow as tf
options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
assert strategy.num_replicas_in_sync == 2
import tfmollify as tfm
from tfmollify.integrations.dataset import explain_dataset

model = conv_model()
out = {}
for mode in ("sg", "fg"):
    x, y = data(9)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    ex = explainer(model, mode)
    out[f"{mode}/want"] = ex.explain(x, y)
    out[f"{mode}/got"] = explain_dataset(ex, ds, strategy=strategy, progress=False)
# seed=None: the chief's run seed is used by every worker; progress (the default) shows at once
from tfmollify.explainers import progress
progress.DEFAULT_DELAY_S = 0.0
out["none/got"] = explain_dataset(explainer(model, "ng", seed=None), ds, strategy=strategy)
# only the chief writes the file; the others return None
written = explain_dataset(ex, ds, strategy=strategy, output=sys.argv[2], progress=False)
out["written"] = np.array(written is not None)
np.savez(sys.argv[1], **out)
"""


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_workers(script: str, args: Callable[[int], list[str]]) -> list[str]:
    """Runs ``script`` as two local workers of one cluster (``args(index)`` each); outputs."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(run_script(script, args(index), env={"TF_CONFIG": tf_config}))
    return [finish(p) for p in procs]


@pytest.mark.slow
def test_multi_worker_strategy_equals_one_device(tmp_path):
    """Two local worker processes, one CPU replica each: every worker gets the whole result."""
    outputs = run_workers(MULTI_WORKER, lambda i: [
        str(tmp_path / f"w{i}.py"), str(tmp_path / f"w{i}.npz"), str(tmp_path / "attr.npy")
    ])
    chief, other = (dict(np.load(tmp_path / f"w{i}.npz")) for i in range(2))
    for mode in ("sg", "fg"):
        np.testing.assert_allclose(chief[f"{mode}/got"], chief[f"{mode}/want"], **TIGHT)
        np.testing.assert_array_equal(other[f"{mode}/got"], chief[f"{mode}/got"])
    np.testing.assert_array_equal(other["none/got"], chief["none/got"])
    assert "9/9" in outputs[0] and "/example" in outputs[0]  # progress on the chief only
    assert "/example" not in outputs[1]
    assert bool(chief["written"]) and not bool(other["written"])
    np.testing.assert_allclose(np.load(tmp_path / "attr.npy"), chief["fg/want"], **TIGHT)


MULTI_WORKER_DISAGREE = """
import sys
import numpy as np, tensorflow as tf
options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
from tfmollify.integrations.dataset import explain_dataset

x, y = data(8, seed=int(sys.argv[1]))  # every worker its own data: refused
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
try:
    explain_dataset(explainer(conv_model(), "sg"), ds, strategy=strategy, progress=False)
except ValueError as exc:
    print("REFUSED", exc)
"""


@pytest.mark.slow
def test_multi_worker_refuses_workers_with_different_data(tmp_path):
    for out in run_workers(MULTI_WORKER_DISAGREE, lambda i: [str(tmp_path / f"w{i}.py"), str(i)]):
        assert "REFUSED" in out and "see different data at batch 0" in out


MULTI_WORKER_CHIEF_ONLY_ERROR = """
import sys
import numpy as np, tensorflow as tf
options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
from tfmollify.integrations.dataset import explain_dataset

x, y = data(8)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
try:  # the chief's output folder does not exist; the other worker's does
    explain_dataset(explainer(conv_model(), "sg"), ds, strategy=strategy, progress=False,
                    output=sys.argv[1])
except ValueError as exc:
    print("REFUSED", exc)
"""


@pytest.mark.slow
def test_multi_worker_argument_error_on_one_worker_stops_every_worker(tmp_path):
    """Defect 5 of the redesign: a check that fails on the chief only used to leave the other
    workers waiting in a collective forever. Every worker now ends with an error, in time."""
    outputs = run_workers(MULTI_WORKER_CHIEF_ONLY_ERROR, lambda i: [
        str(tmp_path / f"w{i}.py"),
        str(tmp_path / ("missing" if i == 0 else "") / "attr.npy"),
    ])
    assert "REFUSED" in outputs[0] and "does not exist" in outputs[0]
    assert "REFUSED" in outputs[1] and "failed on another worker" in outputs[1]
