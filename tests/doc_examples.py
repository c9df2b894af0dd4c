"""Runs the ```python blocks of a Markdown page in order, in one namespace, as a reader would.

The README and the documentation pages (``docs/**/*.md``) are tested with this, so that their
examples cannot drift from the code. A page may name a model that is too slow for the test suite
(MobileNetV2 at 224x224 on 2 cores): :class:`Swap` replaces that text in the block before it
runs, and every swap must still match the page (a stale one fails). A block that needs something
the tests cannot have (a running model server, a Ray cluster, S3) is left out with a
:class:`Skip`, naming the reason; a skip that matches no block fails too. The listing of both,
page by page, lives in the test modules (``tests/test_readme.py``, ``tests/test_docs.py``).

Statements that write files or register names (``export(``, ``register(``, ``output="...npy"``)
run a second time right after their block: following a page twice in one session must work
(``overwrite=True`` and the like).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import re
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
                    re.S | re.M)
_SIDE_EFFECTS = re.compile(r"\.export\(|\bexport\(|register\(|output=\"[^\"]+\.npy\"")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page: its language, first line (1-based) and source."""

    page: str
    line: int
    lang: str
    source: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Swap:
    """Replace ``old`` by ``new`` in the page's Python blocks before they run, because ``why``."""

    old: str
    new: str
    why: str


@dataclasses.dataclass(frozen=True)
class Skip:
    """Leave out the one Python block of the page that contains ``needle``, because ``why``."""

    needle: str
    why: str


def blocks(page: Path | str, lang: str = "python") -> list[Block]:
    """The fenced blocks of ``page`` (a path, absolute or relative to the repository) in ``lang``.

    Indented fences (inside list items) are dedented.
    """
    path = Path(page) if Path(page).is_absolute() else ROOT / page
    text = path.read_text()
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    out = []
    for m in _FENCE.finditer(text):
        if m.group("lang") != lang:
            continue
        indent = m.group("indent")
        body = m.group("body")
        if indent:
            body = "".join(line[len(indent):] if line.startswith(indent) else line
                           for line in body.splitlines(keepends=True))
        line = text.count("\n", 0, m.start()) + 2  # the first line inside the fence
        out.append(Block(name, line, lang, textwrap.dedent(body)))
    return out


def prepare(page_blocks: list[Block], swaps: list[Swap], skips: list[Skip]
            ) -> tuple[list[Block], list[tuple[Block, str]]]:
    """The blocks to run (swaps applied) and the skipped ones with their reasons.

    Raises:
        AssertionError: If a swap or a skip matches no block (or a skip more than one).
    """
    for swap in swaps:
        assert any(swap.old in b.source for b in page_blocks), (
            f"stale swap: {swap.old!r} is in no Python block of the page any more "
            f"(remove or update it: {swap.why})"
        )
    skipped: dict[int, str] = {}
    for skip in skips:
        hits = [i for i, b in enumerate(page_blocks) if skip.needle in b.source]
        assert len(hits) == 1, (
            f"a skip must match exactly one block: {skip.needle!r} matches {len(hits)} "
            f"({skip.why})"
        )
        skipped[hits[0]] = skip.why
    run, left_out = [], []
    for i, b in enumerate(page_blocks):
        if i in skipped:
            left_out.append((b, skipped[i]))
            continue
        source = b.source
        for swap in swaps:
            source = source.replace(swap.old, swap.new)
        run.append(dataclasses.replace(b, source=source))
    return run, left_out


def _side_effects(block: Block) -> list:
    """The top-level statements of ``block`` that write files or register names, compiled."""
    tree = ast.parse(block.source)
    again = []
    for stmt in tree.body:
        segment = ast.get_source_segment(block.source, stmt) or ""
        if _SIDE_EFFECTS.search(segment):
            module = ast.Module(body=[stmt], type_ignores=[])
            again.append(compile(module, f"{block.where} (again)", "exec"))
    return again


def run_blocks(run: list[Block], namespace: dict | None = None) -> dict[str, float]:
    """Executes the blocks in order in one namespace; returns the seconds each took.

    After each block, its statements with side effects (see the module docstring) run again.

    Raises:
        AssertionError: Naming the page and line of the block that failed, and the error.
    """
    ns = {"__name__": "__doc_example__"} if namespace is None else namespace
    seconds = {}
    for b in run:
        code = compile(b.source, b.where, "exec")
        start = time.perf_counter()
        for attempt, part in enumerate([code, *_side_effects(b)]):
            try:
                exec(part, ns)
            except Exception as exc:  # the example failed: say which one, and how
                again = " when run again (examples must be re-runnable)" if attempt else ""
                raise AssertionError(
                    f"the example at {b.where} failed{again}: {type(exc).__name__}: {exc}\n"
                    f"{b.source}"
                ) from exc
        seconds[b.where] = time.perf_counter() - start
    return seconds


@contextlib.contextmanager
def kept_kernel_registry() -> Iterator[None]:
    """Restores tfmollify's kernel registry afterwards (a page may register its own kernel)."""
    from tfmollify.core import kernels

    saved = dict(kernels._REGISTRY), dict(kernels._ALIASES)
    try:
        yield
    finally:
        for table, old in zip((kernels._REGISTRY, kernels._ALIASES), saved, strict=True):
            table.clear()
            table.update(old)
