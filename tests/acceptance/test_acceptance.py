"""Black-box acceptance tests for ringcast, written against shared/CONTRACT.md.

They start the release binary (env RINGCAST_BIN, default
target/release/ringcast under the repository root) as a subprocess on a free
loopback port and talk to it the way a user would: `websockets` for /ws,
`httpx` for REST, and a tiny raw-socket WebSocket client where a well-behaved
library cannot misbehave on purpose (stalled readers, silent peers, invalid
UTF-8).

Run:  python3 -m pytest -q tests/acceptance
No pytest plugin is needed: async tests run through asyncio.run().
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import websockets

try:  # websockets >= 13: the new asyncio implementation
    from websockets.asyncio.client import connect as _ws_connect

    _HEADERS_KW = "additional_headers"
except ImportError:  # pragma: no cover - older websockets
    from websockets import connect as _ws_connect  # type: ignore

    _HEADERS_KW = "extra_headers"

from websockets.exceptions import ConnectionClosed

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("RINGCAST_BIN", REPO_ROOT / "target" / "release" / "ringcast"))
if not BINARY.is_absolute():
    BINARY = REPO_ROOT / BINARY

# Every configuration variable of the contract; cleared from the inherited
# environment so only what a test asks for applies.
CONFIG_VARS = (
    "HOST",
    "PORT",
    "API_KEY",
    "SUBSCRIBER_QUEUE_SIZE",
    "SLOW_CONSUMER_POLICY",
    "RING_BUFFER_SIZE",
    "HEARTBEAT_INTERVAL",
    "MAX_MESSAGE_SIZE",
    "COMPRESSION",
    "COMPRESSION_MIN_BYTES",
    "SHUTDOWN_TIMEOUT",
    "WRITE_TIMEOUT",
    "SUBSCRIBER_QUEUE_BYTES",
    "CORS_ALLOWED_ORIGINS",
    "METRICS_PER_TOPIC",
)

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
TOPIC_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:"


# --------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------


def _exit_status(srv: "Server"):
    try:
        return srv.proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One ringcast process on a free loopback port."""

    def __init__(self, args: tuple[str, ...] = (), **env: str):
        self.args = list(args)
        self.env = {key: str(value) for key, value in env.items()}
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "Server":
        assert BINARY.exists(), f"{BINARY} not found: run `cargo build --release` first"
        for _attempt in range(5):
            self.port = _free_port()
            env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
            env.update(HOST="127.0.0.1", RUST_LOG="warn")
            args = list(self.args)
            if "--port" in args:  # flags given: the flag's port wins over PORT
                args[args.index("--port") + 1] = str(self.port)
                env["PORT"] = "1"  # a port this process could not bind
            else:
                env["PORT"] = str(self.port)
            env.update(self.env)
            self.log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(
                [str(BINARY), *args], env=env, stdout=self.log, stderr=subprocess.STDOUT
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # e.g. the port was taken meanwhile: try another
                try:
                    httpx.get(self.http + "/health", timeout=1.0)
                    return self
                except httpx.HTTPError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"ringcast did not start; output:\n{self.output()}")

    def output(self) -> str:
        if self.log is None:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    """A default-configured server shared by a module's tests (unique topics)."""
    srv = Server().start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server():
    """Starts servers with a given configuration; stops them afterwards."""
    started: list[Server] = []

    def make(args: tuple[str, ...] = (), **env: str) -> Server:
        srv = Server(args, **env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------


def new_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_id() -> str:
    return str(uuid.uuid4())


def create_topic(srv: Server, name: str, headers: dict | None = None) -> None:
    response = httpx.post(srv.http + "/topics", json={"name": name}, headers=headers, timeout=10)
    assert response.status_code == 201, (response.status_code, response.text)


def rest_publish(srv: Server, topic: str, payload, headers: dict | None = None) -> int:
    response = httpx.post(
        f"{srv.http}/topics/{topic}/messages",
        json={"id": new_id(), "payload": payload},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()["seq"]


def topic_row(srv: Server, topic: str, headers: dict | None = None):
    response = httpx.get(srv.http + "/topics", headers=headers, timeout=10)
    assert response.status_code == 200
    rows = [row for row in response.json()["topics"] if row["name"] == topic]
    return rows[0] if rows else None


async def poll_until(check, what: str, timeout: float = 30.0, interval: float = 0.05):
    """Polls `check()` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def connect(url: str, headers: dict | None = None, **kwargs):
    kwargs.setdefault("open_timeout", 30)
    kwargs.setdefault("close_timeout", 5)
    kwargs.setdefault("ping_interval", None)
    if headers:
        kwargs[_HEADERS_KW] = headers
    return _ws_connect(url, **kwargs)


def status_of(exc: BaseException) -> int | None:
    """HTTP status of a rejected WebSocket handshake, across websockets versions."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        return response.status_code
    return getattr(exc, "status_code", None)


def close_code_of(exc: ConnectionClosed) -> int | None:
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return rcvd.code
    return getattr(exc, "code", None)


def is_heartbeat(frame: dict) -> bool:
    return frame.get("type") == "info" and frame.get("msg") == "ping"


async def recv_json(ws, timeout: float = 15.0, skip_heartbeat: bool = True) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError("no frame within %.1fs" % timeout)
        raw = await asyncio.wait_for(ws.recv(), remaining)
        assert isinstance(raw, str), f"server frames must be text frames, got {type(raw)}"
        frame = json.loads(raw)
        if skip_heartbeat and is_heartbeat(frame):
            continue
        return frame


async def send_json(ws, frame: dict) -> None:
    await ws.send(json.dumps(frame))


async def subscribe(ws, topic: str, last_n: int | None = None, request_id: str | None = None) -> dict:
    request_id = request_id or f"sub-{uuid.uuid4().hex[:8]}"
    frame = {"type": "subscribe", "topic": topic, "request_id": request_id}
    if last_n is not None:
        frame["last_n"] = last_n
    await send_json(ws, frame)
    ack = await recv_json(ws)
    assert ack["type"] == "ack", ack
    assert ack["request_id"] == request_id and ack["topic"] == topic and ack["status"] == "ok", ack
    return ack


async def publish(ws, topic: str, payload, request_id: str | None = None, msg_id: str | None = None) -> dict:
    request_id = request_id or f"pub-{uuid.uuid4().hex[:8]}"
    await send_json(
        ws,
        {
            "type": "publish",
            "topic": topic,
            "message": {"id": msg_id or new_id(), "payload": payload},
            "request_id": request_id,
        },
    )
    ack = await recv_json(ws)
    assert ack == {**ack, "type": "ack", "request_id": request_id, "topic": topic, "status": "ok"}, ack
    return ack


async def ping_pong(ws, request_id: str | None = None) -> dict:
    """Sends a ping and returns the very next non-heartbeat frame, which must be its pong."""
    request_id = request_id or f"ping-{uuid.uuid4().hex[:8]}"
    await send_json(ws, {"type": "ping", "request_id": request_id})
    pong = await recv_json(ws)
    assert pong["type"] == "pong" and pong["request_id"] == request_id, pong
    return pong


def assert_ts(frame: dict) -> None:
    ts = frame.get("ts")
    assert isinstance(ts, str) and TS_RE.match(ts), f"ts not RFC 3339 UTC with millis: {frame!r}"
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - parsed) < timedelta(minutes=2), ts


def assert_event(frame: dict, topic: str, msg_id: str | None = None) -> None:
    assert frame["type"] == "event", frame
    assert frame["topic"] == topic, frame
    assert set(frame["message"]) >= {"id", "payload"}, frame
    if msg_id is not None:
        assert frame["message"]["id"] == msg_id, frame
    assert isinstance(frame["seq"], int) and not isinstance(frame["seq"], bool) and frame["seq"] >= 1, frame
    assert_ts(frame)


def strict_equal(a, b) -> bool:
    """JSON equality that also tells ints from floats and bools from numbers."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return set(a) == set(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    return a == b


# --------------------------------------------------------------------------
# A raw WebSocket client that can misbehave on purpose
# --------------------------------------------------------------------------


class RawWS:
    """Minimal RFC 6455 client on a plain non-blocking socket, no background reads."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, port: int, path: str = "/ws", headers: dict | None = None, rcvbuf: int | None = None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        raw = cls(sock)
        await asyncio.wait_for(raw.loop.sock_connect(sock, ("127.0.0.1", port)), 10)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        await raw.loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in raw.buf:
            chunk = await asyncio.wait_for(raw.loop.sock_recv(sock, 4096), 10)
            assert chunk, "connection closed during the handshake"
            raw.buf += chunk
        head, raw.buf = raw.buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        assert status.startswith(b"HTTP/1.1 101"), f"handshake failed: {head!r}"
        return raw

    async def _fill(self, timeout: float) -> bool:
        chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 20), timeout)
        if not chunk:
            return False
        self.buf += chunk
        return True

    async def _exact(self, n: int, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not await self._fill(max(0.01, deadline - time.monotonic())):
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    async def read_frame(self, timeout: float = 15.0):
        """(opcode, payload), or None at EOF. Raises TimeoutError when silent."""
        head = await self._exact(2, timeout)
        if head is None:
            return None
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        assert head[1] & 0x80 == 0, "server frames must not be masked"
        length = head[1] & 0x7F
        if length == 126:
            ext = await self._exact(2, timeout)
            if ext is None:
                return None
            length = struct.unpack("!H", ext)[0]
        elif length == 127:
            ext = await self._exact(8, timeout)
            if ext is None:
                return None
            length = struct.unpack("!Q", ext)[0]
        payload = await self._exact(length, timeout)
        if payload is None:
            return None  # truncated frame at EOF
        assert fin, "server frames are expected unfragmented"
        return opcode, payload

    async def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> None:
        """Sends one masked frame; `rsv1` marks a compressed message (RFC 7692)."""
        head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await self.loop.sock_sendall(self.sock, head + mask + masked)

    async def send_json(self, frame: dict) -> None:
        await self.send_frame(0x1, json.dumps(frame).encode())

    async def next_json(self, timeout: float = 15.0) -> dict:
        """Next text frame as JSON, skipping control frames and heartbeats."""
        while True:
            frame = await self.read_frame(timeout)
            assert frame is not None, "connection closed"
            opcode, payload = frame
            assert opcode != 0x8, f"connection closed: {payload!r}"
            if opcode == 0x1:
                parsed = json.loads(payload)
                if not is_heartbeat(parsed):
                    return parsed

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


# ==========================================================================
# REST
# ==========================================================================


def assert_error_body(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str), body
    return body


def test_rest_create_topic_201_and_duplicate_409(server):
    name = new_topic("orders")
    response = httpx.post(server.http + "/topics", json={"name": name})
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {**response.json(), "status": "created", "topic": name}
    again = httpx.post(server.http + "/topics", json={"name": name})
    assert_error_body(again, 409)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{",
        b"[]",
        b'"orders"',
        b"{}",
        b'{"name": 5}',
        b'{"name": null}',
        b'{"name": ""}',
        b'{"name": "has space"}',
        b'{"name": "slash/inside"}',
        b'{"name": "caf\\u00e9"}',
        b'{"name": "star*"}',
        b'{"name": "' + b"a" * 256 + b'"}',
    ],
    ids=lambda b: b[:30].decode(errors="replace"),
)
def test_rest_create_topic_bad_body_or_name_400(server, body):
    response = httpx.post(
        server.http + "/topics", content=body, headers={"content-type": "application/json"}
    )
    assert_error_body(response, 400)


