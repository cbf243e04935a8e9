"""``/docs`` and ``/redoc`` in a real browser with no network but keyhouse's (issue 13).

Debian's Chromium (``/usr/bin/chromium``; ``.ci/run`` installs it) driven
by Playwright loads each page from a real ``keyhouse serve``; every request
to anything but that server is aborted and counted. The page must render
keyhouse's operations, and nothing may try to leave: the vendored assets
make the first true, the pages' Content-Security-Policy the second
(``apidocs/endpoints.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from keyhouse.apidocs import endpoints as apidocs
from keyhouse.config import Settings
from tests.limits.conftest import served

pytestmark = pytest.mark.sqlite_only

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")


def need_chromium() -> None:
    if shutil.which(CHROMIUM) is None:
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI needs it (.ci/run installs it)")
        pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Started inside the test: Playwright's sync API keeps an event loop running in
    this thread, where the database fixtures' ``asyncio.run`` could not run after it."""
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


class Offline:
    """A page whose requests reach ``origin`` only; the others are aborted and kept."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.origin = origin
        self.left: list[str] = []
        self.failed: list[tuple[str, str | None]] = []
        self.console_errors: list[str] = []
        self.context = browser.new_context()
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on(
            "requestfailed",
            lambda request: self.failed.append((request.url, request.failure)),
        )

    def _route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin or parts.scheme in {"data", "blob"}:
            route.continue_()
        else:
            self.left.append(url)
            route.abort("internetdisconnected")

    def _console(self, message: object) -> None:
        if getattr(message, "type", "") == "error":
            self.console_errors.append(str(getattr(message, "text", message)))

    def expect_nothing_left(self) -> None:
        """No request left the origin; the ones the page's policy stopped in the
        browser (ReDoc's logo) were for elsewhere, and nothing else failed."""
        assert self.left == [], self.left
        stopped = [url for url, why in self.failed if why == "csp"]
        assert [url for url in stopped if url.startswith(self.origin)] == [], stopped
        others = [(url, why) for url, why in self.failed if why != "csp"]
        assert others == [], others
        errors = [text for text in self.console_errors if "Content Security Policy" not in text]
        assert errors == [], errors

    def close(self) -> None:
        self.context.close()


OPERATIONS = ["listKeys", "createKey", "verifyKey", "revokeKey", "rollKey", "getCurrentAccount"]


def test_swagger_ui_renders_every_operation_offline(settings: Settings) -> None:
    need_chromium()
    with served(settings, 1) as [url], chromium() as browser:
        offline = Offline(browser, url)
        try:
            response = offline.page.goto(f"{url}/docs")
            assert response is not None
            assert response.status == 200
            # Swagger UI's deep-link ids: operations-<tag>-<operationId>.
            for operation in OPERATIONS:
                offline.page.wait_for_selector(f"[id$='-{operation}']", timeout=20_000)
            summaries = offline.page.locator(".opblock-summary-description").all_inner_texts()
            assert "List all API keys for the authenticated user's account" in summaries
            offline.expect_nothing_left()
        finally:
            offline.close()


def test_redoc_renders_every_operation_offline(settings: Settings) -> None:
    need_chromium()
    with served(settings, 1) as [url], chromium() as browser:
        offline = Offline(browser, url)
        try:
            response = offline.page.goto(f"{url}/redoc")
            assert response is not None
            assert response.status == 200
            for operation in OPERATIONS:
                offline.page.wait_for_selector(
                    f"[data-section-id$='/operation/{operation}']", timeout=20_000
                )
            offline.page.get_by_role(
                "heading", name="List all API keys for the authenticated user's account"
            ).first.wait_for(timeout=20_000)
            offline.expect_nothing_left()
        finally:
            offline.close()


class TestPages:
    """What the browser tests rest on, checked without a browser."""

    def test_the_pages_name_no_other_origin(self, settings: Settings) -> None:
        with served(settings, 1) as [url]:
            for path in ("/docs", "/redoc"):
                page = httpx.get(f"{url}{path}")
                assert page.status_code == 200
                assert page.headers["content-type"].startswith("text/html")
                assert "http://" not in page.text
                assert "https://" not in page.text
                csp = page.headers["content-security-policy"]
                assert "script-src 'self'" in csp
                assert "connect-src 'self'" in csp
            init = httpx.get(f"{url}/docs/assets/swagger-init.js")
            assert "validatorUrl: null" in init.text
            missing = httpx.get(f"{url}/docs/assets/nothing.js")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "not_found"

    def test_vendored_assets_are_the_released_files(self) -> None:
        folder = Path(apidocs.__file__).parent / "assets"
        for name, asset in apidocs.ASSETS.items():
            digest = hashlib.sha256((folder / asset.file).read_bytes()).hexdigest()
            assert digest == asset.sha256, name
        for notice in (
            "swagger-ui.LICENSE",
            "swagger-ui.NOTICE",
            "redoc.LICENSE",
            "swagger-ui-bundle.js.LICENSE.txt",
            "redoc.standalone.js.LICENSE.txt",
        ):
            assert (folder / notice).is_file(), notice
