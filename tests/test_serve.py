"""The live explanation server (``tfmollify serve``, :mod:`tfmollify.integrations.serve`) over real
HTTP.

``tfmollify serve`` runs in a subprocess on 127.0.0.1 (a free port) on small exports written
here; requests go through urllib (no proxy). Every answer is compared with
``explainer.explain_full`` in this process, for the same seeds. Two servers (one input, several
inputs) are started once for the module, in parallel, and always killed in a finalizer; every
wait is bounded in time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import keras
import numpy as np
import pytest
from crosscheck import require

import tfmollify as tfm

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
RTOL, ATOL = 1e-5, 1e-6  # float32 rounding: the same ops, traced separately
STARTUP_S = 240  # the server imports TensorFlow and KServe and loads the export (2 busy cores)
REQUEST_S = 60
KSERVE = 'pip install "tfmollify[kserve]"'
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: bytes | None = None, content_type: str = "application/json"):
    """``(status, parsed JSON answer)`` of a GET (no body) or a POST."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with OPENER.open(req, timeout=REQUEST_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Server:
    """``tfmollify serve`` in a subprocess, its output in a log file."""

    def __init__(self, export_dir: str, name: str, log: Path, kserve_args: bool = False,
                 extra: tuple[str, ...] = (), env: dict | None = None) -> None:
        self.export_dir, self.name, self.log_path = export_dir, name, log
        self.kserve_args = kserve_args  # the arguments KServe appends to an explainer container
        self.extra, self.env = extra, env
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/models/{self.name}"

    def start(self) -> None:
        """Starts it: ``tfmollify serve --port 0`` (it prints the port it took), or with a free
        port in KServe's arguments."""
        self.port = None
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        args = ["--name", self.name, "--port", "0"]
        if self.kserve_args:
            self.port = free_port()
            args = ["--model_name", self.name, "--predictor_host", "digits-predictor.default",
                    "--http_port", str(self.port), "--workers", "1"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tfmollify.interface.cli", "serve", "--export",
                self.export_dir,
                 "--host", "127.0.0.1", *args, *self.extra],
                stdout=log, stderr=subprocess.STDOUT, env={**ENV, **(self.env or {})},
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def printed_port(self) -> int | None:
        """The port in the line ``tfmollify: serving ... at http://127.0.0.1:PORT/...``."""
        text = self.log_path.read_text(errors="replace")[self.log_start:]
        found = re.search(r"^tfmollify: serving .* at http://127\.0\.0\.1:(\d+)/v1/models/"
                          + re.escape(self.name) + " ", text, re.M)
        return int(found.group(1)) if found else None

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            if self.port is None:
                self.port = self.printed_port()
            try:
                if self.port is not None and http(self.url)[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        pytest.fail(f"the server was not ready within {STARTUP_S} s:\n{self.log()}")

    def running(self) -> Server:
        """Itself, started again if a test stopped it."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
            self.wait_ready()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


# -- the exports -------------------------------------------------------------------------------
def flat_explainer() -> tfm.Explainer:
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                              keras.layers.Dense(3)])
    # FusionGrad (input and weight noise), eq. 30 per example, blocks of 4 model evaluations
    return tfm.Explainer(model, mode="fg", num_samples=4, num_weight_samples=3, seed=1,
                         batch_size=4)


def multi_explainer() -> tfm.Explainer:
    keras.utils.set_random_seed(5)
    ids = keras.Input((5,), dtype="int32", name="ids")
    num = keras.Input((3,), name="num")
    emb = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    h = keras.layers.Concatenate()([emb, keras.layers.Dense(4, activation="tanh")(num)])
    model = keras.Model({"ids": ids, "num": num}, keras.layers.Dense(2)(h))
    return tfm.SmoothGrad(model, kernel="hyperbolic", num_samples=5, seed=2)


def flat_request(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.uniform(-1, 1, size=(batch, 6)).astype(np.float32),
        "targets": rng.integers(0, 3, size=batch).astype(np.int32),
        # all of int64: JSON carries them exactly (no float rounding of seeds)
        "seeds": rng.integers(-(2**63), 2**63 - 1, size=batch, dtype=np.int64),
    }


def multi_request(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(0, 20, size=(batch, 5)).astype(np.int32),
        "num": rng.normal(size=(batch, 3)).astype(np.float32),
        "targets": rng.integers(0, 2, size=batch).astype(np.int32),
        "seeds": rng.integers(0, 2**40, size=batch, dtype=np.int64),
    }


def rows(req: dict[str, np.ndarray]) -> bytes:
    """TF Serving's row format: one object per example."""
    n = len(req["targets"])
    return json.dumps({"instances": [{k: v[i].tolist() for k, v in req.items()}
                                     for i in range(n)]}).encode()


def columns(req: dict[str, np.ndarray]) -> bytes:
    """TF Serving's columnar format: each input batched."""
    return json.dumps({"signature_name": "serving_default",
                       "inputs": {k: v.tolist() for k, v in req.items()}}).encode()


def by_output(answer: dict) -> dict[str, np.ndarray]:
    """The row-format answer ``{"predictions": [{name: value}, ...]}`` as one array per name."""
    preds = answer["predictions"]
    assert isinstance(preds, list) and preds, answer
    return {k: np.asarray([p[k] for p in preds]) for k in preds[0]}


def assert_equals_explain_full(served: dict, explainer: tfm.Explainer, req: dict) -> None:
    names = [k for k in req if k not in ("targets", "seeds")]
    inputs = req[names[0]] if names == ["inputs"] else {k: req[k] for k in names}
    want = explainer.explain_full(inputs, req["targets"], seeds=req["seeds"])
    if names == ["inputs"]:
        expected = {"attributions": want.attributions, "stderr": want.stderr}
    else:
        expected = {f"{part}_{k}": getattr(want, part)[k]
                    for part in ("attributions", "stderr") for k in names}
    expected["finite_samples"] = want.finite_samples
    assert set(served) == set(expected)
    for k, value in expected.items():
        np.testing.assert_allclose(served[k], value, rtol=RTOL, atol=ATOL, err_msg=k)
    np.testing.assert_array_equal(served["finite_samples"], want.num_samples)


@pytest.fixture(scope="module")
def exports(servers):
    """``{"flat"|"multi": (explainer, export directory)}``."""
    return {k: (explainer, path) for k, (explainer, path, _) in servers.items()}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    """``{"flat"|"multi": (explainer, export directory, Server)}``, both servers ready. Each
    server starts as soon as its export is written (it imports TensorFlow meanwhile)."""
    require("kserve", KSERVE)
    base = tmp_path_factory.mktemp("serve")
    started = {}
    for key, make, name, version in (("flat", flat_explainer, "explainer", 1),
                                     ("multi", multi_explainer, "text", 3)):
        explainer = make()
        explainer.export(str(base / key), version=version)
        server = Server(str(base / key), name, base / f"{key}.log", kserve_args=key == "multi")
        request.addfinalizer(server.kill)  # before it starts: killed whatever happens
        server.start()
        started[key] = (explainer, str(base / key), server)
    for _, _, server in started.values():
        server.wait_ready()
    return started


# -- answers ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_readiness(servers):
    server = servers["flat"][2].running()
    assert http(server.url) == (200, {"name": "explainer", "ready": True})
    status, _ = http(f"http://127.0.0.1:{server.port}/v1/models/no-such-model")
    assert status == 404
    assert http(f"http://127.0.0.1:{server.port}/v1/models") == (200, {"models": ["explainer"]})


@pytest.mark.slow
def test_both_body_formats_and_verbs_equal_explain_full(servers, exports):
    server, explainer = servers["flat"][2].running(), exports["flat"][0]
    req = flat_request(5, seed=0)
    answers = []
    for verb in (":explain", ":predict"):
        for body in (rows(req), columns(req)):
            status, answer = http(server.url + verb, body)
            assert status == 200, answer
            answers.append(answer)
    # curl -d sends application/x-www-form-urlencoded: KServe passes such a body on as bytes
    status, raw = http(server.url + ":explain", rows(req), "application/x-www-form-urlencoded")
    assert status == 200, raw
    for answer in [*answers[1:], raw]:
        assert answer == answers[0]  # the same graph on the same inputs: identical JSON
    assert len(answers[0]["predictions"]) == 5
    assert sorted(answers[0]["predictions"][0]) == ["attributions", "finite_samples", "stderr"]
    assert_equals_explain_full(by_output(answers[0]), explainer, req)
    # an example alone gets the answer it gets inside the batch (its noise follows its seed)
    one = {k: v[3:4] for k, v in req.items()}
    status, alone = http(server.url + ":explain", rows(one))
    assert status == 200 and alone["predictions"] == answers[0]["predictions"][3:4]
    status, empty = http(server.url + ":explain", b'{"instances": []}')  # as in both formats
    assert status == 400 and "no examples" in empty["error"]


@pytest.mark.slow
def test_an_export_with_several_inputs(servers, exports):
    server, explainer = servers["multi"][2].running(), exports["multi"][0]
    req = multi_request(4, seed=1)
    status, by_row = http(server.url + ":explain", rows(req))
    assert status == 200, by_row
    status, by_col = http(server.url + ":predict", columns(req))
    assert (status, by_col) == (200, by_row)
    assert sorted(by_row["predictions"][0]) == [
        "attributions_ids", "attributions_num", "finite_samples", "stderr_ids", "stderr_num"]
    assert_equals_explain_full(by_output(by_row), explainer, req)
    status, err = http(server.url + ":explain", rows({**req, "ids": req["ids"] + 0.5}))
    assert status == 400 and "`ids`" in err["error"] and "integers" in err["error"], err


@pytest.mark.slow
def test_16_concurrent_requests_each_equal_their_serial_answer(servers, exports):
    server, explainer = servers["flat"][2].running(), exports["flat"][0]
    reqs = [flat_request(1 + i % 3, seed=100 + i) for i in range(16)]
    bodies = [rows(r) if i % 2 else columns(r) for i, r in enumerate(reqs)]
    serial = [http(server.url + ":explain", b) for b in bodies]
    with futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda b: http(server.url + ":explain", b), bodies,
                                 timeout=4 * REQUEST_S))
    for i, (one, other) in enumerate(zip(serial, together, strict=True)):
        assert one[0] == other[0] == 200, (i, one, other)
        assert other[1] == one[1], i
    # all 16 against one in-process call over every example (per-example seeds)
    merged = {k: np.concatenate([r[k] for r in reqs]) for k in reqs[0]}
    served = {k: np.concatenate([by_output(a)[k] for _, a in serial]) for k in
              ("attributions", "stderr", "finite_samples")}
    assert_equals_explain_full(served, explainer, merged)


