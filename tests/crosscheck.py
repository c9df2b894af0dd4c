"""Optional libraries the cross-checks use: skipped where they are missing, but required in CI.

``scripts/test`` installs them (Quantus and ``tensorflow-serving-api`` with ``--no-deps``: their
requirements would replace ``tensorflow-cpu`` or pull the GUI build of OpenCV), so under
``CI=true`` a missing one is a failure, not a silent skip.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest


def require(module: str, reason: str) -> Any:
    """``import module``; without it, skip the test (locally) or fail it (``CI=true``)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            pytest.fail(f"CI needs {module!r} for this cross-check ({reason}): {exc}")
    return pytest.importorskip(module, reason=reason)
