#!/usr/bin/env python3
"""Server RSS per idle subscribed WebSocket connection, by how clients arrive.

usage: idle_memory.py PID [--url ws://127.0.0.1:8080/ws] [--connections 10000]
                          [--topics 100] [--pattern eager|late] [--settle 2]

Patterns:
  eager  each client sends its subscribe as soon as it has read the 101,
         200 handshakes in flight at a time (what ringcast-load's `idle`
         scenario and the Go harness do);
  late   every client upgrades first (200 at a time), all stay silent for
         --quiet seconds, then all subscribe.

Prints one JSON line: the server's VmRSS before any connection and after
all are subscribed and --settle seconds have passed, and the difference per
connection in KiB (and, for `late`, the same while they were silent).
"""
import argparse
import asyncio
import base64
import json
import os
import urllib.error
import urllib.request
from urllib.parse import urlparse

HANDSHAKES_IN_FLIGHT = 200


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def create_topics(base, names):
    for name in names:
        request = urllib.request.Request(
            f"{base}/topics",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request).close()
        except urllib.error.HTTPError as err:
            if err.code != 409:
                raise


def masked_text_frame(payload):
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def upgrade(host, port, path):
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return reader, writer


async def subscribe(reader, writer, topic):
    frame = json.dumps({"type": "subscribe", "topic": topic}).encode()
    writer.write(masked_text_frame(frame))
    seen = b""
    while b'"type":"ack"' not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError("closed before the subscribe ack")
        seen = seen[-64:] + chunk


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("pid", type=int)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--pattern", choices=["eager", "late"], default="eager")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--quiet", type=float, default=6.0)
    args = parser.parse_args()
    url = urlparse(args.url)
    topics = [f"load-{i}" for i in range(args.topics)]
    create_topics(f"http://{url.hostname}:{url.port}", topics)
    before = rss_kib(args.pid)
    slots = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

    async def connect(i, and_subscribe):
        async with slots:
            reader, writer = await upgrade(url.hostname, url.port, url.path)
            if and_subscribe:
                await subscribe(reader, writer, topics[i % len(topics)])
        return reader, writer

    eager = args.pattern == "eager"
    connections = await asyncio.gather(
        *(connect(i, eager) for i in range(args.connections))
    )
    report = {"pattern": args.pattern, "connections": args.connections}
    if not eager:
        await asyncio.sleep(args.quiet)
        silent = rss_kib(args.pid)
        report["rss_kib_silent"] = silent
        report["kib_per_connection_silent"] = round((silent - before) / args.connections, 2)
        await asyncio.gather(
            *(
                subscribe(reader, writer, topics[i % len(topics)])
                for i, (reader, writer) in enumerate(connections)
            )
        )
    await asyncio.sleep(args.settle)
    after = rss_kib(args.pid)
    report.update(
        rss_kib_before=before,
        rss_kib_after=after,
        kib_per_connection=round((after - before) / args.connections, 2),
    )
    print(json.dumps(report))
    for _, writer in connections:
        writer.close()


asyncio.run(main())
