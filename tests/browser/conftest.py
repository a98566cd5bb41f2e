"""Fixtures for the browser check of the built book (tests/browser/test_*.py): every page in
test_book_in_browser.py; phones and tablets in test_small_screens.py; nothing clipped in
test_overflow.py; axe-core, alt text and captions in test_accessibility.py; search in test_search.py.

The book must already be built (``./course book``); it is served from ``_build/html`` (or
``$TINYLM_BOOK_HTML``) on 127.0.0.1 and opened in Debian's chromium through Playwright.
Playwright never downloads a browser of its own here, and any request that leaves localhost
is blocked and reported: the book must work offline.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
LOCAL_HOST = "127.0.0.1"
TIMEOUT_MS = 15_000
DESKTOP = {"width": 1280, "height": 900}


# --------------------------------------------------------------------------- the book


@dataclass(frozen=True)
class BookConfig:
    """What the browser check needs from ``_config.yml``, the one place the repository URL lives."""

    repository_url: str  # https://github.com/ORG/REPO
    org_repo: str  # ORG/REPO
    branch: str
    binderhub_url: str  # https://mybinder.org

    def binder_url(self, path: str) -> str:
        """The (URL-decoded) Binder address that opens ``path`` of the repository in JupyterLab."""
        return f"{self.binderhub_url}/v2/gh/{self.org_repo}/{self.branch}?urlpath=lab/tree/{path}"


@pytest.fixture(scope="session")
def book_config() -> BookConfig:
    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    url = str((config.get("repository") or {}).get("url", "")).rstrip("/").removesuffix(".git")
    branch = str((config.get("repository") or {}).get("branch") or "main")
    hub = str((config.get("launch_buttons") or {}).get("binderhub_url", "")).rstrip("/")
    prefix = "https://github.com/"
    assert url.startswith(prefix) and url.count("/") == 4, (
        f"_config.yml: repository.url should be https://github.com/ORG/REPO, not {url!r}")
    assert hub.startswith("https://"), f"_config.yml: launch_buttons.binderhub_url is missing or not https: {hub!r}"
    return BookConfig(repository_url=url, org_repo=url.removeprefix(prefix), branch=branch, binderhub_url=hub)


@pytest.fixture(scope="session")
def book_html() -> Path:
    folder = Path(os.environ.get("TINYLM_BOOK_HTML") or REPO / "_build" / "html").resolve()
    if not (folder / "intro.html").is_file():
        pytest.fail(f"The built book is missing: there is no {folder / 'intro.html'}.\n"
                    f"Build it first with: ./course book   (then run this check again)", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def screenshot_dir(book_html: Path) -> Path:
    """``_build/screenshots/`` next to the book's ``html/`` folder."""
    folder = book_html.parent / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- the server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the base class
        pass


@pytest.fixture(scope="session")
def base_url(book_html: Path):
    """The book served on 127.0.0.1 on a free port, e.g. ``http://127.0.0.1:40123/``."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer((LOCAL_HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield f"http://{LOCAL_HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail("install Debian's chromium: apt-get install chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visit:
    """One page of the book, loaded once, with everything the browser reported while loading it."""

    url: str
    page: object  # playwright.sync_api.Page, left open for the tests to query
    status: int | None = None
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # waits that timed out


_SCROLL_TO_BOTTOM = """async () => {
    for (let y = 0; y < document.documentElement.scrollHeight; y += window.innerHeight / 2) {
        window.scrollTo(0, y);
        await new Promise(resolve => setTimeout(resolve, 20));
    }
    window.scrollTo(0, document.documentElement.scrollHeight);
}"""
_IMAGES_DONE = "() => Array.from(document.images).every(img => img.complete)"
_MATHJAX_STARTED = "() => window.MathJax && MathJax.startup && MathJax.startup.promise"


def _load(browser, url: str, viewport: dict | None = None) -> Visit:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport=viewport or DESKTOP, service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    visit = Visit(url=url, page=page)

    def route(route):
        request_url = route.request.url
        scheme = urlsplit(request_url).scheme
        if scheme in ("data", "blob", "about") or urlsplit(request_url).hostname == LOCAL_HOST:
            route.continue_()
        else:  # the book must be fully offline: block it, and report it
            visit.external_requests.append(f"{route.request.resource_type}: {request_url}")
            route.abort("blockedbyclient")

    def on_console(message):
        if message.type == "error":
            where = message.location or {}
            origin = f" ({where.get('url')}:{where.get('lineNumber')})" if where.get("url") else ""
            visit.console_errors.append(f"console.error: {message.text}{origin}")

    def on_request_failed(request):
        if urlsplit(request.url).hostname == LOCAL_HOST:  # blocked external requests are reported above
            visit.failed_requests.append(f"{request.url} ({request.failure})")

    def on_response(response):
        if response.status >= 400:
            visit.failed_requests.append(f"{response.url} (HTTP {response.status})")

    context.route("**/*", route)
    page.on("console", on_console)
    page.on("pageerror", lambda error: visit.console_errors.append(f"uncaught exception: {error}"))
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)

    response = page.goto(url, wait_until="load")
    visit.status = response.status if response else None
    if visit.status != 200:
        return visit
    # Images may be lazy: scroll through the whole page, then wait for every <img> to settle.
    page.evaluate(_SCROLL_TO_BOTTOM)
    try:
        page.wait_for_function(_IMAGES_DONE, timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        visit.problems.append(f"some images were still loading after {TIMEOUT_MS / 1000:.0f} s")
    if page.locator(".math").count():
        try:
            page.wait_for_function(_MATHJAX_STARTED, timeout=TIMEOUT_MS)
            page.evaluate("() => MathJax.startup.promise.then(() => true)")
        except (PlaywrightTimeout, PlaywrightError) as exc:
            visit.problems.append(f"MathJax did not start or finish typesetting: {str(exc).splitlines()[0]}")
    try:
        page.wait_for_load_state("networkidle", timeout=5_000)
    except PlaywrightTimeout:
        visit.problems.append("the page kept loading resources (no network idle after 5 s)")
    page.evaluate("() => window.scrollTo(0, 0)")
    return visit


@pytest.fixture(scope="session")
def visit(browser, base_url):
    """``visit("labs/lab01_ngrams.html")`` -> that page's :class:`Visit`, loaded once per session."""
    visits: dict[str, Visit] = {}

    def get(path: str) -> Visit:
        if path not in visits:
            visits[path] = _load(browser, base_url + path)
        return visits[path]

    yield get
    for loaded in visits.values():
        loaded.page.context.close()


@pytest.fixture
def visit_at(browser, base_url):
    """``visit_at("chapters/slm.html", 390, 844)`` -> a fresh :class:`Visit` of that page in a
    window of that size (a phone, a tablet), for a test to click through; closed after the test."""
    opened: list[Visit] = []

    def get(path: str, width: int, height: int) -> Visit:
        opened.append(_load(browser, base_url + path, viewport={"width": width, "height": height}))
        return opened[-1]

    yield get
    for loaded in opened:
        loaded.page.context.close()


# --------------------------------------------------------------------------- axe-core


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core (the accessibility engine behind Lighthouse and Deque's tools), as shipped in the
    ``axe-playwright-python`` package: nothing is downloaded."""
    try:
        import axe_playwright_python
    except ImportError:
        pytest.fail("axe-core comes with axe-playwright-python: pip install -r requirements.txt", pytrace=False)
    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")
