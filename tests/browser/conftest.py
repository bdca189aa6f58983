"""Browser tests: Playwright driving Debian's chromium against a real server on loopback.

No browser is ever downloaded: the tests launch ``/usr/bin/chromium`` (``make test`` installs
Debian's package when it is missing). Without it, or without Playwright, they fail and say
what to install; ``WORKBENCH_SKIP_BROWSER=1`` skips them instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from browsing import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which the asyncio tests of other folders could not start beside.
    """
    if os.environ.get("WORKBENCH_SKIP_BROWSER") == "1":
        pytest.skip("WORKBENCH_SKIP_BROWSER=1: browser tests skipped")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright: pip install -e '.[dev]' "
                    "(or set WORKBENCH_SKIP_BROWSER=1 to skip them)", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Debian's chromium at {CHROMIUM}: run `make browser` "
                    "(apt-get install chromium, as root) or set WORKBENCH_SKIP_BROWSER=1 to skip them", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