# -- bad requests ----------------------------------------------------------------------------
def bad_bodies(good: dict[str, np.ndarray]) -> list[tuple[str, bytes, str]]:
    """``(what, body, a word the error must contain)`` for requests the server must refuse."""
    col = json.loads(columns(good))
    inst = json.loads(rows(good))["instances"]

    def with_col(**change) -> bytes:
        return json.dumps({"inputs": {**col["inputs"], **change}}).encode()

    nan_row = json.dumps({"instances": [{**inst[0], "inputs": [0.1, float("nan"), 0, 0, 0, 0]},
                                        inst[1]]}).encode()
    return [
        ("targets out of range", with_col(targets=[0, 3]), "`targets`"),
        ("negative targets", with_col(targets=[-1, 0]), "`targets`"),
        ("fractional targets", with_col(targets=[0.5, 1]), "`targets`"),
        ("wrong input width", with_col(inputs=[[0.0] * 5] * 2), "`inputs`"),
        ("a missing batch axis", with_col(targets=1), "`targets`"),
        ("NaN inputs (row)", nan_row, "`inputs`"),
        ("Infinity inputs", with_col(inputs=[[0.0] * 6, [0.0] * 5 + [float("inf")]]),
         "`inputs`"),
        ("ragged inputs", with_col(inputs=[[0.0] * 6, [0.0] * 5]), "`inputs`"),
        ("text in inputs", with_col(inputs=[["a"] * 6] * 2), "`inputs`"),
        ("seeds beyond int64", with_col(seeds=[2**64, 1]), "`seeds`"),
        ("one seed for two examples", with_col(seeds=[1]), "`seeds`"),
        ("unknown input", with_col(pixels=[1, 2]), "`pixels`"),
        ("missing input", json.dumps({"inputs": {k: v for k, v in col["inputs"].items()
                                                 if k != "seeds"}}).encode(), "`seeds`"),
        ("missing input in a row", json.dumps({"instances": [
            {k: v for k, v in inst[0].items() if k != "targets"}]}).encode(), "`targets`"),
        ("malformed JSON", b'{"instances": [{"inputs": [0.1,', "JSON"),
        ("not an object", b"[1, 2, 3]", "object"),
        ("both formats", json.dumps({"instances": inst, "inputs": col["inputs"]}).encode(),
         "exactly one"),
        ("another signature", json.dumps({**col, "signature_name": "other"}).encode(),
         "signature_name"),
        ("instances not a list", b'{"instances": {"inputs": 1}}', "instances"),
    ]


