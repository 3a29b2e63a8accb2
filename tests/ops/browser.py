"""A real headless Chromium for the dashboard's browser tests (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium through ``/usr/bin/chromedriver``).

Without the browser the tests are skipped with the reason, unless ``DAZ_REQUIRE_BROWSER``
is set (``.ci/run`` sets it after installing the packages): then its absence fails them.
Selenium is blocking, so each call runs in a worker thread (`trio.to_thread`) while the
server under test keeps running in the test's trio loop. A test that fails saves a
screenshot (`Browser.screenshot_on_failure`) in ``$DAZ_SCREENSHOT_DIR`` (default: the
temporary directory's ``daz-browser-failures``) and prints where.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REQUIRE_ENV = "DAZ_REQUIRE_BROWSER"
DOCS_ENV = "DAZ_DOCS_SCREENSHOTS"  # set: the tests also write docs/images/dashboard-*.png
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WAIT = 30.0  # seconds any one browser wait may take

# the flags this machine's Chromium needs to start headless, offline, as root
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,860",
)

T = TypeVar("T")


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found (apt-get install {package})"
    return None


class Browser:
    """One Chromium session; every method runs the blocking driver call in a thread."""

    def __init__(self, driver: Any, base: str = "") -> None:
        self.driver = driver
        self.base = base

    async def call(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)

    async def get(self, path: str) -> None:
        await self.call(lambda: self.driver.get(self.base + path))

    async def wait_for(self, condition: Callable[[Any], Any], what: str) -> Any:
        """Wait (up to `WAIT` s) until `condition(driver)` is truthy; its value. A poll that
        meets the page mid-navigation (an element gone stale, or a node no longer in the
        document: a click's navigation landing between finding and reading it) counts as
        not yet: the next poll looks again, and the deadline still holds."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        return await self.call(
            lambda: WebDriverWait(
                self.driver,
                WAIT,
                poll_frequency=0.1,
                ignored_exceptions=(WebDriverException,),
            ).until(condition, f"waited {WAIT} s for {what}")
        )

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text))

    async def wait_text(self, css: str, wanted: str) -> None:
        """Wait until the element `css` exists and its text contains `wanted`."""

        def shown(driver: Any) -> bool:
            # found and read in one script: no element reference to go stale in between
            text = driver.execute_script(
                "const e = document.querySelector(arguments[0]);"
                " return e === null ? null : e.innerText;",
                css,
            )
            return text is not None and wanted in text

        await self.wait_for(shown, f"{css!r} to show {wanted!r}")

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        def fill() -> None:
            field = self.driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(text)

        await self.call(fill)

    async def select(self, css: str, value: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        await self.call(
            lambda: Select(self.driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)
        )

    async def rows(self, css: str) -> list[str]:
        """The text of every element matching `css`."""
        from selenium.webdriver.common.by import By

        return await self.call(
            lambda: [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]
        )

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call(lambda: self.driver.save_screenshot(str(path)))

    async def docs_screenshot(self, name: str, *, height: int | None = None) -> None:
        """With ``DAZ_DOCS_SCREENSHOTS`` set, save the page as docs/images/dashboard-NAME.png
        (the window `height` pixels tall meanwhile, if given)."""
        if not os.environ.get(DOCS_ENV):
            return
        size = await self.call(self.driver.get_window_size)
        if height is not None:
            await self.call(lambda: self.driver.set_window_size(size["width"], height))
        try:
            await self.screenshot(DOCS_IMAGES / f"dashboard-{name}.png")
        finally:
            await self.call(lambda: self.driver.set_window_size(size["width"], size["height"]))

    @contextlib.asynccontextmanager
    async def screenshot_on_failure(self, name: str) -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            folder = Path(
                os.environ.get("DAZ_SCREENSHOT_DIR")
                or Path(tempfile.gettempdir()) / "daz-browser-failures"
            )
            path = folder / f"{name}.png"
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await self.screenshot(path)
                print(f"screenshot of the failed page: {path}")
            raise


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A fresh headless Chromium with an empty profile."""
    missing = _missing()
    if missing is not None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but the browser is missing: {missing}")
        pytest.skip(f"no browser for the dashboard's browser tests: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="daz-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(WAIT)
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
