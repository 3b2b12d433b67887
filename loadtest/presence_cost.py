"""Cost of presence on a node holding many subscriptions.

Usage: python3 loadtest/presence_cost.py <ringcast binary> <port>
Needs `pip install websockets`. CONNECTIONS (100) connections each subscribe
to TOPICS (500) topics: 50,000 subscriptions. Then it
  1. times sequential GET /subscriptions (SAMPLES, 30) and
     GET /topics/t0/subscribers (300) on one keep-alive connection: median,
     p90 and the answer's size;
  2. measures a concurrent fan-out: a publisher sends to topic `live` every
     2 ms (FANOUT_SECONDS, 5 s, per phase) with 10 subscribers, first alone,
     then while another process asks GET /subscriptions back to back; it
     prints the delivery latency (publish to receipt, same process clock)
     p50 / p99 / max of both phases and how many presence answers the second
     phase got.
Set CLUSTER_NATS_URL to run the node in cluster mode (the environment is
passed on), e.g. with a second node started by hand.
"""
import asyncio, http.client, json, multiprocessing, os, statistics, subprocess, sys, time, uuid

import websockets

binary, port = sys.argv[1], int(sys.argv[2])
CONNECTIONS = int(os.environ.get("CONNECTIONS", 100))
TOPICS = int(os.environ.get("TOPICS", 500))
SAMPLES = int(os.environ.get("SAMPLES", 30))
FANOUT_SECONDS = float(os.environ.get("FANOUT_SECONDS", 5))
LIVE_SUBSCRIBERS = 10
URL = f"ws://127.0.0.1:{port}/ws"


def http_call(conn, method, path, body=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def timed(conn, path, samples):
    times, size = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        status, body = http_call(conn, "GET", path)
        times.append(time.perf_counter() - started)
        assert status == 200, (status, body[:200])
        size = len(body)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9)], size


def hammer(stop):
    """Asks GET /subscriptions back to back until `stop` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    answers = 0
    while not stop.is_set():
        status, _ = http_call(conn, "GET", "/subscriptions")
        assert status == 200, status
        answers += 1
    print(f"  presence answers during the fan-out: {answers}", flush=True)


async def subscribe_all(topics, client_id):
    ws = await websockets.connect(URL, max_size=None, ping_interval=None)
    for topic in topics:
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "client_id": client_id}))
    for _ in topics:
        reply = json.loads(await ws.recv())
        assert reply["type"] == "ack", reply
    return ws


async def fan_out(seconds):
    """Delivery latencies (s) of a publish every 2 ms to LIVE_SUBSCRIBERS."""
    subscribers = [await subscribe_all(["live"], f"live{i}") for i in range(LIVE_SUBSCRIBERS)]
    publisher = await websockets.connect(URL, ping_interval=None)
    sent, latencies, count = {}, [], int(seconds / 0.002)

    async def receive(ws):
        for _ in range(count):
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "event":
                    break
            latencies.append(time.perf_counter() - sent[frame["message"]["id"]])

    async def publish():
        start = time.perf_counter()
        for n in range(count):
            await asyncio.sleep(max(0, start + n * 0.002 - time.perf_counter()))
            message_id = str(uuid.uuid4())
            sent[message_id] = time.perf_counter()
            await publisher.send(json.dumps({"type": "publish", "topic": "live",
                                             "message": {"id": message_id, "payload": n}}))
        async for _ in publisher:  # drain the acks until the subscribers are done
            pass

    publishing = asyncio.create_task(publish())
    await asyncio.gather(*(receive(ws) for ws in subscribers))
    publishing.cancel()
    for ws in subscribers + [publisher]:
        await ws.close()
    latencies.sort()
    return latencies


def describe(latencies):
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3
    return f"p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, max {latencies[-1] * 1e3:.2f} ms ({len(latencies)} deliveries)"


async def main():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for name in [f"t{i}" for i in range(TOPICS)] + ["live"]:
        status, body = http_call(conn, "POST", "/topics", {"name": name})
        assert status == 201, (status, body)
    topics = [f"t{i}" for i in range(TOPICS)]
    holders = [await subscribe_all(topics, f"client-{i}") for i in range(CONNECTIONS)]
    _, health = http_call(conn, "GET", "/health")
    print(f"{os.path.basename(binary)}: {json.loads(health)['subscribers']} subscriptions "
          f"({CONNECTIONS} connections x {TOPICS} topics)")
    for path, samples in [("/subscriptions", SAMPLES), ("/topics/t0/subscribers", 300)]:
        median, p90, size = timed(conn, path, samples)
        print(f"  GET {path}: median {median * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms, {size} bytes")
    print(f"  fan-out alone: {describe(await fan_out(FANOUT_SECONDS))}")
    stop = multiprocessing.Event()
    asking = multiprocessing.Process(target=hammer, args=(stop,))
    asking.start()
    during = await fan_out(FANOUT_SECONDS)
    stop.set()
    asking.join()
    print(f"  fan-out while GET /subscriptions runs back to back: {describe(during)}")
    for ws in holders:
        await ws.close()


proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--max-topics", str(TOPICS + 10)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
try:
    for _ in range(200):
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port)
            if http_call(probe, "GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    asyncio.run(main())
finally:
    proc.terminate()
    proc.wait()
