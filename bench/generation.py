"""Benchmark: ``tfmollify.explain_generation`` on a small KerasHub GPT-2 (issue 28).

The case: a 2-layer GPT-2 from a config (``GPT2Backbone(vocabulary_size=1000, num_layers=2,
num_heads=2, hidden_dim=64, intermediate_dim=128, max_sequence_length=64)`` in a
``GPT2CausalLM(preprocessor=None)``, random weights, nothing downloaded), one prompt of
``P = 32`` tokens, a given continuation of ``G = 8`` tokens (teacher forcing, so G is exactly
8), ``tfm.SmoothGrad(lm, explain_at="token_embedding", num_samples=16, seed=0)``, batch 1.

Methods, all in ONE process and timed INTERLEAVED (within each repeat every method runs once,
the starting method rotating from repeat to repeat, so machine noise hits them alike):

* ``explain_generation``: ``tfm.explain_generation(e, prompt, continuation_ids=cont)``; one
  call explains all G tokens: N = 16 noisy rows of length P + G = 40 in one forward pass, one
  gradient per generated token (``GENERATED_PER_PASS`` = 8 tokens share a pass).
* ``fwd_bwd``: one forward and backward pass of the same model, plain TensorFlow, ONE row of
  length P + G: a ``tf.function`` computing the gradient of one generated token's log-prob
  with respect to the token embedding output ``h`` (the model is cut after
  ``backbone.token_embedding``: ``h`` is watched, then the backbone's position embedding, add,
  transformer layers, final layer norm and the tied reverse embedding are called on it, the
  same layers ``GPT2CausalLM`` calls; checked equal to the model's own logits). It takes a
  few milliseconds, so each of its timed samples is 10 calls back to back, divided by 10
  (its ``first`` is the warm-up of all 10).
* ``single_target``: ``e.explain({"token_ids", "padding_mask"}, targets=lambda s: s[:, -1, 7])``
  with the same explainer on one sequence of length P + G (one explanation of one score:
  N = 16 rows).
* ``batched_baseline``: what one would write by hand: one ``tf.function`` that draws 16 noisy
  copies of ``h`` (Gaussian, the explainer's eq. 30 scale ``r = max(h) - mean(h)``), runs ONE
  forward pass over the 16 rows under a persistent ``GradientTape``, then takes G = 8
  gradients from that tape (one per generated token's log-prob, summed over the 16 rows),
  averages each over the noise and reduces it to a per-token L2 norm: the ``[P + G, G]``
  matrix of ``explain_generation``.

Every method gets one warm-up call first (tracing / compilation and one run: reported
separately as ``first``, and excluded from the medians), then ``--repeats`` timed calls; each
call includes bringing its result to NumPy. Reported per method: median and IQR; per ratio:
the ratio of the medians and the median (and IQR) of the per-repeat paired ratios. Targets
(issue 28): ``explain_generation <= 1.5 (G + 1) x single_target`` and ``<= 16 x fwd_bwd``.

``--profile`` (on by default; ``--no-profile`` skips it): where explain_generation's time goes.
``--repeats`` more calls with its steps wrapped in timers (module and class attributes of
tfmollify, put back afterwards; nothing in the library is changed): the prompt and the
probabilities (a compiled call of the language model), and the ``explain_full`` call of its
derived explainer, split into ``prepare`` (with the pass that reads the embedding output for
eq. 30's scale, stopped at the embedding) and ``run`` (the compiled core). Alternated with
``rows_floor``: G x N = 128 noisy rows, hand-written, in ONE forward and backward pass (the
least work of the one-row-per-token layout that base methods other than the gradient's take;
not a part of the call).

Runs on CPU or GPU unchanged (no device pinning). About 1-2 minutes on 2 CPU cores at
``--repeats 5``.

Example::

    python bench/generation.py --repeats 5 --json /tmp/gen_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # must come first: sets the TF logging environment
import keras
import numpy as np
import tensorflow as tf

P, G, N, VOCAB = 32, 8, 16, 1000
TARGET_SINGLE = 1.5 * (G + 1)  # explain_generation / single_target at most this
TARGET_FWD_BWD = 16.0  # explain_generation / fwd_bwd at most this
FWD_BWD_CALLS = 10  # fwd_bwd (a few ms) is timed over this many calls back to back, divided


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the report)."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The model and the hand-written references
# --------------------------------------------------------------------------------------------


def build_lm(seed: int = 0) -> Any:
    """The issue's 2-layer GPT-2 with random weights (no download)."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=128,
        max_sequence_length=64,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def logits_from_embedding(lm: Any, h: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The rest of ``GPT2CausalLM`` after its token embedding: logits ``[B, T, V]`` from the
    token embedding output ``h [B, T, D]`` (the layers the backbone calls, in its order)."""
    bb = lm.backbone
    x = bb.embeddings_add((h, bb.position_embedding(h)))
    x = bb.embeddings_dropout(x, training=False)
    for layer in bb.transformer_layers:
        x = layer(x, decoder_padding_mask=mask, training=False)
    x = bb.layer_norm(x)
    return bb.token_embedding(x, reverse=True)


def make_fwd_bwd(lm: Any) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """One forward and backward pass: ``(ids [1, T], mask [1, T], token [], at []) -> dscore/dh``
    with score the log-prob of ``token`` at position ``at`` given the positions before it."""

    @tf.function(autograph=False)
    def fwd_bwd(ids: tf.Tensor, mask: tf.Tensor, at: tf.Tensor) -> tf.Tensor:
        h = lm.backbone.token_embedding(ids)
        with tf.GradientTape() as tape:
            tape.watch(h)
            logits = logits_from_embedding(lm, h, mask)
            logp = tf.nn.log_softmax(tf.cast(logits[0, at - 1], tf.float32))
            score = logp[ids[0, at]]
        return tape.gradient(score, h)

    return fwd_bwd


def make_batched_baseline(lm: Any, num_samples: int, eps_per_r: float,
                          prompt_len: int, gen_len: int) -> Callable[..., tf.Tensor]:
    """The hand-written SmoothGrad of every generated token: ``(ids [1, T], mask [1, T],
    seed [2]) -> [T, G]``, per-token L2 norms of the noise-averaged gradients of each
    generated token's log-prob. One forward pass over ``num_samples`` noisy copies of the
    embedding output, then ``gen_len`` gradients from one persistent tape."""

    @tf.function(autograph=False)
    def baseline(ids: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        h = lm.backbone.token_embedding(ids)  # [1, T, D]
        eps = (tf.reduce_max(h) - tf.reduce_mean(h)) * eps_per_r  # eq. 30, as the explainer
        z = tf.random.stateless_normal((num_samples, *h.shape[1:]), seed, dtype=h.dtype)
        hn = h + eps * z  # [N, T, D]
        masks = tf.repeat(mask, num_samples, axis=0)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(hn)
            logits = logits_from_embedding(lm, hn, masks)
            logp = tf.nn.log_softmax(tf.cast(logits[:, prompt_len - 1:-1], tf.float32))
            gen = ids[0, prompt_len:]
            picked = tf.gather(logp, gen, axis=2, batch_dims=0)  # [N, G, G]
            scores = [tf.reduce_sum(picked[:, j, j]) for j in range(gen_len)]
        cols = []
        for j in range(gen_len):
            g = tape.gradient(scores[j], hn)  # [N, T, D]: rows are independent
            cols.append(tf.norm(tf.reduce_mean(g, axis=0), axis=-1))  # [T]
        del tape
        return tf.stack(cols, axis=1)  # [T, G]

    return baseline


def make_rows_floor(lm: Any, num_samples: int, eps_per_r: float, prompt_len: int,
                    gen_len: int) -> Callable[..., tf.Tensor]:
    """The least work of explain_generation's layout: its ``G x N`` rows (one per generated
    token and noise draw, each scoring its own token) in ONE forward and backward pass, hand
    written: ``(ids [1, T], mask [1, T], seed [2]) -> [T, G]``."""
    rows = gen_len * num_samples

    @tf.function(autograph=False)
    def rows_floor(ids: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        h = lm.backbone.token_embedding(ids)
        eps = (tf.reduce_max(h) - tf.reduce_mean(h)) * eps_per_r
        z = tf.random.stateless_normal((rows, *h.shape[1:]), seed, dtype=h.dtype)
        hn = h + eps * z  # row r = j * N + n: token j, draw n
        j = tf.range(rows) // num_samples
        with tf.GradientTape() as tape:
            tape.watch(hn)
            logits = logits_from_embedding(lm, hn, tf.repeat(mask, rows, axis=0))
            logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
            at = prompt_len + j  # the position of row r's token
            pos = tf.gather(logp, at - 1, axis=1, batch_dims=1)  # [rows, V]
            score = tf.reduce_sum(tf.gather(pos, tf.gather(ids[0], at), axis=1, batch_dims=1))
        g = tf.reshape(tape.gradient(score, hn), (gen_len, num_samples, *h.shape[1:]))
        return tf.transpose(tf.norm(tf.reduce_mean(g, axis=1), axis=-1))  # [T, G]

    return rows_floor


#: The steps of one explain_generation call that the profile times (owner, attribute, label,
#: nested in). Wrapped for the profile only (class or module attributes, put back after).
def _profile_points() -> list[tuple[Any, str, str, str | None]]:
    from tfmollify.adapter import cores, model_view, runner
    from tfmollify.explainers import explainer, generation

    return [
        (generation, "_prompt", "prompt", None),
        (generation, "_logits", "logits (compiled lm call)", None),
        (generation, "_probabilities", "probabilities", None),
        (generation, "_derived", "derived explainer (cached)", None),
        (generation._Rows, "inputs", "rows", None),
        (explainer.Explainer, "explain_full", "explain_full", None),
        (runner.Runner, "prepare", "prepare", "explain_full"),
        (cores.Cores, "probe", "probe", "prepare"),
        (runner.Runner, "shapes", "shapes", "prepare"),
        (model_view.ModelView, "activation", "activation (eq. 30 eps)", "prepare"),
        (cores.Cores, "function", "core lookup", "prepare"),
        (runner.Runner, "run", "run (compiled core)", "explain_full"),
        (runner.Runner, "assemble", "assemble", "explain_full"),
        (generation._Rows, "assemble", "assemble + causal check", None),
    ]


def profile_generation(call: Callable[[], Any], floor: Callable[[], Any],
                       repeats: int) -> dict[str, Any]:
    """Times the steps inside ``repeats`` explain_generation calls (wrapping them, see
    :func:`_profile_points`), interleaved with the hand-written ``G x N``-row floor."""
    # a step that a later tfmollify renames or removes is left out (and reported as 0)
    points = [pt for pt in _profile_points()
              if (pt[1] in pt[0].__dict__ if isinstance(pt[0], type) else hasattr(*pt[:2]))]
    spent: dict[str, float] = {}

    def timed(fn: Callable, label: str) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        return wrapper

    saved = [(owner, name, owner.__dict__[name] if isinstance(owner, type)
              else getattr(owner, name)) for owner, name, _, _ in points]
    per_call: dict[str, list[float]] = {label: [] for _, _, label, _ in points}
    per_call["total"], floor_times = [], []
    try:
        for (owner, name, label, _), (_, _, orig) in zip(points, saved, strict=True):
            setattr(owner, name, timed(orig, label))
        call()  # warm (everything compiled already; once more with the wrappers)
        floor()
        for r in range(repeats):
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for which in order:
                t0 = time.perf_counter()
                if which == 0:
                    spent.clear()
                    call()
                    per_call["total"].append(time.perf_counter() - t0)
                    for label in per_call:
                        if label != "total":
                            per_call[label].append(spent.get(label, 0.0))
                else:
                    floor()
                    floor_times.append(time.perf_counter() - t0)
            log(f"    profile repeat {r + 1}/{repeats} done")
    finally:
        for owner, name, orig in saved:
            setattr(owner, name, orig)
    parts = {label: harness.summarize(ts) for label, ts in per_call.items()}
    nested = {label: parent for _, _, label, parent in points}
    for _, _, label, _ in _profile_points():
        parts.setdefault(label, {"median_s": 0.0})
    top = sum(parts[label]["median_s"] for label, parent in nested.items() if parent is None)
    return {"parts": parts, "nested_in": nested,
            "other_s": parts["total"]["median_s"] - top,
            "rows_floor": {**harness.summarize(floor_times), "times": floor_times},
            "total_times": per_call["total"]}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                     calls: dict[str, int] | None = None) -> dict[str, dict]:
    """One warm-up (first) call each, then ``repeats`` rounds, every method once per round,
    the starting method rotating. ``calls[name]``: that method's function makes this many
    calls back to back, and one call's time is their time divided by it."""
    calls = calls or {}
    names = list(fns)
    out: dict[str, dict[str, Any]] = {n: {"first_s": None, "times": []} for n in names}
    for name in names:
        t0 = time.perf_counter()
        fns[name]()
        out[name]["first_s"] = time.perf_counter() - t0  # with calls[name]: all of them
        log(f"    {name}: first call {harness.fmt_s(out[name]['first_s'])} s")
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[name]()
            out[name]["times"].append((time.perf_counter() - t0) / calls.get(name, 1))
        log(f"    repeat {r + 1}/{repeats} done")
    for name in names:
        out[name].update(harness.summarize(out[name]["times"]))
    return out


