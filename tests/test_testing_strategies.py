"""tfmollify.testing.strategies: what each strategy draws is valid and means what it says.

Every drawn case explains without error with attributions of the documented shapes, the drawn
settings are accepted by ``tfm.Explainer`` and follow the spec's rules, the models, inputs and
targets fit each other, the noise scales put the stated fraction of noise inside ``[-r, r]``,
and bad arguments are refused with messages that name them. The conftest's "tfmollify" profile
(derandomized, no deadline) applies; the example counts scale with the loaded profile.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

import tfmollify as tfm
from tests import user_kernels
from tfmollify.core import modes
from tfmollify.testing import strategies as tst

SCALE = settings().max_examples / 40

# Poisson (Cauchy) weight noise warns that NG/FG do not converge; the draws are still valid
pytestmark = pytest.mark.filterwarnings("ignore:kernel='poisson' has no mean:UserWarning")


def examples(n: int) -> int:
    """``n`` examples under the CI profile, scaled with the loaded profile (at least 1)."""
    return max(1, round(n * SCALE))


def first(strategy, condition=lambda value: True):
    """The first drawn value that meets ``condition``, not shrunk (a shrunk model or case costs
    dozens of model builds); ``find`` fails if none of 100 draws meets it."""
    return find(strategy, condition, settings=settings(phases=(Phase.generate,),
                                                       max_examples=100, database=None))


class Triangle(user_kernels.Triangle):
    """A user's kernel, not registered: ``max(1 - |x|, 0)``."""

    name = "strategies_triangle"
    support = (-1.0, 1.0)


class Inverted(Triangle):
    """A broken kernel: its icdf does not invert its cdf (no eq. 30 scale)."""

    name = "strategies_inverted"

    def _icdf(self, u):
        return -super()._icdf(u)


TRIANGLE = Triangle()
DENSE = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                          keras.layers.Dense(2)])


# -- kernels and epsilons -----------------------------------------------------------------------
def test_kernels_draw_every_registered_kernel_and_the_custom_ones():
    strategy = tst.kernels(custom=(TRIANGLE,))
    for name in tfm.kernels.names():
        assert find(strategy, lambda k, name=name: k.name == name) is tfm.kernels.get(name)
    assert find(strategy, lambda k: k.name == TRIANGLE.name) is TRIANGLE
    assert find(tst.kernels(), lambda k: True) is tfm.kernels.get("gaussian")  # shrinks there


@settings(max_examples=examples(40))
@given(kernel=tst.kernels(custom=(TRIANGLE,)), r=st.floats(0.05, 20.0), data=st.data())
def test_epsilons_put_the_stated_fraction_of_noise_inside_r(kernel, r, data):
    """Eq. 30: with scale eps, the mass of phi_eps inside [-r, r] is 2 cdf(r / eps) - 1, which
    must lie in [min_alpha, max_alpha] (defaults and drawn bounds)."""
    low = data.draw(st.floats(0.05, 0.95), label="min_alpha")
    high = data.draw(st.floats(low, 0.99), label="max_alpha")
    for lo, hi in ((0.5, 0.99), (low, high)):
        eps = data.draw(tst.epsilons(kernel, r=r, min_alpha=lo, max_alpha=hi), label="eps")
        assert isinstance(eps, float) and eps > 0
        mass = 2.0 * float(kernel.cdf(np.float64(r / eps))) - 1.0
        assert lo - 1e-9 <= mass <= hi + 1e-9, (kernel, r, eps, mass, lo, hi)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(kernel="nope"), ValueError, "kernel='nope'"),
        (dict(kernel=3), TypeError, "kernel=3"),
        (dict(kernel="gaussian", r=0.0), ValueError, "r=0.0"),
        (dict(kernel="gaussian", r="1"), ValueError, "r='1'"),
        (dict(kernel="gaussian", min_alpha=1.0), ValueError, "alpha=1.0"),
        (dict(kernel="gaussian", min_alpha=0.9, max_alpha=0.6), ValueError, "min_alpha=0.9"),
        (dict(kernel=Inverted()), ValueError, "Pass `epsilon` explicitly"),
    ],
)
def test_epsilons_refuse_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=r"Argument|kernel|Kernel") as info:
        tst.epsilons(**kwargs)
    assert fragment in str(info.value)


