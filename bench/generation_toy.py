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
out). Every combination of ``reduce`` x base attribution is run without smoothing (one sample
at ``epsilon = 1e-6``) and with SmoothGrad at ``epsilon`` = 0.1, 0.3, 1 and 3 times the token
embedding's per-token RMS and at eq. 30's default, with ``score="log_prob"`` and (unsmoothed and
eq. 30) ``"logit"``; beside each epsilon, how often the model still predicts the answer under
that noise. The best setting is also run with NoiseGrad and FusionGrad, and on a three-token
generation (``SEP ka`` -> ``va kb vb``, ``kb`` chosen by the model) whose third column has a
known source too. A second training seed repeats the main settings (``--model-seeds``).
Training is deterministic (``enable_op_determinism``): the tables repeat on the same machine.

"Top" is the largest signed attribution (with ``reduce="norm"`` all are magnitudes); the JSON
also holds the hit rates by absolute value. Times are one ``explain_generation`` call over all
examples after a warm-up call on 4 of them (the compile is not in them), on this machine's CPU.

    python bench/generation_toy.py [--examples 200] [--samples 16] [--model-seeds 0,1]
                                   [--json out.json]        # 4 to 5 minutes on 2 CPU cores
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
import tensorflow as tf

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


def train(train_n: int, epochs: int, seed: int) -> tuple[keras.Model, dict]:
    """The model of training seed ``seed`` (initialisation and shuffling; the data are fixed)."""
    keras.utils.set_random_seed(seed)
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
    return lm, {"model_seed": seed, "train_sequences": train_n, "epochs": epochs,
                "train_seconds": seconds, "heldout_answer_accuracy": acc}


def after_embedding(lm: keras.Model, h):
    """The model from the token embedding's output ``h [n, T, D]`` on (its own layers)."""
    x = lm.get_layer("pos")(h)
    for i in range(LAYERS):
        y = lm.get_layer(f"ln{i}")(x)
        x = x + lm.get_layer(f"att{i}")(y, y, use_causal_mask=True)
    return lm.get_layer("head")(lm.get_layer("lnf")(x))


def under_noise(lm, prompts, answers, epsilon: float, draws: int) -> dict:
    """What the model still says with the explainer's noise on the embedding: the accuracy and
    the mean probability of the explained token over ``draws`` Gaussian draws per prompt."""
    emb = np.asarray(lm.get_layer("emb")(prompts), np.float32)
    z = np.random.default_rng(3).standard_normal((draws, *emb.shape)).astype(np.float32)
    noisy = (emb[None] + epsilon * z).reshape(-1, *emb.shape[1:])
    logits = np.asarray(after_embedding(lm, noisy), np.float64)[:, -1]
    target = np.tile(answers[:, 0], draws)
    prob = np.exp(logits - logits.max(-1, keepdims=True))
    prob = prob[np.arange(len(target)), target] / prob.sum(-1)
    return {"accuracy": float(np.mean(logits.argmax(-1) == target)),
            "mean_probability": float(prob.mean())}


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


