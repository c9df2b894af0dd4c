"""Test-process set-up that must run before TensorFlow or NumPy is imported anywhere.

``./scripts/test`` runs the suite in parallel pytest-xdist workers (``-n``). Each worker is a
process of its own with its own TensorFlow thread pools, and by default each pool is as large as
the machine: two workers on two cores would then run four busy threads and slow each other down.
Here every worker gets an equal share of the cores for TensorFlow's intra-op pool and for the
BLAS/OpenMP pools (and an inter-op pool of at least 2 threads, see ``interop_threads``), through
the environment, which also reaches the subprocesses that tests start (the CLI, the servers).
A variable already set by the caller wins (``scripts/mutants`` sets them for each of its
parallel runs).

This file lives at the repository root so that it applies to the docstring examples of
``tfmollify/`` as well as to ``tests/``.
"""

from __future__ import annotations

import os


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def threads_per_worker() -> int:
    """The cores of this machine divided among the xdist workers (at least one thread each)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, _cores() // max(1, workers))


def interop_threads(threads: int) -> int:
    """TensorFlow's inter-op pool: at least 2 threads, whatever the share. With one, independent
    ops of a graph never run at the same time, and the tests that prove the `batch_size` bound
    holds for passes that *can* overlap (tests/test_guarantees.py, "in flight") would pass even
    where two passes overlap (a planted bug in scripts/mutants showed it). The ops themselves run
    on the intra-op pool, which keeps the worker's share."""
    return max(2, threads)


_THREADS = threads_per_worker()
for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(_THREADS))
os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(interop_threads(_THREADS)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# -- Hypothesis profiles ----------------------------------------------------------------------
# Registered here and loaded in pytest_configure (not at import), so that the choice also holds
# in xdist workers, whose sys.argv is not pytest's command line.
settings.register_profile(
    "tfmollify",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
# ./scripts/test --hypothesis-profile=thorough: 10x the examples (local runs)
settings.register_profile("thorough", parent=settings.get_profile("tfmollify"), max_examples=400)
# ./scripts/test --quick: a few examples per property (the full suite runs 40)
settings.register_profile("quick", parent=settings.get_profile("tfmollify"), max_examples=8)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick", action="store_true", default=False,
        help="the quick tier for daily work: no `slow` tests (except those also marked `quick`), "
             "the first case of each parametrized test, the `quick` Hypothesis profile "
             "(docs/development.md says what it leaves out)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "quick: kept by --quick even when slow or not the first parametrized case")
    if not config.getoption("hypothesis_profile", default=None):
        settings.load_profile("quick" if config.getoption("quick") else "tfmollify")


# The number of tests of the whole suite, when this run collected the whole suite (default paths,
# no -k/-m/--quick): tests/test_readme.py checks the count the README states against it.
WHOLE_SUITE_COUNT = pytest.StashKey[int]()


def _collects_the_whole_suite(config: pytest.Config) -> bool:
    return (config.args_source is pytest.Config.ArgsSource.TESTPATHS
            and not config.getoption("keyword") and not config.getoption("markexpr")
            and not config.getoption("deselect") and not config.getoption("quick"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Records the whole suite's count; ``--quick``: drops slow tests and every parametrized
    case but the first of its test (items marked ``quick`` always stay)."""
    if _collects_the_whole_suite(config):
        config.stash[WHOLE_SUITE_COUNT] = len(items)
    if not config.getoption("quick"):
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    seen: set[str] = set()
    for item in items:
        function = item.nodeid.split("[", 1)[0]
        if item.get_closest_marker("quick") is not None:
            kept.append(item)
        elif item.get_closest_marker("slow") is not None or function in seen:
            dropped.append(item)
        else:
            kept.append(item)
        seen.add(function)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def whole_suite_count(request: pytest.FixtureRequest) -> int | None:
    """The number of tests in the whole suite if this run collected it all, else None."""
    return request.config.stash.get(WHOLE_SUITE_COUNT, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A docstring example that registers a kernel leaves the registry as it found it: its
    kernel's methods read the example's globals, which doctest clears when it ends (a strategy
    drawing from the registry would later call a kernel that no longer works)."""
    if not isinstance(item, pytest.DoctestItem):
        return (yield)
    from tests.doc_examples import kept_kernel_registry

    with kept_kernel_registry():
        return (yield)
