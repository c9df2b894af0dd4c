"""Independent NumPy/SciPy/SymPy reference for tfmollify (never imports TensorFlow/Keras).

Modules:
    adaptgrad AdaptGrad's bounded noise: per-element scale, inside probability, noise variance
    kernels   pdf, logpdf, cdf, icdf, variance, char_fn(+deriv), sample of the five kernels
    symbolic  SymPy expressions of the kernels
    proofs    SymPy proofs of the kernel properties and of eq. 30 (``proofs.verify_all()``)
    scale     epsilon(kernel, r, alpha) by eq. 30, with a quadrature residual
    paper     printed formulas of the paper, verbatim, next to their corrections
    example   appendix C: eq. 43, its mollification and gradient, eq. 45 as printed
    mc        Theorem 3.11 / eq. 17 Monte Carlo estimator with importance weights
    oracles   exact SG / NG / FG answers for sine and linear models
    mlp       NumPy MLP with hand-written backprop; SG / NG / FG fed explicit noise

See ``reference/FINDINGS.md`` for the formulas of the paper that are wrong and their corrections.
"""

from reference import adaptgrad, paper, proofs
from reference.adaptgrad import inside_probability, noise_variance
from reference.adaptgrad import scale as adaptive_scale
from reference.example import (
    example_f,
    example_f_grad,
    example_fprime_conv,
    mollified_example,
    mollified_example_grad,
    paper_eq45,
)
from reference.kernels import (
    KERNEL_ALIASES,
    KERNEL_NAMES,
    canonical_name,
    cdf,
    char_fn,
    char_fn_deriv,
    icdf,
    logpdf,
    pdf,
    sample,
    variance,
)
from reference.mc import importance_weights, mc_mollified_gradient
from reference.mlp import (
    AGGREGATIONS,
    aggregate,
    fusiongrad,
    init_params,
    mlp_forward,
    mlp_input_grad,
    noisegrad,
    perturb_params,
    smoothgrad,
)
from reference.oracles import (
    fg_sine_grad,
    fg_sine_grad_gaussian_closed,
    fg_sine_grad_nested_quad,
    linear_oracles,
    ng_linear_oracles,
    ng_sine_abs_integral,
    ng_sine_grad,
    ng_sine_grad_quad,
    sg_sine_grad,
)
from reference.scale import coverage, epsilon, epsilon_quad_residual, paper_epsilon
from reference.symbolic import SymbolicKernel, symbolic

__all__ = [
    "AGGREGATIONS",
    "KERNEL_ALIASES",
    "KERNEL_NAMES",
    "SymbolicKernel",
    "adaptgrad",
    "adaptive_scale",
    "aggregate",
    "canonical_name",
    "cdf",
    "char_fn",
    "char_fn_deriv",
    "coverage",
    "epsilon",
    "epsilon_quad_residual",
    "example_f",
    "example_f_grad",
    "example_fprime_conv",
    "fg_sine_grad",
    "fg_sine_grad_gaussian_closed",
    "fg_sine_grad_nested_quad",
    "fusiongrad",
    "icdf",
    "importance_weights",
    "init_params",
    "inside_probability",
    "linear_oracles",
    "logpdf",
    "mc_mollified_gradient",
    "mlp_forward",
    "mlp_input_grad",
    "mollified_example",
    "mollified_example_grad",
    "ng_linear_oracles",
    "ng_sine_abs_integral",
    "ng_sine_grad",
    "ng_sine_grad_quad",
    "noise_variance",
    "noisegrad",
    "paper",
    "paper_epsilon",
    "paper_eq45",
    "pdf",
    "perturb_params",
    "proofs",
    "sample",
    "sg_sine_grad",
    "smoothgrad",
    "symbolic",
    "variance",
]