def test_kernels_refuse_what_is_not_a_kernel():
    with pytest.raises(TypeError, match=r"Argument `custom`.*'gaussian'"):
        tst.kernels(custom=("gaussian",))


# -- explainer settings -------------------------------------------------------------------------
def check_rules(kw: dict, max_n: int, max_m: int) -> None:
    """The spec's rules that the strategy promises, beyond what the explainer checks."""
    n, m, sampler = kw["num_samples"], kw["num_weight_samples"], kw["sampler"]
    assert 1 <= n <= max_n and 1 <= m <= max_m, kw
    mode = modes.parse(kw["mode"])
    if sampler != "iid":
        assert n % 2 == 0 and m % 2 == 0, kw
    if sampler == "sobol":
        outer = m if mode.weight_noise else n
        assert kw["replicates"] >= 2 and outer % kw["replicates"] == 0, kw
    steps = kw.get("ig_steps", 1)
    assert (kw["attribution"] == "integrated_gradients") == ("ig_steps" in kw), kw
    if isinstance(kw["batch_size"], int):
        least = steps * (2 if sampler == "antithetic" and mode.input_noise else 1)
        assert kw["batch_size"] >= least, kw
    assert isinstance(kw["seed"], int), kw


@settings(max_examples=examples(60))
@given(kw=tst.explainer_settings())
def test_drawn_settings_are_accepted_and_follow_the_rules(kw):
    explainer = tfm.Explainer(DENSE, **kw)
    check_rules(kw, 8, 4)
    config = explainer.get_config()
    assert {k: config[k] for k in kw} == kw, (config, kw)
    assert tfm.Explainer.from_config(DENSE, config).get_config() == config


@settings(max_examples=examples(30))
@given(kw=tst.explainer_settings(modes=("ng", "fg"), samplers=("antithetic", "sobol"),
                                 kernels=("rect", TRIANGLE), max_num_samples=4,
                                 max_num_weight_samples=6, batched=True))
def test_the_choices_bound_the_draws(kw):
    assert kw["mode"] in ("ng", "fg") and kw["sampler"] in ("antithetic", "sobol")
    assert kw["kernel"] == "rect" or kw["kernel"] is TRIANGLE
    assert isinstance(kw["batch_size"], int)
    check_rules(kw, 4, 6)
    tfm.Explainer(DENSE, **kw)


@settings(max_examples=examples(20))
@given(tst.explainer_settings(batched=False, attributions=("gradient",)))
def test_unbatched_settings_make_one_pass(kw):
    assert kw["batch_size"] is None and kw["attribution"] == "gradient" and "ig_steps" not in kw


@settings(max_examples=examples(20))
@given(data=st.data())
def test_settings_fit_the_drawn_model(data):
    model = data.draw(tst.models())
    kw = data.draw(tst.explainer_settings(model=model))
    tfm.Explainer(model, **kw)
    assert (kw.get("explain_at") == "embedding") == (model.name == "embedding"), kw
    if model.name == "multi_output":
        assert kw["output"] in model.output_names
    else:
        assert "output" not in kw
    assert "attribute_at" not in kw


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(modes=("sg", "xg")), ValueError, "xg"),
        (dict(modes=()), ValueError, "Argument `modes` must not be empty"),
        (dict(samplers=("iid", "halton")), ValueError, "Argument `samplers`"),
        (dict(aggregations="mean"), ValueError, "Argument `aggregations`"),
        (dict(attributions=("saliency",)), ValueError, "attribution='saliency'"),
        (dict(attributions=("grad_cam",)), ValueError, "pass `model=`"),
        (dict(kernels=("gaussian", "gauss")), ValueError, "Argument `kernels`"),
        (dict(max_num_samples=0, samplers="iid"), ValueError, "max_num_samples=0"),
        (dict(max_num_samples=1), ValueError, "max_num_samples` must be an integer >= 2"),
        (dict(max_num_weight_samples=1.5), ValueError, "max_num_weight_samples=1.5"),
        (dict(batched="yes"), TypeError, "batched='yes'"),
        (dict(model=DENSE, attributions=("grad_cam",)), ValueError, "has none"),
    ],
)
def test_explainer_settings_refuse_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error) as info:
        tst.explainer_settings(**kwargs)
    assert fragment in str(info.value)


