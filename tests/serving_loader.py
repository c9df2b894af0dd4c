"""Loads exported explainers in a fresh process, the way a server does, and runs a request.

Usage: python serving_loader.py {eager|session} REQUEST.npz OUT.npz DIR [DIR ...]

``eager`` uses ``tf.saved_model.load``; ``session`` uses the TF1 Session-based loader of
TensorFlow Serving and ``saved_model_cli run`` (graph mode, signature tensors by name). The
outputs of directory ``i`` are written as ``{i}/attributions``, ``{i}/stderr`` and
``{i}/finite_samples``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf


def eager(path: str, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in request.items()}).items()}


def session(path: str, request: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta.signature_def["serving_default"]
        assert sig.method_name == "tensorflow/serving/predict", sig.method_name
        feed = {sig.inputs[k].name: v for k, v in request.items()}
        return sess.run({k: t.name for k, t in sig.outputs.items()}, feed_dict=feed)


def main() -> None:
    how, request_path, out_path, *dirs = sys.argv[1:]
    request = dict(np.load(request_path))
    load = {"eager": eager, "session": session}[how]
    out = {}
    for i, d in enumerate(dirs):
        for k, v in load(d, request).items():
            out[f"{i}/{k}"] = v
    np.savez(out_path, **out)


if __name__ == "__main__":
    main()
