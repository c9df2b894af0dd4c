"""Several model inputs as packed rows per example, and the attributions back in their shape.

A Keras model may take a list or a dict of inputs. The engine draws noise for one flat row per
example, so the floating-point inputs of an example are flattened and concatenated, in the
structure's order (list order, or the dict's keys sorted by name), into a row of
``D = sum of the float inputs' sizes``; noise of input ``k`` is scaled by its own ``epsilon``.
Integer inputs (e.g. token ids) are never perturbed: they travel beside the float rows as int64
rows of their own, exactly, whatever their size. Attributions come back with the structure of the
inputs; an integer input has no gradient and gets zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.core import checks

__all__ = ["Packing", "for_model", "is_structured", "join_rows", "pack", "unpack_rows"]


@dataclasses.dataclass(frozen=True)
class Packing:
    """How a structure of inputs is packed into rows ``[B, D]``.

    Attributes:
        keys: Positions (a list of inputs) or names (a dict), in packing order.
        shapes: Shape of one example of each input.
        integer: Whether each input is integer (not perturbed, zero attribution).
        model_dtypes: The dtype each input is given to the model in.
        float_dtypes: The floating dtype of each input's attributions.
    """

    keys: tuple[Any, ...]
    shapes: tuple[tuple[int, ...], ...]
    integer: tuple[bool, ...]
    model_dtypes: tuple[str, ...]
    float_dtypes: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        """Elements of one example of each input."""
        return [int(np.prod(s, dtype=np.int64)) for s in self.shapes]

    @property
    def float_sizes(self) -> list[int]:
        """Elements of one example of each float input (the float rows' parts)."""
        return [n for n, i in zip(self.sizes, self.integer, strict=True) if not i]

    @property
    def int_size(self) -> int:
        """Elements of one example of all integer inputs (the int64 rows' width)."""
        return sum(n for n, i in zip(self.sizes, self.integer, strict=True) if i)

    @property
    def float_keys(self) -> list[Any]:
        return [k for k, i in zip(self.keys, self.integer, strict=True) if not i]

    @property
    def is_dict(self) -> bool:
        return isinstance(self.keys[0], str)

    @property
    def is_single(self) -> bool:
        """Whether the model takes one (integer) input itself, not a list or dict of them:
        token ids alone, with the noise and the attribution at a layer (key ``None``)."""
        return self.keys[0] is None

    def parts(self) -> tuple[tuple[Any, tuple[int, ...], str], ...]:
        """The engine's ``CoreSpec.parts``."""
        return tuple(zip(self.keys, self.shapes, self.model_dtypes, strict=True))

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Float rows ``[B, D]`` as one array ``[B, *shape]`` per float input (in order)."""
        shapes = [s for s, i in zip(self.shapes, self.integer, strict=True) if not i]
        pieces = np.split(flat, np.cumsum(self.float_sizes)[:-1], axis=1)
        return [p.reshape(flat.shape[0], *s) for p, s in zip(pieces, shapes, strict=True)]

    def pieces(self, flat: Any, batch: Any, dtype: Any = None) -> list:
        """Float rows ``[B, D]`` as one piece per input, in the inputs' order: its rows as
        ``[B, *shape]``, or zeros ``[B, *shape]`` (of ``dtype``, default the rows') for an
        integer input. The unpacking rule, for NumPy arrays (a call's results) and for tensors
        (inside the export's graph)."""
        graph = tf.is_tensor(flat)
        sizes = list(self.float_sizes)
        if not sizes:
            parts = iter(())
        elif graph:
            parts = iter(tf.split(flat, sizes, axis=1))
        else:
            parts = iter(np.split(flat, np.cumsum(sizes)[:-1], axis=1))
        reshape, zeros = (tf.reshape, tf.zeros) if graph else (np.reshape, np.zeros)
        dtype = flat.dtype if dtype is None else dtype
        return [zeros([batch, *shape], dtype) if integer else reshape(next(parts), [batch, *shape])
                for shape, integer in zip(self.shapes, self.integer, strict=True)]

    def unpack(self, flat: np.ndarray, as_tensor: bool = False) -> Any:
        """Attributions of the float rows ``[B, D]`` in the inputs' structure (zeros for
        integer inputs)."""
        out = []
        for piece, dtype in zip(self.pieces(flat, flat.shape[0]), self.float_dtypes,
                                strict=True):
            piece = piece.astype(dtype, copy=False)
            out.append(tf.convert_to_tensor(piece) if as_tensor else piece)
        if self.is_dict:
            return dict(zip(self.keys, out, strict=True))
        return out[0] if self.is_single else out


def unpack_rows(
    rows: tf.Tensor, ints: tf.Tensor, parts: tuple[tuple[Any, tuple[int, ...], str], ...]
) -> Any:
    """Model inputs from float rows ``[n, D]`` and int64 rows ``[n, I]``: the inverse of
    :func:`pack`.

    Args:
        rows: Packed float rows (the float inputs, in order).
        ints: Packed int64 rows (the integer inputs, in order; width 0 when there are none).
        parts: ``(key, shape, dtype)`` per input (:meth:`Packing.parts`).

    Returns:
        A list of tensors (int keys), a dict (str keys) or one tensor (the key ``None``: a
        model whose only input is integer), as the model takes them.
    """
    integer = [tf.as_dtype(dtype).is_integer for _, _, dtype in parts]
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape, _ in parts]
    f_sizes = [n for n, i in zip(sizes, integer, strict=True) if not i]
    f_pieces = iter(tf.split(rows, f_sizes, axis=1) if f_sizes else [])
    i_sizes = [n for n, i in zip(sizes, integer, strict=True) if i]
    i_pieces = iter(tf.split(ints, i_sizes, axis=1) if i_sizes else [])
    out = []
    for (_, shape, dtype), is_int in zip(parts, integer, strict=True):
        piece = next(i_pieces) if is_int else next(f_pieces)
        out.append(tf.cast(tf.reshape(piece, [-1, *shape]), tf.as_dtype(dtype)))
    if isinstance(parts[0][0], str):
        return {key: v for (key, _, _), v in zip(parts, out, strict=True)}
    return out[0] if parts[0][0] is None else out


def is_structured(inputs: Any, model: Any) -> bool:
    """Whether ``inputs`` is a structure of several model inputs rather than one array."""
    if isinstance(inputs, dict):
        return True
    if isinstance(inputs, list | tuple):
        model_inputs = getattr(model, "inputs", None)
        if model_inputs is not None:
            try:
                return len(model_inputs) > 1
            except TypeError:
                return False
        return isinstance(inputs, tuple)  # a subclassed model: a tuple means several inputs
    return False


def _array(value: Any, where: str) -> tuple[np.ndarray, bool]:
    is_tensor = isinstance(value, tf.Tensor | tf.Variable)
    try:
        arr = value.numpy() if is_tensor else np.asarray(value)
    except Exception:
        raise TypeError(
            f"Argument `inputs`{where} must be an array or tensor of shape [batch, ...]. "
            f"Received: a value of type {type(value).__name__}"
        ) from None
    if arr.dtype.kind not in "iuf" or arr.ndim < 1:
        raise TypeError(
            f"Argument `inputs`{where} must be a numeric array [batch, ...]. Received: dtype "
            f"{arr.dtype}, shape {arr.shape}"
        )
    return arr, is_tensor


def for_model(model: Any) -> Packing:
    """The packing of a functional model's own inputs (shapes and dtypes from ``model.input``).

    Raises:
        ValueError: If an input's shape is not fully known.
    """
    structure = model.input
    if isinstance(structure, dict):
        keys = tuple(sorted(structure))
        tensors = [structure[k] for k in keys]
    else:
        tensors = list(structure) if isinstance(structure, list | tuple) else [structure]
        keys = tuple(range(len(tensors)))
    shapes, integer, model_dtypes = [], [], []
    for key, t in zip(keys, tensors, strict=True):
        shape = tuple(t.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"Input {key!r} of the model has shape {tuple(t.shape)}: every dimension but the "
                "batch must be known to pack several inputs."
            )
        dtype = tf.as_dtype(t.dtype)
        shapes.append(tuple(int(d) for d in shape))
        integer.append(dtype.is_integer)
        model_dtypes.append(dtype.name if dtype.is_integer else "float32")
    return Packing(
        keys=keys,
        shapes=tuple(shapes),
        integer=tuple(integer),
        model_dtypes=tuple(model_dtypes),
        float_dtypes=("float32",) * len(keys),
    )


def _keys_values(inputs: Any) -> tuple[tuple, list]:
    """The packing order of a list/tuple or dict of inputs: ``(keys, values)``, not empty."""
    if isinstance(inputs, dict):
        if not all(isinstance(k, str) for k in inputs):
            raise TypeError(
                f"Argument `inputs` as a dict needs str keys (the model's input names). "
                f"Received keys {list(inputs)}"
            )
        keys = tuple(sorted(inputs))  # the same packing whatever order the dict was built in
        values = [inputs[k] for k in keys]
    else:
        keys, values = tuple(range(len(inputs))), list(inputs)
    if not values:
        raise ValueError("Argument `inputs` is an empty structure; pass one array per input.")
    return keys, values


def _flat_rows(key: Any, arr: np.ndarray, b: int, is_int: bool) -> np.ndarray:
    """One input as rows ``[b, size]``, checked (uint64 fits int64; floats are finite)."""
    flat = arr.reshape(b, -1)
    where = "inputs" if key is None else f"inputs[{key!r}]"
    if is_int and arr.dtype == np.uint64 and flat.size and flat.max() >= 2**63:
        raise ValueError(
            f"Argument `{where}` holds uint64 values up to {flat.max()}; integer "
            "inputs travel as int64, so they must be below 2**63."
        )
    if not is_int:
        checks.check_finite(where, flat)
    return flat


def pack(
    inputs: Any, compute: Any = None, *, need_float: bool = True, single: bool = False
) -> tuple[np.ndarray, np.ndarray, Packing, bool]:
    """Packs a list or dict of inputs ``[B, ...]`` into float rows ``[B, D]`` and int64 rows
    ``[B, I]``.

    Args:
        inputs: A list/tuple or dict of arrays or tensors with the same batch size.
        compute: The rows' dtype (the model's compute dtype); None: float32, or float64 if
            any input is float64.
        need_float: Refuse inputs that are all integer (nothing to put noise on). False when
            the noise goes on a layer's output (``noise_at``): the float rows are then
            ``[B, 0]``.
        single: ``inputs`` is the model's one input itself (integer token ids, the noise at a
            layer): packed under the key ``None``, and unpacked as one tensor.

    Returns:
        ``(rows, ints, packing, is_tensor)``: float rows in the compute dtype, int64 rows of
        the integer inputs, the :class:`Packing`, and whether the inputs were tensors.

    Raises:
        TypeError: For non-numeric inputs.
        ValueError: For an empty structure, different batch sizes or non-finite values.
    """
    keys, values = ((None,), [inputs]) if single else _keys_values(inputs)
    arrays, tensors = [], []
    for key, value in zip(keys, values, strict=True):
        arr, is_tensor = _array(value, "" if single else f"[{key!r}]")
        arrays.append(arr)
        tensors.append(is_tensor)
    batch = {a.shape[0] for a in arrays}
    if len(batch) != 1:
        raise ValueError(
            "Every input must have the same batch size. Received batch sizes "
            f"{ {k: a.shape[0] for k, a in zip(keys, arrays, strict=True)} }"
        )
    floats = [a.dtype for a in arrays if a.dtype.kind == "f"]
    if not floats and need_float:
        raise TypeError(
            "Argument `inputs` has no floating-point input to put noise on (all are integer, "
            "e.g. token ids). Explain the embedded inputs instead."
        )
    if compute is None:
        compute = np.float64 if np.dtype(np.float64) in floats else np.float32
    compute = np.dtype(compute)
    b = batch.pop()
    columns, integer, model_dtypes, float_dtypes = [], [], [], []
    for key, arr in zip(keys, arrays, strict=True):
        is_int = arr.dtype.kind in "iu"
        flat = _flat_rows(key, arr, b, is_int)
        columns.append(flat.astype(np.int64 if is_int else compute))
        integer.append(is_int)
        model_dtypes.append(arr.dtype.name if is_int else compute.name)
        float_dtypes.append(compute.name if is_int else arr.dtype.name)
    packing = Packing(
        keys=keys,
        shapes=tuple(tuple(int(d) for d in a.shape[1:]) for a in arrays),
        integer=tuple(integer),
        model_dtypes=tuple(model_dtypes),
        float_dtypes=tuple(float_dtypes),
    )
    float_rows, int_rows = join_rows(columns, integer, b, compute)
    return float_rows, int_rows, packing, all(tensors)


def join_rows(columns: list, integer: list[bool], batch: Any, float_dtype: Any) -> tuple:
    """The packing rule: each input's flat rows ``[B, size]`` (in the packing's order), the
    float ones side by side as ``[B, D]`` and the integer ones as int64 ``[B, I]`` (empty
    ``[B, 0]`` when there are none). NumPy arrays for a call, tensors inside the export's graph.
    """
    graph = any(tf.is_tensor(c) for c in columns)
    concat = (lambda xs: tf.concat(xs, axis=1)) if graph else (
        lambda xs: np.concatenate(xs, axis=1))
    zeros = tf.zeros if graph else np.zeros
    floats = [c for c, i in zip(columns, integer, strict=True) if not i]
    ints = [c for c, i in zip(columns, integer, strict=True) if i]
    return (concat(floats) if floats else zeros((batch, 0), float_dtype),
            concat(ints) if ints else zeros((batch, 0), np.int64))
