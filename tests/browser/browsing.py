"""Helpers of the browser tests: a real server in a thread, a browser tab that records its errors, waiting.

Screenshots are kept under ``test-artifacts/browser/`` (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@dataclass
class Page:
    """A browser tab and what went wrong in it: page errors (uncaught exceptions) and console errors."""

    page: Any
    errors: list[str]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def points(self, source: str) -> tuple[int, float]:
        """How many points a chart's data source holds, and the time of the last one."""
        return tuple(self.page.evaluate(
            """(name) => {
                for (const doc of Bokeh.documents) {
                    const source = doc.get_model_by_name(name);
                    if (source) { const t = source.data.time; return [t.length, t.length ? t[t.length - 1] : 0]; }
                }
                return [0, 0];
            }""", source))

    def last(self, source: str, column: str) -> float | None:
        return self.page.evaluate(
            """([name, column]) => {
                for (const doc of Bokeh.documents) {
                    const source = doc.get_model_by_name(name);
                    if (source) { const c = source.data[column]; return c.length ? c[c.length - 1] : null; }
                }
                return null;
            }""", [source, column])


@contextmanager
def open_page(browser: Any, url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    try:
        page.goto(url)
        page.wait_for_function("() => window.Bokeh !== undefined && Bokeh.documents.length > 0", timeout=30_000)
        yield Page(page, errors)
    finally:
        context.close()
