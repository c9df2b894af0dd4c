"""Explaining what a causal language model generates, token by token.

:func:`explain_generation` takes an explainer of a language model (any Keras model that maps
token ids, and optionally a padding mask, to logits ``[B, T, V]``: a KerasHub ``CausalLM``, a
backbone with a head, a plain Keras transformer), a prompt, and a continuation that is given
(teacher forcing) or generated greedily. For each generated token ``j`` (at position ``P + j``)
its score, the log-probability (or logit) of that token given everything before it, is
explained with the explainer's settings: the noise goes on the token embedding (the explainer's
``explain_at``/``noise_at``), the smoothed attribution of the score is taken with respect to the
embedding of every position, averaged over the noise first, then reduced per token with the
explainer's ``reduce`` (``"norm"`` when it has none). The result is a frozen
:class:`GenerationExplanation`: a matrix ``[B, P + G, G]`` of context tokens x generated tokens.

How it runs: the noise of an example is drawn once from its seed and shared by all its generated
tokens (common random numbers), so a row of the matrix is comparable across generated tokens.
With ``attribution="gradient"`` or ``"input_x_gradient"`` one forward pass of the noisy copies
serves up to :data:`GENERATED_PER_PASS` generated tokens, one gradient each; other base methods
take one row per (example, generated token) in one call of the same compiled function.
``batch_size`` bounds memory as everywhere else.

Example:

>>> import keras, numpy as np
>>> import tfmollify as tfm
>>> L = keras.layers
>>> ids = keras.Input((None,), dtype="int32")
>>> h = L.Embedding(50, 8, name="emb")(ids)
>>> h = L.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True)
>>> lm = keras.Model(ids, L.Dense(50)(h))
>>> explainer = tfm.SmoothGrad(lm, explain_at="emb", num_samples=8, seed=0)
>>> result = tfm.explain_generation(explainer, np.array([[3, 1, 4, 1]]), max_new_tokens=3)
>>> result.attributions.shape, result.generated_ids.shape
((1, 7, 3), (1, 3))
"""

from __future__ import annotations

import dataclasses
import html
import json
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import layers as layers_lib
from tfmollify.core import aggregation, sampling

__all__ = ["GENERATED_PER_PASS", "SCORES", "GenerationExplanation", "explain_generation"]

#: What is explained for each generated token.
SCORES = ("log_prob", "logit")
#: With a gradient-based method, this many generated tokens of an example share one forward
#: pass of the noisy copies (one gradient each); bounds the gradients held at once.
GENERATED_PER_PASS = 8
#: A model whose scores move by more than this fraction of the largest attribution when a later
#: position's embedding changes is not causal (checked on every result).
CAUSAL_LEAK = 1e-3

