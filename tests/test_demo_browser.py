"""The demo in a real headless browser: Chromium driven by Selenium draws on the pad with the
mouse and reads what the page shows.

Needs the selenium package and Chromium with its chromedriver (Debian: apt-get install chromium
chromium-driver); skipped where they are missing. $LENET5X_CHROMIUM and $LENET5X_CHROMEDRIVER
name other binaries. LENET5X_SCREENSHOT=docs/demo.png also saves a picture of the page in use
(1440x900) for the README.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("PIL.Image")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

import lenet5x  # noqa: E402
from lenet5x.demo import make_server  # noqa: E402

WIDTH, HEIGHT = 1440, 900


def binary(variable: str, *names: str) -> str | None:
    if os.environ.get(variable):
        return os.environ[variable]
    for name in names:
        found = shutil.which(name) or (Path("/usr/bin", name).is_file() and f"/usr/bin/{name}")
        if found:
            return found
    return None


CHROMIUM = binary("LENET5X_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = binary("LENET5X_CHROMEDRIVER", "chromedriver")


@pytest.fixture(scope="module")
def site(request):
    """A demo server in a thread (with the test digits where MNIST is here); its URL."""
    try:
        data_dir = request.getfixturevalue("mnist_dir")
    except pytest.skip.Exception:
        data_dir = None
    server = make_server(lenet5x.load("lenet5", backend="numpy"), "127.0.0.1", 0, data_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/", server.samples is not None
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("no Chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as error:
        pytest.skip(f"Chromium does not start: {str(error).splitlines()[0]}")
    # the page's viewport itself WIDTH x HEIGHT (a window of that size has a smaller viewport)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


def console_errors(driver) -> list[dict]:
    """What the page logged as errors or warnings, less the network's own lines (a 4xx answer
    the page expects is one)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry.get("level") in ("SEVERE", "WARNING") and entry.get("source") != "network"
    ]


def draw(driver, strokes):
    """Draw strokes on #pad with the mouse; points in pad coordinates 0..1."""
    pad = driver.find_element(By.ID, "pad")
    side = pad.rect["width"]

    def offset(point):  # Selenium's offsets are from the element's centre
        return round((point[0] - 0.5) * side), round((point[1] - 0.5) * side)

    actions = ActionChains(driver, duration=0)
    for stroke in strokes:
        actions.move_to_element_with_offset(pad, *offset(stroke[0])).click_and_hold()
        for point in stroke[1:]:
            actions.move_to_element_with_offset(pad, *offset(point))
        actions.release()
    actions.perform()


WATCH_FETCHES = """
if (!window.__predictions) {
  const original = window.fetch;
  window.__predictions = {sent: 0, open: 0, last: performance.now()};
  window.fetch = function (resource, init) {
    const counted = /[/]api[/](predict|sample)/.test(String(resource));
    const p = window.__predictions;
    if (counted) { p.sent += 1; p.open += 1; }
    return original.apply(this, arguments).finally(() => {
      if (counted) { p.open -= 1; p.last = performance.now(); }
    });
  };
}
window.__predictions.sent = 0;
"""


def open_page(driver, url):
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: "LeNet-5" in d.find_element(By.ID, "model").text)
    driver.execute_script(WATCH_FETCHES)


def wait_for_answer(driver, timeout=15):
    """Wait until the page has asked (a drawing or a test digit), had every answer and shows
    the last one (it predicts while a stroke is drawn, at most every 250 ms); the digit."""

    def settled(d):
        return d.execute_script(
            "const p = window.__predictions;"
            "return p.sent > 0 && p.open === 0 && performance.now() - p.last > 600"
            " && document.body.dataset.pending !== 'yes';"
        ) and d.find_element(By.ID, "status").text.startswith(("Reads ", "Says "))

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(settled)
    except TimeoutException:
        status = driver.find_element(By.ID, "status").text
        pytest.fail(f"no answer on the page; #status says {status!r}")
    driver.execute_script("window.__predictions.sent = 0;")
    return driver.find_element(By.ID, "digit").text.strip()


def rendered_maps(driver) -> list[dict]:
    """Every feature-map picture: its stage, size and whether it is the server's (not a blank)."""
    return driver.execute_script(
        """
        return Array.from(document.querySelectorAll('#maps figure.stage')).flatMap((figure) =>
          Array.from(figure.querySelectorAll('img.map')).map((img) => ({
            stage: figure.dataset.stage, complete: img.complete,
            width: img.naturalWidth, height: img.naturalHeight,
            src: img.getAttribute('src').slice(0, 200)})));
        """
    )


