"""The browser pages (issue 13; CONTRACT.md "Operations"): /dashboard and /docs
opened in headless Chromium, driven through Selenium and Debian's chromedriver,
as a person would use them, against the release binary with API_KEY set; and
a page's EventSource on /sse (issue 24) cut off and reconnecting by itself.

Traffic first (a topic, a WebSocket subscriber, a steady REST publisher), then
the checks of what the pages show: topic names and non-zero rates, an event in
the dashboard's live tail after publishing with its form, the operations of
/openapi.json rendered on /docs and one of them executed with "Try it out".
A screenshot of each page goes to target/ci-artifacts/.

Without chromium and chromedriver the tests skip, unless
RINGCAST_BROWSER_TESTS=require is set (CI sets it), which fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from websockets.sync.client import connect as ws_connect

from test_acceptance import REPO_ROOT, Server, create_topic, new_topic, rest_publish

KEY = "page-test-key"
AUTH = {"X-API-Key": KEY}
ARTIFACTS = REPO_ROOT / "target" / "ci-artifacts"
DESKTOP = (1280, 1000)
PHONE = (390, 844)


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if chromium and Path(driver).exists():
        return chromium, driver
    return None


@pytest.fixture(scope="module")
def browser():
    paths = _browser_paths()
    if paths is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("RINGCAST_BROWSER_TESTS") == "require":
            pytest.fail(message)
        pytest.skip(message)
    chromium, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium then downloads nothing.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server():
    srv = Server(API_KEY=KEY).start()
    yield srv
    srv.stop()


class Traffic:
    """A subscriber reading one topic over /ws and a publisher posting to it
    over REST about 20 times a second, each on its own thread, for at most a
    minute."""

    def __init__(self, srv: Server, topic: str):
        self.srv, self.topic = srv, topic
        self.stop = threading.Event()
        self.received = 0
        self.published = 0
        self.subscribed = threading.Event()
        self.threads = [
            threading.Thread(target=self._subscribe, daemon=True),
            threading.Thread(target=self._publish, daemon=True),
        ]

    def __enter__(self) -> "Traffic":
        self.threads[0].start()
        assert self.subscribed.wait(10), "the traffic's subscriber did not subscribe"
        self.threads[1].start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _subscribe(self) -> None:
        with ws_connect(self.srv.ws, additional_headers=AUTH, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "subscribe", "topic": self.topic}))
            deadline = time.monotonic() + 60
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    frame = json.loads(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue
                if frame["type"] == "ack":
                    self.subscribed.set()
                elif frame["type"] == "event":
                    self.received += 1

    def _publish(self) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.srv.http, headers=AUTH, timeout=10) as client:
            while not self.stop.wait(0.05) and time.monotonic() < deadline:
                response = client.post(
                    f"/topics/{self.topic}/messages",
                    json={"id": str(uuid.uuid4()), "payload": {"n": self.published}},
                )
                assert response.status_code == 200, response.text
                self.published += 1


def wait_for(driver, what: str, check, timeout: float = 20.0):
    """Waits until `check(driver)` returns a truthy value, and returns it.
    An element the page replaced meanwhile is tried again."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(check, message=f"timed out after {timeout}s waiting for {what}")


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def console_errors(driver) -> list[str]:
    """Errors the page logged, Content-Security-Policy refusals included."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def fill(driver, element_id: str, text: str) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def topic_row(driver, topic: str) -> list[str] | None:
    """The dashboard's table row for `topic`, as the texts of its cells, read
    at once (the page refreshes the table every second)."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#topics tbody tr'),"
        " (tr) => Array.from(tr.cells, (cell) => cell.textContent))"
    )
    return next((cells for cells in rows if cells[0] == topic), None)


def as_number(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "–") else 0.0


def test_pages_need_the_key_and_their_assets_do_not(server):
    for path in ("/dashboard", "/docs"):
        refused = httpx.get(server.http + path, timeout=10)
        assert refused.status_code == 401, (path, refused.status_code)
        for credential in ({"headers": AUTH}, {"params": {"api_key": KEY}}):
            page = httpx.get(server.http + path, timeout=10, **credential)
            assert page.status_code == 200, (path, credential, page.status_code)
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
    head = httpx.head(server.http + "/dashboard", headers=AUTH, timeout=10)
    assert head.status_code == 200 and int(head.headers["content-length"]) > 0
    post = httpx.post(server.http + "/dashboard", headers=AUTH, timeout=10)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD, OPTIONS"
    # Only the pages take the key in the query: the API does not.
    assert httpx.get(server.http + "/stats", params={"api_key": KEY}).status_code == 401
    script = httpx.get(server.http + "/assets/dashboard.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    cached = httpx.get(
        server.http + "/assets/dashboard.js",
        headers={"If-None-Match": script.headers["etag"]},
        timeout=10,
    )
    assert cached.status_code == 304 and cached.content == b""


