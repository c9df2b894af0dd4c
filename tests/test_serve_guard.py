"""The server's front door (#29): limits before any work, a closed control plane, tokens, the
truth about readiness (``tfmollify.integrations.guard``), and the request rules the server adds
(``Export.decode``: nesting, empty batches, examples per request). The live server is tested in
``tests/test_serve.py``."""

from __future__ import annotations

import asyncio
import json

import keras
import numpy as np
import pytest

import tfmollify as tfm
from tfmollify.integrations import guard as guard_lib
from tfmollify.integrations.guard import Guard, Limits
from tfmollify.integrations.serve import Export, RequestError, TooManyExamples


class App:
    """The model's app: records what reached it, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body = b""
        if scope["method"] == "POST":
            message = await receive()
            body = message["body"]
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(guard, method="POST", path="/v1/models/m:explain", headers=(), chunks=(b"{}",),
         delay=0.0):
    """``(status, answer, chunks read)`` of one request through ``guard``."""
    sent, read = [], [0]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        if delay:
            await asyncio.sleep(delay)
        read[0] += 1
        return messages[read[0] - 1] if read[0] <= len(messages) else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], json.loads(body or b"null"), read[0]


def test_the_control_plane_is_off_without_an_admin_token():
    app = App()
    guard = Guard(app, Limits(), ready=lambda: True)
    for path in ("/v2/repository/models/m/unload", "/v2/repository/models/m/load",
                 "/v2/repository/index"):
        status, answer, _ = call(guard, path=path, headers=[("Authorization", "Bearer x")])
        assert status == 404 and "TFMOLLIFY_ADMIN_TOKEN" in answer["error"]
    assert app.bodies == []


def test_the_admin_token_opens_the_control_plane_and_nothing_else_does():
    app = App()
    guard = Guard(app, Limits(admin_token="s3cret"), ready=lambda: True)
    unload = "/v2/repository/models/m/unload"
    for headers in ([], [("Authorization", "Bearer nope")], [("Authorization", "s3cret")],
                    [("Authorization", "Bearer s3cret ")]):
        assert call(guard, path=unload, headers=headers)[0] == 401
    assert call(guard, path=unload, headers=[("Authorization", "Bearer s3cret")])[0] == 200
    assert call(guard)[0] == 200  # inference needs no token unless one is set


def test_an_inference_token_guards_inference_but_not_probes():
    app = App()
    guard = Guard(app, Limits(token="t0k"), ready=lambda: True)
    assert call(guard)[0] == 401
    assert call(guard, headers=[("Authorization", "Bearer t0k")])[0] == 200
    for path in ("/v2/health/ready", "/v2/health/live", "/v1/models/m", "/v2/models/m"):
        assert call(guard, method="GET", path=path)[0] == 200
    assert "t0k" not in repr(guard.limits) and "set" in repr(guard.limits)


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    app = App()
    guard = Guard(app, Limits(max_body_bytes=100), ready=lambda: True)
    status, answer, read = call(guard, headers=[("Content-Length", "101")],
                                chunks=[b"x" * 101])
    assert status == 413 and "limit of 100 bytes" in answer["error"] and read == 0
    # streamed without a length: refused as soon as it passes the limit, the rest unread
    status, answer, read = call(guard, chunks=[b"x" * 60, b"x" * 60, b"x" * 60, b"x" * 60])
    assert status == 413 and read == 2
    assert app.bodies == []
    status, _, _ = call(guard, chunks=[b'{"a": ', b"1}"])  # within the limit: passed on whole
    assert status == 200 and app.bodies == [b'{"a": 1}']


def test_a_slow_body_gets_408_and_bad_lengths_400():
    guard = Guard(App(), Limits(read_timeout_s=0.2), ready=lambda: True)
    status, answer, _ = call(guard, chunks=[b"{", b"}"], delay=0.15)
    assert status == 408 and "0.2 s" in answer["error"]
    assert call(guard, headers=[("Content-Length", "many")])[0] == 400


def test_readiness_answers_503_while_the_model_is_not_ready():
    state = {"ready": False}
    guard = Guard(App(), Limits(), ready=lambda: state["ready"])
    for path in ("/v2/health/ready", "/v2/models/m/ready", "/v1/models/m"):
        assert call(guard, method="GET", path=path)[0] == 503
    assert call(guard, method="GET", path="/v2/health/live")[0] == 200
    state["ready"] = True
    assert call(guard, method="GET", path="/v2/health/ready")[0] == 200


def test_tokens_come_from_files_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(guard_lib.TOKEN_ENV, raising=False)
    assert guard_lib.read_token(guard_lib.TOKEN_ENV) is None
    monkeypatch.setenv(guard_lib.TOKEN_ENV, "from-env")
    assert guard_lib.read_token(guard_lib.TOKEN_ENV) == "from-env"
    path = tmp_path / "token"
    path.write_text("from-file\nignored\n")
    assert guard_lib.read_token(guard_lib.TOKEN_ENV, path) == "from-file"
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        guard_lib.read_token(guard_lib.TOKEN_ENV, path)
    with pytest.raises(ValueError, match="Cannot read the token file"):
        guard_lib.read_token(guard_lib.TOKEN_ENV, tmp_path / "missing")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = tfm.SmoothGrad(model, num_samples=2, seed=0).export(tmp_path_factory.mktemp("e"))
    return Export(path, max_batch=2)


def test_requests_nested_too_deeply_or_empty_decode_alike_in_both_formats(export):
    with pytest.raises(RequestError, match="nested too deeply"):
        export.decode(b"[" * 100_000 + b"]" * 100_000)
    rows = export.decode(b'{"instances": []}')
    columns = export.decode(b'{"inputs": {"inputs": [], "targets": [], "seeds": []}}')
    for name in export.inputs:  # the server answers both with 400 NO_EXAMPLES
        assert rows[name].shape == columns[name].shape and len(rows[name]) == 0


def test_more_examples_than_max_batch_are_refused_in_both_formats(export):
    row = {"inputs": [1.0, 2.0, 3.0], "targets": 1, "seeds": 7}
    assert len(export.decode(json.dumps({"instances": [row] * 2}).encode())["inputs"]) == 2
    with pytest.raises(TooManyExamples, match="3 examples, over the server's limit of 2"):
        export.decode(json.dumps({"instances": [row] * 3}).encode())
    columns = {"inputs": [[1.0, 2.0, 3.0]] * 3, "targets": [1] * 3, "seeds": [7] * 3}
    with pytest.raises(TooManyExamples, match="limit of 2"):
        export.decode(json.dumps({"inputs": columns}).encode())
    assert isinstance(TooManyExamples("x"), RequestError)
    np.testing.assert_equal(export.max_batch, 2)


class FakeCall:
    """Says stop once ``after`` slices have been asked about."""

    def __init__(self, reason, after):
        self.reason, self.after, self.asked = reason, after, 0

    def stop_reason(self):
        self.asked += 1
        return self.reason if self.asked > self.after else None


def test_slices_give_the_one_call_answer_and_stop_between_slices(export):
    from tfmollify.integrations.serve import Stopped, run_in_slices

    whole = Export(export.path)  # no max_batch
    rng = np.random.default_rng(0)
    arrays = {"inputs": rng.normal(size=(11, 3)).astype(np.float32),
              "targets": np.ones(11, np.int32), "seeds": np.arange(11, dtype=np.int64)}
    one = whole.run(arrays)
    sliced = run_in_slices(whole, arrays, None, size=4)
    for name in one:
        np.testing.assert_array_equal(sliced[name], one[name])
    for reason, status in (("deadline", 504), ("disconnected", 499)):
        with pytest.raises(Stopped, match="after 8 of 11 examples") as info:
            run_in_slices(whole, arrays, FakeCall(reason, 2), size=4)
        assert info.value.status == status


def test_the_guard_gives_the_work_its_call_and_deadline():
    from tfmollify.integrations import guard as g

    seen = []

    async def app(scope, receive, send):
        call = g.current()
        seen.append((call.deadline is not None, call.stop_reason()))
        await receive()  # the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(app, Limits(timeout_s=60.0), ready=lambda: True)
    assert call(guard, headers=[("X-Timeout-S", "0.5")])[0] == 200
    assert call(guard, headers=[("X-Timeout-S", "-1")])[0] == 400
    assert call(guard, headers=[("X-Timeout-S", "soon")])[0] == 400
    assert seen == [(True, None)]
    assert g.current() is None  # outside a request


def test_a_call_knows_its_client_left_and_its_deadline_passed():
    import time

    from tfmollify.integrations.guard import Call

    c = Call(time.monotonic() + 60)
    assert c.stop_reason() is None
    c.gone.set()
    assert c.stop_reason() == "disconnected"
    assert Call(time.monotonic() - 1).stop_reason() == "deadline"
    assert Call(None).stop_reason() is None