def check_the_page_shows_it(driver, refused=False):
    maps = rendered_maps(driver)
    stages = {m["stage"] for m in maps}
    assert stages == {"C1", "S2", "C3", "S4", "C5"}, stages
    assert len(maps) == 6 + 6 + 16 + 16 + 1
    sizes = {"C1": (28, 28), "S2": (14, 14), "C3": (10, 10), "S4": (5, 5), "C5": (10, 12)}
    for m in maps:
        assert m["complete"] and (m["width"], m["height"]) == sizes[m["stage"]], m
        assert m["src"].startswith("data:image/png;base64,")
    for stage in stages - {"C5"}:  # the server's maps differ from one another; blanks do not
        assert len({m["src"] for m in maps if m["stage"] == stage}) > 1, stage
    state = driver.execute_script(
        """
        const f6 = document.getElementById('f6');
        const img = document.getElementById('f6-image');
        const input = document.getElementById('input-image');
        return {f6Shown: !f6.hidden, f6: [img.naturalWidth, img.naturalHeight],
                input: [input.naturalWidth, input.naturalHeight],
                nearest: Array.from(document.querySelectorAll('#nearest img'))
                  .map((i) => i.naturalWidth),
                bars: document.querySelectorAll('#scores .score-row').length,
                predicted: document.querySelectorAll('#scores .is-predicted').length};
        """
    )
    assert state == {
        "f6Shown": True,
        "f6": [7, 12],
        "input": [32, 32],
        "nearest": [7, 7, 7],
        "bars": 10,
        "predicted": 0 if refused else 1,
    }


REFUSALS = ("not sure", "not a digit", "no ink")
SCRIBBLE = [  # a diamond crossed both ways
    [(0.5, 0.1), (0.9, 0.5), (0.5, 0.9), (0.1, 0.5), (0.5, 0.1), (0.5, 0.9), (0.1, 0.5), (0.9, 0.5)]
]
ONE = [[(0.52, 0.18), (0.51, 0.35), (0.50, 0.55), (0.49, 0.82)]]
SEVEN = [[(0.28, 0.22), (0.50, 0.21), (0.72, 0.22), (0.62, 0.42), (0.52, 0.62), (0.45, 0.82)]]


def three(steps=14):
    """A handwritten '3': two bowls open to the left, the upper one smaller."""
    upper = [
        (0.49 + 0.17 * math.sin(t), 0.33 - 0.14 * math.cos(t))
        for t in (-1.2 + (math.pi + 1.35) * i / steps for i in range(steps + 1))
    ]
    lower = [
        (0.48 + 0.21 * math.sin(t), 0.64 - 0.19 * math.cos(t))
        for t in (0.0 + (math.pi + 1.15) * i / steps for i in range(1, steps + 1))
    ]
    return [upper + lower]


def test_drawing_a_digit_shows_the_prediction_and_the_maps(site, browser):
    url, _ = site
    open_page(browser, url)
    assert browser.find_element(By.ID, "digit").text == "?"
    draw(browser, ONE)
    assert wait_for_answer(browser) == "1"
    check_the_page_shows_it(browser)

    browser.find_element(By.ID, "clear").click()
    WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "digit").text == "?")
    draw(browser, SEVEN)
    assert wait_for_answer(browser) == "7"
    check_the_page_shows_it(browser)
    assert console_errors(browser) == []


