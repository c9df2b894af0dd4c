"""Explaining generations where the answer is known: a key-value lookup language model.

A tiny causal Keras language model (token embedding + learned position embedding, two pre-LN
causal self-attention blocks, a final LayerNorm, ``Dense(vocab)``) is trained on synthetic
multi-query associative recall: ``k1 v1 k2 v2 k3 v3 k4 v4 SEP ka va kb vb ...``, every answer
being the value paired with the query key before it. Then, for held-out prompts
``k1 v1 k2 v2 k3 v3 k4 v4 SEP kq``, the value of ``kq`` is explained with
:func:`tfmollify.explain_generation` (``continuation_ids`` = the correct value, which the model
also predicts greedily), and the position with the largest attribution in the prompt is compared
with the known source: the matching value (``value@1``), the matching key or value (``pair@1``),
or the query (``query@1``); ``pair@1 w/o q`` looks only at the pairs and SEP (the query left
out). Every combination of ``reduce`` x base attribution is run with SmoothGrad (eq. 30's
``epsilon``) and without smoothing (one sample at ``epsilon = 1e-6``), then the best setting at
``epsilon`` = 0.1, 0.3, 1 and 3 times the embedding's per-token RMS, and a three-token
generation (``SEP ka`` -> ``va kb vb``) whose third column has a known source too.

"Top" is the largest signed attribution (with ``reduce="norm"`` all are magnitudes); the JSON
also holds the hit rates by absolute value. Times are one ``explain_generation`` call over all
examples after a warm-up call on 4 of them (the compile is not in them), on this machine's CPU.

    python bench/generation_toy.py [--examples 200] [--samples 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import tfmollify as tfm

L = keras.layers
KEYS, VALUES, PAIRS, QUERIES = 16, 16, 4, 4
SEP, KEY0 = 1, 2
VAL0 = KEY0 + KEYS
VOCAB = VAL0 + VALUES
P = 2 * PAIRS + 2  # the explained prompt: the pairs, SEP, the query
D, HEADS, LAYERS = 64, 4, 2
REDUCES = ("norm", "sum")
ATTRIBUTIONS = ("gradient", "input_x_gradient", "integrated_gradients")
EPS_FACTORS = (0.1, 0.3, 1.0, 3.0)


def make(n: int, rng: np.random.Generator, queries: int = QUERIES):
    """Sequences ``k1 v1 .. k4 v4 SEP (q a){queries}`` and the queried pair of each query."""
    keys = np.stack([rng.permutation(KEYS)[:PAIRS] for _ in range(n)])
    vals = np.stack([rng.permutation(VALUES)[:PAIRS] for _ in range(n)])
    which = rng.integers(0, PAIRS, size=(n, queries))
    seq = np.zeros((n, 2 * PAIRS + 1 + 2 * queries), np.int32)
    seq[:, 0:2 * PAIRS:2] = KEY0 + keys
    seq[:, 1:2 * PAIRS:2] = VAL0 + vals
    seq[:, 2 * PAIRS] = SEP
    seq[:, 2 * PAIRS + 1::2] = KEY0 + np.take_along_axis(keys, which, 1)
    seq[:, 2 * PAIRS + 2::2] = VAL0 + np.take_along_axis(vals, which, 1)
    return seq, which


class PositionEmbedding(L.Layer):
    """Adds a learned vector per position."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.positions = self.add_weight(
            shape=(self.length, input_shape[-1]), name="positions",
            initializer=keras.initializers.RandomNormal(stddev=0.02))

    def call(self, x):
        return x + keras.ops.expand_dims(self.positions[: keras.ops.shape(x)[1]], 0)


def build_lm() -> keras.Model:
    """Pre-LN (GPT-2 style): every path from the embedding to the logits passes a LayerNorm."""
    ids = keras.Input((None,), dtype="int32")
    x = PositionEmbedding(32, name="pos")(L.Embedding(VOCAB, D, name="emb")(ids))
    for i in range(LAYERS):
        h = L.LayerNormalization(name=f"ln{i}")(x)
        x = x + L.MultiHeadAttention(HEADS, D // HEADS, name=f"att{i}")(
            h, h, use_causal_mask=True)
    return keras.Model(ids, L.Dense(VOCAB, name="head")(L.LayerNormalization(name="lnf")(x)))