class Bench:
    """The held-out prompts, their known sources, and one row per explained setting."""

    def __init__(self, lm, prompts, answers, which, samples: int) -> None:
        self.lm, self.prompts, self.answers, self.n = lm, prompts, answers, samples
        self.value_pos, self.key_pos = 2 * which[:, 0] + 1, 2 * which[:, 0]
        self.query_pos = np.full(len(prompts), P - 1)
        emb = np.asarray(lm.get_layer("emb")(prompts), np.float64)  # [n, P, D]
        self.rms = float(np.sqrt(np.mean(emb**2)))  # per token sqrt(mean_D e^2), pooled
        flat = emb.reshape(len(emb), -1)
        eq30 = (flat.max(1) - flat.mean(1)) / 1.6448536269514722  # gaussian, alpha = 0.9
        self.scale = {"embedding_rms": self.rms, "eq30_epsilon_mean": float(eq30.mean()),
                      "eq30_epsilon_over_rms": float(eq30.mean() / self.rms)}
        self.rows: list[dict] = []

    def explainer(self, reduce, attribution, factor, mode="sg", **kw):
        """``factor`` x RMS as epsilon; None: eq. 30; 0: no smoothing (N = 1, 1e-6)."""
        kw.update(explain_at="emb", seed=0, reduce=reduce, attribution=attribution)
        if mode == "ng":
            return tfm.NoiseGrad(self.lm, num_weight_samples=self.n, **kw)
        eps = None if factor is None else 1e-6 if factor == 0 else factor * self.rms
        if mode == "fg":
            return tfm.FusionGrad(self.lm, num_weight_samples=4, num_samples=self.n // 4,
                                  epsilon=eps, **kw)
        if factor == 0:
            return tfm.SmoothGrad(self.lm, num_samples=1, epsilon=1e-6, **kw)
        return tfm.SmoothGrad(self.lm, num_samples=self.n, epsilon=eps, **kw)

    def run(self, reduce, attribution, factor, score="log_prob", mode="sg") -> dict:
        e = self.explainer(reduce, attribution, factor, mode)
        eps = ("-" if mode == "ng" else "1e-6" if factor == 0 else "eq. 30" if factor is None
               else f"{factor:g} x RMS")
        setting = {"sg": "no smoothing" if factor == 0 else f"SG N={self.n}",
                   "ng": f"NG M={self.n}", "fg": f"FG M=4 N={self.n // 4}"}[mode]
        row = {"setting": setting, "mode": mode, "reduce": reduce, "attribution": attribution,
               "epsilon": eps, "score": score,
               "epsilon_over_rms": (self.scale["eq30_epsilon_over_rms"] if factor is None
                                    else factor)}
        try:
            r, secs = timed(e, self.prompts, continuation_ids=self.answers, score=score)
        except ValueError as exc:
            why = ("float rounding: the sum cancels" if "float rounding" in str(exc)
                   else str(exc)[:80])
            row.update(refused=f"ValueError ({why})", error=str(exc))
        else:
            row.update(hits(r.attributions[:, :, 0], self.value_pos, self.key_pos,
                            self.query_pos, P), seconds=secs)
        self.rows.append(row)
        return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--train", type=int, default=20000, help="training sequences")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--model-seeds", default="0,1",
                   help="training seeds: the first gets every setting, the others the main ones")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    seeds = [int(v) for v in args.model_seeds.split(",")]
    tf.config.experimental.enable_op_determinism()  # the same trained model on every run

    total = time.perf_counter()
    seq, which = make(args.examples, np.random.default_rng(1), queries=1)
    prompts, answers = seq[:, :P].astype(np.int64), seq[:, P:P + 1].astype(np.int64)
    models = []
    for k, model_seed in enumerate(seeds):
        lm, training = train(args.train, args.epochs, model_seed)
        logits = np.asarray(lm(prompts), np.float64)[:, -1]
        training["eval_greedy_accuracy"] = float(np.mean(logits.argmax(-1) == answers[:, 0]))
        prob = np.exp(logits - logits.max(-1, keepdims=True))
        prob = np.take_along_axis(prob / prob.sum(-1, keepdims=True), answers, 1)[:, 0]
        training["eval_answer_probability_median"] = float(np.median(prob))
        training["eval_answer_probability_min"] = float(prob.min())
        bench = Bench(lm, prompts, answers, which, args.samples)
        factors = [0.0, *EPS_FACTORS, None]
        noise = {("eq. 30" if f is None else f"{f:g} x RMS"): under_noise(
            lm, prompts, answers, 1e-6 if f == 0 else bench.scale["eq30_epsilon_mean"]
            if f is None else f * bench.rms, args.samples) for f in factors}
        for reduce in REDUCES:
            for attribution in ATTRIBUTIONS:
                if (reduce, attribution) == ("sum", "gradient"):
                    bench.run(reduce, attribution, 0.0)  # refused at every epsilon
                    bench.run(reduce, attribution, None)
                    continue
                for f in (factors if k == 0 else [0.0, 0.1, 0.3, None]):
                    bench.run(reduce, attribution, f)
                if k == 0:
                    bench.run(reduce, attribution, 0.0, score="logit")
                    bench.run(reduce, attribution, None, score="logit")
        ok = [r for r in bench.rows if "refused" not in r and r["score"] == "log_prob"]
        best = max(ok, key=lambda r: (r["pair@1"], r["value@1"], -r["epsilon_over_rms"]))
        best_factor = {"1e-6": 0.0, "eq. 30": None}.get(best["epsilon"],
                                                        best["epsilon_over_rms"])
        model = {"training": training, "scale": bench.scale, "under_noise": noise,
                 "rows": bench.rows,
                 "best": {k2: best[k2] for k2 in ("reduce", "attribution", "epsilon")}}
        if k == 0:
            bench.run(best["reduce"], best["attribution"], None, mode="ng")
            bench.run(best["reduce"], best["attribution"], best_factor, mode="fg")
            model["three_tokens"] = three_tokens(
                bench.explainer(best["reduce"], best["attribution"], best_factor), prompts,
                answers, which)
            model["three_tokens"]["epsilon"] = best["epsilon"]
        models.append(model)

    out = {"bench": "generation_toy", "args": vars(args), "models": models,
           "total_seconds": time.perf_counter() - total,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "versions": {"keras": keras.__version__, "tfmollify": tfm.__version__}}
    print(report(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def three_tokens(explainer, prompts, answers, which) -> dict:
    """``SEP ka`` -> ``va kb vb`` greedily; column 2's source is the pair of the generated key
    ``kb`` (at ``P + 1``), which the model chose among the prompt's keys."""
    r, secs = timed(explainer, prompts, max_new_tokens=3)
    gen = r.generated_ids
    keys_in, vals_in = prompts[:, 0:2 * PAIRS:2], prompts[:, 1:2 * PAIRS:2]
    asked = (keys_in == gen[:, 1:2]).argmax(1)
    valid = (keys_in == gen[:, 1:2]).any(1)
    right = valid & (np.take_along_axis(vals_in, asked[:, None], 1)[:, 0] == gen[:, 2])
    out = {"seconds": secs, "first_correct": float(np.mean(gen[:, 0] == answers[:, 0])),
           "second_is_a_prompt_key": float(valid.mean()),
           "third_is_its_value": float(right.mean())}
    n = len(prompts)
    col0 = hits(r.attributions[:, :, 0], 2 * which[:, 0] + 1, 2 * which[:, 0],
                np.full(n, P - 1), P)
    out["column0_pair@1"] = col0["pair@1"]
    k = right.nonzero()[0]
    col2 = hits(r.attributions[k, :, 2], 2 * asked[k] + 1, 2 * asked[k],
                np.full(len(k), P + 1), P + 2)
    out.update({f"column2_{name}": v for name, v in col2.items() if not name.startswith("abs")})
    return out


def report(out: dict) -> str:
    n, examples = out["args"]["samples"], out["args"]["examples"]
    lines = []
    for m in out["models"]:
        t, sc = m["training"], m["scale"]
        lines += [
            f"Model seed {t['model_seed']}: trained {t['epochs']} epochs on "
            f"{t['train_sequences']} sequences in {t['train_seconds']:.0f} s; held-out answer "
            f"accuracy {t['heldout_answer_accuracy']:.1%}, greedy accuracy on the {examples} "
            f"explained prompts {t['eval_greedy_accuracy']:.1%} (probability of the answer: "
            f"median {t['eval_answer_probability_median']:.4f}, min "
            f"{t['eval_answer_probability_min']:.3f}). Token embedding RMS "
            f"{sc['embedding_rms']:.3g}; eq. 30's epsilon {sc['eq30_epsilon_mean']:.3g} on "
            f"average ({sc['eq30_epsilon_over_rms']:.2f} x RMS).",
        ]
    first = out["models"][0]
    lines += [
        "",
        f"Model seed {first['training']['model_seed']}, top-1 hit rates over {examples} prompts "
        f"(SG: SmoothGrad N = {n}; no smoothing: N = 1, epsilon 1e-6; seconds: one call for "
        "all prompts after a warm-up):",
        "",
        "| setting | reduce | attribution | epsilon | score | value@1 | pair@1 | query@1 "
        "| pair@1 w/o q | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in first["rows"]:
        head = (f"| {r['setting']} | {r['reduce']} | {r['attribution']} | {r['epsilon']} "
                f"| {r['score']} |")
        if "refused" in r:
            lines.append(f"{head} refused: {r['refused']} | | | | |")
        else:
            lines.append(f"{head} {r['value@1']:.0%} | {r['pair@1']:.0%} | {r['query@1']:.0%} "
                         f"| {r['pair@1_wo_q']:.0%} | {r['seconds']:.1f} |")
    for m in out["models"]:
        lines += ["", *sweep_table(m, n)]
    th, b = first["three_tokens"], first["best"]
    lines += [
        "",
        f"Best (model seed {first['training']['model_seed']}): reduce={b['reduce']}, "
        f"attribution={b['attribution']}, epsilon {b['epsilon']}. Three generated tokens with it "
        f"(`SEP ka` -> `va kb vb`, greedy, {th['seconds']:.1f} s): first token correct "
        f"{th['first_correct']:.0%}, second a key of the prompt "
        f"{th['second_is_a_prompt_key']:.0%}, third that key's value "
        f"{th['third_is_its_value']:.0%}; column 0 pair@1 {th['column0_pair@1']:.0%}; "
        f"column 2 (source: the pair of the generated key at P + 1) value@1 "
        f"{th['column2_value@1']:.0%}, pair@1 {th['column2_pair@1']:.0%}, the generated key "
        f"{th['column2_query@1']:.0%}, pair@1 without it {th['column2_pair@1_wo_q']:.0%}.",
        f"Total {out['total_seconds']:.0f} s.",
    ]
    return "\n".join(lines)


def sweep_table(model: dict, n: int) -> list[str]:
    """pair@1 (value@1) of each reduce x attribution against epsilon, and what the model still
    gets right under that noise."""
    sc = model["scale"]
    keys = ["1e-6"] + [f"{f:g} x RMS" for f in EPS_FACTORS] + ["eq. 30"]
    names = (["1e-6 (N = 1)"] + [f"{f:g} x RMS" for f in EPS_FACTORS]
             + [f"eq. 30 ({sc['eq30_epsilon_over_rms']:.1f} x RMS)"])
    rows = [r for r in model["rows"] if r["mode"] == "sg" and r["score"] == "log_prob"]
    lines = [f"Model seed {model['training']['model_seed']}: pair@1 (value@1) against epsilon "
             f"(SmoothGrad N = {n}, score log_prob):", "",
             "| reduce | attribution | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for reduce in REDUCES:
        for attribution in ATTRIBUTIONS:
            cells = []
            for eps in keys:
                r = next((r for r in rows if (r["reduce"], r["attribution"], r["epsilon"])
                          == (reduce, attribution, eps)), None)
                cells.append("-" if r is None and not (reduce == "sum" and attribution
                                                       == "gradient")
                             else "refused" if r is None or "refused" in r
                             else f"{r['pair@1']:.0%} ({r['value@1']:.0%})")
            lines.append(f"| {reduce} | {attribution} | " + " | ".join(cells) + " |")
    noise = model["under_noise"]
    lines.append("| model under this noise | accuracy (mean p) | " + " | ".join(
        f"{noise[k if k != '1e-6' else '0 x RMS']['accuracy']:.0%} "
        f"({noise[k if k != '1e-6' else '0 x RMS']['mean_probability']:.2f})" for k in keys)
        + " |")
    return lines


if __name__ == "__main__":
    main()
