"""Acceptance tests of compression (issue 15; CONTRACT.md "Compression"):
permessage-deflate (RFC 7692) negotiated with real clients, events of at least
COMPRESSION_MIN_BYTES sent compressed (RSV1), replays too, compressed client
frames inflated, and a deflate bomb closed with 1009. Helpers and fixtures
come from test_acceptance.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

import test_acceptance
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
    payload = deflate(message)
    n = len(payload)
    head = bytes([0xC1])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    # A zero mask leaves the payload as it is.
    await raw.loop.sock_sendall(raw.sock, head + b"\x00\x00\x00\x00" + payload)


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
