"""tfmollify.core.plan: the static plan, checked by brute force over the engine's loops."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfmollify.core import plan


def simulate(p: plan.Plan, batch: int) -> tuple[collections.Counter, int]:
    """Walks the engine's loops as :mod:`tfmollify.core.engine` runs them (blocks of examples,
    weight
    draws or units, runs of the chunk loop, passes) and counts every evaluated
    ``(example, weight draw, input draw)``; returns the counts and the largest pass in rows."""
    lay = p.layout
    seen: collections.Counter = collections.Counter()
    largest = 0
    for start in range(0, batch, p.block):
        examples = range(start, min(batch, start + p.block))
        runs = []  # (weight draw, first input draw of the run)
        for j in range(lay.n_w):
            if lay.split_units:
                runs += [(j, r * lay.in_unit) for r in range(lay.n_in // lay.in_unit)]
            else:
                runs.append((j, 0))
        for j, base in runs:
            for k in range(lay.n_chunks):
                first = k * lay.chunk
                draws = [base + first + i for i in range(lay.chunk) if first + i < lay.n_loop]
                largest = max(largest, len(examples) * lay.chunk * p.evaluations_per_sample)
                for b in examples:
                    for i in draws:
                        seen[(b, j, i)] += 1
    return seen, largest


@st.composite
def settings(draw):
    mode = draw(st.sampled_from(["sg", "ng", "fg"]))
    sampler = draw(st.sampled_from(["iid", "antithetic", "sobol"]))
    n = draw(st.integers(1, 40))
    m = draw(st.integers(1, 12))
    if sampler == "antithetic":
        n, m = 2 * n, 2 * m
    count = n if mode == "sg" else m
    replicates = 1
    if sampler == "sobol":
        replicates = draw(st.sampled_from([d for d in range(1, count + 1) if count % d == 0]))
    per = draw(st.sampled_from([1, 1, 4]))
    least = 2 * per if sampler == "antithetic" and mode != "ng" else per
    batch_size = draw(st.one_of(st.none(), st.integers(least, 90)))
    batch = draw(st.integers(1, 9))
    return dict(mode=mode, sampler=sampler, num_samples=n, num_weight_samples=m,
                replicates=replicates, batch_size=batch_size, evaluations_per_sample=per), batch


@given(settings())
def test_every_evaluation_once_and_never_more_than_batch_size_in_flight(case):
    kwargs, batch = case
    p = plan.make(batch=batch, **kwargs)
    seen, largest = simulate(p, batch)
    n_in = kwargs["num_samples"] if kwargs["mode"] != "ng" else 1
    n_w = kwargs["num_weight_samples"] if kwargs["mode"] != "sg" else 1
    want = {(b, j, i) for b in range(batch) for j in range(n_w) for i in range(n_in)}
    assert set(seen) == want
    assert set(seen.values()) == {1}
    if kwargs["batch_size"] is not None:
        assert largest <= kwargs["batch_size"]
        assert p.rows_per_pass <= kwargs["batch_size"]
    else:
        assert p.block == batch and p.layout.n_chunks == 1


@given(settings())
def test_units_never_straddle_a_pass(case):
    """Antithetic pairs and Sobol replicates are whole inside a pass (or, when longer than a
    pass, closed as a unit of their own), so the standard error runs over whole units."""
    kwargs, batch = case
    lay = plan.make(batch=batch, **kwargs).layout
    if lay.split_units:
        assert lay.n_loop == lay.in_unit
    else:
        assert lay.chunk % lay.in_unit == 0 or lay.n_chunks == 1
        assert lay.n_loop % lay.in_unit == 0


@pytest.mark.parametrize(
    "kwargs, rows",
    [
        (dict(mode="sg", num_samples=50, batch_size=32), 25),  # 2 equal passes of 25
        (dict(mode="sg", num_samples=16, batch_size=8), 8),
        (dict(mode="fg", num_samples=10, batch_size=64), 60),  # 6 examples x 10 draws
        (dict(mode="sg", num_samples=50, batch_size=32, evaluations_per_sample=16), 32),
    ],
)
def test_known_plans(kwargs, rows):
    full = dict(mode="sg", sampler="iid", num_samples=50, num_weight_samples=10, replicates=1,
                batch_size=None, evaluations_per_sample=1)
    full.update(kwargs)
    assert plan.make(batch=6, **full).rows_per_pass == rows
