"""The README's argument table says what `Explainer.__init__` does: same names, same defaults."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import tfmollify as tfm
from tests.doc_examples import Skip, Swap, blocks, kept_kernel_registry, prepare, run_blocks
from tfmollify.adapter.spec import ARGUMENTS
from tfmollify.core import kernels

README = Path(__file__).resolve().parents[1] / "README.md"


def argument_rows() -> dict[str, str]:
    """``{name: default cell}`` from the README's table of Explainer arguments."""
    text = README.read_text()
    start = text.index("| argument | default | meaning |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        names_cell, default_cell = (c.strip() for c in line.strip("|").split("|")[:2])
        names = re.findall(r"`([a-z_]+)`", names_cell)
        defaults = [d.strip() for d in default_cell.split(",")] if len(names) > 1 else [
            default_cell
        ]
        if len(defaults) != len(names):
            defaults = [default_cell] * len(names)
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = default
    return rows


def test_the_table_lists_every_argument_once():
    assert set(argument_rows()) == set(ARGUMENTS)


def test_the_table_defaults_are_the_signatures():
    signature = inspect.signature(tfm.Explainer.__init__).parameters
    for name, cell in argument_rows().items():
        assert signature[name].default == ARGUMENTS[name], name
        literal = cell.replace("`", "").strip()
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue  # a description ("20 rounds", "smallest divisor ...")
        assert value == ARGUMENTS[name], (name, cell, ARGUMENTS[name])


def test_only_mode_is_positional():
    params = list(inspect.signature(tfm.Explainer.__init__).parameters.values())[1:]
    assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == ["model", "mode"]
    assert "`mode` may be given by position" in README.read_text()


# -- the README's Python examples run as written ------------------------------------------------


def small_cnn(input_shape=(32, 32, 3), classes: int = 10):
    """A stand-in for MobileNetV2 with two of its layer names (the README's ``weight_layers``)."""
    import keras

    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="block_16_project")(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="Conv_1")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


# Where the README names a model too slow for the suite, and why (each must still match).
SWAPS = [
    Swap("keras.applications.MobileNetV2(weights=None, classifier_activation=None)",
         "small_cnn()", "MobileNetV2 traces and runs for minutes on 2 cores; small_cnn has the "
         "layer names the NoiseGrad example picks"),
    Swap("size=(4, 224, 224, 3)", "size=(4, 32, 32, 3)", "the stand-in's input size"),
]
# Blocks the suite cannot run, and why (each must match exactly one block).
SKIPS: list[Skip] = []


@pytest.mark.slow
def test_every_python_example_of_the_readme_runs_in_order(tmp_path, monkeypatch):
    run, left_out = prepare(blocks(README), SWAPS, SKIPS)
    assert len(run) >= 6 and not left_out
    monkeypatch.chdir(tmp_path)
    with kept_kernel_registry():
        seconds = run_blocks(run, {"__name__": "__readme__", "small_cnn": small_cnn})
    assert "triangle" not in kernels.names()  # the README's kernel is gone again
    # ~15 s on 2 idle cores; a generous guard against a block that blew up (wall time on a
    # shared machine varies 3x)
    assert sum(seconds.values()) < 240, seconds
    # what the examples say they produce
    assert (tmp_path / "serving" / "explainer" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "attr.npy").exists()


def test_the_readme_defines_every_name_its_examples_use():
    """No placeholder: every name a block reads is bound by an earlier block (or a builtin)."""
    import builtins

    bound = set(dir(builtins))
    for block in blocks(README):
        tree = ast.parse(block.source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                assert node.id in bound, f"{block.where}: `{node.id}` is never defined"


def stated_test_count() -> int:
    """The number of tests the README's quick start states (``./scripts/test ... (N tests``)."""
    found = re.search(r"\./scripts/test .*?\(([\d,]+) tests", README.read_text())
    assert found, "the README's quick start states the suite's size as '(N tests'"
    return int(found.group(1).replace(",", ""))


@pytest.mark.slow  # outside a whole-suite run it collects the suite in a subprocess (10+ s)
def test_the_stated_test_count_is_the_suite_size(whole_suite_count):
    """The README states how many tests ``./scripts/test`` runs; that number is the suite's
    size within 5 % (so it is updated as the suite grows). Outside a whole-suite run the suite
    is collected in a subprocess."""
    import subprocess
    import sys

    count = whole_suite_count
    if count is None:
        res = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist",
             "-p", "no:cacheprovider"],
            cwd=README.parent, capture_output=True, text=True, timeout=600,
        )
        found = re.search(r"(\d+) tests? collected", res.stdout)
        assert found, res.stdout[-2000:] + res.stderr[-2000:]
        count = int(found.group(1))
    stated = stated_test_count()
    assert abs(count - stated) <= 0.05 * stated, (
        f"README.md states {stated} tests, the suite has {count}: update the quick start")
