"""Parsing large JSON request bodies in helper processes, so the server's event loop keeps
answering.

Decoding a JSON body builds one Python object per number while holding the GIL: 1 s for a body
of 28 MB, during which the server's event loop (health and readiness probes included) cannot
run, even when the parse happens in a worker thread. :class:`Parsers` parses bodies in a few
helper processes instead (plain Python, NumPy and orjson: they never import TensorFlow or
tfmollify) and sends back the structure with every list of numbers already an array, in one
pickle; the server's process only copies the arrays in.

The parse is the same as in-process: orjson, the standard library for what orjson refuses
(TF Serving's ``NaN`` and ``Infinity``), and the same errors (a ``ValueError`` with the
parser's message, a ``RecursionError`` for a body nested too deeply). Only lists of numbers of
one kind (all integers, or all floats) become arrays: what ``numpy.asarray`` makes of them gives
back the same values, so :meth:`tfmollify.integrations.serve.Export.decode` gives the same
result and the same messages either way (``tests/test_serve.py`` checks this on every kind of
bad request).

Example:

>>> from tfmollify.integrations.parsing import Parsers
>>> parsers = Parsers(1)
>>> parsers.loads(b'{"instances": [{"inputs": [1.5, 2.0], "targets": 1}]}')
{'instances': [{'inputs': array([1.5, 2. ]), 'targets': 1}]}
>>> parsers.close()
"""

from __future__ import annotations

import pickle
import queue
import struct
import subprocess
import sys
import threading
from typing import Any

__all__ = ["CHILD", "PARSE_IN_PROCESS_BELOW", "Parsers"]

#: Bodies smaller than this are parsed in the server's process (a few milliseconds)
PARSE_IN_PROCESS_BELOW = 1 << 20

#: The helper's program: length-prefixed bodies in, length-prefixed pickles out
CHILD = r"""
import json, pickle, struct, sys
import numpy as np
try:
    import orjson
except ImportError:
    orjson = None

def kinds(value, seen):
    for v in value:
        if isinstance(v, list):
            kinds(v, seen)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            seen.add("other")
        else:
            seen.add("int" if isinstance(v, int) else "float")
        if len(seen) > 1:
            break
    return seen

def leaf(value):
    # one input's values: an array when all numbers are of one kind (all int, or all float),
    # which gives back the same values (messages that echo them read the same)
    if isinstance(value, list) and value and kinds(value, set()) in ({"int"}, {"float"}):
        try:
            out = np.asarray(value)
        except (ValueError, OverflowError):
            return value
        if out.dtype.kind in "iuf":
            return out
    return value

def arrays(body):
    # only where a request's tensors sit: body["inputs"][name], body["instances"][i][name]
    if not isinstance(body, dict):
        return body
    inputs, instances = body.get("inputs"), body.get("instances")
    if isinstance(inputs, dict):
        body["inputs"] = {k: leaf(v) for k, v in inputs.items()}
    if isinstance(instances, list):
        body["instances"] = [{k: leaf(v) for k, v in i.items()} if isinstance(i, dict) else i
                             for i in instances]
    return body

def parse(raw):
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)

read, write = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = read.read(8)
    if len(head) < 8:
        break
    raw = read.read(struct.unpack("<Q", head)[0])
    try:
        value = parse(raw)
        try:
            value = arrays(value)
        except RecursionError:  # parsed, but too deep to convert: as parsed
            pass
        answer = ("ok", value)
    except RecursionError:
        answer = ("recursion", "")
    except (ValueError, UnicodeDecodeError) as exc:
        answer = ("value", str(exc))
    out = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    write.write(struct.pack("<Q", len(out)) + out)
    write.flush()
"""


class _Child:
    """One helper process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )

    def loads(self, raw: bytes) -> Any:
        self.proc.stdin.write(struct.pack("<Q", len(raw)))
        self.proc.stdin.write(raw)
        self.proc.stdin.flush()
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise OSError("the parsing helper process ended")
        kind, value = pickle.loads(self.proc.stdout.read(struct.unpack("<Q", head)[0]))
        if kind == "recursion":
            raise RecursionError("maximum recursion depth exceeded while decoding JSON")
        if kind == "value":
            raise ValueError(value)
        return value

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Parsers:
    """Up to ``count`` helper processes that parse JSON bodies (started when first needed;
    thread-safe: each call borrows one).

    Args:
        count: Helper processes at most (one per concurrent parse).
    """

    def __init__(self, count: int) -> None:
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._slots = threading.Semaphore(count)
        self._all: list[_Child] = []
        self._lock = threading.Lock()

    def loads(self, raw: bytes) -> Any:
        """``raw`` parsed as JSON, every list of numbers a NumPy array.

        Raises:
            ValueError: For a body that is not JSON (the parser's message).
            RecursionError: For a body nested too deeply.
        """
        with self._slots:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                child = _Child()
                with self._lock:
                    self._all.append(child)
            try:
                value = child.loads(bytes(raw))
            except (ValueError, RecursionError):
                self._idle.put(child)
                raise
            except BaseException:  # a broken helper: never reused
                child.close()
                raise
            self._idle.put(child)
            return value

    def close(self) -> None:
        """Ends the helper processes."""
        with self._lock:
            children, self._all = self._all, []
        for child in children:
            child.close()