def test_dashboard_shows_traffic_tails_and_publishes(server, browser):
    topic = new_topic("orders")
    quiet = new_topic("audit")
    for name in (topic, quiet):
        create_topic(server, name, headers=AUTH)
    with Traffic(server, topic) as traffic:
        browser.get(f"{server.http}/dashboard?api_key={KEY}")
        assert "api_key" not in browser.current_url, "the key stays out of the address"

        row = wait_for(
            browser,
            f"a non-zero publish rate for {topic}",
            lambda d: (r := topic_row(d, topic)) and as_number(r[3]) > 0 and r,
        )
        assert row[1] == "1", f"one subscriber expected: {row}"
        assert as_number(row[4]) > 0, f"non-zero deliver rate expected: {row}"
        assert topic_row(browser, quiet) is not None, "every topic is listed"
        wait_for(browser, "non-zero total rates", lambda d: all(
            as_number(d.find_element(By.ID, card).text) > 0
            for card in ("publish-rate", "deliver-rate", "connections")
        ))

        # The live tail, as a person would: pick the topic in the table,
        # subscribe, then publish with the page's form.
        pick = f"//button[@class='topic'][text()='{topic}']"
        wait_for(browser, "picking the topic", lambda d: d.find_element(By.XPATH, pick).click() or True)
        assert browser.find_element(By.ID, "publish-topic").get_attribute("value") == topic
        browser.find_element(By.CSS_SELECTOR, "#tail-form button").click()
        wait_for(browser, "the tail's ack", lambda d: "Tailing" in d.find_element(By.ID, "tail-status").text)
        marker = uuid.uuid4().hex
        # Payloads are user data: markup in one must show as text.
        fill(browser, "publish-payload", json.dumps({"marker": marker, "html": "<img id=injected src=x>"}))
        browser.find_element(By.CSS_SELECTOR, "#publish-form button").click()
        wait_for(
            browser,
            "the publish result",
            lambda d: f"Published to {topic}" in d.find_element(By.ID, "publish-result").text,
        )
        tailed = wait_for(
            browser,
            "the published event in the tail",
            lambda d: [li.text for li in d.find_elements(By.CSS_SELECTOR, "#tail li") if marker in li.text],
        )
        assert "<img id=injected src=x>" in tailed[0], tailed
        assert not browser.find_elements(By.ID, "injected"), "payload markup was rendered"
        wait_for(
            browser,
            "the REST publisher's events in the tail",
            lambda d: any('"n":' in li.text for li in d.find_elements(By.CSS_SELECTOR, "#tail li")),
        )
        screenshot(browser, "dashboard")

        browser.set_window_size(*PHONE)
        try:
            wait_for(browser, "the phone layout", lambda d: d.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            ))
            screenshot(browser, "dashboard-phone")
        finally:
            browser.set_window_size(*DESKTOP)
    assert traffic.received > 0, "the traffic's subscriber received events"

    # The key lives in this tab's sessionStorage only, and the page's key
    # form replaces it.
    stored = "return [sessionStorage.getItem('ringcast.apiKey'), localStorage.length]"
    assert browser.execute_script(stored) == [KEY, 0]

    def status(driver) -> str:
        return driver.find_element(By.ID, "status").text

    fill(browser, "api-key", "not-the-key")
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, "the refusal shown", lambda d: "needs an API key" in status(d))
    fill(browser, "api-key", KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait_for(browser, "the page live again", lambda d: status(d).startswith("Live"))
    # The refused polls show in the browser's log as failed loads (401).
    assert [e for e in console_errors(browser) if "401" not in e] == []

    # The link to the API page takes the key along, and out of the address.
    browser.find_element(By.LINK_TEXT, "API docs").click()
    wait_for(browser, "the API page", lambda d: d.find_elements(By.ID, "swagger-ui"))
    assert browser.current_url == f"{server.http}/docs"


def operations(document: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def test_docs_render_the_document_and_try_it_out_uses_the_key(server, browser):
    response = httpx.get(server.http + "/openapi.json", headers=AUTH, timeout=10)
    if response.status_code == 404:
        pytest.fail(
            "GET /openapi.json answered 404: /docs renders the server's OpenAPI document, "
            "which issue 13's /openapi.json route provides"
        )
    assert response.status_code == 200, response.text
    expected = operations(response.json())
    topic = new_topic("docs")
    create_topic(server, topic, headers=AUTH)

    browser.get(f"{server.http}/docs?api_key={KEY}")
    assert "api_key" not in browser.current_url

    def rendered(driver):
        shown = set()
        for block in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary"):
            method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
            path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path")
            shown.add((method, path))
        return shown if shown >= expected else None

    wait_for(browser, f"the document's {len(expected)} operations", rendered)

    # "Try it out" on GET /topics: the server needs the key, so a 200 listing
    # the topic shows the page sent it.
    block = browser.find_element(
        By.XPATH,
        "//div[contains(@class,'opblock-get')][.//*[@data-path='/topics']]",
    )
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(browser, "Try it out", lambda d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))[0].click()
    wait_for(browser, "Execute", lambda d: block.find_elements(By.CSS_SELECTOR, ".execute"))[0].click()
    live = wait_for(
        browser,
        "the live response",
        lambda d: block.find_elements(By.CSS_SELECTOR, ".live-responses-table .response"),
    )[0]
    assert live.find_element(By.CSS_SELECTOR, ".response-col_status").text.startswith("200"), live.text
    assert topic in live.text, live.text
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot(browser, "docs")
    assert console_errors(browser) == []


class CuttingProxy:
    """A TCP proxy in front of `srv` whose `cut()` drops every connection
    through it at once, as a failing network would."""

    def __init__(self, srv: Server):
        self.upstream = ("127.0.0.1", srv.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            cut, self.sockets = self.sockets, []
        for sock in cut:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_event_source_reconnects_by_itself_and_resumes_without_a_gap(server, browser):
    """A page's EventSource, through a proxy the test cuts mid-stream while
    a publisher goes on: the browser reconnects on its own with
    Last-Event-ID and every event arrives once, in order."""
    topic = new_topic("sse")
    create_topic(server, topic, AUTH)
    proxy = CuttingProxy(server)
    total = 120
    try:
        browser.get(f"http://127.0.0.1:{proxy.port}/health")
        browser.execute_script(
            """
            window.sse = {seqs: [], subscribed: [], errors: 0};
            const source = new EventSource(`/sse?topic=${arguments[0]}&api_key=${arguments[1]}`);
            source.onmessage = (e) => window.sse.seqs.push(JSON.parse(e.data).seq);
            source.addEventListener("subscribed", (e) => window.sse.subscribed.push(JSON.parse(e.data).topics[0]));
            source.onerror = () => { window.sse.errors += 1; };
            """,
            topic,
            KEY,
        )
        seen = lambda d: d.execute_script("return window.sse")  # noqa: E731
        wait_for(browser, "the stream to open", lambda d: seen(d)["subscribed"])
        publisher = threading.Thread(
            target=lambda: [
                (rest_publish(server, topic, {"n": n}, AUTH), time.sleep(0.02)) for n in range(total)
            ],
            daemon=True,
        )
        publisher.start()
        wait_for(browser, "some events", lambda d: len(seen(d)["seqs"]) >= 20)
        proxy.cut()
        wait_for(browser, "the reconnect", lambda d: len(seen(d)["subscribed"]) >= 2, timeout=30)
        publisher.join(30)
        state = wait_for(browser, f"all {total} events", lambda d: len(seen(d)["seqs"]) >= total and seen(d))
    finally:
        # The page closes its stream before the proxy goes: a stream the
        # proxy cut was logged a moment later, into the next test's console
        # (the dashboard tail test failed on it once).
        browser.get("about:blank")
        proxy.close()
    assert state["errors"] >= 1, state
    assert state["subscribed"][0].get("recovered") is None, state["subscribed"]
    assert all(topic["recovered"] is True for topic in state["subscribed"][1:]), state["subscribed"]
    assert state["seqs"] == list(range(1, total + 1)), state["seqs"]
    # The cut stream may be logged, and /health has no favicon for the
    # browser's unauthenticated guess at one; nothing else.
    unexpected = [
        error for error in console_errors(browser) if "/sse?" not in error and "/favicon.ico" not in error
    ]
    assert unexpected == []



def test_dashboard_tail_resumes_by_itself_without_a_gap(server, browser):
    """The dashboard's live tail (the ringcast-client package) through a
    proxy the test cuts while a publisher goes on: the page reconnects on
    its own, says nothing was missed, and shows every event once."""
    topic = new_topic("tail")
    create_topic(server, topic, AUTH)
    proxy = CuttingProxy(server)
    total = 40
    tail_seqs = lambda d: [  # noqa: E731
        int(li.text.split()[0].lstrip("#")) for li in d.find_elements(By.CSS_SELECTOR, "#tail li .meta")
    ]
    tail_status = lambda d: d.find_element(By.ID, "tail-status").text  # noqa: E731
    try:
        browser.get(f"http://127.0.0.1:{proxy.port}/dashboard?api_key={KEY}")
        fill(browser, "tail-topic", topic)
        browser.find_element(By.CSS_SELECTOR, "#tail-form button").click()
        wait_for(browser, "the tail's ack", lambda d: "Tailing" in tail_status(d))
        publisher = threading.Thread(
            target=lambda: [
                (rest_publish(server, topic, {"n": n}, AUTH), time.sleep(0.05)) for n in range(total)
            ],
            daemon=True,
        )
        publisher.start()
        wait_for(browser, "some events", lambda d: len(tail_seqs(d)) >= 10)
        proxy.cut()
        wait_for(browser, "the resumed tail", lambda d: "nothing missed" in tail_status(d), timeout=30)
        publisher.join(30)
        wait_for(browser, f"all {total} events", lambda d: len(tail_seqs(d)) >= total)
        seqs = tail_seqs(browser)
    finally:
        proxy.close()
    # Newest first.
    assert seqs == list(range(total, 0, -1)), seqs
    # The cut connection and the /stats polls it failed may be logged; nothing else.
    unexpected = [error for error in console_errors(browser) if "/ws" not in error and "/stats" not in error]
    assert unexpected == []