@pytest.mark.slow
def test_bad_requests_get_400_and_the_server_keeps_serving(servers, exports):
    server, explainer = servers["flat"][2].running(), exports["flat"][0]
    good = flat_request(2, seed=7)
    status, before = http(server.url + ":explain", columns(good))
    assert status == 200
    for what, body, word in bad_bodies(good):
        for verb in (":explain", ":predict"):
            status, answer = http(server.url + verb, body)
            assert 400 <= status < 500, (what, verb, status, answer)
            assert word in answer["error"], (what, answer)
    assert http(server.url[: server.url.rindex("/") + 1] + "nope:explain", columns(good))[0] \
        == 404
    assert server.proc.poll() is None
    assert http(server.url) == (200, {"name": "explainer", "ready": True})
    status, after = http(server.url + ":explain", columns(good))
    assert (status, after) == (200, before)
    assert_equals_explain_full(by_output(after), explainer, good)


@pytest.mark.slow
def test_the_table_of_bad_requests_gets_the_messages_explain_gives(servers, exports):
    """One rule, one place (tests/bad_requests.py): over HTTP each bad request gets a 400 whose
    error is, word for word, what ``Explainer.explain`` raises for it."""
    from tests import bad_requests

    server, explainer = servers["flat"][2].running(), exports["flat"][0]
    assert explainer.get_config() == tfm.Explainer(
        bad_requests.model(), **bad_requests.SETTINGS["fg"]).get_config()
    for bad in bad_requests.table():
        if "fg" not in bad.settings:
            continue
        want = bad_requests.explain_message(explainer, bad)
        for rows in (False, True):
            body = bad_requests.body(bad, rows=rows)
            if body:
                status, answer = http(server.url + ":explain", body)
                assert (status, answer) == (400, {"error": want}), (bad.what, rows)


