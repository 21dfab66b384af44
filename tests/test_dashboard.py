"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium, during a run.

Chromium and its driver come from Debian's packages (``chromium``,
``chromium-driver``), installed here with apt-get when missing; nothing
downloads a browser of its own. Where installing is impossible (not root, no
apt-get, no package mirror) the test is skipped and says why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import cli, spawn
from .test_lifecycle import applied, free_port, get, wait_for

pytestmark = pytest.mark.timeout(1200)

BROWSER, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1560",
]
NO_FIGURE = ("", "\u2013")  # the page's dash for "no figure yet"
FAILED_RUN = "CatalogException: a failed run, planted by the test"
#: A flash sale, a simulated minute per second: the first run ends as the noon sale
#: begins (20,000 events/s asked for 15 s), then a 45-s wave at 3,000, then 2,000. One
#: worker with small batches absorbs less than the sale asks on most machines.
TRAFFIC = ("--traffic", "flash-sale", "--rate", "2000", "--time-scale", "60")
SLOW = ("--workers", "1", "--batch-size", "100")


def _note(message: str) -> None:
    print(f"\n[browser] {message}", file=sys.__stderr__, flush=True)


def _install() -> str | None:
    """Install Debian's chromium and chromium-driver; None when done, else why it cannot be."""
    if not shutil.which("apt-get"):
        return "no apt-get to install Debian's chromium and chromium-driver"
    if os.geteuid() != 0:
        return "not root: cannot apt-get install chromium chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ],
    ):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` took over 900 s"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
            return f"`{' '.join(cmd)}` failed: {tail[0]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver, installed when missing."""
    if not (Path(BROWSER).exists() and Path(DRIVER).exists()):
        t0 = time.monotonic()
        why = _install()
        if why is not None:
            _note(f"browser test skipped: {why}")
            pytest.skip(f"browser test: {why}")
        _note(f"installed chromium and chromium-driver in {time.monotonic() - t0:.0f} s")
    assert Path(BROWSER).exists() and Path(DRIVER).exists(), "apt-get ran, but no chromium"
    return BROWSER, DRIVER


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(chromium[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _plant_a_failed_run(db: Path) -> None:
    """A FAILED run in the task history, as the service records one (failures must show)."""
    con = duckdb.connect(str(db))
    try:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        con.execute(
            "INSERT INTO cdc_task_history VALUES ('REFRESH_ORDERS_AGG', ?, ?, ?, 'FAILED', ?, NULL)",
            [now, now, now, FAILED_RUN],
        )
    finally:
        con.close()


def _report_months(db: Path) -> list[str]:
    done = cli("report", "--duckdb-path", str(db))
    assert done.returncode == 0, done.stderr
    return re.findall(r"^│ (\d{4}-\d{2}) ", done.stdout, re.M)


def _console(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The browser console's entries since the last call."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def _page_months(driver: webdriver.Chrome) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#months tbody tr")
    return [str(r.get_attribute("data-month")) for r in rows]


def _caught_up_after_the_sale(port: int) -> bool:
    """The sale is over and the producer back on schedule (for the screenshot)."""
    live = json.loads(get(port, "/api/live")[1])
    traffic = live["traffic"] or {}
    return bool(traffic.get("target_per_s", 20000) < 20000 and traffic.get("behind_s", 1) < 0.1)


def test_dashboard_shows_the_run_live_without_console_errors(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """During a flash sale `/` shows report's months, live events/s beside the profile's
    target, the queue, failures; no console errors."""
    db, port = tmp_path / "dash.duckdb", free_port()
    first = cli(
        "run", "--events", "5000", "--seed", "7", "--start", "2026-01-05T11:59:00",
        "--duckdb-path", str(db), *TRAFFIC,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    _plant_a_failed_run(db)
    proc = spawn(
        "run", "--duckdb-path", str(db), *TRAFFIC, *SLOW,
        env={"CDC_HTTP_PORT": str(port), "CDC_REFRESH_INTERVAL": "2"},
    )  # fmt: skip
    try:
        wait_for(lambda: applied(port) > 0)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: len(_page_months(d)) > 0)
        assert browser.title == "ecomm-cdc"

        figure = browser.find_element(By.ID, "events-per-s")
        wait.until(lambda _: figure.text not in NO_FIGURE)
        looks = [figure.text]
        wait.until(lambda _: figure.text != looks[0])  # it updates itself
        looks.append(figure.text)
        assert looks[0] != looks[1] and all(re.fullmatch(r"[\d,]+", x) for x in looks), looks
        # The profile: its target rate now (the sale: 10 x 2,000; on a slow machine, its
        # wave: 1.5 x 2,000) and the simulated clock.
        target = browser.find_element(By.ID, "target-per-s").text
        assert target in ("20,000 (\u00d710)", "3,000 (\u00d71.5)"), target
        tag = browser.find_element(By.ID, "traffic").text
        when = r"simulated 2026-01-05 12:\d\d"
        assert re.fullmatch(rf"traffic: flash-sale \u00b7 \u00d760 \u00b7 {when}", tag), tag

        # The page shows orders_aggregated as the service last read it: compare with
        # `report` until both have read the same refresh.
        for _ in range(20):
            months, shown = _report_months(db), _page_months(browser)
            if months == shown:
                break
            time.sleep(0.5)
        assert months and shown == months, (shown, months)
        bars = browser.find_elements(By.CSS_SELECTOR, "#month-chart rect.bar")
        assert len(bars) == len(months)
        for tile in ("queue-depth", "apply-ms", "since-commit", "since-refresh", "behind"):
            assert browser.find_element(By.ID, tile).text not in NO_FIGURE, tile
        failed = browser.find_elements(By.CSS_SELECTOR, "#tasks tr.failed")
        assert failed and FAILED_RUN in failed[0].text
        for line in ("insert", "applied", "target"):
            assert browser.find_elements(By.CSS_SELECTOR, f"#rate-chart polyline.{line}"), line

        if os.environ.get("ECOMM_CDC_SCREENSHOT"):  # for docs/traffic.md: the sale, caught up
            wait_for(lambda: _caught_up_after_the_sale(port), timeout=300, every=0.5)
            time.sleep(15)  # the 5-s average comes down to the target
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("ECOMM_CDC_SCREENSHOT"):  # docs/flash-sale.png, in the README
            shutil.copy(shot, os.environ["ECOMM_CDC_SCREENSHOT"])
        errors = [e for e in _console(browser) if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
