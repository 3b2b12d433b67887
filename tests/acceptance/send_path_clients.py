"""Clients that test_send_path.py runs each in a process of its own, the way
real deployments have them (not collected by pytest: no test_ prefix).

    python3 send_path_clients.py subscribe PORT TOPIC COUNT
        A `websockets` client that subscribes, prints "subscribed", then reads
        events as fast as it can: it must get seq 1..COUNT with payload
        {"n": seq, "pad": ...}, complete and in order, and then nothing but
        the pong of a ping.

    python3 send_path_clients.py publish PORT TOPIC COUNT RATE PER_WRITE SIZE
        A raw-socket client that publishes events 1..COUNT pipelined: every
        PER_WRITE / RATE seconds it writes PER_WRITE publish frames in one
        sendall, without waiting for acks; a second thread reads the acks,
        which must all come back, in order.

Each prints one JSON line last: {"ok": true, ...} or {"ok": false, "error": ...}
(exit status 1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
import uuid

FRAME_TIMEOUT = 15.0


def report(ok: bool, **fields) -> None:
    print(json.dumps({"ok": ok, **fields}), flush=True)


# --------------------------------------------------------------------------
# subscribe
# --------------------------------------------------------------------------


async def subscribe(port: int, topic: str, count: int) -> bool:
    try:  # websockets >= 13
        from websockets.asyncio.client import connect
    except ImportError:  # pragma: no cover - older websockets
        from websockets import connect  # type: ignore
    from websockets.exceptions import ConnectionClosed

    received = 0

    def failed(error: str) -> bool:
        report(False, received=received, error=error)
        return False

    async with connect(
        f"ws://127.0.0.1:{port}/ws", max_size=None, ping_interval=None, open_timeout=30, close_timeout=5
    ) as ws:

        async def next_frame() -> dict:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT))
                if not (frame.get("type") == "info" and frame.get("msg") == "ping"):
                    return frame

        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "request_id": "sub"}))
        ack = await next_frame()
        if ack.get("type") != "ack" or ack.get("request_id") != "sub":
            return failed(f"expected the subscribe ack, got {ack}")
        print("subscribed", flush=True)
        try:
            while received < count:
                frame = await next_frame()
                if frame.get("type") != "event":
                    return failed(f"reads flat out, yet got {frame} after {received} of {count} events")
                seq, n = frame.get("seq"), frame["message"]["payload"].get("n")
                if seq != received + 1 or n != seq:
                    return failed(f"event seq {seq} (n {n}) where {received + 1} was due")
                received += 1
            await ws.send(json.dumps({"type": "ping", "request_id": "after-every-event"}))
            pong = await next_frame()
            if pong.get("type") != "pong":
                return failed(f"after every event, expected the pong, got {pong}")
        except ConnectionClosed as exc:
            rcvd = getattr(exc, "rcvd", None)
            code = rcvd.code if rcvd is not None else getattr(exc, "code", None)
            return failed(f"reads flat out, yet was closed ({code}) after {received} of {count} events")
        except asyncio.TimeoutError:
            return failed(f"nothing for {FRAME_TIMEOUT}s after {received} of {count} events")
    report(True, received=received)
    return True


# --------------------------------------------------------------------------
# publish
# --------------------------------------------------------------------------


def masked(payload: bytes) -> bytes:
    """One masked text frame (client frames must be masked)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + body


def handshake(sock: socket.socket, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"upgrade refused: {head!r}")
    return rest


class AckReader(threading.Thread):
    """Reads the acks of publishes p1..pCOUNT, which must come in order."""

    def __init__(self, sock: socket.socket, buf: bytes, topic: str, count: int):
        super().__init__(daemon=True)
        self.sock, self.buf, self.topic, self.count = sock, buf, topic, count
        self.acked = 0
        self.error: str | None = None

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"connection ended after {self.acked} of {self.count} acks")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def run(self) -> None:
        try:
            while self.acked < self.count:
                b0, b1 = self.exact(2)
                length = b1 & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", self.exact(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", self.exact(8))
                payload = self.exact(length)
                if b0 & 0x0F != 0x1:
                    continue
                frame = json.loads(payload)
                if frame.get("type") == "info":
                    continue
                due = f"p{self.acked + 1}"
                if frame.get("type") != "ack" or frame.get("request_id") != due:
                    raise AssertionError(f"expected the ack of {due}, got {frame}")
                self.acked += 1
        except Exception as exc:  # reported by the main thread
            self.error = f"{type(exc).__name__}: {exc}"


def publish(port: int, topic: str, count: int, rate: float, per_write: int, size: int) -> bool:
    sock = socket.create_connection(("127.0.0.1", port), timeout=FRAME_TIMEOUT)
    acks = AckReader(sock, handshake(sock, port), topic, count)
    acks.start()
    pad = "x" * size
    interval = per_write / rate
    started = time.monotonic()
    n = 0
    while n < count:
        batch = []
        for n in range(n + 1, min(n + per_write, count) + 1):
            frame = {
                "type": "publish",
                "topic": topic,
                "request_id": f"p{n}",
                "message": {"id": str(uuid.uuid4()), "payload": {"n": n, "pad": pad}},
            }
            batch.append(masked(json.dumps(frame).encode()))
        sock.sendall(b"".join(batch))
        if acks.error:
            break
        delay = started + (n // per_write) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sent_in = time.monotonic() - started
    acks.join(timeout=60)
    if acks.is_alive() or acks.error or acks.acked != count:
        report(False, acked=acks.acked, error=acks.error or f"{acks.acked} of {count} acks within 60 s")
        return False
    report(True, acked=acks.acked, seconds=round(sent_in, 2))
    sock.close()
    return True


def main(argv: list[str]) -> int:
    role, port, topic, count = argv[0], int(argv[1]), argv[2], int(argv[3])
    if role == "subscribe":
        ok = asyncio.run(subscribe(port, topic, count))
    elif role == "publish":
        ok = publish(port, topic, count, float(argv[4]), int(argv[5]), int(argv[6]))
    else:
        raise SystemExit(f"unknown role {role!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