# -- shutting down, and what needs no server ---------------------------------------------------
@pytest.mark.slow
def test_sigterm_stops_the_server_cleanly(servers):
    server = servers["multi"][2].running()  # the last test that uses it
    with futures.ThreadPoolExecutor(1) as pool:  # a request in flight while it stops
        pending = pool.submit(http, server.url + ":explain", rows(multi_request(3, seed=2)))
        time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0, server.log()
        try:
            status, _ = pending.result(timeout=REQUEST_S)
            assert status == 200  # answered before the server went, or
        except OSError:
            pass  # refused: SIGTERM came before it was accepted
    assert "tfmollify: stopped (SIGTERM)" in server.log()
    with pytest.raises(OSError):
        http(server.url)


def test_the_cli_names_the_extra_when_kserve_is_missing(monkeypatch, tmp_path, capsys):
    from tfmollify.interface import cli

    monkeypatch.setitem(sys.modules, "kserve", None)  # import kserve raises ImportError
    assert cli.main(["serve", "--export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfmollify serve: error:") and KSERVE in err, err


@pytest.mark.slow
def test_serve_checks_its_arguments_before_loading(tmp_path, exports):
    require("kserve", KSERVE)
    from tfmollify.integrations.serve import serve

    with pytest.raises(ValueError, match="`name`"):
        serve(str(tmp_path), name="my model")
    with pytest.raises(ValueError, match="`port`"):
        serve(str(tmp_path), port=70000)
    with pytest.raises(FileNotFoundError, match="`export_dir`"):
        serve(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="numbered version"):
        serve(str(tmp_path))  # a directory without a SavedModel
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError, match=r"Cannot listen on 127\.0\.0\.1"):
            serve(exports["flat"][1], port=taken.getsockname()[1])


