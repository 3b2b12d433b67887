#!/usr/bin/env python3
"""The cost of POST /broadcast to 1000 topics: request latency (client
side, loopback, keep-alive) and the server's CPU time per broadcast, read
from /proc/PID/stat around the timed loop.

    broadcast_cost.py URL PID [--topics 1000] [--runs 200] [--subscribers]

URL is the server's base (http://127.0.0.1:18080), PID its process. The
topics t0..t999 are created if missing. With --subscribers, a child
process holds one WebSocket subscriber per topic and reads every event, so
each broadcast also fans out to 1000 sockets. Each broadcast carries a
fresh id; a second loop sends one id again and again (every result a
duplicate). Needs httpx and websockets (tests/acceptance/requirements.txt).
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import time
import uuid

import httpx

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def subscribe_all(ws_url: str, topics: list[str], ready, stop) -> None:
    import websockets

    async def run() -> None:
        async def one(topic: str) -> None:
            async with websockets.connect(ws_url, max_queue=None) as ws:
                await ws.send(json.dumps({"type": "subscribe", "topic": topic}))
                await ws.recv()
                ready.release()
                async for _ in ws:
                    pass

        tasks = [asyncio.create_task(one(topic)) for topic in topics]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()

    asyncio.run(run())


def timed(client: httpx.Client, pid: int, bodies) -> tuple[list[float], float]:
    latencies = []
    cpu_before = cpu_seconds(pid)
    for body in bodies:
        started = time.perf_counter()
        reply = client.post("/broadcast", json=body)
        latencies.append(time.perf_counter() - started)
        assert reply.status_code == 200, reply.text
    return latencies, cpu_seconds(pid) - cpu_before


def report(label: str, latencies: list[float], cpu: float) -> None:
    ms = sorted(1000 * latency for latency in latencies)
    print(
        f"{label}: {len(ms)} broadcasts, latency median {statistics.median(ms):.2f} ms, "
        f"p90 {ms[int(0.9 * len(ms))]:.2f} ms, server CPU {1000 * cpu / len(ms):.2f} ms per broadcast"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("pid", type=int)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--subscribers", action="store_true")
    args = parser.parse_args()
    topics = [f"t{n}" for n in range(args.topics)]
    client = httpx.Client(base_url=args.url, timeout=30)
    for topic in topics:
        client.post("/topics", json={"name": topic})
    stop, subscribers = multiprocessing.Event(), None
    if args.subscribers:
        ready = multiprocessing.Semaphore(0)
        ws_url = args.url.replace("http://", "ws://") + "/ws"
        subscribers = multiprocessing.Process(target=subscribe_all, args=(ws_url, topics, ready, stop))
        subscribers.start()
        for _ in topics:
            ready.acquire()
    fresh = ({"topics": topics, "message": {"id": str(uuid.uuid4()), "payload": {"n": n}}} for n in range(args.runs + 10))
    timed(client, args.pid, [next(fresh) for _ in range(10)])  # warm-up
    report("fresh ids", *timed(client, args.pid, list(fresh)))
    again = {"topics": topics, "message": {"id": str(uuid.uuid4()), "payload": "again"}}
    report("one id again (duplicates)", *timed(client, args.pid, [again] * args.runs))
    stop.set()
    if subscribers:
        subscribers.join(timeout=10)
        subscribers.kill()


if __name__ == "__main__":
    main()