# -- models, inputs and targets -----------------------------------------------------------------
def check_fits(model, inputs, targets, output=None):
    """Inputs in the model's structure, shapes and dtypes; targets valid class indices."""
    b = len(targets)
    assert targets.dtype == np.int32 and targets.shape == (b,)
    outs = model(inputs)
    outs = list(outs) if isinstance(outs, list | tuple) else [outs]
    classes = [int(o.shape[-1]) for o in outs]
    assert all(o.shape[0] == b for o in outs)
    limit = min(classes) if output is None else classes[model.output_names.index(output)]
    assert 0 <= targets.min() and targets.max() < limit, (targets, classes)
    flat = keras.tree.flatten(inputs)
    assert [a.shape for a in flat] == [(b, *t.shape[1:]) for t in model.inputs]
    for a, t in zip(flat, model.inputs, strict=True):
        assert a.dtype == np.dtype(t.dtype)
    if isinstance(model.input, dict):
        assert isinstance(inputs, dict) and set(inputs) == set(model.input)
    elif isinstance(model.input, list):
        assert isinstance(inputs, list) and len(inputs) == len(model.input)


@pytest.mark.parametrize("kind", tst.MODEL_KINDS)
def test_models_and_inputs_fit_each_other(kind):
    @settings(max_examples=examples(8))
    @given(data=st.data())
    def check(data):
        model = data.draw(tst.models(kinds=(kind,)), label="model")
        assert model.name == kind and model.built
        inputs, targets = data.draw(tst.inputs_and_targets(model, batch=(1, 4)))
        assert 1 <= len(targets) <= 4
        check_fits(model, inputs, targets)
        if kind == "embedding":
            vocabulary = model.get_layer("embedding").input_dim
            assert inputs.dtype == np.int32 and inputs.max() < vocabulary
        else:
            assert all(np.ptp(a[i]) > 0 for a in keras.tree.flatten(inputs)
                       for i in range(len(a)))  # not constant: eq. 30 has an r > 0
        if kind == "multi_output":
            output = data.draw(st.sampled_from(model.output_names))
            inputs, targets = data.draw(tst.inputs_and_targets(model, output=output))
            check_fits(model, inputs, targets, output)

    check()


def test_models_draw_every_kind_and_both_input_structures():
    for kind in tst.MODEL_KINDS:
        assert first(tst.models(), lambda m, kind=kind: m.name == kind).name == kind
    first(tst.models(kinds="multi_input"), lambda m: isinstance(m.input, dict))
    first(tst.models(kinds="multi_input"), lambda m: isinstance(m.input, list))


def test_a_model_with_open_dimensions_gets_inputs_of_open_dim():
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(3)])
    inputs, targets = first(tst.inputs_and_targets(model, batch=2))
    assert inputs.shape == (2, tst.OPEN_DIM, 2) and targets.shape == (2,)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(batch=0), ValueError, "batch=0"),
        (dict(batch=(3, 1)), ValueError, "batch=(3, 1)"),
        (dict(batch="2"), TypeError, "batch='2'"),
        (dict(output="nope"), ValueError, "output='nope'"),
    ],
)
def test_inputs_and_targets_refuse_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error) as info:
        tst.inputs_and_targets(DENSE, **kwargs)
    assert fragment in str(info.value) and "Argument" in str(info.value)


def test_models_refuse_unknown_kinds():
    with pytest.raises(ValueError, match=r"Argument `kinds`.*'rnn'"):
        tst.models(kinds=("dense", "rnn"))


