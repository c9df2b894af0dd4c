"""The user's test file of ``docs/guides/testing.md`` runs as a user would run it: written to a
file and collected by pytest in a fresh process (with the plugin's ``--tfm-samples``), every test
passing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.doc_examples import blocks

PAGE = "docs/guides/testing.md"


@pytest.mark.slow
def test_the_guides_test_file_passes_under_pytest(tmp_path):
    (source,) = [b.source for b in blocks(PAGE) if "def test_" in b.source]
    path = tmp_path / "test_explanations.py"
    path.write_text(source)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tfm-samples", "0.5",
         str(path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "5 passed" in out.stdout, out.stdout[-2000:]