def ratio(timings: dict[str, dict], num: str, den: str) -> dict[str, float]:
    """Ratio of the medians and the median / IQR of the per-repeat paired ratios."""
    a, b = timings[num]["times"], timings[den]["times"]
    paired = sorted(x / y for x, y in zip(a, b, strict=True))
    q1, _, q3 = (statistics.quantiles(paired, n=4, method="inclusive") if len(paired) > 1
                 else (paired[0],) * 3)
    return {"of_medians": timings[num]["median_s"] / timings[den]["median_s"],
            "paired_median": statistics.median(paired), "paired_q1": q1, "paired_q3": q3}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per method (>= 1)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the parts of one explain_generation call")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tfm, why = harness.import_tfmollify()
    if tfm is None or not hasattr(tfm, "explain_generation"):
        log(f"generation.py: {why or 'tfmollify has no explain_generation'}")
        return 2

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    log(f"device: {device}; building GPT-2 (2 layers, hidden 64, vocabulary {VOCAB})")
    lm = build_lm()
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, VOCAB, (1, P)).astype(np.int32)
    cont = rng.integers(1, VOCAB, (1, G)).astype(np.int32)
    full = np.concatenate([prompt, cont], axis=1)  # [1, P + G]
    ids = tf.constant(full, tf.int32)
    mask = tf.ones_like(ids)
    inputs = {"token_ids": ids, "padding_mask": mask}

    # The cut model is the model.
    want = np.asarray(lm(inputs, training=False))
    got = np.asarray(logits_from_embedding(lm, lm.backbone.token_embedding(ids), mask))
    cut_err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    if cut_err > 1e-5:
        raise AssertionError(f"the cut model differs from GPT2CausalLM: {cut_err:.2e}")

    e = tfm.SmoothGrad(lm, explain_at="token_embedding", num_samples=N, seed=0)
    eps_per_r = float(e.kernel.epsilon(1.0, e.alpha))
    fwd_bwd = make_fwd_bwd(lm)
    baseline = make_batched_baseline(lm, N, eps_per_r, P, G)
    at = tf.constant(P + G - 1)
    seed = tf.constant([0, 0], tf.int32)
    target = lambda s: s[:, -1, 7]  # noqa: E731

    fns: dict[str, Callable[[], Any]] = {
        "explain_generation": lambda: tfm.explain_generation(e, prompt, continuation_ids=cont),
        "fwd_bwd": lambda: [fwd_bwd(ids, mask, at).numpy() for _ in range(FWD_BWD_CALLS)],
        "single_target": lambda: np.asarray(e.explain(inputs, targets=target)),
        "batched_baseline": lambda: baseline(ids, mask, seed).numpy(),
    }
    log(f"timing {list(fns)} ({args.repeats} repeats, interleaved)")
    timings = time_interleaved(fns, args.repeats, {"fwd_bwd": FWD_BWD_CALLS})

    # The hand-written baseline computes what explain_generation does (other noise draws).
    r = tfm.explain_generation(e, prompt, continuation_ids=cont)
    mine = np.asarray(baseline(ids, mask, seed))
    agree = harness.correlation(r.attributions[:1], mine[None])

    ratios = {
        "explain_generation/single_target": ratio(timings, "explain_generation",
                                                  "single_target"),
        "explain_generation/fwd_bwd": ratio(timings, "explain_generation", "fwd_bwd"),
        "explain_generation/batched_baseline": ratio(timings, "explain_generation",
                                                     "batched_baseline"),
        "single_target/fwd_bwd": ratio(timings, "single_target", "fwd_bwd"),
        "batched_baseline/fwd_bwd": ratio(timings, "batched_baseline", "fwd_bwd"),
    }
    eg = timings["explain_generation"]["median_s"]
    targets = {
        "vs_single_target": {
            "limit": TARGET_SINGLE,
            "ratio": ratios["explain_generation/single_target"]["of_medians"],
        },
        "vs_fwd_bwd": {
            "limit": TARGET_FWD_BWD,
            "ratio": ratios["explain_generation/fwd_bwd"]["of_medians"],
        },
    }
    for t in targets.values():
        t["passed"] = t["ratio"] <= t["limit"]

    profile = None
    if args.profile:
        rows_floor = make_rows_floor(lm, N, eps_per_r, P, G)
        profile = profile_generation(
            lambda: tfm.explain_generation(e, prompt, continuation_ids=cont),
            lambda: rows_floor(ids, mask, seed).numpy(), args.repeats)
        profile["explain_full/single_target"] = (profile["parts"]["explain_full"]["median_s"]
                                                 / timings["single_target"]["median_s"])

    report(timings, ratios, targets, profile, device, args.repeats, cut_err, agree)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "case": {"model": "keras_hub GPT2CausalLM, 2 layers, hidden 64, heads 2, "
                              f"intermediate 128, vocabulary {VOCAB}, random weights",
                     "P": P, "G": G, "N": N, "batch": 1,
                     "explainer": repr(e), "explain_at": "token_embedding", "seed": 0},
            "device": device, "repeats": args.repeats,
            "timings": timings, "ratios": ratios, "targets": targets,
            "seconds_per_generated_token": eg / G,
            "cut_model_max_rel_err": cut_err, "baseline_vs_explain_generation_corr": agree,
            "profile": profile, "versions": harness.versions(),
        }
        args.json.write_text(json.dumps(data, indent=2))
        log(f"wrote {args.json}")
    return 0