_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class GenerationExplanation:
    """The smoothed attributions of a generation (:func:`explain_generation`).

    Attributes:
        token_ids: The prompt, left-padded to ``P``, then the continuation: int64 ``[B, P + G]``
            (0 where nothing is).
        context_mask: The real tokens of ``token_ids`` (bool ``[B, P + G]``).
        prompt_length: ``P``.
        generated_mask: Which generated tokens are real (bool ``[B, G]``): an example's tokens
            after its end token, or after a shorter continuation, are not.
        attributions: ``[B, P + G, G]``: column ``j`` is the attribution of generated token
            ``j``'s score to every position. Zero at position ``P + j`` and after it (the
            model is causal: checked), at padding, and in the columns of unreal tokens.
        stderr: ``[B, P + G, G]``: per token, the root-sum-square of the standard errors of
            its unreduced attributions. For ``reduce="norm"`` an upper bound on the standard
            error of the norm; for ``"sum"`` the standard error when the features' errors are
            uncorrelated.
        probabilities: The probability the model gives each generated token given everything
            before it, without noise (``[B, G]``; 0 where not real).
        tokens: The token strings ``[B][P + G]`` ("" at padding), or None without a tokenizer.
        whole: With ``whole=True``, the attribution of the continuation's summed
            log-probability (or logit) ``[B, P + G]``, else None.
        whole_stderr: Its standard errors, as ``stderr``.
        settings: The settings that produced it (mode, kernel, samples, reduce, score ...).
    """

    token_ids: np.ndarray
    context_mask: np.ndarray
    prompt_length: int
    generated_mask: np.ndarray
    attributions: np.ndarray
    stderr: np.ndarray
    probabilities: np.ndarray
    tokens: list[list[str]] | None = None
    whole: np.ndarray | None = None
    whole_stderr: np.ndarray | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def generated_ids(self) -> np.ndarray:
        """The continuation's ids ``[B, G]``."""
        return self.token_ids[:, self.prompt_length:]

    def to_json(self) -> str:
        """The result as JSON text (:meth:`from_json` reads it back exactly)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = {"dtype": value.dtype.name, "shape": list(value.shape),
                         "data": value.ravel().tolist()}
            out[field.name] = value
        return json.dumps({"tfmollify_generation": 1, **out})

    @classmethod
    def from_json(cls, text: str) -> GenerationExplanation:
        """A result written by :meth:`to_json`.

        Raises:
            ValueError: For text that is not such a result.
        """
        try:
            raw = json.loads(text)
            if raw.pop("tfmollify_generation", None) != 1:
                raise KeyError("tfmollify_generation")
            values = {}
            for field in dataclasses.fields(cls):
                value = raw[field.name]
                if isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}:
                    value = np.asarray(value["data"], value["dtype"]).reshape(value["shape"])
                values[field.name] = value
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                "Argument `text` is not a GenerationExplanation written by to_json "
                f"({type(exc).__name__}: {exc})."
            ) from None
        return cls(**values)

    def labels(self) -> list[list[str]]:
        """Token strings for display: the tokens, or the ids as text."""
        if self.tokens is not None:
            return self.tokens
        return [[str(int(t)) if m else "" for t, m in zip(row, mask, strict=True)]
                for row, mask in zip(self.token_ids, self.context_mask, strict=True)]

    def to_html(self, example: int = 0) -> str:
        """A self-contained HTML page (no network needed): a heatmap of the generated tokens
        (rows) x the context tokens (columns) of one example, with the token strings."""
        return _html(self, example)


def explain_generation(
    explainer: Any,
    prompt: Any,
    *,
    continuation_ids: Any = None,
    max_new_tokens: int | None = None,
    end_token_id: int | None = None,
    score: str = "log_prob",
    tokenizer: Any = None,
    whole: bool = False,
) -> GenerationExplanation:
    """Smoothed attributions of every generated token of a causal language model.

    Args:
        explainer: A :class:`tfmollify.Explainer` of the language model (token ids, and an
            optional ``padding_mask``, to logits ``[B, T, V]``) with its ``explain_at`` (or
            ``noise_at`` and ``attribute_at``) on the token embedding. Its mode, kernel,
            samples, aggregation, base method, ``batch_size``, ``seed`` and ``reduce`` apply.
        prompt: Token ids ``[B, P]``, a list of id sequences of any lengths (left-padded to
            the longest), or the model's dict input (``token_ids``, ``padding_mask``: the
            real tokens are those the mask marks, wherever they sit).
        continuation_ids: The continuation to explain ``[B, G]`` (or sequences of any
            lengths): teacher forcing. None: generated greedily.
        max_new_tokens: How many tokens to generate at most (required without
            ``continuation_ids``).
        end_token_id: A generation stops after this token (it is explained; later columns are
            zero and ``generated_mask`` is False there).
        score: ``"log_prob"`` (the token's log-probability given everything before it) or
            ``"logit"``.
        tokenizer: For the token strings: a KerasHub tokenizer (``id_to_token``), a
            vocabulary list, or a callable id -> str.
        whole: Also explain the continuation's summed score (``GenerationExplanation.whole``).

    Returns:
        A :class:`GenerationExplanation`.

    Raises:
        TypeError: For an explainer that is not one, or a tokenizer of an unknown kind.
        ValueError: For a prompt or continuation that is not token ids, a model that does not
            return logits ``[B, T, V]`` or is not causal, prompts of different lengths for a
            model without a padding mask, a ``reduce="sum"`` result that is float rounding
            (:func:`tfmollify.core.aggregation.check_sum_not_cancelled`), or settings the
            explainer refuses.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> ids = keras.Input((None,), dtype="int32")
    >>> emb = keras.layers.Embedding(20, 4, name="emb")(ids)
    >>> lm = keras.Model(ids, keras.layers.Dense(20)(emb))     # each token predicts the next
    >>> e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=4, seed=0)
    >>> r = tfm.explain_generation(e, [[1, 2, 3]], continuation_ids=[[4, 5]])
    >>> r.attributions.shape, bool(r.attributions[0, 3:, 0].any())   # causal: nothing later
    ((1, 5, 2), False)
    """
    from tfmollify.explainers.explainer import Explainer

    if not isinstance(explainer, Explainer):
        raise TypeError(
            "Argument `explainer` must be a tfmollify Explainer of the language model "
            f"(e.g. tfm.SmoothGrad(lm, explain_at='token_embedding')). Received: {explainer!r}"
        )
    if score not in SCORES:
        raise ValueError(f"Argument `score` must be one of {SCORES}. Received: score={score!r}")
    lm = explainer.model
    takes_mask = _takes_padding_mask(lm)
    ids, mask = _prompt(prompt, takes_mask)
    prompt_len = ids.shape[1]
    gen_ids, gen_mask = _continuation(lm, ids, mask, continuation_ids, max_new_tokens,
                                      end_token_id, takes_mask)
    full_ids = np.concatenate([ids, gen_ids], axis=1)
    full_mask = np.concatenate([mask, gen_mask], axis=1)
    logits = _logits(lm, full_ids, full_mask, takes_mask)
    probs = _probabilities(logits, full_ids, prompt_len, gen_mask)
    seed = explainer.seed
    if seed is None:
        seed = int(np.random.default_rng().integers(2**62))
    example_seeds = sampling.example_seeds(seed, ids.shape[0])  # one noise per example
    how = explainer.reduce or "norm"
    units = []
    for rows in _Rows.plan(full_ids, full_mask, prompt_len, gen_mask,
                           _shares_forward(explainer), whole):
        derived = _derived(explainer, takes_mask, score, rows.width)
        result = derived.explain_full(rows.inputs(takes_mask), _all_scores if rows.width else 0,
                                      seeds=example_seeds[rows.example])
        units += rows.units(result, how)
    parts = _Rows.assemble(units, (*full_ids.shape, gen_mask.shape[1]), prompt_len, whole)
    return GenerationExplanation(
        full_ids, full_mask, prompt_len, gen_mask, parts[0], parts[1], probs,
        _token_strings(tokenizer, full_ids, full_mask), parts[2], parts[3],
        _settings(explainer, how, score),
    )


def _settings(explainer: Any, how: str, score: str) -> dict[str, Any]:
    """What produced a result (JSON-friendly)."""
    method = explainer.attribution
    return {"mode": str(explainer.mode), "kernel": explainer.kernel.name,
            "num_samples": explainer.num_samples,
            "num_weight_samples": explainer.num_weight_samples,
            "aggregation": explainer.aggregation,
            "attribution": method if isinstance(method, str)
            else getattr(method, "__name__", "custom"),
            "reduce": how, "score": score, "seed": explainer.seed}


# -- the scores ------------------------------------------------------------------------------
def _scorer_class() -> type:
    import keras

    class GenerationScores(keras.Model):
        """The scores of chosen generated tokens: ``{"token_ids", ["padding_mask"],
        "score_at"} -> [n, 1]``, where ``score_at [n, T]`` holds at position ``t`` the token
        whose score at ``t`` (given positions ``< t``) is summed in, or -1; with ``width``
        ``K``: ``[n, K]``, each scored token's score on its own (the first ``K`` of a row)."""

        def __init__(self, lm: Any, takes_mask: bool, score: str, width: int | None) -> None:
            super().__init__(name=f"{lm.name}_generation_scores")
            self.lm, self.takes_mask, self.score, self.width = lm, takes_mask, score, width
            self.built = True  # every variable is the language model's

        def call(self, inputs: dict, training: bool = False) -> tf.Tensor:
            ids = inputs["token_ids"]
            lm_in = ({"token_ids": ids, "padding_mask": inputs["padding_mask"]}
                     if self.takes_mask else ids)
            logits = self.lm(lm_in, training=False)
            at = tf.cast(inputs["score_at"][:, 1:], tf.int32)  # aligned with logits[:, :-1]
            where = tf.where(at >= 0)  # [K, 2]: (row, position) of each scored token
            scored = tf.cast(tf.gather_nd(logits, where), tf.float32)  # [K, V]
            picked = tf.gather(scored, tf.gather_nd(at, where), batch_dims=1)
            if self.score == "log_prob":
                picked -= tf.reduce_logsumexp(scored, axis=-1)
            n = tf.shape(ids)[0]
            if self.width is None:  # one score per row: the sum of its scored tokens
                return tf.math.unsorted_segment_sum(picked, where[:, 0], n)[:, None]
            # one score per scored token, in the order of their positions: [n, width]
            rank = tf.gather_nd(tf.cumsum(tf.cast(at >= 0, tf.int64), axis=1) - 1, where)
            return tf.scatter_nd(tf.stack([where[:, 0], rank], axis=1), picked,
                                 tf.stack([tf.cast(n, tf.int64), self.width]))

    return GenerationScores