# -- ready-made cases -----------------------------------------------------------------------------
def expected_shape(case) -> object:
    """The attribution's shape(s): the inputs', or the embedding's output at ``explain_at``."""
    if "explain_at" in case.settings:
        layer = case.model.get_layer(case.settings["explain_at"])
        return (len(case.targets), *layer.output.shape[1:])
    return keras.tree.map_structure(lambda a: a.shape, case.inputs)


@pytest.mark.parametrize("kind", tst.MODEL_KINDS)
def test_every_case_explains(kind):
    """Each drawn case explains without error: attributions finite, of the documented shape,
    with standard errors of the same shape, and the targets accepted."""

    @settings(max_examples=examples(3))
    @given(case=tst.explanation_cases(kinds=(kind,)))
    def check(case):
        explainer, inputs, targets = case
        assert case.model.name == kind and case.explainer is explainer
        check_fits(case.model, inputs, targets, case.settings.get("output"))
        attributions, stderr = explainer.explain(inputs, targets, return_stderr=True)
        shapes = keras.tree.map_structure(lambda a: a.shape, attributions)
        assert shapes == expected_shape(case), (shapes, case)
        assert keras.tree.map_structure(lambda a: a.shape, stderr) == shapes
        assert all(np.all(np.isfinite(a)) for a in keras.tree.flatten(attributions)), case

    check()


@pytest.mark.slow
@settings(max_examples=examples(20))
@given(case=tst.explanation_cases(batch=(1, 4), max_num_samples=4, max_num_weight_samples=2))
def test_every_case_explains_at_any_setting(case):
    """The same over all kinds at once, with more examples (the slow tier)."""
    explainer, inputs, targets = case
    attributions = explainer.explain(inputs, targets)
    shapes = keras.tree.map_structure(lambda a: a.shape, attributions)
    assert shapes == expected_shape(case), (shapes, case)
    assert all(np.all(np.isfinite(a)) for a in keras.tree.flatten(attributions)), case


def test_a_case_unpacks_and_shows_its_recipe():
    case = first(tst.explanation_cases(kinds=("multi_output",), modes=("ng",)))
    explainer, inputs, targets = case
    assert explainer is case.explainer and inputs is case.inputs and targets is case.targets
    text = repr(case)
    for part in ("model='multi_output' ['x:InputLayer', 'hidden:Dense', 'y0:Dense'",
                 "'mode': 'ng'", f"'output': {case.settings['output']!r}",
                 f"'seed': {case.settings['seed']}", f"inputs=({inputs.shape}, 'float32')",
                 f"targets={targets.tolist()}"):
        assert part in text, (part, text)
    assert tfm.Explainer(case.model, **case.settings).get_config() == explainer.get_config()


@settings(max_examples=examples(3))
@given(case=tst.explanation_cases(kinds=("conv",),
                                  attributions=("grad_cam", "grad_cam_plus_plus")))
def test_grad_cam_cases_attribute_at_the_convolution(case):
    assert case.settings["attribute_at"] == "conv"
    maps = case.explainer.explain(case.inputs, case.targets)
    assert maps.shape == (len(case.targets), *case.model.get_layer("conv").output.shape[1:3])
    assert np.all(np.isfinite(maps)) and np.all(maps >= 0)  # ReLU of a weighted sum


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (dict(model=DENSE), TypeError, "Argument `model` is drawn"),
        (dict(kinds=("dense",), attributions=("grad_cam",)), ValueError, "kinds=('conv',)"),
        (dict(kinds=("dense", "gru")), ValueError, "Argument `kinds`"),
        (dict(batch=(0, 2)), ValueError, "batch=(0, 2)"),
        (dict(modes=("xg",)), ValueError, "xg"),
        (dict(sampler="iid"), TypeError, "sampler"),
    ],
)
def test_explanation_cases_refuse_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error) as info:
        tst.explanation_cases(**kwargs)
    assert fragment in str(info.value)
