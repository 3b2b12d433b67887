"""Acceptance tests of the operations endpoints (issue 13; CONTRACT.md
"Operations") against the release binary, with the tools operators use:
`promtool check metrics` on a scrape taken under traffic,
openapi-spec-validator on the served OpenAPI document, and schemathesis
fuzzing every documented endpoint of a running server with every check.
Helpers and fixtures come from test_acceptance.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

import test_acceptance
from test_acceptance import REPO_ROOT, connect, create_topic, new_topic, publish, recv_json, subscribe

make_server = test_acceptance.make_server  # the fixture, shared

KEY = "ops-key"
AUTH = {"X-API-Key": KEY}
# Enough to exercise every endpoint and the stateful phase; about 20 s.
SCHEMATHESIS_MAX_EXAMPLES = "60"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package prometheus; .ci/run installs it)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return promtool


async def _traffic_and_scrape(srv, topics: list[str], events: int) -> str:
    """Publishes `events` per topic to one subscriber each while scraping
    /metrics halfway through; returns the scrape."""
    subscribers = []
    for topic in topics:
        ws = await connect(srv.ws, AUTH)
        await subscribe(ws, topic)
        subscribers.append(ws)
    publisher = await connect(srv.ws, AUTH)
    scrape = None
    async with httpx.AsyncClient(headers=AUTH, timeout=10) as http:
        for n in range(events):
            for topic in topics:
                await publish(publisher, topic, {"n": n})
            if n == events // 2:
                response = await http.get(srv.http + "/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                scrape = response.text
    for ws in subscribers:
        for _ in range(events):
            assert (await recv_json(ws))["type"] == "event"
        await ws.close()
    await publisher.close()
    return scrape


def test_promtool_accepts_a_scrape_taken_under_traffic(make_server):
    promtool = _promtool()
    srv = make_server(API_KEY=KEY, METRICS_PER_TOPIC="true")
    topics = [new_topic("ops") for _ in range(3)]
    for topic in topics:
        create_topic(srv, topic, AUTH)
    scrape = asyncio.run(_traffic_and_scrape(srv, topics, 200))
    samples = dict(
        line.rsplit(" ", 1) for line in scrape.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["ringcast_events_published_total"]) > 0, scrape
    assert float(samples["ringcast_connections"]) == len(topics) + 1, scrape
    for topic in topics:
        assert f'ringcast_topic_subscribers{{topic="{topic}"}}' in samples, scrape
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, f"promtool:\n{checked.stdout}{checked.stderr}\nscrape:\n{scrape}"


def test_the_served_openapi_document_is_valid_and_the_one_in_the_repo(make_server):
    srv = make_server(API_KEY=KEY)
    served = httpx.get(srv.http + "/openapi.json", headers=AUTH).json()
    validate(served)
    assert served == json.loads((REPO_ROOT / "api" / "openapi.json").read_text())
    asyncapi = httpx.get(srv.http + "/asyncapi.json", headers={"Authorization": f"Bearer {KEY}"})
    assert asyncapi.status_code == 200
    assert asyncapi.json() == json.loads((REPO_ROOT / "api" / "asyncapi.json").read_text())


def _schemathesis(srv, tmp_path: Path, *selection: str) -> tuple[int, int]:
    """Runs schemathesis with every check against `srv` on the operations
    `selection` picks; fails on any failure; returns (selected, total)."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    if not schemathesis.exists():
        pytest.fail(f"schemathesis is not installed beside {sys.executable} (requirements.txt)")
    run = subprocess.run(
        [
            str(schemathesis),
            "run",
            srv.http + "/openapi.json",
            "--url",
            srv.http,
            "--header",
            f"X-API-Key: {KEY}",
            "--checks",
            "all",
            "--max-examples",
            SCHEMATHESIS_MAX_EXAMPLES,
            "--report-dir",
            str(tmp_path),
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, f"schemathesis:\n{run.stdout}\n{run.stderr}\nserver:\n{srv.output()}"
    counts = re.search(r"(\d+) selected / (\d+) total|Selected: (\d+)/(\d+)", run.stdout)
    assert counts, run.stdout
    selected, total = (int(count) for count in counts.groups() if count is not None)
    return selected, total


def test_schemathesis_finds_no_failure_on_any_endpoint(make_server, tmp_path):
    # Every operation but the event stream, whose 200 never ends: a
    # generated request naming a topic that an earlier one created would
    # be a stream that schemathesis waits on for ever.
    selected, total = _schemathesis(make_server(API_KEY=KEY), tmp_path, "--exclude-path", "/sse")
    # The presence routes included (12 operations as of issue 24).
    assert selected == total - 1 and total >= 12, (selected, total)


def test_schemathesis_finds_no_failure_on_the_event_stream(make_server, tmp_path):
    # On a server without topics, where every request it generates is
    # refused (or 404) before a stream could start.
    selected, _ = _schemathesis(make_server(API_KEY=KEY), tmp_path, "--include-path", "/sse")
    assert selected == 1
