"""A griffe extension: tfmollify's docstrings, written for ``pydoc`` and doctest, as Markdown.

The docstrings follow Google style with doctest examples and a few Sphinx roles. mkdocstrings
renders Markdown, where a bare ``>>>`` session is a paragraph (and ``[0][:, 1]`` in it reads as
a cross-reference) and ``:class:`X``` is literal text. Before rendering, this extension

* fences every doctest session (a run of ``>>>`` lines with their output) as ``pycon`` code;
* turns Sphinx roles (``:class:``, ``:func:``, ``:meth:``, ...) into code spans (``~a.b.C``
  shows ``C``);
* turns a ``Raises:`` section that only says ``As :meth:`explain`.`` into a sentence (griffe
  expects ``Error: description`` entries there);
* splits an ``Args:`` entry that names several parameters (``inputs, targets, seeds: As for
  explain``) into one entry per parameter.

The docstrings themselves stay as they are: ``pytest --doctest-modules`` runs them.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
_SEVERAL = re.compile(r"^(?P<indent>\s+)(?P<names>[A-Za-z_]\w*(?:, [A-Za-z_]\w*)+): (?P<rest>.*)$")
_RAISES_AS = re.compile(r"^(?P<indent>[ \t]*)Raises:\n[ \t]+As (?P<other>[^\n]+)$", re.M)
_SECTION = re.compile(r"^(?P<indent>\s*)(?P<title>[A-Z][A-Za-z ]*):\s*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def markdown(text: str) -> str:
    """The docstring ``text`` with doctests fenced, roles as code and several-name args split."""
    text = _RAISES_AS.sub(lambda m: f"{m.group('indent')}Raises the errors of {m.group('other')}",
                          text)
    lines = text.splitlines()
    out: list[str] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        head = _SECTION.match(line)
        if head:
            section = head.group("title")
        stripped = line.lstrip()
        if stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            session = []
            while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
                session.append(lines[i])
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += [f"{indent}```pycon", *session, f"{indent}```"]
            if i < len(lines) and lines[i].strip():
                out.append("")
            continue
        several = _SEVERAL.match(line)
        if several and section in ("Args", "Arguments", "Parameters"):
            for name in several.group("names").split(", "):
                out.append(f"{several.group('indent')}{name}: {several.group('rest')}")
        else:
            out.append(_ROLE.sub(_role, line))
        i += 1
    return "\n".join(out)


class DoctestMarkdown(griffe.Extension):
    """Rewrites every docstring with :func:`markdown` as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
