"""The documentation site: it builds strictly, a broken reference fails it, it renders in a
headless browser, and the Python examples of every page run as written.

``mkdocs build --strict`` (mkdocs-material + mkdocstrings, the ``docs`` extra) fails on any
warning: a broken link, anchor or cross-reference, a missing snippet, a docstring griffe cannot
parse. The rendered check serves the built site on 127.0.0.1 and opens the start page and the API
page in Debian's headless ``chromium`` (``.ci/run`` installs it where it is missing); like the
other optional pieces it is skipped locally when missing, and fails under ``CI=true``.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tfmollify
from tests.crosscheck import require
from tests.doc_examples import ROOT, Skip, Swap, blocks, kept_kernel_registry, prepare, run_blocks

DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

# Blocks of the documentation pages the suite cannot run, and why (each must match one block).
SKIPS: dict[str, list[Skip]] = {
    "docs/guides/serving.md": [
        Skip("prediction_service_pb2_grpc", "a gRPC client: needs tensorflow_model_server on "
             "localhost:8500 (tests/test_serving.py answers the same request with a servicer)"),
    ],
    "docs/guides/datasets.md": [
        Skip("explain_ray_dataset", "starts a Ray cluster and writes to S3 "
             "(tests/test_parallel.py runs explain_ray_dataset on a local cluster)"),
    ],
}
# Text the suite replaces before a page's blocks run, and why (each must still match).
SWAPS: dict[str, list[Swap]] = {}


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(name: str, reason: str) -> str:
    """The path of program ``name``; without it, skip (locally) or fail (``CI=true``)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name!r} is not on PATH ({reason})"
        if _ci():
            pytest.fail(f"CI needs {message}; .ci/run installs it with apt-get")
        pytest.skip(message)
    return path


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``, from the repository root."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        require(module, "the documentation site: pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = mkdocs_build(CONFIG, out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_page(site):
    pages = sorted(p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")
                   if "_ext" not in p.parts)
    for page in pages:
        built = site / ("index.html" if page.name == "index" else page / "index.html")
        assert built.exists(), f"docs/{page}.md was not built"
    assert (site / "demo_grid.png").exists()
    # the README's sections that the getting-started page includes (pymdownx.snippets)
    started = visible_text((site / "getting-started" / "index.html").read_text())
    for text in ("weight_noise_cache_mb", "two_input_model", "tfmollify epsilon"):
        assert text in started, text
    assert "--8<--" not in started and "[start:" not in started


def _small_config(tmp: Path, page: str) -> Path:
    """A copy of mkdocs.yml over a one-page docs folder holding ``page``."""
    yaml = require("yaml", "mkdocs reads its configuration with PyYAML")
    config = yaml.safe_load(CONFIG.read_text())
    docs = tmp / "docs"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text("# Start\n\n" + page)
    config["docs_dir"] = str(docs)
    config["nav"] = [{"Start": "index.md"}]
    config["hooks"] = [str(ROOT / h) for h in config.get("hooks", [])]
    for plugin in config["plugins"]:  # paths in the configuration are relative to its folder
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT / p) for p in python["paths"]]
            options = python["options"]
            options["extensions"] = [str(ROOT / e) for e in options["extensions"]]
    path = tmp / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config))
    return path


# A broken reference of each kind, and what the build's warning says about it.
BROKEN = {
    "cross-reference": ("See [the explainer][tfmollify.Explainer] (not on this page).",
                        "tfmollify.Explainer"),
    "link": ("See [the guide](guides/no-such-guide.md).", "no-such-guide.md"),
    "anchor": ("See [arguments](#no-such-heading).", "no-such-heading"),
}
# Broken references that stop the build at once (one build each).
FATAL = {
    "API entry": ("::: tfmollify.NoSuchFunction", "tfmollify.NoSuchFunction"),
    "snippet": ('--8<-- "README.md:no-such-section"', "no-such-section"),
}


@pytest.mark.slow
def test_a_broken_reference_fails_the_strict_build(tmp_path):
    good = "See [names][tfmollify.core.kernels.names].\n\n::: tfmollify.core.kernels.names\n"
    ok = mkdocs_build(_small_config(tmp_path / "good", good), tmp_path / "good-site")
    assert ok.returncode == 0, ok.stderr
    # all kinds on one page: strict mode reports every warning, then fails
    page = good + "".join(f"\n{line}\n" for line, _ in BROKEN.values())
    done = mkdocs_build(_small_config(tmp_path / "broken", page), tmp_path / "broken-site")
    assert done.returncode != 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    for kind, (_, says) in BROKEN.items():
        assert any(says in w for w in warnings), f"no warning for the broken {kind}:\n{warnings}"
    for kind, (line, says) in FATAL.items():
        where = tmp_path / kind.replace(" ", "-")
        gone = mkdocs_build(_small_config(where, f"{good}\n{line}\n"), where / "site")
        assert gone.returncode != 0 and says in gone.stderr, (kind, gone.stderr)


