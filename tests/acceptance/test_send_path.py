"""Acceptance tests of the send path (issue 10; CONTRACT.md "Backpressure,
precisely") against the release binary: a subscriber that reads as fast as it
can is never cut, whatever its neighbours do; a stalled reader is cut on its
queue bound or after WRITE_TIMEOUT, and costs bounded memory meanwhile.

The flat-out subscriber and the pipelining publisher are separate processes
(send_path_clients.py), like real clients; the stalled reader is test_acceptance's
raw client with a 4 KiB receive buffer. Helpers and fixtures come from
test_acceptance.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

import test_acceptance
from test_acceptance import (
    RawWS,
    _stalled_subscriber,
    close_code,
    connect,
    create_topic,
    is_heartbeat,
    new_topic,
    poll_until,
    publish,
    topic_row,
)

make_server = test_acceptance.make_server  # the fixture, shared

CLIENTS = Path(__file__).with_name("send_path_clients.py")
RSS_LIMIT_KIB = 200 * 1024


def counter(srv, name: str) -> int:
    """A process-wide counter of /stats, from its `totals` object if it has one."""
    stats = httpx.get(srv.http + "/stats", timeout=10).json()
    totals = stats.get("totals") if isinstance(stats.get("totals"), dict) else stats
    assert isinstance(totals.get(name), int), f"/stats without an integer {name}: {stats}"
    return totals[name]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


async def watch_rss(pid: int, samples: list[int], interval: float = 0.05) -> None:
    """Samples the server's resident set size until cancelled."""
    while True:
        samples.append(rss_kib(pid))
        await asyncio.sleep(interval)


async def client_process(*args) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENTS),
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def client_result(proc: asyncio.subprocess.Process, what: str, timeout: float) -> dict:
    """The JSON line a client process prints last; fails if it failed or hangs."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{what} did not finish within {timeout}s")
    lines = out.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    assert proc.returncode == 0 and result.get("ok"), (
        f"{what} failed: {result.get('error') or result}; stderr: {err.decode()[-2000:]}"
    )
    return result


async def drain_until_closed(raw: RawWS, timeout: float = 15.0):
    """What a stalled reader finds once it reads again, and how its connection
    ended: "close" (a close frame), "eof", "reset", or "open" (it did not)."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return frames, "open"
        try:
            frame = await raw.read_frame(timeout=remaining)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return frames, "reset"
        except asyncio.TimeoutError:
            return frames, "open"
        if frame is None:
            return frames, "eof"
        frames.append(frame)
        if frame[0] == 0x8:
            return frames, "close"


async def assert_cut_off(raw: RawWS) -> int:
    """A stalled reader that must have been cut: its connection ends, after a
    gap-free prefix of the events, at most an error SLOW_CONSUMER and a close
    1008. Returns how many events it got."""
    frames, ending = await drain_until_closed(raw)
    assert ending != "open", f"the stalled reader's connection is still open after {len(frames)} frames"
    if ending == "close":
        assert close_code(frames[-1][1]) == 1008, frames[-1]
    texts = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
    texts = [t for t in texts if not is_heartbeat(t)]
    events = [t["seq"] for t in texts if t["type"] == "event"]
    assert events == list(range(1, len(events) + 1)), "the prefix has a gap"
    for other in (t for t in texts if t["type"] != "event"):
        assert other["type"] == "error" and other["error"]["code"] == "SLOW_CONSUMER", other
    return len(events)


# ==========================================================================
# A subscriber that keeps up, next to a stalled one
# ==========================================================================


