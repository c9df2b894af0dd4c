"""An MkDocs hook: the API page documents every name of ``tfmollify.__all__``.

``docs/api.md`` sorts the public names into sections; a name added to ``__all__`` that the page
does not list yet is appended under "More", so the reference can never lag behind the package.
``__all__`` is read from ``tfmollify/__init__.py`` without importing it (no TensorFlow at build
time).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

INIT = Path(__file__).resolve().parents[2] / "tfmollify" / "__init__.py"


def public_names(init: Path = INIT) -> list[str]:
    """The strings of the ``__all__ = [...]`` assignment in ``init``."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return [ast.literal_eval(e) for e in node.value.elts]
    raise ValueError(f"{init} has no `__all__ = [...]`")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "api.md":
        return markdown
    listed = set(re.findall(r"^::: tfmollify\.(\w+)", markdown, re.M))
    more = [name for name in public_names() if name not in listed]
    if not more:
        return markdown
    return markdown + "\n\n## More\n\n" + "\n\n".join(f"::: tfmollify.{n}" for n in more) + "\n"
