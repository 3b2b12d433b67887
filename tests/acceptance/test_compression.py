"""Acceptance tests of compression (issue 15; CONTRACT.md "Compression"):
permessage-deflate (RFC 7692) negotiated with real clients (Python
websockets, Node.js ws, Chromium's WebSocket), events of at least
COMPRESSION_MIN_BYTES sent compressed (RSV1) and deflated once for every
subscriber, replays too, compressed client frames inflated, and a deflate
bomb closed with 1009. Helpers and fixtures come from test_acceptance.py, the
browser from test_pages.py.

The Node.js test needs `node` and `npm ci` run in tests/acceptance/node; it
skips without them, unless RINGCAST_NODE_TESTS=require is set (CI sets it),
which fails instead. The Chromium test follows RINGCAST_BROWSER_TESTS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import httpx
import pytest

import test_acceptance
from test_pages import browser  # noqa: F401 (a fixture)
from test_acceptance import (
    RawWS,
    close_code,
    connect,
    create_topic,
    new_id,
    new_topic,
    publish,
    recv_json,
    subscribe,
)

make_server = test_acceptance.make_server  # the fixture, shared

AGREED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
NODE_CLIENTS = Path(__file__).resolve().parent / "node"


def metric(srv, name: str) -> int:
    """A counter's value on /metrics."""
    scrape = httpx.get(srv.http + "/metrics", timeout=10).text
    for line in scrape.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} is not on /metrics")


def order(items: int) -> dict:
    """An order with line items: JSON that compresses well."""
    return {
        "order": 48213,
        "items": [{"sku": f"SKU-{n:05}", "qty": n % 7 + 1, "price": n * 13 % 90 + 0.99} for n in range(items)],
    }


def deflate(data: bytes) -> bytes:
    """A message as a permessage-deflate client compresses it (RFC 7692 §7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(data + b"\x00\x00\xff\xff")


async def read_raw(raw: RawWS) -> tuple[int, bytes]:
    """The next frame's first byte (FIN, RSV, opcode) and payload."""
    head = await raw._exact(2, 15)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await raw._exact(2, 15))[0]
    elif length == 127:
        length = struct.unpack("!Q", await raw._exact(8, 15))[0]
    return head[0], await raw._exact(length, 15)


async def next_event(raw: RawWS) -> tuple[int, dict]:
    while True:
        first, payload = await read_raw(raw)
        assert first & 0x0F != 0x8, f"closed: {payload!r}"
        if first & 0x0F == 0x1:
            text = inflate(payload) if first & 0x40 else payload
            frame = json.loads(text)
            if frame.get("type") == "event":
                return first, frame


async def send_compressed(raw: RawWS, message: bytes) -> None:
    await raw.send_frame(0x1, deflate(message), rsv1=True)


def test_python_websockets_negotiates_and_round_trips(make_server):
    srv = make_server()
    topic = new_topic("z")
    create_topic(srv, topic)
    big = "x" * 2000

    async def scenario():
        async with connect(srv.ws, compression="deflate") as sub, connect(
            srv.ws, compression="deflate"
        ) as pub:
            assert sub.response.headers["Sec-WebSocket-Extensions"] == AGREED
            await subscribe(sub, topic)
            # websockets compresses what it sends: the server inflates it.
            await publish(pub, topic, big)
            await publish(pub, topic, "small")
            first = await recv_json(sub)
            second = await recv_json(sub)
            assert first["message"]["payload"] == big
            assert second["message"]["payload"] == "small"
            async with connect(srv.ws, compression="deflate") as late:
                await subscribe(late, topic, last_n=2)
                replayed = [await recv_json(late), await recv_json(late)]
                assert [event["message"]["payload"] for event in replayed] == [big, "small"]

    asyncio.run(scenario())


def test_events_are_compressed_from_the_minimum_size_and_shared_by_replays(make_server):
    srv = make_server()
    topic = new_topic("z")
    create_topic(srv, topic)
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}

    async def scenario():
        raw = await RawWS.open(srv.port, headers=offer)
        try:
            await raw.send_json({"type": "subscribe", "topic": topic})
            async with connect(srv.ws, compression=None) as pub:
                await publish(pub, topic, "y" * 1000)
                await publish(pub, topic, "tiny")
            first, event = await next_event(raw)
            assert first == 0xC1, "FIN, RSV1, text"
            assert event["message"]["payload"] == "y" * 1000
            first, event = await next_event(raw)
            assert first == 0x81, "under COMPRESSION_MIN_BYTES: plain"
            assert event["message"]["payload"] == "tiny"
            # A compressed publish from a raw client, then a replay of all three.
            await send_compressed(raw, json.dumps(
                {"type": "publish", "topic": topic, "message": {"id": new_id(), "payload": "w" * 500}}
            ).encode())
            first, event = await next_event(raw)
            assert first == 0xC1 and event["message"]["payload"] == "w" * 500
        finally:
            raw.close()
        late = await RawWS.open(srv.port, headers=offer)
        try:
            await late.send_json({"type": "subscribe", "topic": topic, "last_n": 3})
            firsts = [(await next_event(late))[0] for _ in range(3)]
            assert firsts == [0xC1, 0x81, 0xC1]
        finally:
            late.close()

    asyncio.run(scenario())


