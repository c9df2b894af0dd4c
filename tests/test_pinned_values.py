"""Values pinned before the restructuring (issue "One rule, one place"): the same seeds must give
the same numbers after the code moves.

The model's weights come from NumPy (not from a Keras initializer, which a Keras release may
change), every configuration names its ``batch_size``, and the numbers below were computed by
``python tests/test_pinned_values.py`` with the library of commit 8978f6b (``tfmollify/`` as it
stood before the move; the test-suite work of issue 25 did not touch it). A later change that
alters how passes are cut or how noise is drawn re-pins them with the same command, and says so
in its commit.

The comparison allows float32 rounding only (relative 1e-6): a change of any draw, any
aggregation step or any pass boundary moves these values by far more.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfmollify as tfm

# name -> Explainer keyword arguments (mode first)
CONFIGS: dict[str, dict] = {
    "sg-gaussian-iid": dict(mode="sg", kernel="gaussian", num_samples=8, batch_size=6),
    "sg-rect-antithetic-vargrad": dict(mode="sg", kernel="rect", sampler="antithetic",
                                       aggregation="vargrad", num_samples=8, batch_size=5),
    "sg-sigmoid-sobol-ixg": dict(mode="sg", kernel="sigmoid", sampler="sobol", replicates=2,
                                 num_samples=8, attribution="input_x_gradient", batch_size=16),
    "sg-poisson-ig-sq": dict(mode="sg", kernel="poisson", aggregation="smoothgrad_sq",
                             attribution="integrated_gradients", ig_steps=8, num_samples=4,
                             batch_size=20),
    "ng-hyperbolic": dict(mode="ng", kernel="hyperbolic", num_weight_samples=6, batch_size=4),
    "fg-gaussian": dict(mode="fg", kernel="gaussian", num_samples=3, num_weight_samples=4,
                        batch_size=5),
}


def pinned_model() -> keras.Model:
    """``Dense(7, tanh) -> Dense(3)`` on 5 features, weights from NumPy's generator 0."""
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((5,)), keras.layers.Dense(7, activation="tanh"), keras.layers.Dense(3),
    ])
    for layer in model.layers:
        w, b = layer.get_weights()
        layer.set_weights([rng.normal(size=w.shape).astype("float32"),
                           rng.normal(scale=0.3, size=b.shape).astype("float32")])
    return model


def pinned_inputs() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(1).normal(size=(3, 5)).astype("float32")
    return x, np.array([0, 1, 2])