def _all_scores(scores: tf.Tensor) -> tf.Tensor:
    """The callable target of a shared forward pass: every score of the row."""
    return scores


def _shares_forward(explainer: Any) -> bool:
    """Whether the tokens of an example can share one forward pass (one gradient each)."""
    return isinstance(explainer.attribution, str) and explainer.attribution in (
        "gradient", "input_x_gradient")


def _derived(explainer: Any, takes_mask: bool, score: str, width: int | None) -> Any:
    """The explainer of the scores: the user's settings on a scoring model around the same
    language model (cached per explainer: its compiled functions are reused)."""
    from tfmollify.explainers.explainer import Explainer

    cache = _DERIVED.setdefault(explainer, {})
    key = (takes_mask, score, width)
    if key in cache:
        return cache[key]
    lm = explainer.model
    config = explainer.get_config()
    config.update(mode=explainer.mode, reduce=None)
    if config.get("output") is not None:
        raise ValueError(
            "explain_generation explains a language model with one output (logits [B, T, V]); "
            f"the explainer selects output={config['output']!r}. Build it without `output`."
        )
    for name in ("explain_at", "noise_at", "attribute_at"):
        if config.get(name) is not None:
            config[name] = _layer_place(lm, getattr(explainer, name), name)
    if config.get("weight_layers") is not None:
        config["weight_layers"] = [
            entry if not isinstance(entry, str) else layers_lib.find_layer(lm, entry,
                                                                            "weight_layers")
            for entry in explainer.weight_layers
        ]
    if config.get("explain_at") is None and config.get("attribute_at") is None:
        raise ValueError(
            "Argument `explainer` must put its noise and attribution on the token embedding: "
            "build it with explain_at= one of "
            f"{layers_lib.embedding_paths(lm) or ['<the embedding layer>']}."
        )
    scorer = _scorer_class()(lm, takes_mask, score, width)
    cache[key] = Explainer(scorer, **config)
    return cache[key]