def test_no_compression_when_off_or_not_offered(make_server):
    srv = make_server(COMPRESSION="off")

    async def scenario():
        async with connect(srv.ws, compression="deflate") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
        plain = make_server()
        async with connect(plain.ws, compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers

    asyncio.run(scenario())


def test_a_deflate_bomb_closes_1009(make_server):
    srv = make_server(MAX_MESSAGE_SIZE="65536")
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate"}

    async def scenario():
        raw = await RawWS.open(srv.port, headers=offer)
        try:
            await send_compressed(raw, b"[" + b" " * (16 << 20) + b"]")
            while True:
                first, payload = await read_raw(raw)
                if first & 0x0F == 0x8:
                    assert close_code(payload) == 1009
                    return
        finally:
            raw.close()

    asyncio.run(scenario())


def test_each_event_is_deflated_once_for_all_its_compressed_subscribers(make_server):
    srv = make_server()
    topic = new_topic("z")
    create_topic(srv, topic)
    payload = order(100)

    async def scenario():
        subscribers = [await connect(srv.ws, compression="deflate").__aenter__() for _ in range(5)]
        try:
            for ws in subscribers:
                await subscribe(ws, topic)
            async with connect(srv.ws, compression=None) as pub:
                await publish(pub, topic, payload)
            for ws in subscribers:
                assert (await recv_json(ws))["message"]["payload"] == payload
            async with connect(srv.ws, compression="deflate") as late:
                await subscribe(late, topic, last_n=1)
                assert (await recv_json(late))["message"]["payload"] == payload
        finally:
            for ws in subscribers:
                await ws.close()

    asyncio.run(scenario())
    assert metric(srv, "ringcast_events_deflated_total") == 1, "five subscribers and a replay, one deflate"
    json_bytes = metric(srv, "ringcast_deflate_in_bytes_total")
    assert 0 < metric(srv, "ringcast_deflate_out_bytes_total") < json_bytes / 3


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_CLIENTS / "node_modules" / "ws").is_dir():
        message = "node and `npm ci` in tests/acceptance/node are needed"
        if os.environ.get("RINGCAST_NODE_TESTS") == "require":
            pytest.fail(message)
        pytest.skip(message)
    return node


def test_node_ws_negotiates_and_round_trips_compressed(make_server):
    node = _node()
    srv = make_server()
    topic = new_topic("z")
    create_topic(srv, topic)
    run = subprocess.run(
        [node, str(NODE_CLIENTS / "deflate_clients.js"), srv.ws, topic],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["extensions"] == {
        "compressed": "permessage-deflate",
        "plain": "",
        "publisher": "permessage-deflate",
    }
    assert seen["intact"] == {"compressed": True, "plain": True}
    # The same event, read off each subscriber's socket.
    bytes_read = seen["socketBytesForTheEvent"]
    assert bytes_read["plain"] > seen["payloadBytes"]
    assert bytes_read["compressed"] < bytes_read["plain"] / 3, bytes_read
    assert metric(srv, "ringcast_events_deflated_total") == 1
    assert metric(srv, "ringcast_messages_inflated_total") == 1, "ws compressed the publish"


# Runs in the page: opens a subscriber and a publisher on window.ringcast.
BROWSER_OPEN = """
const [url, topic, done] = arguments;
const open = () => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.onopen = () => resolve(ws);
  ws.onerror = () => reject(new Error("connection failed"));
});
const next = (ws, type) => new Promise((resolve) => {
  ws.addEventListener("message", function onMessage(event) {
    const frame = JSON.parse(event.data);
    if (frame.type === type) {
      ws.removeEventListener("message", onMessage);
      resolve(frame);
    }
  });
});
(async () => {
  const [sub, pub] = [await open(), await open()];
  const acked = next(sub, "ack");
  sub.send(JSON.stringify({type: "subscribe", topic}));
  await acked;
  window.ringcast = {sub, pub, next};
  done({sub: sub.extensions, pub: pub.extensions});
})().catch((err) => done({error: String(err)}));
"""

# Then publishes `payload` and returns whether the subscriber got it intact.
BROWSER_ROUND_TRIP = """
const [topic, id, payload, done] = arguments;
const {sub, pub, next} = window.ringcast;
const event = next(sub, "event");
pub.send(JSON.stringify({type: "publish", topic, message: {id, payload}}));
event.then((frame) => done(JSON.stringify(frame.message.payload) === JSON.stringify(payload)));
"""


def test_chromium_negotiates_and_round_trips_compressed(make_server, browser):  # noqa: F811
    srv = make_server()
    topic = new_topic("z")
    create_topic(srv, topic)
    browser.set_script_timeout(30)
    browser.get(srv.http + "/health")
    opened = browser.execute_async_script(BROWSER_OPEN, srv.ws, topic)
    assert opened == {"sub": AGREED, "pub": AGREED}, opened
    inflated_before = metric(srv, "ringcast_messages_inflated_total")
    intact = browser.execute_async_script(BROWSER_ROUND_TRIP, topic, new_id(), order(100))
    assert intact is True
    assert metric(srv, "ringcast_messages_inflated_total") == inflated_before + 1, "Chromium compressed the publish"
    assert metric(srv, "ringcast_events_deflated_total") == 1