def compute(name: str, model: keras.Model | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(attributions, stderr)`` of configuration ``name`` with seed 7."""
    x, t = pinned_inputs()
    e = tfm.Explainer(model if model is not None else pinned_model(), seed=7, epsilon=0.5,
                      weight_epsilon=0.2, **CONFIGS[name])
    a, se = e.explain(x, t, return_stderr=True)
    return np.asarray(a), np.asarray(se)


# python tests/test_pinned_values.py prints this table anew
PINNED: dict[str, tuple[list[float], list[float]]] = {
    'fg-gaussian': (
        [
            0.8679500818252563, -0.2119404673576355, -0.4605606198310852, 0.21427497267723083,
            -0.09596970677375793, -0.585414469242096, -1.0909197330474854, -1.7973576784133911,
            0.7176872491836548, -0.9223058819770813, 1.053393006324768, -1.867966890335083,
            -1.611793041229248, -1.5357534885406494, 0.09981075674295425,
        ],
        [
            0.15407690405845642, 0.11485711485147476, 0.19092869758605957, 0.17715609073638916,
            0.16111072897911072, 0.11073505878448486, 0.23888805508613586, 0.1027195081114769,
            0.1291288286447525, 0.09514527767896652, 0.4689605236053467, 0.10392126441001892,
            0.17406563460826874, 0.32935795187950134, 0.05347861349582672,
        ],
    ),
    'ng-hyperbolic': (
        [
            0.9593892097473145, -0.6489279270172119, 0.04849401116371155, -0.2516385614871979,
            0.33937716484069824, -0.5851994752883911, -1.00702702999115, -2.1545681953430176,
            1.3025509119033813, -1.2698848247528076, 1.238842487335205, -2.3362300395965576,
            -1.892030119895935, -1.5190889835357666, 0.03891117870807648,
        ],
        [
            0.07484636455774307, 0.12037060409784317, 0.10420703142881393, 0.04217062518000603,
            0.0408291332423687, 0.07933001220226288, 0.18711039423942566, 0.13436304032802582,
            0.08422305434942245, 0.11663459241390228, 0.2825339138507843, 0.13932251930236816,
            0.14708472788333893, 0.19203037023544312, 0.022701630368828773,
        ],
    ),
    'sg-gaussian-iid': (
        [
            0.8955373764038086, -0.3106359839439392, -0.6554287672042847, 0.3749617636203766,
            -0.2306588590145111, -0.47001147270202637, -1.2214915752410889, -1.6950865983963013,
            0.5299789309501648, -1.027480125427246, 1.5265626907348633, -1.8233246803283691,
            -1.6306148767471313, -1.6493746042251587, 0.2291993498802185,
        ],
        [
            0.13639384508132935, 0.2989870011806488, 0.2957521378993988, 0.2624325752258301,
            0.20730721950531006, 0.1977532058954239, 0.30309346318244934, 0.26608824729919434,
            0.29659345746040344, 0.1989423781633377, 0.18775899708271027, 0.16228681802749634,
            0.16114994883537292, 0.18375886976718903, 0.06890426576137543,
        ],
    ),
    'sg-poisson-ig-sq': (
        [
            3.784883499145508, 0.39402711391448975, 0.5294674038887024, 0.0068102506920695305,
            0.7907111644744873, 0.10682119429111481, 1.068800926208496, 0.844772458076477,
            2.149186134338379, 3.0814318656921387, 0.34883973002433777, 2.4383668899536133,
            2.216276168823242, 1.4928393363952637, 0.014438475482165813,
        ],
        [
            3.342973470687866, 0.22682812809944153, 0.4443521797657013, 0.00614025816321373,
            0.6065273284912109, 0.054369110614061356, 0.8195815682411194, 0.5449378490447998,
            2.000678062438965, 1.934679627418518, 0.12253051996231079, 1.8887125253677368,
            0.9071467518806458, 0.508375883102417, 0.012647915631532669,
        ],
    ),
    'sg-rect-antithetic-vargrad': (
        [
            0.07361168414354324, 0.5217974185943604, 0.20208752155303955, 0.1592760980129242,
            0.1152130737900734, 0.24792899191379547, 1.6045961380004883, 0.38385045528411865,
            1.1791234016418457, 0.3075107932090759, 0.15550781786441803, 0.02623806893825531,
            0.02554827556014061, 0.14528760313987732, 0.020969446748495102,
        ],
        [
            0.05972917377948761, 0.10388457775115967, 0.056019410490989685, 0.06775414198637009,
            0.05747025087475777, 0.09052599966526031, 0.5472267866134644, 0.1332445591688156,
            0.4331606924533844, 0.09341028332710266, 0.12896358966827393, 0.014465590938925743,
            0.018977738916873932, 0.08314187079668045, 0.008935699239373207,
        ],
    ),
    'sg-sigmoid-sobol-ixg': (
        [
            0.22467990219593048, 0.33223098516464233, 0.05945070832967758, -0.06326369941234589,
            -0.05717482417821884, -0.013647522777318954, 0.6047581434249878, -0.6487923264503479,
            0.5326766967773438, -0.24763181805610657, -0.06884541362524033, -0.9669654965400696,
            0.8610473275184631, -0.03711571916937828, -0.002038438804447651,
        ],
        [
            0.09592485427856445, 0.14523860812187195, 0.25795331597328186, 0.1864149123430252,
            0.07866952568292618, 0.20421510934829712, 0.43885061144828796, 0.1630726456642151,
            0.08652395755052567, 0.016017531976103783, 0.10005910694599152, 0.4223979711532593,
            0.21454203128814697, 0.0355413481593132, 0.03403430059552193,
        ],
    ),
}


@pytest.fixture(scope="module")
def model():
    return pinned_model()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_values_pinned_before_the_restructuring(model, name):
    a, se = compute(name, model)
    want_a, want_se = (np.array(v, dtype=np.float64).reshape(a.shape) for v in PINNED[name])
    np.testing.assert_allclose(a, want_a, rtol=1e-6, atol=1e-6 * np.abs(want_a).max())
    np.testing.assert_allclose(se, want_se, rtol=1e-6, atol=1e-6 * np.abs(want_se).max())


def test_the_pins_tell_configurations_and_seeds_apart(model):
    """The control: another seed or another batch cut of the noise gives other numbers, far
    outside the tolerance above (so the pins can fail)."""
    x, t = pinned_inputs()
    base = np.array(PINNED["sg-gaussian-iid"][0]).reshape(x.shape)
    other_seed = tfm.Explainer(model, seed=8, epsilon=0.5, **CONFIGS["sg-gaussian-iid"])
    assert np.abs(other_seed(x, t) - base).max() > 1e-3
    assert {len(v[0]) for v in PINNED.values()} == {x.size}
    assert set(PINNED) == set(CONFIGS)


if __name__ == "__main__":  # prints the PINNED table for this file
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("PINNED: dict[str, tuple[list[float], list[float]]] = {")
    for key in sorted(CONFIGS):
        values, errors = compute(key)
        print(f"    {key!r}: (")
        for arr in (values, errors):
            flat = [repr(float(v)) for v in arr.ravel()]
            print("        [")
            for i in range(0, len(flat), 4):
                print("            " + ", ".join(flat[i : i + 4]) + ",")
            print("        ],")
        print("    ),")
    print("}")