def test_a_test_digit_and_the_screenshot(site, browser):
    url, samples = site
    open_page(browser, url)
    if samples:  # the page shows what the network answers for that very test image
        for button in ("random-digit", "misclassified-digit"):
            browser.find_element(By.ID, button).click()
            answer = wait_for_answer(browser)
            refused = answer in REFUSALS
            assert answer.isdigit() or refused, answer
            info = browser.find_element(By.ID, "sample-info").text
            assert info.startswith("Test image "), info
            check_the_page_shows_it(browser, refused)
        said = info.split("the model says ")[1]
        assert said != info.split()[4]  # a digit it gets wrong: its best class is not the label
        assert browser.find_element(By.ID, "digit").text in (said, *REFUSALS)
        browser.find_element(By.ID, "clear").click()
        WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "digit").text == "?")
    draw(browser, three())
    assert wait_for_answer(browser) == "3"
    check_the_page_shows_it(browser)
    assert console_errors(browser) == []
    target = os.environ.get("LENET5X_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        assert browser.get_screenshot_as_file(target), target


def test_a_scribble_is_not_sure_or_not_a_digit(site, browser):
    url, _ = site
    open_page(browser, url)
    draw(browser, SCRIBBLE)
    assert wait_for_answer(browser) in ("not sure", "not a digit")
    check_the_page_shows_it(browser, refused=True)
    page = browser.execute_script(
        """
        const digit = document.getElementById('digit');
        const bars = Array.from(document.querySelectorAll('#scores .score-bar'))
          .map((b) => parseFloat(b.style.width));
        return {refused: digit.classList.contains('is-refused'),
                colour: getComputedStyle(digit).color,
                kind: document.getElementById('label-kind').textContent,
                caption: document.getElementById('scores-caption').textContent,
                status: document.getElementById('status').textContent,
                longest: Math.max(...bars)};
        """
    )
    assert page["refused"] and page["colour"] != "rgb(124, 196, 255)", page  # not the accent
    assert page["kind"].startswith(("not sure (", "not a digit")), page
    assert page["status"].startswith("Says not "), page
    assert page["longest"] < 90, page  # no full bar for a guess
    assert "not sure" in page["caption"] and "share of belief" in page["caption"], page
    assert "for 0.5% error" in page["caption"] and "beyond 99.9% of" in page["caption"], page
    assert console_errors(browser) == []


@pytest.mark.parametrize(
    "name, words",
    [
        ("lenet1", ["LeNet-1", "28×28", "four 5×5 kernels", "twelve maps of 4×4", "§III-C"]),
        ("modern", ["a modern LeNet-5", "32×32", "P2", "2×2 max-pooling", "fully connected: 120"]),
    ],
)
def test_the_page_describes_the_network_it_shows(name, words, browser):
    """Not LeNet-5's words for every network: the title, the input's size and each stage's line
    come from the network's own layer table."""
    server = make_server(lenet5x.load(name, backend="numpy"), "127.0.0.1", 0, None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        browser.get(f"http://{host}:{port}/")
        WebDriverWait(browser, 10).until(lambda d: "watch LeNet-5 " not in d.title)
        page = browser.execute_script(
            "return [document.title, document.querySelector('#input-figure').textContent,"
            " Array.from(document.querySelectorAll('#maps figure.stage')).map((f) =>"
            " f.dataset.stage).join(' '),"
            " Array.from(document.querySelectorAll('.stage-note')).map((n) => n.textContent)"
            ".join(' | ')].join(' || ');"
        )
        for word in words:
            assert word in page, (word, page)
        assert "Table I" not in page and "S2 maps" not in page and " ·  · " not in page
        assert console_errors(browser) == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_each_stage_says_what_it_computes_and_a_map_enlarges(site, browser):
    url, _ = site
    open_page(browser, url)
    draw(browser, SEVEN)
    assert wait_for_answer(browser) == "7"
    notes = browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#maps figure.stage'))"
        ".map((f) => [f.dataset.stage, f.querySelector('.stage-note').textContent]));"
    )
    assert set(notes) == {"C1", "S2", "C3", "S4", "C5"}
    assert "120 numbers" in notes["C5"] and "48,120 parameters" in notes["C5"]
    assert notes["C1"].startswith("convolution: six 5×5 kernels")
    assert "156 parameters, 122,304 connections" in notes["C1"] and "paper §II-B" in notes["C1"]
    assert "1,516 parameters, 151,600 connections" in notes["C3"] and "Table I" in notes["C3"]
    assert "lenet5x tutorial" in browser.find_element(By.ID, "learn").text
    first = browser.find_element(By.CSS_SELECTOR, "#maps figure[data-stage='C1'] img.map")
    first.click()
    dialog = browser.find_element(By.ID, "enlarge")
    WebDriverWait(browser, 5).until(lambda d: dialog.get_attribute("open") is not None)
    big = browser.find_element(By.ID, "enlarged-image")
    assert big.get_attribute("src") == first.get_attribute("src")
    assert big.rect["width"] >= 10 * 28  # C1's 28x28 map drawn at least ten times larger
    assert "C1 map 1" in browser.find_element(By.ID, "enlarged-caption").text
    dialog.click()
    WebDriverWait(browser, 5).until(lambda d: dialog.get_attribute("open") is None)
    assert browser.find_element(By.ID, "digit").text == "7"  # closing it clears nothing
    assert console_errors(browser) == []


def test_on_a_phone_the_answer_is_in_view_while_drawing(site, browser):
    url, _ = site
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        open_page(browser, url)
        pad = browser.find_element(By.ID, "pad")
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'});", pad)
        draw(browser, SEVEN)
        assert wait_for_answer(browser) == "7"
        view = browser.execute_script(
            "const box = (id) => document.getElementById(id).getBoundingClientRect();"
            "return {digit: [box('digit').top, box('digit').bottom],"
            " pad: [box('pad').top, box('pad').bottom], height: window.innerHeight};"
        )
        inside = view["height"] + 1  # layout in fractions of a pixel: scrolled to 844.4 of 844
        assert 0 <= view["digit"][0] and view["digit"][1] <= inside, view
        assert 0 <= view["pad"][0] and view["pad"][1] <= inside, view
        target = os.environ.get("LENET5X_PHONE_SCREENSHOT")
        if target:
            assert browser.get_screenshot_as_file(target), target
    finally:
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