def test_the_kserve_model_also_takes_bodies_kserve_decoded(exports):
    """Under ``kserve.ModelServer().start([model])`` the body arrives as parsed JSON."""
    import asyncio

    from kserve.errors import InvalidInput

    from tfmollify.integrations.serve import model_class

    explainer, path = exports["flat"]
    model = model_class()("explainer", path, max_threads=2)
    assert model.load() and model.ready
    req = flat_request(3, seed=9)

    async def answer(body):  # the answer comes encoded (JSON bytes, made off the event loop)
        return json.loads(await model.predict(await model.preprocess(body)))

    try:
        got = asyncio.run(answer(json.loads(rows(req))))
        assert got == asyncio.run(answer(columns(req)))  # bytes, as tfmollify serve passes them
        assert_equals_explain_full(by_output(got), explainer, req)
        with pytest.raises(InvalidInput, match="`targets`"):
            asyncio.run(answer({"inputs": {**json.loads(columns(req))["inputs"],
                                           "targets": [0, 1, 7]}}))
    finally:
        model.stop()
    assert not model.ready


def test_the_serve_verb_parses_its_own_and_kserves_arguments(capsys):
    from tfmollify.interface import cli

    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["serve", "--help"])
    assert exit_.value.code == 0 and KSERVE in " ".join(capsys.readouterr().out.split())
    args = cli.build_parser().parse_args(["serve", "--export", "e"])
    assert (args.export, args.name, args.host, args.port) == ("e", "explainer", "127.0.0.1", 8080)
    # what KServe appends to a custom explainer's container arguments
    args = cli.build_parser().parse_args([
        "serve", "--export", "/mnt/models", "--host", "0.0.0.0", "--model_name", "digits",
        "--predictor_host", "digits-predictor.ns", "--http_port", "8080", "--workers", "2"])
    assert (args.name, args.host, args.port) == ("digits", "0.0.0.0", 8080)


def _call(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(req, timeout=REQUEST_S) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.mark.slow
def test_limits_tokens_and_readiness_of_a_live_server(tmp_path, exports):
    admin = tmp_path / "admin"
    admin.write_text("adm1n\n")
    server = Server(exports["flat"][1], "guarded", tmp_path / "log.txt",
                    extra=("--max-body-mb", "0.01", "--max-batch", "2", "--read-timeout-s", "2",
                           "--admin-token-file", str(admin)),
                    env={"TFMOLLIFY_TOKEN": "inf"})
    server.start()
    try:
        deadline = time.monotonic() + STARTUP_S
        while server.port is None and time.monotonic() < deadline:
            server.port = server.printed_port()
            time.sleep(0.2)
        assert server.port is not None, server.log()
        base = f"http://127.0.0.1:{server.port}"
        assert _call(server.url)[0] == 200  # probes need no token
        good = rows(flat_request(2, 0))
        assert _call(server.url + ":explain", good)[0] == 401
        status, answer = _call(server.url + ":explain", good, "inf")
        assert status == 200 and len(answer["predictions"]) == 2
        status, answer = _call(server.url + ":explain", rows(flat_request(3, 0)), "inf")
        assert status == 413 and "--max-batch" in answer["error"]
        status, answer = _call(server.url + ":explain", b" " * 20_000, "inf")
        assert status == 413 and "--max-body-mb" in answer["error"]
        status, answer = _call(server.url + ":explain", b"[" * 5000 + b"]" * 5000, "inf")
        assert status == 400 and "nested too deeply" in answer["error"]
        unload = f"{base}/v2/repository/models/guarded/unload"
        assert _call(unload, b"", "inf")[0] == 401
        assert _call(unload, b"", "adm1n")[0] == 200
        assert _call(f"{base}/v2/health/ready")[0] == 503 and _call(server.url)[0] == 503
        log = server.log()
        assert "413 /v1/models/guarded:explain" in log and "Traceback" not in log
        assert "adm1n" not in log
    finally:
        server.kill()


@pytest.mark.slow
def test_sigterm_with_a_long_request_exits_within_the_grace_period(tmp_path):
    """A request that computes far longer than ``--grace-s``: SIGTERM stops the server within
    grace + 5 s (Kubernetes' default grace period is 30 s), with status 0."""
    require("kserve", KSERVE)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation="tanh"),
                              keras.layers.Dense(512, activation="tanh"), keras.layers.Dense(2)])
    slow = tfm.SmoothGrad(model, num_samples=400_000, seed=0, batch_size=2000)  # ~ a minute
    slow.export(str(tmp_path / "slow"), max_batch_size=4, warmup=False)
    server = Server(str(tmp_path / "slow"), "slow", tmp_path / "log.txt",
                    extra=("--grace-s", "1"))
    server.start()
    try:
        server.wait_ready()
        body = rows({"inputs": np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32),
                     "targets": np.ones(4, np.int32), "seeds": np.arange(4)})
        pending = futures.ThreadPoolExecutor(1).submit(_call, server.url + ":explain", body)
        time.sleep(2.0)  # the request is computing
        assert not pending.done()
        server.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        server.proc.wait(timeout=30)
        took = time.monotonic() - started
        assert server.proc.returncode == 0 and took < 1 + 5, (took, server.log())
        assert "still computing after the grace period" in server.log()
    finally:
        server.kill()