def test_rest_topic_name_rules_accept_every_allowed_char_and_255_chars(server):
    suffix = uuid.uuid4().hex[:8]
    names = [
        TOPIC_CHARS,
        "a." + suffix,
        "ns:sub-topic_" + suffix,
        "Z" * 247 + suffix,  # exactly 255
        "x" + suffix[:1],
    ]
    assert len(names[3]) == 255
    for name in names:
        response = httpx.post(server.http + "/topics", json={"name": name})
        assert response.status_code in (201, 409), (name, response.status_code, response.text)
        if response.status_code == 201:
            assert response.json()["topic"] == name
        assert topic_row(server, name) is not None, name
    # one character is enough
    single = httpx.post(server.http + "/topics", json={"name": "q"})
    assert single.status_code in (201, 409)


def test_rest_delete_topic_200_then_404(server):
    name = new_topic()
    create_topic(server, name)
    response = httpx.delete(f"{server.http}/topics/{name}")
    assert response.status_code == 200
    assert response.json() == {**response.json(), "status": "deleted", "topic": name}
    assert topic_row(server, name) is None
    assert_error_body(httpx.delete(f"{server.http}/topics/{name}"), 404)
    assert_error_body(httpx.delete(f"{server.http}/topics/{new_topic('never')}"), 404)


def test_rest_list_topics_health_and_stats_exact_counts(make_server):
    srv = make_server()
    health = httpx.get(srv.http + "/health")
    assert health.status_code == 200
    body = health.json()
    assert isinstance(body["uptime_sec"], int) and body["uptime_sec"] >= 0, body
    assert body["topics"] == 0 and body["subscribers"] == 0, body
    assert httpx.get(srv.http + "/topics").json()["topics"] == []
    stats = httpx.get(srv.http + "/stats")
    assert stats.status_code == 200 and stats.json()["topics"] == {}, stats.text

    create_topic(srv, "orders")
    create_topic(srv, "payments")

    async def main():
        async with connect(srv.ws) as a, connect(srv.ws) as b:
            await subscribe(a, "orders")
            await subscribe(b, "orders")
            await subscribe(b, "payments")
            for i in range(3):
                assert rest_publish(srv, "orders", {"i": i}) == i + 1
            health = httpx.get(srv.http + "/health").json()
            assert health["topics"] == 2 and health["subscribers"] == 3, health
            topics = httpx.get(srv.http + "/topics").json()["topics"]
            by_name = {row["name"]: row for row in topics}
            assert set(by_name) == {"orders", "payments"}, topics
            assert by_name["orders"]["subscribers"] == 2 and by_name["payments"]["subscribers"] == 1
            stats = httpx.get(srv.http + "/stats").json()["topics"]
            assert stats["orders"]["messages"] == 3 and stats["orders"]["subscribers"] == 2, stats
            assert stats["payments"]["messages"] == 0 and stats["payments"]["subscribers"] == 1, stats

    asyncio.run(main())
    # after the sockets close, subscriber counts drop back to zero
    asyncio.run(
        poll_until(lambda: httpx.get(srv.http + "/health").json()["subscribers"] == 0, "0 subscribers")
    )
    time.sleep(1.1)
    assert httpx.get(srv.http + "/health").json()["uptime_sec"] >= 1


def test_rest_publish_returns_seq_and_validates(server):
    name = new_topic()
    create_topic(server, name)
    url = f"{server.http}/topics/{name}/messages"
    for expected in (1, 2, 3):
        response = httpx.post(url, json={"id": new_id(), "payload": {"n": expected}})
        assert response.status_code == 200, response.text
        assert response.json() == {**response.json(), "status": "published", "topic": name, "seq": expected}
    assert_error_body(httpx.post(url, json={"id": "not-a-uuid", "payload": 1}), 400)
    assert_error_body(httpx.post(url, json={"id": new_id()}), 400)
    assert_error_body(httpx.post(url, json={"payload": 1}), 400)
    assert_error_body(httpx.post(url, content=b"{oops", headers={"content-type": "application/json"}), 400)
    assert_error_body(
        httpx.post(f"{server.http}/topics/{new_topic('nope')}/messages", json={"id": new_id(), "payload": 1}),
        404,
    )
    # failed publishes did not consume sequence numbers
    assert httpx.post(url, json={"id": new_id(), "payload": None}).json()["seq"] == 4


