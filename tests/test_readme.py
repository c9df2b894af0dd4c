"""The README's argument table says what `Explainer.__init__` does: same names, same defaults."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import tfmollify as tfm
from tfmollify.spec import ARGUMENTS

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