@pytest.mark.slow
def test_a_deadline_gets_504_and_a_disconnect_stops_the_work(tmp_path):
    """Work runs on slices of 8 examples (about a second each here): past its X-Timeout-S a
    request gets 504 after the slice in progress; a client that leaves stops its work at the
    next slice."""
    require("kserve", KSERVE)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation="tanh"),
                              keras.layers.Dense(512, activation="tanh"), keras.layers.Dense(2)])
    tfm.SmoothGrad(model, num_samples=15_000, seed=0, batch_size=2000).export(
        str(tmp_path / "medium"), max_batch_size=4, warmup=False)
    server = Server(str(tmp_path / "medium"), "medium", tmp_path / "log.txt")
    server.start()
    try:
        server.wait_ready()
        body = rows({"inputs": np.random.default_rng(0).normal(size=(24, 64)).astype(np.float32),
                     "targets": np.ones(24, np.int32), "seeds": np.arange(24)})
        req = urllib.request.Request(server.url + ":explain", data=body, method="POST")
        req.add_header("X-Timeout-S", "0.3")
        started = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as info:
            OPENER.open(req, timeout=REQUEST_S)
        answer = json.loads(info.value.read())
        assert info.value.code == 504 and "after 8 of 24 examples" in answer["error"]
        assert time.monotonic() - started < 20
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(b"POST /v1/models/medium:explain HTTP/1.1\r\nHost: x\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.3)  # the first slice is computing; the client leaves
        deadline = time.monotonic() + 30
        while "the client disconnected" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "of 24 examples: the client disconnected" in server.log()
        assert "after 24 of 24" not in server.log()
    finally:
        server.kill()


_V2 = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}
_NP = {v: k for k, v in _V2.items()}


def v2_json(req: dict[str, np.ndarray]) -> bytes:
    """The Open Inference Protocol's JSON body."""
    return json.dumps({"inputs": [
        {"name": k, "shape": list(v.shape), "datatype": _V2[v.dtype], "data": v.ravel().tolist()}
        for k, v in req.items()]}).encode()