@pytest.mark.parametrize("policy", ["disconnect", "drop_oldest"])
def test_flat_out_subscriber_process_gets_every_event_while_stalled_reader_is_handled(make_server, policy):
    """Queue 64, 20,000 events of 1 KiB from a publisher process pipelining
    40 frames per write at 4,000/s: the subscriber process gets all of them,
    in order; the publisher every ack; the stalled reader is cut
    (`disconnect`) or lingers with its oldest events dropped (`drop_oldest`,
    WRITE_TIMEOUT out of the way), and the server's RSS stays bounded."""
    count, rate, per_write, size = 20_000, 4000, 40, 1024
    srv = make_server(SUBSCRIBER_QUEUE_SIZE="64", SLOW_CONSUMER_POLICY=policy, WRITE_TIMEOUT="60s")
    topic = new_topic("flat")
    create_topic(srv, topic)

    async def main():
        slow = await _stalled_subscriber(srv, topic)
        rss: list[int] = []
        watcher = asyncio.create_task(watch_rss(srv.proc.pid, rss))
        clients = []
        try:
            subscriber = await client_process("subscribe", srv.port, topic, count)
            clients.append(subscriber)
            line = await asyncio.wait_for(subscriber.stdout.readline(), 30)
            assert line.strip() == b"subscribed", line
            publisher = await client_process("publish", srv.port, topic, count, rate, per_write, size)
            clients.append(publisher)
            got = await client_result(subscriber, "the flat-out subscriber", 60)
            assert got["received"] == count
            acked = await client_result(publisher, "the pipelining publisher", 30)
            assert acked["acked"] == count
        finally:
            watcher.cancel()
            for proc in clients:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert rss and max(rss) < RSS_LIMIT_KIB, f"server RSS peaked at {max(rss)} KiB"
        print(f"policy={policy} publisher={acked} peak RSS={max(rss)} KiB")

        assert counter(srv, "published") == count
        if policy == "disconnect":
            assert counter(srv, "slow_consumer_disconnects") == 1, "the stalled reader, and only it, is cut"
            await poll_until(lambda: topic_row(srv, topic)["subscribers"] == 0, "no subscriber left", 10)
            assert await assert_cut_off(slow) < count
        else:
            assert counter(srv, "slow_consumer_disconnects") == 0
            assert counter(srv, "dropped") > 0, "the stalled reader's queue never overflowed"
            # the subscriber process is gone; drop_oldest must not disconnect the stalled reader
            await poll_until(lambda: topic_row(srv, topic)["subscribers"] == 1, "the stalled reader alone", 10)
            # reading again: increasing seqs with gaps, the newest last, then the pong
            await slow.send_json({"type": "ping", "request_id": "after"})
            seqs = []
            while True:
                frame = await slow.next_json(timeout=30)
                if frame["type"] == "pong":
                    break
                assert frame["type"] == "event", frame
                seqs.append(frame["seq"])
            assert seqs == sorted(set(seqs)) and seqs[-1] == count, seqs[-5:]
            assert len(seqs) < count
        slow.close()

    asyncio.run(main())


# ==========================================================================
# WRITE_TIMEOUT
# ==========================================================================


@pytest.mark.parametrize("policy", ["disconnect", "drop_oldest"])
def test_stalled_reader_with_frames_waiting_is_cut_after_write_timeout(make_server, policy):
    """WRITE_TIMEOUT=2s, queue 1024: 20 events of 256 KiB fill a stalled
    reader's socket buffers, far below either queue bound; it is cut within
    WRITE_TIMEOUT + 1 s of the last publish, and not before WRITE_TIMEOUT
    after the first."""
    write_timeout, events = 2.0, 20
    srv = make_server(WRITE_TIMEOUT="2s", SUBSCRIBER_QUEUE_SIZE="1024", SLOW_CONSUMER_POLICY=policy)
    topic = new_topic("stuck")
    create_topic(srv, topic)
    blob = "z" * (256 * 1024)

    async def main():
        slow = await _stalled_subscriber(srv, topic)
        async with connect(srv.ws) as pub:
            first = time.monotonic()
            for i in range(1, events + 1):
                await asyncio.wait_for(publish(pub, topic, {"i": i, "blob": blob}), 15)
            last = time.monotonic()
            while topic_row(srv, topic)["subscribers"] != 0:
                assert time.monotonic() < last + write_timeout + 1.0, (
                    f"the stalled reader, with frames waiting, is still subscribed "
                    f"{time.monotonic() - last:.1f}s after the last publish (WRITE_TIMEOUT {write_timeout}s)"
                )
                await asyncio.sleep(0.02)
            cut = time.monotonic()
            assert cut - first >= write_timeout - 0.1, f"cut {cut - first:.2f}s after the first publish"
            assert counter(srv, "slow_consumer_disconnects") == 1
            assert await assert_cut_off(slow) < events
            await asyncio.wait_for(publish(pub, topic, {"after": True}), 15)  # the publisher goes on
        slow.close()

    asyncio.run(main())
