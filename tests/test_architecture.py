"""The package's architecture, checked from its source (issue 26).

Each module sits in one role, a public subpackage of ``tfmollify``; imports point one way, from the
interface down to the core; nothing outside the core of the explainer reads its parts
(``.runner.``, ``.view.``) or another module's private names; no module compares a mode to a
string; no class is longer than 300 lines and no function longer than 60 (docstrings excluded).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "tfmollify"

#: The roles, from the bottom (the core) to the top (the interface). A module may import its own
#: layer and the layers below it, never one above.
LAYERS = ("core", "adapter", "explainers", "evaluation", "testing", "integrations", "interface")


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (imports there are for annotations)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports(name: str, tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of a ``tfmollify`` module, TYPE_CHECKING excluded."""
    skip = _type_checking_blocks(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tfmollify")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("tfmollify"):
                # ``from tfmollify.core import kernels`` imports tfmollify.core.kernels
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


MODULES = modules()


def test_every_module_sits_in_one_role():
    top = sorted(n for n in MODULES if n.count(".") == 1 and n.split(".")[1] not in LAYERS)
    assert top == [], f"modules outside the role subpackages {LAYERS}: {top}"
    assert all(f"tfmollify.{r}" in MODULES for r in LAYERS)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n)))
def test_imports_point_down(name):
    mine = LAYERS.index(layer(name))
    wrong = []
    for line, target in imports(name, MODULES[name]):
        if target in ("tfmollify", "tfmollify.__version__") or layer(target) is None:
            wrong.append(f"line {line}: {target} (the package facade; import the module itself)")
        elif LAYERS.index(layer(target)) > mine:
            wrong.append(f"line {line}: {target} ({layer(target)} is above {layer(name)})")
    assert not wrong, f"{name} imports upwards:\n" + "\n".join(wrong)


# -- one public seam: nothing outside the core reads the explainer's parts ----------------------
#: Where the explainer's parts (``.runner``, ``.view``) may be read: the layers below the
#: explainer, the explainer itself and its seam.
PARTS_ALLOWED = ("tfmollify.core", "tfmollify.adapter", "tfmollify.explainers.explainer",
                 "tfmollify.explainers.seam")
def _outside(name: str, allowed: tuple[str, ...]) -> bool:
    return not any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _outside(n, PARTS_ALLOWED)))
def test_integrations_use_only_the_seam(name):
    reads = [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(MODULES[name])
        if isinstance(node, ast.Attribute) and node.attr in ("runner", "view", "_runner", "_view")
    ]
    assert not reads, f"{name} reads an explainer's parts (use explainer.seam):\n" + "\n".join(
        reads)


def _tfmollify_names(tree: ast.Module) -> set[str]:
    """The names a module binds to tfmollify modules or objects by importing them."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfmollify"):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.startswith("tfmollify"))
    return names


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(name):
    tree = MODULES[name]
    imported = _tfmollify_names(tree)
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfmollify"):
            wrong += [f"line {node.lineno}: from {node.module} import {a.name}"
                      for a in node.names if a.name.startswith("_")]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
              and node.value.id in imported):
            wrong.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not wrong, f"{name} reads private names of other modules:\n" + "\n".join(wrong)


# -- a mode is a value that knows what it means -----------------------------------------------
#: Spellings that only a mode has ("smoothgrad" is an aggregation's name too: it counts when
#: compared with something called mode).
MODE_SPELLINGS = {"sg", "ng", "fg", "noisegrad", "fusiongrad"}


def _is_mode_literal(node: ast.AST, spellings: set[str] = MODE_SPELLINGS) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.lower() in spellings
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_is_mode_literal(e, spellings) for e in node.elts)
    return False


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != "tfmollify.core.modes"))
def test_no_module_compares_a_mode_to_a_string(name):
    wrong = []
    for node in ast.walk(MODULES[name]):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            about_mode = "mode" in ast.unparse(node).lower()
            if any(_is_mode_literal(s) or (about_mode and _is_mode_literal(s, {"smoothgrad"}))
                   for s in sides):
                wrong.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Dict) and sum(_is_mode_literal(k) for k in node.keys
                                                if k is not None) >= 2:
            wrong.append(f"line {node.lineno}: a dict keyed by mode names")
    assert not wrong, (f"{name} decides by a mode's spelling (ask tfmollify.core.modes.Mode):\n"
                       + "\n".join(wrong))


# -- sizes ------------------------------------------------------------------------------------
def _docstring_lines(node: ast.AST) -> int:
    body = getattr(node, "body", None)
    if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and body
            and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        return body[0].end_lineno - body[0].lineno + 1
    return 0


def size(node: ast.AST) -> int:
    """Lines of ``node`` from the syntax tree, without its docstrings (nested ones included)."""
    lines = node.end_lineno - node.lineno + 1
    return lines - sum(_docstring_lines(n) for n in ast.walk(node))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_class_over_300_lines_and_no_function_over_60(name):
    wrong = []
    for node in ast.walk(MODULES[name]):
        if isinstance(node, ast.ClassDef) and size(node) > 300:
            wrong.append(f"class {node.name}: {size(node)} lines")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and size(node) > 60:
            wrong.append(f"function {node.name} (line {node.lineno}): {size(node)} lines")
    assert not wrong, f"{name}:\n" + "\n".join(wrong)


def test_the_size_rule_counts_as_stated():
    """The control: a 62-line function with a 3-line docstring counts 59."""
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    tree = ast.parse(f'def f():\n    """Doc.\n\n    More."""\n{body}\n')
    assert size(tree.body[0]) == 58 + 1


# -- the public names ------------------------------------------------------------------------
def test_the_flat_module_paths_name_the_same_modules():
    import importlib

    import tfmollify

    for old, new in tfmollify.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
        assert getattr(tfmollify, old.split(".")[1]) is importlib.import_module(new), old
    from tfmollify.serve import Export  # the documented paths
    from tfmollify.serving import export

    assert export is tfmollify.export and Export.__module__ == "tfmollify.integrations.serve"


def test_every_public_name_is_offered():
    import tfmollify as tfm

    for name in tfm.__all__:
        assert getattr(tfm, name) is not None, name
    assert set(tfm.__all__) >= {
        "MODES", "Explainer", "Explanation", "ExplanationLogger", "FusionGrad", "NoiseGrad",
        "NonFiniteError", "SmoothGrad", "attribution", "callbacks", "explain_dataset", "export",
        "kernels", "register_attribution", "sampling", "tape_gradient"}
