"""Server-sent events (issue 24; CONTRACT.md "Server-sent events") against
the release binary, read with httpx's streaming client as a shell script or
a backend would: the subscribed event, events equal to what /ws sends, a
resume with Last-Event-ID after dropping the connection while publishing
goes on, refusals before the stream, and the end of the stream on shutdown.
The browser's own reconnect is in test_pages.py.
"""

from __future__ import annotations

import asyncio
import json
import threading

import httpx

import test_acceptance
from test_acceptance import (
    connect,
    create_topic,
    new_topic,
    recv_json,
    rest_publish,
    subscribe,
)

make_server = test_acceptance.make_server  # the fixture, shared

KEY = "sse-key"
AUTH = {"X-API-Key": KEY}


class SseReader:
    """Events of one streaming response, as (event name, id, data JSON),
    parsed as EventSource parses them; comment lines are counted apart."""

    def __init__(self, response: httpx.Response):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-store"
        self.lines = response.iter_lines()
        self.comments = 0

    def next(self) -> tuple[str | None, str | None, dict] | None:
        name, event_id, data = None, None, []
        for line in self.lines:
            if line == "":
                if data:
                    return name, event_id, json.loads("\n".join(data))
                continue
            field, _, value = line.partition(": ")
            if field == "":
                self.comments += 1
            elif field == "event":
                name = value
            elif field == "id":
                event_id = value
            else:
                assert field == "data", line
                data.append(value)
        return None

    def subscribed(self) -> dict:
        name, _, data = self.next()
        assert (name, data["type"]) == ("subscribed", "subscribed"), data
        return {topic["topic"]: topic for topic in data["topics"]}

    def event(self) -> tuple[str, dict]:
        name, event_id, data = self.next()
        assert name is None and event_id, (name, event_id, data)
        assert data["type"] == "event", data
        return event_id, data


def stream(srv, query: str, headers: dict | None = None, **kwargs):
    return httpx.stream(
        "GET", f"{srv.http}/sse?{query}", headers={**AUTH, **(headers or {})}, timeout=15, **kwargs
    )


def test_events_are_the_json_websocket_subscribers_get(make_server):
    srv = make_server(API_KEY=KEY)
    topic = new_topic("sse")
    create_topic(srv, topic, AUTH)

    async def over_ws(count: int) -> list[dict]:
        ws = await connect(srv.ws, AUTH)
        await subscribe(ws, topic)
        ready.set()
        frames = [await recv_json(ws) for _ in range(count)]
        await ws.close()
        return frames

    ready = threading.Event()
    frames: list[dict] = []
    ws_thread = threading.Thread(target=lambda: frames.extend(asyncio.run(over_ws(3))))
    ws_thread.start()
    assert ready.wait(10)
    with stream(srv, f"topic={topic}&client_id=shell") as response:
        reader = SseReader(response)
        assert reader.subscribed()[topic]["seq"] == 0
        presence = httpx.get(f"{srv.http}/subscriptions", headers=AUTH).json()["subscriptions"]
        assert {"topic": topic, "client_id": "shell"}.items() <= next(
            row for row in presence if row["client_id"] == "shell"
        ).items()
        for payload in ({"n": 1}, "line\nbreak", [1.5, None]):
            rest_publish(srv, topic, payload, AUTH)
        events = [reader.event()[1] for _ in range(3)]
    ws_thread.join(10)
    assert events == frames
    assert [event["seq"] for event in events] == [1, 2, 3]


def test_last_event_id_resumes_after_a_dropped_connection_with_no_gap(make_server):
    srv = make_server(API_KEY=KEY)
    topics = [new_topic("left"), new_topic("right")]
    for topic in topics:
        create_topic(srv, topic, AUTH)
    per_topic = 150

    def publish_all():
        for n in range(per_topic):
            for topic in topics:
                rest_publish(srv, topic, {"n": n}, AUTH)

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    query = "&".join(f"topic={topic}" for topic in topics) + "&last_n=1000"
    seen: dict[str, list[int]] = {topic: [] for topic in topics}
    cursor, connections = None, 0
    while sum(map(len, seen.values())) < per_topic * len(topics):
        headers = {"Last-Event-ID": cursor} if cursor else {}
        with stream(srv, query, headers) as response:
            reader = SseReader(response)
            subscribed = reader.subscribed()
            if cursor:
                assert all(subscribed[topic]["recovered"] is True for topic in topics), subscribed
            connections += 1
            for _ in range(41):  # then the connection is dropped
                if sum(map(len, seen.values())) == per_topic * len(topics):
                    break
                cursor, event = reader.event()
                seen[event["topic"]].append(event["seq"])
    publisher.join(30)
    assert connections > 3
    for topic in topics:
        assert seen[topic] == list(range(1, per_topic + 1)), topic


def test_refusals_come_before_the_stream_with_a_json_error(make_server):
    srv = make_server(API_KEY=KEY)
    topic = new_topic("sse")
    create_topic(srv, topic, AUTH)
    for query, headers, status, code in [
        (f"topic={topic}&topic=missing-topic", AUTH, 404, "TOPIC_NOT_FOUND"),
        ("last_n=1", AUTH, 400, "BAD_REQUEST"),
        (f"topic={topic}&last_n=x", AUTH, 400, "BAD_REQUEST"),
        (f"topic={topic}&last_event_id=garbage", AUTH, 400, "BAD_REQUEST"),
        ("&".join(f"topic=t{n}" for n in range(101)), AUTH, 400, "BAD_REQUEST"),
        (f"topic={topic}", {}, 401, "UNAUTHORIZED"),
    ]:
        response = httpx.get(f"{srv.http}/sse?{query}", headers=headers, timeout=10)
        assert response.status_code == status, (query, response.text)
        assert response.json()["error"]["code"] == code, (query, response.text)
    # EventSource cannot send headers: the key may come in the query.
    with httpx.stream("GET", f"{srv.http}/sse?topic={topic}&api_key={KEY}", timeout=10) as response:
        assert SseReader(response).subscribed()[topic]["seq"] == 0


def test_shutdown_ends_the_stream_after_server_shutdown(make_server):
    srv = make_server(API_KEY=KEY, HEARTBEAT_INTERVAL="200ms")
    topic = new_topic("sse")
    create_topic(srv, topic, AUTH)
    with stream(srv, f"topic={topic}") as response:
        reader = SseReader(response)
        reader.subscribed()
        rest_publish(srv, topic, "last", AUTH)
        assert reader.event()[1]["seq"] == 1
        srv.stop()
        name, _, data = reader.next()
        assert (name, data["msg"]) == ("info", "server_shutdown"), data
        assert reader.next() is None
    assert srv.proc.returncode == 0