def v2_binary(req: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """The binary tensor data extension: a JSON header, then the tensors' bytes (as Triton's and
    KServe's clients send them); ``(body, header length)``."""
    header = json.dumps({"inputs": [
        {"name": k, "shape": list(v.shape), "datatype": _V2[v.dtype],
         "parameters": {"binary_data_size": v.nbytes}} for k, v in req.items()],
        "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(np.ascontiguousarray(v).tobytes() for v in req.values()), len(header)


def v2_call(url: str, body: bytes, header_length: int | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST")
    req.add_header("Content-Type", "application/json" if header_length is None
                   else "application/octet-stream")
    if header_length is not None:
        req.add_header("Inference-Header-Content-Length", str(header_length))
    try:
        with OPENER.open(req, timeout=REQUEST_S) as r:
            raw, size = r.read(), r.headers.get("inference-header-content-length")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    if size is None:
        answer = json.loads(raw)
        return 200, {o["name"]: np.asarray(o["data"]).reshape(o["shape"])
                     for o in answer["outputs"]}
    head, offset, out = json.loads(raw[:int(size)]), int(size), {}
    for o in head["outputs"]:
        n = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(raw[offset:offset + n], _NP[o["datatype"]]).reshape(
            o["shape"])
        offset += n
    return 200, out


@pytest.mark.slow
def test_the_open_inference_protocol_in_json_and_binary(servers, exports):
    for key, make in (("flat", flat_request), ("multi", multi_request)):
        server, explainer = servers[key][2].running(), exports[key][0]
        base = server.url.replace("/v1/", "/v2/")
        req = make(3, seed=4)
        status, json_answer = v2_call(base + "/infer", v2_json(req))
        assert status == 200
        assert_equals_explain_full(json_answer, explainer, req)
        status, binary_answer = v2_call(base + "/infer", *v2_binary(req))
        assert status == 200
        for name, value in json_answer.items():  # the same float32 values, bit for bit
            got = binary_answer[name]
            np.testing.assert_array_equal(got, value.astype(got.dtype))
        status, meta = http(base)
        assert status == 200 and {t["name"] for t in meta["inputs"]} == set(req)
        assert {t["name"] for t in meta["outputs"]} == set(json_answer)
    # a bad request: the same status and message as the V1 columnar body
    server = servers["flat"][2].running()
    bad = {k: v for k, v in flat_request(2, seed=1).items() if k != "targets"}
    v1 = http(server.url + ":explain", json.dumps({"inputs": {
        k: v.tolist() for k, v in bad.items()}}).encode())
    v2 = v2_call(server.url.replace("/v1/", "/v2/") + "/infer", v2_json(bad))
    v2b = v2_call(server.url.replace("/v1/", "/v2/") + "/infer", *v2_binary(bad))
    assert v1[0] == v2[0] == v2b[0] == 400
    assert v1[1]["error"] == v2[1]["error"] == v2b[1]["error"]


@pytest.mark.slow
def test_memory_at_the_body_limit_stays_within_the_documented_bound(tmp_path):
    """One request at --max-body-mb (a tiny model, so the body is what costs): the server's peak
    memory grows by at most 8 x the body (docs/guides/kserve.md: read, decoded, the arrays,
    the answer)."""
    require("kserve", KSERVE)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8), keras.layers.Dense(2)])
    tfm.SmoothGrad(model, num_samples=4, seed=0, batch_size=256).export(str(tmp_path / "m"))
    server = Server(str(tmp_path / "m"), "m", tmp_path / "log.txt",
                    extra=("--max-body-mb", "16", "--max-batch", "100000"))
    server.start()
    try:
        server.wait_ready()

        def vm(key):
            with open(f"/proc/{server.proc.pid}/status") as f:
                return next(int(x.split()[1]) * 1024 for x in f if x.startswith(key))

        before = vm("VmRSS")
        row = {"inputs": np.random.default_rng(0).uniform(size=64).astype(np.float32).tolist(),
               "targets": 1, "seeds": 7}
        n = int(15.8 * 2**20 / (len(json.dumps(row)) + 2))
        body = json.dumps({"instances": [row] * n}).encode()
        assert len(body) <= 16 * 2**20
        status, answer = http(server.url + ":explain", body)
        assert status == 200 and len(answer["predictions"]) == n
        growth = vm("VmHWM") - before
        assert growth <= 8 * len(body), (growth / len(body), server.log())
    finally:
        server.kill()


@pytest.mark.slow
def test_bodies_parsed_in_helper_processes_decode_exactly_as_in_process(exports):
    """The server parses large bodies in helper processes (its event loop keeps answering):
    every body, good or bad, gives the same arrays or the same message as in-process."""
    from tfmollify.integrations.parsing import Parsers
    from tfmollify.integrations.serve import Export, RequestError

    export = Export(exports["flat"][1])
    good = flat_request(3, seed=2)
    bodies = [("rows", rows(good), ""), ("columns", columns(good), ""),
              ("deep", b"[" * 100_000 + b"]" * 100_000, ""),
              ("booleans", json.dumps({"instances": [{**json.loads(rows(good))["instances"][0],
                                                       "inputs": [True] * 6}]}).encode(), ""),
              *bad_bodies(flat_request(2, seed=7))]
    parsers = Parsers(2)
    try:
        for what, body, _ in bodies:
            outcomes = []
            for loads in (None, parsers.loads):
                try:
                    outcomes.append(export.decode(body, loads))
                except RequestError as exc:
                    outcomes.append(str(exc))
            here, there = outcomes
            if isinstance(here, str):
                assert here == there, what
            else:
                assert set(here) == set(there), what
                for k in here:
                    assert here[k].dtype == there[k].dtype, (what, k)
                    np.testing.assert_array_equal(here[k], there[k], err_msg=what)
    finally:
        parsers.close()