def train(train_n: int, epochs: int) -> tuple[keras.Model, dict]:
    keras.utils.set_random_seed(0)
    seq, _ = make(train_n, np.random.default_rng(0))
    x, y = seq[:, :-1], seq[:, 1:]
    weight = np.zeros(y.shape, np.float32)
    weight[:, 2 * PAIRS:] = 1.0  # the queries (one of the prompt's keys) and their answers
    lm = build_lm()
    lm.compile(keras.optimizers.Adam(1e-3),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    lm.fit(x, y, sample_weight=weight, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    test, _ = make(2000, np.random.default_rng(2))
    pred = np.asarray(lm.predict(test[:, :-1], batch_size=500, verbose=0)).argmax(-1)
    acc = float((pred[:, 2 * PAIRS + 1::2] == test[:, 2 * PAIRS + 2::2]).mean())
    return lm, {"train_sequences": train_n, "epochs": epochs, "train_seconds": seconds,
                "heldout_answer_accuracy": acc}


def hits(attr: np.ndarray, value_pos, key_pos, query_pos, upto: int) -> dict:
    """Top-1 hit rates of ``attr [n, >=upto]`` over positions ``< upto``."""
    out = {}
    for name, a in (("", attr), ("abs_", np.abs(attr))):
        a = a[:, :upto]
        top = a.argmax(axis=1)
        no_q = np.where(np.arange(upto) == query_pos[:, None], -np.inf, a).argmax(axis=1)
        out[f"{name}value@1"] = float(np.mean(top == value_pos))
        out[f"{name}pair@1"] = float(np.mean((top == value_pos) | (top == key_pos)))
        out[f"{name}query@1"] = float(np.mean(top == query_pos))
        out[f"{name}pair@1_wo_q"] = float(np.mean((no_q == value_pos) | (no_q == key_pos)))
    return out


def timed(explainer, prompts, **kw):
    """``explain_generation`` after a warm-up call on 4 prompts; (result, seconds)."""
    warm = {k: (v[:4] if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    tfm.explain_generation(explainer, prompts[:4], **warm)
    start = time.perf_counter()
    r = tfm.explain_generation(explainer, prompts, **kw)
    return r, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--train", type=int, default=20000, help="training sequences")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--json", default=None)
    args = p.parse_args()

    total = time.perf_counter()
    lm, training = train(args.train, args.epochs)
    seq, which = make(args.examples, np.random.default_rng(1), queries=1)
    prompts, answers = seq[:, :P].astype(np.int64), seq[:, P:P + 1].astype(np.int64)
    value_pos, key_pos = 2 * which[:, 0] + 1, 2 * which[:, 0]
    query_pos = np.full(args.examples, P - 1)
    logits = np.asarray(lm(prompts), np.float64)[:, -1]
    greedy = logits.argmax(-1)
    training["eval_greedy_accuracy"] = float(np.mean(greedy == answers[:, 0]))
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob = np.take_along_axis(prob / prob.sum(-1, keepdims=True), answers, 1)[:, 0]
    training["eval_answer_probability_median"] = float(np.median(prob))
    training["eval_answer_probability_min"] = float(prob.min())

    emb = np.asarray(lm.get_layer("emb")(prompts), np.float64)  # [n, P, D]
    rms = float(np.sqrt(np.mean(emb**2)))  # per token: sqrt(mean over D of e^2), pooled
    flat = emb.reshape(len(emb), -1)
    eq30 = (flat.max(1) - flat.mean(1)) / 1.6448536269514722  # gaussian, alpha = 0.9
    scale = {"embedding_rms": rms, "eq30_epsilon_mean": float(eq30.mean()),
             "eq30_epsilon_over_rms": float(eq30.mean() / rms)}

    rows = []

    def run(label, explainer, eps_text, factor=None, score="log_prob", **kw):
        row = {"setting": label, "mode": str(explainer.mode), "reduce": explainer.reduce,
               "attribution": explainer.attribution, "epsilon": eps_text,
               "epsilon_over_rms": factor, "score": score}
        kw["score"] = score
        try:
            r, secs = timed(explainer, prompts, continuation_ids=answers, **kw)
        except ValueError as exc:
            why = ("float rounding: the sum cancels" if "float rounding" in str(exc)
                   else str(exc)[:80])
            row.update(refused=f"ValueError ({why})", error=str(exc))
            rows.append(row)
            return None
        row.update(hits(r.attributions[:, :, 0], value_pos, key_pos, query_pos, P),
                   seconds=secs)
        rows.append(row)
        return r

    n = args.samples
    common = dict(explain_at="emb", seed=0)
    for reduce in REDUCES:
        for attribution in ATTRIBUTIONS:
            kw = dict(reduce=reduce, attribution=attribution, **common)
            run("no smoothing", tfm.SmoothGrad(lm, num_samples=1, epsilon=1e-6, **kw), "1e-6")
            run(f"SG N={n}", tfm.SmoothGrad(lm, num_samples=n, **kw), "eq. 30",
                scale["eq30_epsilon_over_rms"])
            if (reduce, attribution) == ("sum", "gradient"):
                continue  # refused above, at every epsilon
            for factor in EPS_FACTORS:
                e = tfm.SmoothGrad(lm, num_samples=n, epsilon=factor * rms, **kw)
                run(f"SG N={n}", e, f"{factor:g} x RMS", factor)
            run("no smoothing, logit", tfm.SmoothGrad(lm, num_samples=1, epsilon=1e-6, **kw),
                "1e-6", score="logit")
            run(f"SG N={n}, logit", tfm.SmoothGrad(lm, num_samples=n, **kw), "eq. 30",
                scale["eq30_epsilon_over_rms"], score="logit")

    ok = [r for r in rows if "refused" not in r and r["score"] == "log_prob"]
    best = max(ok, key=lambda r: (r["pair@1"], r["value@1"], -(r["epsilon_over_rms"] or 0)))
    kw = dict(reduce=best["reduce"], attribution=best["attribution"], **common)
    eps_best = 1e-6 if best["epsilon_over_rms"] is None else best["epsilon_over_rms"] * rms
    run(f"NG M={n}", tfm.NoiseGrad(lm, num_weight_samples=n, **kw), "-")
    run(f"FG M=4 N={n // 4}", tfm.FusionGrad(lm, num_weight_samples=4, num_samples=n // 4,
                                            epsilon=eps_best, **kw), best["epsilon"],
        best["epsilon_over_rms"])

    # three generated tokens: SEP ka -> va kb vb; column 2's source is the pair of kb (at P + 1)
    e = tfm.SmoothGrad(lm, num_samples=n, epsilon=eps_best, **kw)
    r3, secs3 = timed(e, prompts, max_new_tokens=3)
    gen = r3.generated_ids
    keys_in = prompts[:, 0:2 * PAIRS:2]
    asked = (keys_in == gen[:, 1:2]).argmax(1)
    valid = (keys_in == gen[:, 1:2]).any(1)
    vals_in = prompts[:, 1:2 * PAIRS:2]
    right = valid & (np.take_along_axis(vals_in, asked[:, None], 1)[:, 0] == gen[:, 2])
    three = {"seconds": secs3, "epsilon": best["epsilon"],
             "first_correct": float(np.mean(gen[:, 0] == answers[:, 0])),
             "second_is_a_prompt_key": float(valid.mean()),
             "third_is_its_value": float(right.mean())}
    col0 = hits(r3.attributions[:, :, 0], value_pos, key_pos, query_pos, P)
    three["column0_pair@1"] = col0["pair@1"]
    k = right.nonzero()[0]
    col2 = hits(r3.attributions[k, :, 2], 2 * asked[k] + 1, 2 * asked[k],
                np.full(len(k), P + 1), P + 2)
    three.update({f"column2_{name}": v for name, v in col2.items() if not name.startswith("abs")})

    out = {"bench": "generation_toy", "args": vars(args), "training": training, "scale": scale,
           "rows": rows, "best": {k: best[k] for k in ("reduce", "attribution", "epsilon")},
           "three_tokens": three, "total_seconds": time.perf_counter() - total,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "versions": {"keras": keras.__version__, "tfmollify": tfm.__version__}}
    print(report(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def report(out: dict) -> str:
    t, sc, n = out["training"], out["scale"], out["args"]["samples"]
    cell = lambda r: f"{r['pair@1']:.0%} ({r['value@1']:.0%})"  # noqa: E731
    lines = [
        f"Trained {t['epochs']} epochs on {t['train_sequences']} sequences in "
        f"{t['train_seconds']:.0f} s: held-out answer accuracy {t['heldout_answer_accuracy']:.1%}"
        f", greedy accuracy on the {out['args']['examples']} explained prompts "
        f"{t['eval_greedy_accuracy']:.1%} (probability of the answer: median "
        f"{t['eval_answer_probability_median']:.4f}, min {t['eval_answer_probability_min']:.3f}).",
        f"Token embedding RMS {sc['embedding_rms']:.3g}; eq. 30's epsilon "
        f"{sc['eq30_epsilon_mean']:.3g} on average ({sc['eq30_epsilon_over_rms']:.2f} x RMS).",
        "",
        "Top-1 hit rates, all settings (SmoothGrad N = samples; no smoothing: N = 1, epsilon "
        "1e-6):",
        "",
        "| setting | reduce | attribution | epsilon | score | value@1 | pair@1 | query@1 "
        "| pair@1 w/o q | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        head = (f"| {r['setting']} | {r['reduce']} | {r['attribution']} | {r['epsilon']} "
                f"| {r['score']} |")
        if "refused" in r:
            lines.append(f"{head} refused: {r['refused']} | | | | |")
        else:
            lines.append(f"{head} {r['value@1']:.0%} | {r['pair@1']:.0%} | {r['query@1']:.0%} "
                         f"| {r['pair@1_wo_q']:.0%} | {r['seconds']:.1f} |")
    eq30 = f"eq. 30 ({sc['eq30_epsilon_over_rms']:.1f} x)"
    cols = ["1e-6 (N = 1)"] + [f"{f:g} x RMS" for f in EPS_FACTORS] + [eq30]
    lines += ["", f"pair@1 (value@1) against epsilon, SmoothGrad N = {n}:", "",
              "| reduce | attribution | " + " | ".join(cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    sg = [r for r in out["rows"] if r["setting"] in ("no smoothing", f"SG N={n}")
          and r["score"] == "log_prob"]
    for reduce in REDUCES:
        for attribution in ATTRIBUTIONS:
            mine = [r for r in sg if (r["reduce"], r["attribution"]) == (reduce, attribution)]
            cells = []
            for eps in ["1e-6"] + [f"{f:g} x RMS" for f in EPS_FACTORS] + ["eq. 30"]:
                r = next((r for r in mine if r["epsilon"] == eps), None)
                cells.append("refused" if r is None or "refused" in r else cell(r))
            lines.append(f"| {reduce} | {attribution} | " + " | ".join(cells) + " |")
    th, b = out["three_tokens"], out["best"]
    lines += [
        "",
        f"Best: reduce={b['reduce']}, attribution={b['attribution']}, epsilon {b['epsilon']}.",
        f"Three generated tokens with it (`SEP ka` -> `va kb vb`, greedy, {th['seconds']:.1f} s):"
        f" first token correct {th['first_correct']:.0%}, second a key of the prompt "
        f"{th['second_is_a_prompt_key']:.0%}, third that key's value "
        f"{th['third_is_its_value']:.0%}; column 0 pair@1 {th['column0_pair@1']:.0%}; "
        f"column 2 (source: the pair of the generated key at P + 1) value@1 "
        f"{th['column2_value@1']:.0%}, pair@1 {th['column2_pair@1']:.0%}, the generated key "
        f"{th['column2_query@1']:.0%}, pair@1 without it {th['column2_pair@1_wo_q']:.0%}.",
        f"Total {out['total_seconds']:.0f} s.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