def _layer_place(lm: Any, at: Any, name: str) -> Any:
    """A place setting of the user's explainer as one that holds inside the scoring model:
    the layer object (``"name:0"`` kept as written; another call of a layer is refused: the
    attribution goes to the embedding's lookup, one vector per position)."""
    bare, call = layers_lib.parse_call(at)
    if call:
        raise ValueError(
            f"Argument `explainer`: {name}={at!r} names call {call} of layer {bare!r}; "
            "explain_generation attributes to the token embedding's lookup (its first call, "
            f"the one that takes the token ids). Use {name}={bare!r}."
        )
    if call is not None:
        return at
    return bare if not isinstance(bare, str) else layers_lib.find_layer(lm, bare, name)


# -- inputs ----------------------------------------------------------------------------------
def _continuation(lm: Any, ids: np.ndarray, mask: np.ndarray, given: Any, max_new: Any,
                  end: Any, takes_mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """The continuation ``(ids [B, G], real [B, G])``: given (teacher forcing) or generated
    greedily, cut after each example's end token."""
    if given is None:
        gen = _generate(lm, ids, mask, max_new, end, takes_mask)
    else:
        gen = _sequences(given, "continuation_ids", right=True)
        if gen[0].shape[0] != ids.shape[0]:
            raise ValueError(
                f"Argument `continuation_ids` has {gen[0].shape[0]} rows; the prompt has "
                f"{ids.shape[0]} examples. Pass one continuation per prompt."
            )
    return _stop_at_end(*gen, end)


def _takes_padding_mask(lm: Any) -> bool:
    structure = getattr(lm, "input", None) if hasattr(lm, "inputs") else None
    try:
        return isinstance(structure, dict) and "padding_mask" in structure
    except Exception:
        return False


def _sequences(value: Any, name: str, right: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token ids as ``(ids int64 [B, L], mask bool [B, L])``: an array as it is, or sequences
    of any lengths padded with 0 (on the left for prompts, on the right for continuations)."""
    if isinstance(value, np.ndarray | tf.Tensor) or (
        isinstance(value, Sequence) and value and not isinstance(value[0], Sequence | np.ndarray)
    ):
        arr = np.asarray(value)
        seqs = None
    else:
        try:
            seqs = [np.asarray(s).reshape(-1) for s in value]
        except Exception:
            seqs = None
        arr = None
    if seqs is not None and len({len(s) for s in seqs}) == 1:
        arr, seqs = np.stack(seqs), None
    if seqs is not None:
        if not seqs or any(s.dtype.kind not in "iu" for s in seqs if s.size):
            raise ValueError(f"Argument `{name}` must hold integer token ids. Received: {value!r}")
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), np.int64)
        mask = np.zeros((len(seqs), width), bool)
        for i, s in enumerate(seqs):
            span = slice(0, len(s)) if right else slice(width - len(s), width)
            ids[i, span], mask[i, span] = s, True
        return ids, mask
    if arr is None or arr.dtype.kind not in "iu" or arr.ndim != 2 or 0 in arr.shape[:1]:
        raise ValueError(
            f"Argument `{name}` must be integer token ids [B, length] (or a list of id "
            f"sequences). Received: {getattr(arr, 'dtype', type(value).__name__)} of shape "
            f"{getattr(arr, 'shape', None)}"
        )
    return arr.astype(np.int64), np.ones(arr.shape, bool)


def _prompt(prompt: Any, takes_mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """The prompt left-padded: ``(ids [B, P], mask [B, P])``."""
    if isinstance(prompt, dict):
        if "token_ids" not in prompt:
            raise ValueError(
                "Argument `prompt` as a dict needs 'token_ids' (and optionally "
                f"'padding_mask'). Received keys {sorted(prompt)}"
            )
        ids, _ = _sequences(prompt["token_ids"], "prompt['token_ids']", right=False)
        mask = np.asarray(prompt.get("padding_mask", np.ones(ids.shape))).astype(bool)
        if mask.shape != ids.shape:
            raise ValueError(
                f"Argument `prompt['padding_mask']` has shape {mask.shape}; the ids have "
                f"{ids.shape}."
            )
        ids, mask = _sequences([row[m] for row, m in zip(ids, mask, strict=True)], "prompt",
                               right=False)
    else:
        ids, mask = _sequences(prompt, "prompt", right=False)
    if not mask.all(axis=1).all() and not takes_mask:
        raise ValueError(
            "Argument `prompt` holds prompts of different lengths, but the model takes no "
            "padding mask: the padding would be read as tokens. Explain prompts of one "
            "length per call, or a model with a 'padding_mask' input."
        )
    if not mask.any(axis=1).all():
        raise ValueError("Argument `prompt` has an empty prompt; each needs one token at least.")
    return ids, mask


def _model_inputs(ids: np.ndarray, mask: np.ndarray, takes_mask: bool) -> Any:
    ids = tf.constant(ids, tf.int32)
    if takes_mask:
        return {"token_ids": ids, "padding_mask": tf.constant(mask, tf.int32)}
    return ids


def _forward(lm: Any, takes_mask: bool) -> Any:
    """The language model's logits as one compiled function ``(ids, mask) -> logits`` (kept
    per model: greedy steps and the probabilities reuse it)."""
    cache = _FORWARD.setdefault(lm, {})
    if takes_mask not in cache:
        cache[takes_mask] = tf.function(
            lambda i, m: lm(_model_inputs_graph(i, m, takes_mask), training=False),
            autograph=False, reduce_retracing=True,
        )
    return cache[takes_mask]


def _logits(lm: Any, ids: np.ndarray, mask: np.ndarray, takes_mask: bool) -> np.ndarray:
    try:
        out = _forward(lm, takes_mask)(tf.constant(ids, tf.int32), tf.constant(mask, tf.int32))
    except Exception:  # the model's own error, with its own message
        out = lm(_model_inputs(ids, mask, takes_mask), training=False)
    shape = tuple(getattr(out, "shape", ()))
    if len(shape) != 3 or shape[:2] != ids.shape:
        raise ValueError(
            "explain_generation needs a language model that maps token ids [B, T] to logits "
            f"[B, T, V]. On ids of shape {ids.shape} the model returned "
            f"{type(out).__name__} of shape {shape}."
        )
    return np.asarray(out, np.float32)


def _generate(lm: Any, ids: np.ndarray, mask: np.ndarray, max_new: Any, end: Any,
              takes_mask: bool) -> tuple[np.ndarray, np.ndarray]:
    """Greedy decoding, ``max_new`` steps of the model over a fixed-length buffer (one
    compiled function; positions after the current one are masked or ignored by a causal
    model), stopping when every example has produced ``end``."""
    if isinstance(max_new, bool) or not isinstance(max_new, int | np.integer) or max_new < 1:
        raise ValueError(
            "Argument `max_new_tokens` must be a positive int when no `continuation_ids` "
            f"are given. Received: max_new_tokens={max_new!r}"
        )
    own = _keras_hub_greedy(lm, ids, mask, int(max_new), end)
    if own is not None:
        return own
    b, p = ids.shape
    buf = np.concatenate([ids, np.zeros((b, max_new), np.int64)], axis=1)
    buf_mask = np.concatenate([mask, np.zeros((b, max_new), bool)], axis=1)
    step = _forward(lm, takes_mask)
    done = np.zeros(b, bool)
    for t in range(max_new):
        logits = np.asarray(step(tf.constant(buf, tf.int32), tf.constant(buf_mask, tf.int32)))
        nxt = logits[:, p + t - 1, :].argmax(axis=-1)
        buf[:, p + t] = np.where(done, 0, nxt)
        buf_mask[:, p + t] = ~done
        done |= (nxt == end) if end is not None else False
        if done.all():
            break
    g = int(buf_mask[:, p:].sum(axis=1).max())
    return buf[:, p:p + g], buf_mask[:, p:p + g]


def _keras_hub_greedy(lm: Any, ids: np.ndarray, mask: np.ndarray, max_new: int,
                      end: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """KerasHub's own ``generate`` (with its cache), where it decodes greedily: a ``CausalLM``
    whose sampler is greedy, prompts of one length (KerasHub pads on the right, so prompts of
    other lengths would see other positions than the explanation's left padding). None
    elsewhere: the plain loop decodes."""
    sampler = getattr(lm, "sampler", None)
    if type(sampler).__name__ != "GreedySampler" or not callable(getattr(lm, "generate", None)):
        return None
    if getattr(lm, "preprocessor", None) is not None or not mask.all():
        return None
    b, p = ids.shape
    token_ids = np.concatenate([ids, np.zeros((b, max_new), np.int64)], axis=1)
    padding = np.concatenate([np.ones((b, p), bool), np.zeros((b, max_new), bool)], axis=1)
    try:
        out = lm.generate({"token_ids": token_ids.astype(np.int32), "padding_mask": padding},
                          stop_token_ids=None if end is None else (int(end),))
    except Exception:  # any trouble: the plain loop
        return None
    gen = np.asarray(out["token_ids"])[:, p:p + max_new].astype(np.int64)
    gen_mask = np.asarray(out["padding_mask"])[:, p:p + max_new].astype(bool)
    if end is not None:  # KerasHub stops after the end token but may mask it: keep it
        hit = np.argmax(gen == end, axis=1)
        has = (gen == end).any(axis=1)
        for i in np.flatnonzero(has):
            gen_mask[i, :hit[i] + 1] = True
            gen_mask[i, hit[i] + 1:] = False
    return np.where(gen_mask, gen, 0), gen_mask


def _model_inputs_graph(ids: tf.Tensor, mask: tf.Tensor, takes_mask: bool) -> Any:
    return {"token_ids": ids, "padding_mask": mask} if takes_mask else ids


def _stop_at_end(ids: np.ndarray, mask: np.ndarray, end: Any) -> tuple[np.ndarray, np.ndarray]:
    """Tokens after an example's first end token are not real (the end token is)."""
    mask = mask.copy()
    if end is not None:
        hit = (ids == end) & mask
        after = np.cumsum(hit, axis=1) - hit > 0
        mask &= ~after
    if not mask.any():
        raise ValueError("There is no generated token to explain: the continuation is empty.")
    g = int(mask.sum(axis=1).max())  # G: the longest continuation
    return np.where(mask, ids, 0)[:, :g], mask[:, :g]


def _probabilities(logits: np.ndarray, ids: np.ndarray, p: int, gen_mask: np.ndarray):
    z = logits[:, p - 1:-1, :].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(logp, ids[:, p:, None], axis=-1)[..., 0]
    return np.where(gen_mask, np.exp(picked), 0.0).astype(np.float32)


def _token_strings(tokenizer: Any, ids: np.ndarray, mask: np.ndarray) -> Any:
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "id_to_token"):
        name = tokenizer.id_to_token
    elif isinstance(tokenizer, Sequence) and not isinstance(tokenizer, str):
        name = tokenizer.__getitem__
    elif callable(tokenizer):
        name = tokenizer
    else:
        raise TypeError(
            "Argument `tokenizer` must be a KerasHub tokenizer, a vocabulary list or a "
            f"callable id -> str. Received: {type(tokenizer).__name__}"
        )
    return [[str(name(int(t))) if m else "" for t, m in zip(row, rm, strict=True)]
            for row, rm in zip(ids, mask, strict=True)]


# -- rows of the explanation call -------------------------------------------------------------
class _Rows:
    """The rows of one explanation call: each is an example and the generated tokens it scores
    (``columns``; ``(-1,)``: the continuation's sum), one score per column with ``width``,
    else one score per row."""

    def __init__(self, ids, mask, p: int, gen_mask, rows: list[tuple[int, tuple]],
                 width: int | None) -> None:
        self.ids, self.mask, self.p, self.gen_mask = ids, mask, p, gen_mask
        self.example = np.array([i for i, _ in rows], np.int64)
        self.columns = [cols for _, cols in rows]
        self.width = width

    @classmethod
    def plan(cls, ids, mask, p, gen_mask, shared: bool, whole: bool) -> list[_Rows]:
        """The calls: the tokens of an example ``GENERATED_PER_PASS`` to a row when the forward
        pass is shared (a gradient-based method), else one row per token; then the sums."""
        b, g = gen_mask.shape
        real = [list(np.flatnonzero(gen_mask[i])) for i in range(b)]
        calls = []
        if shared:
            k = min(GENERATED_PER_PASS, g)
            rows = [(i, tuple(cols[s:s + k])) for i, cols in enumerate(real)
                    for s in range(0, len(cols), k)]
            calls.append(cls(ids, mask, p, gen_mask, rows, k if k > 1 else None))
        else:
            rows = [(i, (j,)) for i, cols in enumerate(real) for j in cols]
            calls.append(cls(ids, mask, p, gen_mask, rows, None))
        if whole:
            calls.append(cls(ids, mask, p, gen_mask, [(i, (-1,)) for i in range(b)], None))
        return calls

    def inputs(self, takes_mask: bool) -> dict[str, np.ndarray]:
        n, t = len(self.example), self.ids.shape[1]
        at = -np.ones((n, t), np.int32)
        for r, (i, cols) in enumerate(zip(self.example, self.columns, strict=True)):
            scored = np.flatnonzero(self.gen_mask[i]) if cols == (-1,) else cols
            for c in scored:
                at[r, self.p + c] = self.ids[i, self.p + c]
        out = {"token_ids": self.ids[self.example].astype(np.int32), "score_at": at}
        if takes_mask:
            out["padding_mask"] = self.mask[self.example].astype(np.int32)
        return out

    def units(self, result: Any, how: str) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
        """``(example, column, values [T], stderr [T])`` of every scored token (column -1:
        the sum), reduced per position, causality checked, zero at padding."""
        values = np.asarray(result.attributions, np.float64)
        errors = np.asarray(result.stderr, np.float64)
        if values.ndim == 3:  # one score per row
            values, errors = values[:, None], errors[:, None]
        t = self.ids.shape[1]
        if values.ndim != 4 or values.shape[2] != t:
            raise ValueError(
                "explain_generation needs the explainer's attribution at the token embedding, "
                f"one vector per position [T, D]; it gave shape {values.shape[2:]} per score."
            )
        reduced = aggregation.reduce_last(values, how)  # [n, K, T]
        spread = np.sqrt(np.square(errors).sum(axis=-1))
        out = []
        for r, (i, cols) in enumerate(zip(self.example, self.columns, strict=True)):
            for q, j in enumerate(cols):
                v = np.where(self.mask[i], reduced[r, q], 0.0)
                e = np.where(self.mask[i], spread[r, q], 0.0)
                out.append((int(i), int(j), v, e))
        return out

    @staticmethod
    def assemble(units: list, shape: tuple[int, int, int], p: int, whole: bool) -> tuple:
        """``(attributions, stderr, whole, whole_stderr)`` from the units, after the causality
        check: nothing may be attributed to a token's own position or later ones (float
        rounding there is set to zero, more raises)."""
        top = max((float(np.abs(v).max()) for _, _, v, _ in units), default=0.0)
        b, t, g = shape
        attributions, stderr = np.zeros((b, t, g), np.float32), np.zeros((b, t, g), np.float32)
        sums = (np.zeros((b, t), np.float32), np.zeros((b, t), np.float32)) if whole else None
        for i, j, v, e in units:
            if j < 0:
                sums[0][i], sums[1][i] = v, e
                continue
            if top > 0 and float(np.abs(v[p + j:]).max()) > CAUSAL_LEAK * top:
                raise ValueError(
                    "The model is not causal: the score of a generated token depends on its own "
                    "position or later ones (bidirectional attention, or no causal mask). "
                    "explain_generation explains causal language models."
                )
            v, e = v.copy(), e.copy()
            v[p + j:], e[p + j:] = 0.0, 0.0
            attributions[i, :, j], stderr[i, :, j] = v, e
        return attributions, stderr, *(sums or (None, None))


# -- the HTML view -----------------------------------------------------------------------------
def _html(result: GenerationExplanation, example: int) -> str:
    b = result.token_ids.shape[0]
    if not 0 <= example < b:
        raise ValueError(f"Argument `example` must be in [0, {b}). Received: {example!r}")
    labels = result.labels()[example]
    keep = np.flatnonzero(result.context_mask[example])
    gen = np.flatnonzero(result.generated_mask[example])
    a = result.attributions[example]
    top = float(np.abs(a).max()) or 1.0
    esc = html.escape
    head = "".join(f"<th class='c'>{esc(labels[k])}</th>" for k in keep)
    rows = []
    for j in gen:
        cells = []
        for k in keep:
            v = float(a[k, j])
            alpha = min(1.0, abs(v) / top)
            rgb = "214,39,40" if v >= 0 else "31,119,180"
            cells.append(f"<td style='background:rgba({rgb},{alpha:.3f})' "
                         f"title='{v:.4g} ± {float(result.stderr[example, k, j]):.2g}'></td>")
        prob = float(result.probabilities[example, j])
        rows.append(f"<tr><th>{esc(labels[result.prompt_length + j])} "
                    f"<small>p={prob:.3f}</small></th>{''.join(cells)}</tr>")
    s = result.settings
    caption = esc(", ".join(f"{k}={v}" for k, v in s.items()))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>tfmollify generation"
        "</title><style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td{width:22px;height:22px;border:1px solid #eee}th{font-weight:normal;"
        "text-align:right;padding-right:6px;white-space:nowrap}th.c{writing-mode:"
        "vertical-rl;transform:rotate(180deg);text-align:left;padding:4px 0}"
        "</style></head><body><h3>Attribution of each generated token (rows) to the tokens "
        "before it (columns)</h3><p>red: raises the score, blue: lowers it (with "
        "reduce='norm' every value is a magnitude); hover for value ± standard error.</p>"
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table><p><small>{caption}"
        "</small></p></body></html>"
    )