def report(timings, ratios, targets, profile, device, repeats, cut_err, agree) -> None:
    """The Markdown report on stdout."""
    what = {
        "explain_generation": f"all G={G} tokens: N={N} rows of length {P + G}, one forward, "
                              f"{G} gradients",
        "fwd_bwd": f"one row of length {P + G}: d log p(token) / d h (tf.function; "
                   f"per call, timed over {FWD_BWD_CALLS})",
        "single_target": f"e.explain(..., targets=s[:, -1, 7]): N = {N} rows",
        "batched_baseline": f"hand-written: 1 forward of {N} rows, {G} grads, persistent tape",
    }
    eg = timings["explain_generation"]["median_s"]
    rows = []
    for name, t in timings.items():
        rows.append([name, harness.fmt_s(t["first_s"]), f"{t['median_s'] * 1e3:.1f}",
                     f"{t['q1_s'] * 1e3:.1f}-{t['q3_s'] * 1e3:.1f}",
                     f"{eg / t['median_s']:.2f}x", what[name]])
    print(f"## explain_generation, GPT-2 2 layers (P={P}, G={G}, N={N}, batch 1, {device})\n")
    print(f"Median of {repeats} warm calls each, interleaved; first call (trace + one run) "
          "apart, not in the medians.\n")
    print(harness.markdown_table(
        ["method", "first (s)", "median (ms)", "IQR (ms)", "explain_generation / it", "what"],
        rows))
    print(f"\nSeconds per generated token (explain_generation / G): {eg / G * 1e3:.1f} ms\n")
    rrows = [[k, f"{v['of_medians']:.2f}", f"{v['paired_median']:.2f}",
              f"{v['paired_q1']:.2f}-{v['paired_q3']:.2f}"] for k, v in ratios.items()]
    print(harness.markdown_table(["ratio", "of medians", "paired median", "paired IQR"], rrows))
    print()
    trows = [[f"explain_generation <= {t['limit']:g} x {k.removeprefix('vs_')}",
              f"{t['ratio']:.2f}x", "PASS" if t["passed"] else
              f"FAIL ({t['ratio'] / t['limit']:.2f}x the limit)"]
             for k, t in targets.items()]
    print(harness.markdown_table(["target (issue 28)", "measured", "result"], trows))
    print(f"\nChecks: cut model vs GPT2CausalLM max rel. error {cut_err:.1e}; hand-written "
          f"baseline vs explain_generation ([P + G, G] matrix, other noise) correlation "
          f"{agree:.3f}.")
    if profile:
        parts, total = profile["parts"], profile["parts"]["total"]["median_s"]
        print(f"\nWhere explain_generation's time goes (its steps timed inside {repeats} more "
              "calls; medians; nested steps indented, within their parent):\n")

        def depth(label: str) -> int:
            parent = profile["nested_in"].get(label)
            return 0 if parent is None else 1 + depth(parent)

        prow = [["explain_generation (whole call)", f"{total * 1e3:.1f}", "100%"]]
        for label in profile["nested_in"]:
            m = parts[label]["median_s"]
            prow.append(["&nbsp;&nbsp;" * 2 * depth(label) + label, f"{m * 1e3:.1f}",
                         f"{m / total:.0%}"])
        prow.append(["other (by difference)", f"{profile['other_s'] * 1e3:.1f}",
                     f"{profile['other_s'] / total:.0%}"])
        fl = profile["rows_floor"]["median_s"]
        prow.append([f"hand-written floor of the same {G * N} rows (one pass; not a part)",
                     f"{fl * 1e3:.1f}", f"{fl / total:.0%}"])
        print(harness.markdown_table(["step", "median (ms)", "of the call"], prow))
        ef = parts["explain_full"]["median_s"]
        print(f"\nexplain_full / single_target = {profile['explain_full/single_target']:.2f}x; "
              f"explain_full / its {G * N}-row floor = {ef / fl:.2f}x.")

if __name__ == "__main__":
    sys.exit(main())
