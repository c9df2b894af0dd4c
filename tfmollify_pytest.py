"""The pytest plugin of tfmollify (entry point ``tfmollify`` in the ``pytest11`` group).

It loads for everyone who installs tfmollify, so it imports neither TensorFlow nor Hypothesis
(nor anything under ``tfmollify``, whose package imports TensorFlow): it only

* adds ``--tfm-samples FACTOR``, a factor on the sample counts of ``tfmollify.testing``'s own
  checks (``assert_mollified``'s draws, ``check_kernel``'s KS test), e.g. ``--tfm-samples 4``
  in a nightly CI job and ``0.25`` for a quick local run; it sets the environment variable
  ``TFMOLLIFY_TEST_SAMPLES`` that ``tfmollify.testing.config`` reads (and restores it at the
  end of the session);
* prints the seeds that the Monte Carlo checks of a failing test used, in a report section
  "tfmollify seeds", so that the failure can be rerun. The checks record them in
  ``tfmollify.testing.config``; the plugin reads that module only when the test run imported
  it (from ``sys.modules``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import pytest

#: The environment variable read by ``tfmollify.testing.config`` (the same name).
ENV_SAMPLES = "TFMOLLIFY_TEST_SAMPLES"
#: The module that keeps the seeds (read from ``sys.modules`` only, never imported here).
CONFIG_MODULE = "tfmollify.testing.config"
#: The title of the report section of a failing test.
SECTION = "tfmollify seeds"

_PREVIOUS = pytest.StashKey[Any]()


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"--tfm-samples must be a positive number (a factor on the sample counts). "
            f"Received: {text!r}"
        )
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tfmollify")
    group.addoption(
        "--tfm-samples", dest="tfm_samples", type=_factor, default=None, metavar="FACTOR",
        help="factor on the sample counts of tfmollify.testing's checks (default: "
             f"${ENV_SAMPLES} or 1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    factor = config.getoption("tfm_samples", default=None)
    if factor is not None:
        config.stash[_PREVIOUS] = os.environ.get(ENV_SAMPLES)
        os.environ[ENV_SAMPLES] = repr(float(factor))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS in config.stash:
        previous = config.stash[_PREVIOUS]
        if previous is None:
            os.environ.pop(ENV_SAMPLES, None)
        else:
            os.environ[ENV_SAMPLES] = previous


def pytest_report_header(config: pytest.Config) -> str | None:
    factor = os.environ.get(ENV_SAMPLES)
    if factor is None or factor in ("1", "1.0"):
        return None
    return f"tfmollify: sample counts of tfmollify.testing's checks x {factor}"


def _seeds_module() -> Any:
    return sys.modules.get(CONFIG_MODULE)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    module = _seeds_module()
    if module is not None:
        module.clear_seeds()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    module = _seeds_module()
    if not report.failed or module is None:
        return
    seeds = module.recorded_seeds()
    if not seeds:
        return
    lines = [f"{label}: seed={seed}" for label, seed in seeds]
    lines.append("(the seeds of the Monte Carlo checks this test ran; rerun with them to "
                 "reproduce the failure)")
    report.sections.append((SECTION, "\n".join(lines)))