@pytest.mark.slow
def test_the_api_page_documents_every_public_name(site):
    """Each name of ``tfmollify.__all__`` has its entry (docs/_ext/api_hook.py adds new ones)."""
    api = (site / "api" / "index.html").read_text()
    missing = [n for n in tfmollify.__all__ if f'id="tfmollify.{n}"' not in api]
    assert not missing, f"the API page lacks {missing}"


def test_the_readme_links_point_at_existing_files():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert local, "the README links into the documentation"
    for link in local:
        assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"


# -- the site in a headless browser ---------------------------------------------------------


class _Text(html.parser.HTMLParser):
    """The visible text of an HTML document (script and style left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(document: str) -> str:
    parser = _Text()
    parser.feed(document)
    return " ".join(" ".join(parser.parts).split())


@pytest.fixture(scope="module")
def served(site) -> Iterator[str]:
    """The built site on 127.0.0.1 (an ephemeral port), for the browser."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium(url: str, profile: Path, *args: str) -> str:
    """Runs headless Chromium on ``url`` with ``args``; returns its standard output."""
    program = require_program("chromium", "renders the documentation site (apt-get install "
                              "chromium)")
    done = subprocess.run(
        [program, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--window-size=1280,1600", *args, url],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def render(served: str, page: str, tmp: Path) -> tuple[str, np.ndarray]:
    """The DOM of ``page`` after it loaded, and a 1280x1600 screenshot of it (kept in ``tmp``)."""
    from matplotlib import image

    shot = tmp / (page.strip("/").replace("/", "-") or "start")
    shot = shot.with_suffix(".png")  # a temporary folder: screenshots stay out of the repository
    dom = chromium(f"{served}{page}", tmp / f"profile-{shot.stem}", "--dump-dom",
                   f"--screenshot={shot}")
    return dom, image.imread(shot)


@pytest.mark.slow
def test_the_start_and_api_pages_render_in_a_headless_browser(served, tmp_path):
    dom, pixels = render(served, "/", tmp_path)
    start = visible_text(dom)
    assert "mollified gradient" in start and "Getting started" in start, start[:500]
    assert "API reference" in start  # the navigation
    assert 'src="demo_grid.png"' in dom

    dom, api_pixels = render(served, "/api/", tmp_path)
    api = visible_text(dom)
    for text in ("tfmollify.Explainer", "explain_full", "Smoothed attributions of",
                 "return_stderr", "tfmollify.explain_dataset", "tfmollify.core.kernels",
                 "NonFiniteError"):
        assert text in api, f"{text!r} is not on the rendered API page"
    assert ":class:`" not in api and ":meth:`" not in api  # Sphinx roles became code
    assert '<span class="gp">&gt;&gt;&gt; </span>' in dom  # doctests fenced, highlighted

    for page, shot in (("/", pixels), ("/api/", api_pixels)):
        assert shot.shape[:2] == (1600, 1280), shot.shape
        assert float(np.std(shot[..., :3])) > 0.05, f"{page} rendered blank"


# -- the examples of every page -------------------------------------------------------------


def _pages_with_examples() -> list[str]:
    pages = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if "_ext" not in p.parts)
    return [page for page in pages if blocks(page)]


def test_the_listed_skips_and_swaps_name_existing_pages():
    for page in (*SKIPS, *SWAPS):
        assert (ROOT / page).exists(), f"{page} is listed in tests/test_docs.py but gone"


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_examples())
def test_the_python_examples_of_a_page_run_in_order(page, tmp_path, monkeypatch):
    run, left_out = prepare(blocks(page), SWAPS.get(page, []), SKIPS.get(page, []))
    monkeypatch.chdir(tmp_path)
    with kept_kernel_registry():
        seconds = run_blocks(run)
    assert sum(seconds.values()) < 180, seconds  # a few seconds per page on 2 idle cores
    assert len(left_out) == len(SKIPS.get(page, []))