def test_rest_unknown_path_404_and_wrong_method_405(server):
    assert_error_body(httpx.get(server.http + "/nope"), 404)
    assert_error_body(httpx.get(server.http + "/topics/a/b/c"), 404)
    assert_error_body(httpx.put(server.http + "/topics", json={"name": "x"}), 405)
    assert_error_body(httpx.delete(server.http + "/topics"), 405)
    assert_error_body(httpx.post(server.http + "/health"), 405)
    assert_error_body(httpx.delete(server.http + "/stats"), 405)
    assert_error_body(httpx.put(server.http + "/topics/some-topic", json={}), 405)
    # GET /topics/{name} is the topic's row (server API), 404 while absent.
    assert_error_body(httpx.get(server.http + "/topics/some-topic"), 404)
    assert_error_body(httpx.put(server.http + "/topics/some-topic/messages", json={}), 405)


def test_rest_oversized_body_413(make_server):
    srv = make_server(MAX_MESSAGE_SIZE="1024")
    create_topic(srv, "small")
    big = json.dumps({"id": new_id(), "payload": "x" * 2000}).encode()
    assert_error_body(
        httpx.post(srv.http + "/topics/small/messages", content=big, headers={"content-type": "application/json"}),
        413,
    )
    assert_error_body(
        httpx.post(srv.http + "/topics", content=json.dumps({"name": "y" * 2000}).encode(),
                   headers={"content-type": "application/json"}),
        413,
    )
    # a body of exactly MAX_MESSAGE_SIZE bytes is accepted
    prefix = '{"id":"%s","payload":"' % new_id()
    exact = (prefix + "y" * (1024 - len(prefix) - 2) + '"}').encode()
    assert len(exact) == 1024
    response = httpx.post(srv.http + "/topics/small/messages", content=exact,
                          headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    # chunked upload without Content-Length is limited too
    def chunks():
        for _ in range(4):
            yield b"x" * 1000
    assert_error_body(httpx.post(srv.http + "/topics/small/messages", content=chunks(),
                                 headers={"content-type": "application/json"}), 413)


def test_rest_default_limit_is_one_mebibyte(server):
    name = new_topic()
    create_topic(server, name)
    prefix = '{"id":"%s","payload":"' % new_id()
    body = (prefix + "z" * (1_048_576 - len(prefix) - 2) + '"}').encode()
    ok = httpx.post(f"{server.http}/topics/{name}/messages", content=body, headers={"content-type": "application/json"})
    assert ok.status_code == 200, ok.text
    too_big = body[:-2] + b'z"}'
    assert_error_body(
        httpx.post(f"{server.http}/topics/{name}/messages", content=too_big, headers={"content-type": "application/json"}),
        413,
    )


# ==========================================================================
# WebSocket protocol
# ==========================================================================


def test_ws_subscribe_ack_echoes_request_id_and_unknown_topic_errors(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as ws:
            await send_json(ws, {"type": "subscribe", "topic": name, "request_id": "r-1", "client_id": "me"})
            ack = await recv_json(ws)
            assert ack == {**ack, "type": "ack", "request_id": "r-1", "topic": name, "status": "ok"}, ack
            assert_ts(ack)
            # request_id is optional
            await send_json(ws, {"type": "subscribe", "topic": name})
            ack = await recv_json(ws)
            assert ack["type"] == "ack" and ack["topic"] == name and ack["status"] == "ok", ack
            assert ack.get("request_id") is None, ack

            missing = new_topic("missing")
            await send_json(ws, {"type": "subscribe", "topic": missing, "request_id": "r-2"})
            err = await recv_json(ws)
            assert err["type"] == "error" and err["request_id"] == "r-2", err
            assert err["error"]["code"] == "TOPIC_NOT_FOUND" and isinstance(err["error"]["message"], str), err
            assert_ts(err)
            await ping_pong(ws)

    asyncio.run(main())


def test_ws_publish_event_fields_and_seq(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as sub, connect(server.ws) as pub:
            await subscribe(sub, name)
            ids = [new_id() for _ in range(3)]
            for i, msg_id in enumerate(ids):
                ack = await publish(pub, name, {"i": i}, request_id=f"p{i}", msg_id=msg_id)
                assert_ts(ack)
            before = datetime.now(timezone.utc)
            for i, msg_id in enumerate(ids):
                event = await recv_json(sub)
                assert_event(event, name, msg_id)
                assert set(event) >= {"type", "topic", "message", "seq", "ts"}
                assert event["message"] == {**event["message"], "id": msg_id, "payload": {"i": i}}
                assert event["seq"] == i + 1, event
                published_at = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
                assert published_at <= before + timedelta(seconds=1), (event["ts"], before)
            # the publisher is not subscribed: its next frame is the pong, not an event
            await ping_pong(pub)
            # REST publishes share the sequence and reach WS subscribers
            assert rest_publish(server, name, "via-rest") == 4
            event = await recv_json(sub)
            assert_event(event, name)
            assert event["seq"] == 4 and event["message"]["payload"] == "via-rest"

    asyncio.run(main())


PAYLOADS = [
    {"nested": {"a": [1, 2, {"b": [True, False, None]}], "empty": {}, "list": []}},
    "héllo wörld ☃ 😀 中文 \u0000 \"quoted\" back\\slash\nnewline\ttab",
    3.141592653589793,
    0.1,
    -0.5,
    1e-10,
    1.5e300,
    2.0,
    -42,
    0,
    -9223372036854775808,
    18446744073709551617,  # 2**64 + 1
    123456789012345678901234567890,
    None,
    [1, "two", 3.0, None, [], {}],
    "",
    "a plain string",
    True,
    False,
    {"ключ": "значение", "emoji🔑": "🎉", "": "empty key"},
    [[[[[[[[[[["deep"]]]]]]]]]]],
]


def test_ws_payload_passes_through_unchanged(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as sub, connect(server.ws) as pub:
            await subscribe(sub, name)
            for payload in PAYLOADS:
                await publish(pub, name, payload)
            for payload in PAYLOADS:
                event = await recv_json(sub)
                assert_event(event, name)
                got = event["message"]["payload"]
                assert strict_equal(got, payload), f"payload changed: sent {payload!r}, got {got!r}"

    asyncio.run(main())


async def _publish_raw_payload(srv: Server, raw_payload: str):
    """Publishes a payload given as JSON text; returns (publisher reply, event payload or None)."""
    name = new_topic()
    create_topic(srv, name)
    async with connect(srv.ws) as sub, connect(srv.ws) as pub:
        await subscribe(sub, name)
        await pub.send(
            '{"type":"publish","topic":"%s","request_id":"raw","message":{"id":"%s","payload":%s}}'
            % (name, new_id(), raw_payload)
        )
        reply = await recv_json(pub)
        if reply["type"] != "ack":
            return reply, None
        event = await recv_json(sub)
        return reply, event["message"]["payload"]


def test_ws_payload_number_spellings_survive(server):
    """Numbers written in ways Python would not write them still mean the same."""
    raw_payload = '{"exp":1E+2,"neg_exp":-2.5e-3,"frac":10.250,"zero":-0,"i64max":9223372036854775807}'
    reply, got = asyncio.run(_publish_raw_payload(server, raw_payload))
    assert reply["type"] == "ack", reply
    assert strict_equal(got, json.loads(raw_payload)), f"payload changed: sent {raw_payload}, got {got!r}"


def test_ws_payload_integer_beyond_128_bits_survives(server):
    """JSON numbers have no size limit; the contract says numbers pass through unchanged."""
    big = 10**44 + 7
    raw_payload = '{"big":%d,"neg":%d}' % (big, -big)
    reply, got = asyncio.run(_publish_raw_payload(server, raw_payload))
    assert reply["type"] == "ack", f"publish of {raw_payload} rejected: {reply}"
    assert strict_equal(got, {"big": big, "neg": -big}), f"payload changed: sent {raw_payload}, got {got!r}"


def test_ws_payload_object_key_order_preserved(server):
    """'byte-for-byte equivalent JSON': an object's keys keep their order, however many."""
    for size in (5, 32, 33, 60):
        keys = [f"key{(i * 37) % 101:03d}" for i in range(size)]
        raw_payload = "{" + ",".join('"%s":%d' % (k, i) for i, k in enumerate(keys)) + "}"

        async def main():
            name = new_topic()
            create_topic(server, name)
            async with connect(server.ws) as sub, connect(server.ws) as pub:
                await subscribe(sub, name)
                await publish(pub, name, json.loads(raw_payload))
                raw = await sub.recv()
                pairs = json.loads(raw, object_pairs_hook=lambda p: p)
                payload = dict(pairs)["message"]
                return [k for k, _ in dict(payload)["payload"]]

        got = asyncio.run(main())
        assert got == keys, f"key order of a {size}-key object changed: sent {keys[:6]}..., got {got[:6]}..."


def test_ws_payload_lone_surrogate_is_not_silently_corrupted(server):
    """A lone UTF-16 surrogate escape is either passed through or rejected, never altered."""
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as sub, connect(server.ws) as pub:
            await subscribe(sub, name)
            for escaped, meant in (("\\ud800", "\ud800"), ("x\\udc00y", "x\udc00y")):
                await pub.send(
                    '{"type":"publish","topic":"%s","request_id":"s","message":{"id":"%s","payload":"%s"}}'
                    % (name, new_id(), escaped)
                )
                reply = await recv_json(pub)
                if reply["type"] == "error":
                    assert reply["error"]["code"] == "BAD_REQUEST", reply
                    continue
                assert reply["type"] == "ack", reply
                event = await recv_json(sub)
                got = event["message"]["payload"]
                assert got == meant, f"payload \"{escaped}\" was delivered as {got!r}"

    asyncio.run(main())


def test_ws_deeply_nested_frame_does_not_crash_server(make_server):
    """A ~200 KB frame of nested arrays (well under MAX_MESSAGE_SIZE) must not take the broker down."""
    srv = make_server()
    create_topic(srv, "deep")
    depth = 100_000

    async def main():
        async with connect(srv.ws) as ws:
            for frame in (
                '{"type":"ping","request_id":"deep-ping","x":%s}' % ("[" * depth + "]" * depth),
                '{"type":"publish","topic":"deep","request_id":"deep-pub","message":{"id":"%s","payload":%s}}'
                % (new_id(), "[" * depth + "]" * depth),
            ):
                await ws.send(frame)
                try:
                    reply = await recv_json(ws, timeout=15)
                except ConnectionClosed as exc:
                    raise AssertionError(
                        f"connection dropped ({exc!r}); server exit status {_exit_status(srv)}; "
                        f"output tail: {srv.output()[-300:]!r}"
                    )
                assert reply["type"] in ("pong", "ack", "error"), reply
                if reply["type"] == "error":
                    assert reply["error"]["code"] == "BAD_REQUEST", reply
                await ping_pong(ws)

    asyncio.run(main())
    assert srv.proc.poll() is None, f"server died: {srv.output()[-300:]}"
    assert httpx.get(srv.http + "/health").status_code == 200


def test_rest_deeply_nested_body_does_not_crash_server(make_server):
    srv = make_server()
    create_topic(srv, "deep")
    depth = 100_000
    bodies = [
        ("/topics", '{"name":%s}' % ("[" * depth + "]" * depth)),
        ("/topics/deep/messages", '{"id":"%s","payload":%s}' % (new_id(), "[" * depth + "]" * depth)),
    ]
    for path, body in bodies:
        try:
            response = httpx.post(srv.http + path, content=body.encode(),
                                  headers={"content-type": "application/json"}, timeout=15)
        except httpx.HTTPError as exc:
            raise AssertionError(
                f"POST {path} with {depth}-deep JSON: {exc!r}; server exit status {_exit_status(srv)}; "
                f"output tail: {srv.output()[-300:]!r}"
            )
        assert response.status_code in (200, 400), (path, response.status_code, response.text[:200])
    assert srv.proc.poll() is None
    assert httpx.get(srv.http + "/health").status_code == 200


def test_ws_subscribing_twice_still_delivers_once(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as sub:
            await subscribe(sub, name)
            await subscribe(sub, name)
            assert topic_row(server, name)["subscribers"] == 1
            rest_publish(server, name, "once")
            event = await recv_json(sub)
            assert event["message"]["payload"] == "once"
            await ping_pong(sub)  # no duplicate

    asyncio.run(main())


def test_ws_normal_close_and_protocol_ping(server):
    async def main():
        async with connect(server.ws) as ws:
            pong_waiter = await ws.ping(b"hello")
            await asyncio.wait_for(pong_waiter, 10)  # WebSocket-level ping is answered
            await ws.close()
            assert ws.close_code == 1000, ws.close_code  # the server's close frame, echoing 1000

    asyncio.run(main())


def test_rest_concurrent_create_exactly_one_wins(server):
    name = new_topic("race")

    async def main():
        async with httpx.AsyncClient(base_url=server.http, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/topics", json={"name": name}) for _ in range(30)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201] + [409] * 29, codes

    asyncio.run(main())


def test_ws_unsubscribe_stops_delivery(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as sub, connect(server.ws) as pub:
            await subscribe(sub, name)
            await publish(pub, name, 1)
            assert (await recv_json(sub))["message"]["payload"] == 1
            await send_json(sub, {"type": "unsubscribe", "topic": name, "request_id": "u-1"})
            ack = await recv_json(sub)
            assert ack == {**ack, "type": "ack", "request_id": "u-1", "topic": name, "status": "ok"}, ack
            assert_ts(ack)
            await publish(pub, name, 2)  # acked: would be in sub's queue by now if still subscribed
            await ping_pong(sub)
            assert topic_row(server, name)["subscribers"] == 0
            await send_json(sub, {"type": "unsubscribe", "topic": new_topic("gone"), "request_id": "u-2"})
            err = await recv_json(sub)
            assert err["type"] == "error" and err["request_id"] == "u-2", err
            assert err["error"]["code"] == "TOPIC_NOT_FOUND", err

    asyncio.run(main())


def test_ws_ping_pong(server):
    async def main():
        async with connect(server.ws) as ws:
            pong = await ping_pong(ws, "p-42")
            assert_ts(pong)
            await send_json(ws, {"type": "ping"})
            pong = await recv_json(ws)
            assert pong["type"] == "pong" and pong.get("request_id") is None, pong
            # binary frames carrying JSON are accepted too
            await ws.send(json.dumps({"type": "ping", "request_id": "bin"}).encode())
            pong = await recv_json(ws)
            assert pong["type"] == "pong" and pong["request_id"] == "bin", pong

    asyncio.run(main())


def test_ws_subprotocol_ringcast_v1_is_selected_when_offered(server):
    async def main():
        async with connect(server.ws, subprotocols=["ringcast.v1"]) as ws:
            assert ws.subprotocol == "ringcast.v1", ws.subprotocol
            await ping_pong(ws, "sub-proto")

    asyncio.run(main())


def test_ws_replay_last_n_ack_then_oldest_first_then_live(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as pub:
            for i in range(1, 6):
                await publish(pub, name, {"i": i})
            async with connect(server.ws) as sub:
                await send_json(sub, {"type": "subscribe", "topic": name, "last_n": 3, "request_id": "rp"})
                ack = await recv_json(sub)
                assert ack["type"] == "ack" and ack["request_id"] == "rp", f"ack must come first, got {ack}"
                replay = [await recv_json(sub) for _ in range(3)]
                assert [e["seq"] for e in replay] == [3, 4, 5], replay
                assert [e["message"]["payload"] for e in replay] == [{"i": 3}, {"i": 4}, {"i": 5}]
                for e in replay:
                    assert_event(e, name)
                await publish(pub, name, {"i": 6})
                live = await recv_json(sub)
                assert live["seq"] == 6 and live["message"]["payload"] == {"i": 6}, live
                first_seen = replay + [live]
            async with connect(server.ws) as sub:
                # replayed events are the same events: same id, payload, seq and publish ts
                await subscribe(sub, name, last_n=4)
                again = [await recv_json(sub) for _ in range(4)]
                assert again == first_seen, (again, first_seen)
            async with connect(server.ws) as sub:
                await subscribe(sub, name, last_n=1000)  # more than exists: everything
                replay = [await recv_json(sub) for _ in range(6)]
                assert [e["seq"] for e in replay] == [1, 2, 3, 4, 5, 6], replay
                await ping_pong(sub)  # nothing more
            async with connect(server.ws) as sub:
                await subscribe(sub, name, last_n=0)
                await ping_pong(sub)  # no replay at all
            async with connect(server.ws) as sub:
                await subscribe(sub, name)  # last_n absent: no replay
                await ping_pong(sub)

    asyncio.run(main())


def test_ws_replay_ring_keeps_only_ring_buffer_size(make_server):
    srv = make_server(RING_BUFFER_SIZE="10")
    create_topic(srv, "ring")

    async def main():
        for i in range(1, 16):
            rest_publish(srv, "ring", i)
        async with connect(srv.ws) as sub:
            await subscribe(sub, "ring", last_n=100)
            replay = [await recv_json(sub) for _ in range(10)]
            assert [e["seq"] for e in replay] == list(range(6, 16)), replay
            assert [e["message"]["payload"] for e in replay] == list(range(6, 16))
            await ping_pong(sub)

    asyncio.run(main())


def test_ws_replay_joins_live_stream_without_gap_or_duplicate(server):
    name = new_topic()
    create_topic(server, name)
    total = 400

    async def main():
        async with connect(server.ws) as pub, connect(server.ws) as sub:
            started = asyncio.Event()

            async def publisher():
                for i in range(1, total + 1):
                    await publish(pub, name, i)
                    if i == 100:
                        started.set()

            task = asyncio.create_task(publisher())
            await started.wait()
            await send_json(sub, {"type": "subscribe", "topic": name, "last_n": 50, "request_id": "join"})
            ack = await recv_json(sub)
            assert ack["type"] == "ack" and ack["request_id"] == "join", ack
            seqs = []
            while not seqs or seqs[-1] < total:
                event = await recv_json(sub)
                assert event["type"] == "event", event
                assert event["message"]["payload"] == event["seq"], event
                seqs.append(event["seq"])
            await task
            assert len(seqs) >= 50, seqs[:5]
            assert seqs == list(range(seqs[0], total + 1)), "gap or duplicate between replay and live"

    asyncio.run(main())


def test_ws_topic_deleted_info_and_connection_stays_open(server):
    name = new_topic()
    other = new_topic()
    create_topic(server, name)
    create_topic(server, other)

    async def main():
        async with connect(server.ws) as sub:
            await subscribe(sub, name)
            await subscribe(sub, other)
            response = httpx.delete(f"{server.http}/topics/{name}")
            assert response.status_code == 200
            info = await recv_json(sub)
            assert info == {**info, "type": "info", "topic": name, "msg": "topic_deleted"}, info
            assert_ts(info)
            await ping_pong(sub)
            # still subscribed to the other topic
            rest_publish(server, other, "still here")
            event = await recv_json(sub)
            assert event["topic"] == other and event["message"]["payload"] == "still here", event
            # re-creating the topic does not resubscribe
            create_topic(server, name)
            rest_publish(server, name, "after re-create")
            await ping_pong(sub)
            assert topic_row(server, name)["subscribers"] == 0
            await subscribe(sub, name)
            rest_publish(server, name, "resubscribed")
            event = await recv_json(sub)
            assert event["message"]["payload"] == "resubscribed" and event["seq"] == 2, event

    asyncio.run(main())


BAD_FRAMES = [
    ("{not json", None),
    ("[1, 2, 3]", None),
    ('"just a string"', None),
    ('{"type": "dance", "request_id": "bad-1"}', "bad-1"),
    ('{"request_id": "bad-2"}', "bad-2"),
    ('{"type": "subscribe", "request_id": "bad-3"}', "bad-3"),
    ('{"type": "publish", "topic": "TOPIC", "request_id": "bad-4"}', "bad-4"),
    ('{"type": "publish", "topic": "TOPIC", "message": {"id": "not-a-uuid", "payload": 1}, "request_id": "bad-5"}', "bad-5"),
    ('{"type": "publish", "topic": "TOPIC", "message": {"payload": 1}, "request_id": "bad-6"}', "bad-6"),
    ('{"type": "publish", "topic": "TOPIC", "message": {"id": "ID"}, "request_id": "bad-7"}', "bad-7"),
    ('{"type": "subscribe", "topic": "TOPIC", "last_n": -1, "request_id": "bad-8"}', "bad-8"),
    ('{"type": "subscribe", "topic": "TOPIC", "last_n": "3", "request_id": "bad-9"}', "bad-9"),
    ('{"type": "unsubscribe", "request_id": "bad-10"}', "bad-10"),
    ('{"type": 7, "request_id": "bad-11"}', "bad-11"),
    ('{"type": "publish", "topic": "TOPIC", "message": "not an object", "request_id": "bad-12"}', "bad-12"),
]


def test_ws_bad_frames_get_bad_request_and_connection_stays_open(server):
    name = new_topic()
    create_topic(server, name)

    async def main():
        async with connect(server.ws) as ws:
            for text, request_id in BAD_FRAMES:
                text = text.replace("TOPIC", name).replace('"ID"', '"%s"' % new_id())
                await ws.send(text)
                err = await recv_json(ws)
                assert err["type"] == "error", (text, err)
                assert err["error"]["code"] == "BAD_REQUEST", (text, err)
                assert isinstance(err["error"]["message"], str) and err["error"]["message"], (text, err)
                assert err.get("request_id") == request_id, (text, err)
                assert_ts(err)
                await ping_pong(ws)  # still open and answering
            # nothing was published by the rejected frames
            assert httpx.get(server.http + "/stats").json()["topics"][name]["messages"] == 0
            await send_json(
                ws,
                {"type": "publish", "topic": new_topic("nope"), "request_id": "nf",
                 "message": {"id": new_id(), "payload": 1}},
            )
            err = await recv_json(ws)
            assert err["type"] == "error" and err["request_id"] == "nf", err
            assert err["error"]["code"] == "TOPIC_NOT_FOUND", err
            await ping_pong(ws)

    asyncio.run(main())


def test_ws_isolation_between_topics(server):
    a, b = new_topic("a"), new_topic("b")
    create_topic(server, a)
    create_topic(server, b)

    async def main():
        async with connect(server.ws) as sub_a, connect(server.ws) as sub_b, connect(server.ws) as pub:
            await subscribe(sub_a, a)
            await subscribe(sub_b, b)
            for i in range(20):
                await publish(pub, a if i % 2 == 0 else b, i)
            got_a = [await recv_json(sub_a) for _ in range(10)]
            got_b = [await recv_json(sub_b) for _ in range(10)]
            assert [e["message"]["payload"] for e in got_a] == list(range(0, 20, 2))
            assert [e["message"]["payload"] for e in got_b] == list(range(1, 20, 2))
            assert {e["topic"] for e in got_a} == {a} and {e["topic"] for e in got_b} == {b}
            assert [e["seq"] for e in got_a] == list(range(1, 11))
            assert [e["seq"] for e in got_b] == list(range(1, 11))
            await ping_pong(sub_a)
            await ping_pong(sub_b)

    asyncio.run(main())


def test_ws_fanout_same_order_for_all_and_per_publisher_order(server):
    name = new_topic()
    create_topic(server, name)
    publishers, per_publisher, subscribers = 3, 150, 5
    total = publishers * per_publisher

    async def main():
        subs = [await connect(server.ws).__aenter__() for _ in range(subscribers)]
        pubs = [await connect(server.ws).__aenter__() for _ in range(publishers)]
        try:
            for sub in subs:
                await subscribe(sub, name)

            async def run_publisher(index, ws):
                # pipelined: send everything, then collect the acks
                for i in range(per_publisher):
                    await send_json(ws, {"type": "publish", "topic": name, "request_id": f"{index}-{i}",
                                         "message": {"id": new_id(), "payload": {"p": index, "i": i}}})
                acks = [await recv_json(ws, timeout=60) for _ in range(per_publisher)]
                assert [a["request_id"] for a in acks] == [f"{index}-{i}" for i in range(per_publisher)]
                assert all(a["type"] == "ack" for a in acks)

            async def collect(ws):
                return [await recv_json(ws, timeout=60) for _ in range(total)]

            results = await asyncio.gather(
                *(collect(s) for s in subs), *(run_publisher(i, p) for i, p in enumerate(pubs))
            )
            streams = results[:subscribers]
            reference = [(e["seq"], e["message"]["payload"]["p"], e["message"]["payload"]["i"]) for e in streams[0]]
            assert [seq for seq, _, _ in reference] == list(range(1, total + 1))
            for stream in streams[1:]:
                assert [(e["seq"], e["message"]["payload"]["p"], e["message"]["payload"]["i"]) for e in stream] == reference
            for p in range(publishers):
                assert [i for _, pp, i in reference if pp == p] == list(range(per_publisher))
            for sub in subs:
                await ping_pong(sub)
        finally:
            for ws in subs + pubs:
                await ws.close()

    asyncio.run(main())


# ==========================================================================
# Scale: 1000 concurrent subscribers
# ==========================================================================


def test_thousand_concurrent_subscribers_each_get_every_event_once_in_order(make_server):
    srv = make_server()
    create_topic(srv, "fanout")
    count, burst = 1000, 20

    def health():
        return httpx.get(srv.http + "/health", timeout=10).json()

    async def main():
        gate = asyncio.Semaphore(100)
        conns = []

        async def open_one(i):
            async with gate:
                ws = await connect(srv.ws, open_timeout=60)
                await subscribe(ws, "fanout", request_id=f"s{i}")
                conns.append(ws)

        await asyncio.gather(*(open_one(i) for i in range(count)))
        assert len(conns) == count
        try:
            assert health()["subscribers"] == count
            assert topic_row(srv, "fanout")["subscribers"] == count
            stats = httpx.get(srv.http + "/stats").json()
            assert stats["topics"]["fanout"]["subscribers"] == count

            ids = [new_id() for _ in range(burst)]
            async with httpx.AsyncClient(base_url=srv.http, timeout=30) as client:
                for i, msg_id in enumerate(ids):
                    r = await client.post("/topics/fanout/messages", json={"id": msg_id, "payload": {"n": i}})
                    assert r.status_code == 200 and r.json()["seq"] == i + 1, r.text

            async def drain(ws):
                events = [await recv_json(ws, timeout=120) for _ in range(burst)]
                # exactly once: nothing after the burst but our pong
                await ping_pong(ws)
                return events

            results = await asyncio.gather(*(drain(ws) for ws in conns))
            for events in results:
                assert [e["seq"] for e in events] == list(range(1, burst + 1))
                assert [e["message"]["id"] for e in events] == ids
                assert [e["message"]["payload"] for e in events] == [{"n": i} for i in range(burst)]
        finally:
            async def close_one(ws):
                async with gate:
                    await ws.close()

            await asyncio.gather(*(close_one(ws) for ws in conns))

        await poll_until(lambda: health()["subscribers"] == 0, "/health subscribers back to 0")
        await poll_until(lambda: topic_row(srv, "fanout")["subscribers"] == 0, "/topics subscribers back to 0")

    asyncio.run(main())


# ==========================================================================
# Backpressure
# ==========================================================================


async def _stalled_subscriber(srv: Server, topic: str) -> RawWS:
    """A raw client with a tiny receive buffer that subscribes, then never reads."""
    slow = await RawWS.open(srv.port, rcvbuf=4096)
    await slow.send_json({"type": "subscribe", "topic": topic, "request_id": "slow"})
    ack = await slow.next_json()
    assert ack["type"] == "ack" and ack["request_id"] == "slow", ack
    return slow


def test_slow_consumer_is_disconnected_with_1008_and_fast_one_gets_everything(make_server):
    srv = make_server(SUBSCRIBER_QUEUE_SIZE="8")
    create_topic(srv, "busy")
    blob = "x" * 16384
    limit = 3000

    async def main():
        async with connect(srv.ws, max_size=None) as fast, connect(srv.ws) as pub:
            await subscribe(fast, "busy")
            slow = await _stalled_subscriber(srv, "busy")
            received = []

            async def fast_reader():
                while True:
                    event = await recv_json(fast, timeout=60)
                    if event["type"] == "pong":
                        return
                    received.append(event)

            reader = asyncio.create_task(fast_reader())
            published = 0
            disconnected = False
            async with httpx.AsyncClient(base_url=srv.http, timeout=10) as client:
                for i in range(1, limit + 1):
                    await publish(pub, "busy", {"i": i, "blob": blob})
                    published = i
                    rows = (await client.get("/topics")).json()["topics"]
                    if [r["subscribers"] for r in rows if r["name"] == "busy"] == [1]:
                        disconnected = True
                        break
            # drain the stalled socket right away, so the server can get its last frames out
            frames = []
            while True:
                try:
                    frame = await slow.read_frame(timeout=15)
                except asyncio.TimeoutError:
                    frames.append("TIMEOUT")
                    break
                if frame is None:
                    frames.append("EOF")
                    break
                frames.append(frame)
                if frame[0] == 0x8:
                    break
            slow.close()
            assert disconnected, f"stalled subscriber still subscribed after {published} events of 16 KiB"

            # the fast subscriber got every event, in order, and is still connected
            await send_json(fast, {"type": "ping", "request_id": "end"})
            await asyncio.wait_for(reader, 60)
            assert [e["seq"] for e in received] == list(range(1, published + 1))
            assert [e["message"]["payload"]["i"] for e in received] == list(range(1, published + 1))
            await ping_pong(fast)
            assert topic_row(srv, "busy")["subscribers"] == 1

            # the stalled one: a gap-free prefix of events, maybe SLOW_CONSUMER, then close 1008
            summary = [f[0] if isinstance(f, tuple) else f for f in frames]
            print(f"published={published} stalled reader frames={len(frames)} tail={frames[-3:] if len(frames) < 3 else [(f[0], f[1][:80]) if isinstance(f, tuple) else f for f in frames[-3:]]}")
            assert frames and isinstance(frames[-1], tuple) and frames[-1][0] == 0x8, (
                f"no close frame; last frames: {summary[-5:]}"
            )
            assert close_code(frames[-1][1]) == 1008, frames[-1]
            texts = [json.loads(f[1]) for f in frames[:-1] if f[0] == 0x1]
            texts = [t for t in texts if not is_heartbeat(t)]
            events = [t for t in texts if t["type"] == "event"]
            others = [t for t in texts if t["type"] != "event"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert len(events) < published
            for other in others:
                assert other["type"] == "error" and other["error"]["code"] == "SLOW_CONSUMER", other
            if others:
                assert texts[-1] is others[-1], "SLOW_CONSUMER error should come right before the close"

    asyncio.run(main())


def test_slow_consumer_drop_oldest_stays_connected(make_server):
    srv = make_server(SUBSCRIBER_QUEUE_SIZE="8", SLOW_CONSUMER_POLICY="drop_oldest")
    create_topic(srv, "busy")
    blob = "y" * 16384
    total = 800  # ~13 MB: far more than socket buffers plus 8 queued events

    async def main():
        async with connect(srv.ws, max_size=None) as fast, connect(srv.ws) as pub:
            await subscribe(fast, "busy")
            slow = await _stalled_subscriber(srv, "busy")
            received = []

            async def fast_reader():
                while len(received) < total:
                    received.append(await recv_json(fast, timeout=60))

            reader = asyncio.create_task(fast_reader())
            for i in range(1, total + 1):
                await publish(pub, "busy", {"i": i, "blob": blob})
            await asyncio.wait_for(reader, 120)
            assert [e["seq"] for e in received] == list(range(1, total + 1))
            assert topic_row(srv, "busy")["subscribers"] == 2, "drop_oldest must not disconnect"

            # now the stalled reader drains: newest events kept, oldest dropped, still connected
            await slow.send_json({"type": "ping", "request_id": "after"})
            seqs = []
            while True:
                frame = await slow.next_json(timeout=30)
                if frame["type"] == "pong":
                    assert frame["request_id"] == "after"
                    break
                assert frame["type"] == "event", frame
                seqs.append(frame["seq"])
            slow.close()
            assert seqs, "stalled subscriber received nothing"
            assert seqs == sorted(set(seqs)), "events out of order or duplicated"
            assert seqs[-1] == total, f"newest event must survive drop_oldest, got last seq {seqs[-1]}"
            assert len(seqs) < total, "expected some events to be dropped"

    asyncio.run(main())


# ==========================================================================
# Authentication
# ==========================================================================


def test_auth_rest_requires_api_key_except_health(make_server):
    srv = make_server(API_KEY="k1,k2")
    assert httpx.get(srv.http + "/health").status_code == 200
    for method, path, body in [
        ("GET", "/topics", None),
        ("GET", "/stats", None),
        ("POST", "/topics", {"name": "secured"}),
        ("DELETE", "/topics/secured", None),
        ("POST", "/topics/secured/messages", {"id": new_id(), "payload": 1}),
    ]:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": "k1,k2"}):
            response = httpx.request(method, srv.http + path, json=body, headers=headers)
            assert_error_body(response, 401)
    r = httpx.post(srv.http + "/topics", json={"name": "secured"}, headers={"X-API-Key": "k1"})
    assert r.status_code == 201, r.text
    assert httpx.get(srv.http + "/topics", headers={"X-API-Key": "k2"}).status_code == 200
    assert httpx.get(srv.http + "/stats", headers={"x-api-key": "k1"}).status_code == 200
    r = httpx.post(srv.http + "/topics/secured/messages", json={"id": new_id(), "payload": 1}, headers={"X-API-Key": "k2"})
    assert r.status_code == 200 and r.json()["seq"] == 1, r.text
    r = httpx.delete(srv.http + "/topics/secured", headers={"X-API-Key": "k2"})
    assert r.status_code == 200, r.text


def test_auth_websocket_upgrade(make_server):
    srv = make_server(API_KEY="k1,k2")
    create_topic(srv, "secured", headers={"X-API-Key": "k1"})

    async def main():
        for url, headers in [
            (srv.ws, None),
            (srv.ws, {"X-API-Key": "nope"}),
            (srv.ws + "?api_key=nope", None),
            (srv.ws + "?api_key=", None),
        ]:
            with pytest.raises(Exception) as info:
                async with connect(url, headers=headers):
                    pass
            assert status_of(info.value) == 401, (url, headers, repr(info.value))

        for url, headers in [
            (srv.ws, {"X-API-Key": "k1"}),
            (srv.ws, {"X-API-Key": "k2"}),
            (srv.ws + "?api_key=k1", None),
            (srv.ws + "?api_key=k2", None),
        ]:
            async with connect(url, headers=headers) as ws:
                await subscribe(ws, "secured")
                await ping_pong(ws)

    asyncio.run(main())


# ==========================================================================
# Heartbeat
# ==========================================================================


def test_heartbeat_info_ping_reaches_idle_client_which_stays_connected(make_server):
    srv = make_server(HEARTBEAT_INTERVAL="500ms")

    async def main():
        async with connect(srv.ws) as ws:
            beats = []
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                try:
                    frame = await recv_json(ws, timeout=deadline - time.monotonic(), skip_heartbeat=False)
                except asyncio.TimeoutError:
                    break
                assert frame == {**frame, "type": "info", "msg": "ping"}, frame
                assert_ts(frame)
                beats.append(time.monotonic())
            assert len(beats) >= 4, f"only {len(beats)} heartbeats in 4s at 500ms"
            await ping_pong(ws)  # alive after 8 intervals

    asyncio.run(main())


def test_heartbeat_silent_peer_is_closed_after_two_intervals(make_server):
    srv = make_server(HEARTBEAT_INTERVAL="500ms")

    async def main():
        raw = await RawWS.open(srv.port)
        opened = time.monotonic()
        seen = []
        ended = None
        while ended is None:
            try:
                frame = await raw.read_frame(timeout=10)
            except asyncio.TimeoutError:
                ended = "TIMEOUT"
                break
            if frame is None:
                ended = "EOF"
            elif frame[0] == 0x8:
                ended = ("close", close_code(frame[1]))
            else:
                seen.append(frame)
        elapsed = time.monotonic() - opened
        raw.close()
        print(f"silent peer ended with {ended} after {elapsed:.2f}s")
        assert ended != "TIMEOUT", "silent peer was never closed"
        assert 0.8 <= elapsed <= 5.0, f"closed after {elapsed:.2f}s; expected about 2 x 500ms"
        infos = [json.loads(p) for op, p in seen if op == 0x1]
        assert any(is_heartbeat(i) for i in infos), seen

    asyncio.run(main())


# ==========================================================================
# Frame limits
# ==========================================================================


def test_oversized_frame_closes_with_1009(make_server):
    srv = make_server(MAX_MESSAGE_SIZE="1024")

    async def main():
        async with connect(srv.ws) as ws:
            exact = '{"type":"ping","request_id":"ok","pad":"%s"}'
            exact = exact % ("p" * (1024 - len(exact) + 2))
            assert len(exact) == 1024
            await ws.send(exact)
            pong = await recv_json(ws)
            assert pong["type"] == "pong" and pong["request_id"] == "ok", pong
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv_json(ws, timeout=10)
            assert close_code_of(info.value) == 1009, repr(info.value)

    asyncio.run(main())


def test_invalid_utf8_text_frame_closes_with_1007(server):
    async def main():
        raw = await RawWS.open(server.port)
        await raw.send_json({"type": "ping", "request_id": "before"})
        assert (await raw.next_json())["type"] == "pong"
        await raw.send_frame(0x1, b'{"type":"ping","request_id":"\xff\xfe"}')
        frames = []
        while True:
            frame = await raw.read_frame(timeout=10)
            if frame is None or frame[0] == 0x8:
                break
            frames.append(frame)
        raw.close()
        assert frame is not None, f"connection dropped without a close frame after {frames}"
        assert close_code(frame[1]) == 1007, frame
        assert all(op != 0x1 or b"pong" not in p for op, p in frames), frames

    asyncio.run(main())


def test_invalid_utf8_in_fragmented_text_message_closes_with_1007(server):
    async def main():
        raw = await RawWS.open(server.port)
        await raw.send_frame(0x1, b'{"type":"ping","request_id":"\xe2', fin=False)
        await raw.send_frame(0x0, b'\x28"}', fin=True)  # \xe2\x28 is not UTF-8
        frame = await raw.read_frame(timeout=10)
        while frame is not None and frame[0] != 0x8:
            frame = await raw.read_frame(timeout=10)
        raw.close()
        assert frame is not None and close_code(frame[1]) == 1007, frame

    asyncio.run(main())


def test_fragmented_messages_are_reassembled_and_limited(make_server):
    srv = make_server(MAX_MESSAGE_SIZE="1024")

    async def main():
        raw = await RawWS.open(srv.port)
        await raw.send_frame(0x1, b'{"type":"ping",', fin=False)
        await raw.send_frame(0x9, b"mid")  # a control frame may come between fragments
        await raw.send_frame(0x0, b'"request_id":"frag"}', fin=True)
        pong = await raw.next_json()
        assert pong["type"] == "pong" and pong["request_id"] == "frag", pong
        # 2 x 600 bytes: each fragment fits, the message does not
        await raw.send_frame(0x1, b'{"type":"ping","pad":"' + b"a" * 600, fin=False)
        await raw.send_frame(0x0, b"a" * 600 + b'"}', fin=True)
        frame = await raw.read_frame(timeout=10)
        while frame is not None and frame[0] != 0x8:
            frame = await raw.read_frame(timeout=10)
        raw.close()
        assert frame is not None and close_code(frame[1]) == 1009, frame

    asyncio.run(main())


def test_binary_frame_with_invalid_utf8_gets_bad_request_and_stays_open(server):
    async def main():
        raw = await RawWS.open(server.port)
        await raw.send_frame(0x2, b'{"type":"ping","request_id":"\xff"}')
        err = await raw.next_json()
        assert err["type"] == "error" and err["error"]["code"] == "BAD_REQUEST", err
        await raw.send_frame(0x2, b'{"type":"ping","request_id":"bin-ok"}')
        pong = await raw.next_json()
        assert pong == {**pong, "type": "pong", "request_id": "bin-ok"}, pong
        raw.close()

    asyncio.run(main())


# ==========================================================================
# Graceful shutdown
# ==========================================================================


def test_graceful_shutdown_flushes_queued_events_then_1001_and_exits_0(make_server):
    srv = make_server(SHUTDOWN_TIMEOUT="10s", SUBSCRIBER_QUEUE_SIZE="8192")
    create_topic(srv, "final")
    total = 3000
    blob = "s" * 4096

    async def main():
        # a small client-side queue so the rest stays queued in the server
        async with connect(srv.ws, max_queue=4) as sub, connect(srv.ws) as pub:
            await subscribe(sub, "final")
            for i in range(total):
                await send_json(pub, {"type": "publish", "topic": "final", "request_id": str(i),
                                      "message": {"id": new_id(), "payload": {"i": i, "blob": blob}}})
            for i in range(total):
                ack = await recv_json(pub, timeout=60)
                assert ack["type"] == "ack" and ack["request_id"] == str(i), ack
            signalled = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            events = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    events.append(await recv_json(sub, timeout=30))
            assert [e["message"]["payload"]["i"] for e in events if e["type"] == "event"] == list(range(total))
            assert [e["type"] for e in events] == ["event"] * total, "only events before the close"
            assert close_code_of(info.value) == 1001, repr(info.value)
            # the publisher is closed with 1001 too
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv_json(pub, timeout=30)
            assert close_code_of(info.value) == 1001, repr(info.value)
            return signalled

    signalled = asyncio.run(main())
    code = srv.proc.wait(timeout=15)
    assert code == 0, srv.output()
    assert time.monotonic() - signalled < 10 + 3


def test_graceful_shutdown_with_stalled_client_exits_0_within_timeout(make_server):
    srv = make_server(SHUTDOWN_TIMEOUT="2s", SUBSCRIBER_QUEUE_SIZE="100000")
    create_topic(srv, "stuck")

    async def main():
        slow = await _stalled_subscriber(srv, "stuck")
        async with connect(srv.ws) as pub:
            for i in range(600):
                await publish(pub, "stuck", {"i": i, "blob": "b" * 16384})
            signalled = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            if srv.proc.poll() is None:  # still flushing to the stalled client: no new connections
                with pytest.raises(httpx.TransportError):
                    httpx.get(srv.http + "/health", timeout=2)
            code = await asyncio.get_running_loop().run_in_executor(None, lambda: srv.proc.wait(timeout=15))
            elapsed = time.monotonic() - signalled
        slow.close()
        return code, elapsed

    code, elapsed = asyncio.run(main())
    assert code == 0, srv.output()
    assert elapsed < 2 + 3, f"exited {elapsed:.1f}s after SIGTERM with SHUTDOWN_TIMEOUT=2s"


def test_sigint_also_shuts_down_gracefully(make_server):
    srv = make_server()

    async def main():
        async with connect(srv.ws) as ws:
            await ping_pong(ws)
            srv.proc.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await recv_json(ws, timeout=15)
            assert close_code_of(info.value) == 1001, repr(info.value)

    asyncio.run(main())
    assert srv.proc.wait(timeout=15) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(srv.http + "/health", timeout=2)


# ==========================================================================
# Configuration
# ==========================================================================


def test_configuration_by_command_line_flags_over_environment(make_server):
    """Every setting is a flag with an environment fallback: flags win."""
    srv = make_server(("--host", "127.0.0.1", "--port", "0", "--api-key", "flagkey",
                       "--heartbeat-interval", "500ms"), API_KEY="envkey")
    assert httpx.get(srv.http + "/topics", headers={"X-API-Key": "flagkey"}).status_code == 200
    assert httpx.get(srv.http + "/topics", headers={"X-API-Key": "envkey"}).status_code == 401

    async def main():
        async with connect(srv.ws, headers={"X-API-Key": "flagkey"}) as ws:
            frame = await recv_json(ws, timeout=5, skip_heartbeat=False)
            assert is_heartbeat(frame), frame

    asyncio.run(main())


@pytest.mark.parametrize(
    "env",
    [
        {"SLOW_CONSUMER_POLICY": "bogus"},
        {"HEARTBEAT_INTERVAL": "soon"},
        {"SUBSCRIBER_QUEUE_SIZE": "-1"},
        {"MAX_MESSAGE_SIZE": "lots"},
        {"SHUTDOWN_TIMEOUT": "10 parsecs"},
    ],
    ids=lambda env: next(iter(env)),
)
def test_invalid_configuration_is_refused_at_startup(env):
    full = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    full.update(HOST="127.0.0.1", PORT=str(_free_port()), RUST_LOG="warn", **env)
    proc = subprocess.run([str(BINARY)], env=full, capture_output=True, timeout=15)
    assert proc.returncode != 0, proc


def test_durations_accept_seconds_and_minutes(make_server):
    srv = make_server(HEARTBEAT_INTERVAL="2m", SHUTDOWN_TIMEOUT="1s")
    assert httpx.get(srv.http + "/health").status_code == 200
