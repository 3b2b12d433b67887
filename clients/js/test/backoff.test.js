// Reconnect delays: within bounds, growing, randomised; 200 clients cut at
// once come back spread out, not in one storm.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { reconnectDelay } from "../dist/backoff.js";
import { newClient, newTopic, record, recordStates } from "./support/clients.js";
import { Proxy } from "./support/proxy.js";
import { freePort, Server, until } from "./support/server.js";

test("every delay is within [min/2, max]; it starts near min, doubles per attempt, and is randomised", () => {
  const [min, max] = [500, 20_000];
  for (const random of [0, 0.25, 0.5, 0.75, 1 - Number.EPSILON]) {
    for (let attempt = 0; attempt <= 60; attempt += 1) {
      const delay = reconnectDelay(attempt, min, max, () => random);
      assert.ok(delay >= min / 2 && delay <= max, `attempt ${attempt}, random ${random}: ${delay}`);
    }
  }
  const middle = (attempt) => reconnectDelay(attempt, min, max, () => 0.5);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 30].map(middle), [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
  assert.equal(reconnectDelay(0, min, max, () => 0), 250);
  assert.ok(reconnectDelay(0, min, max, () => 1 - Number.EPSILON) < 750);

  const draws = Array.from({ length: 1000 }, () => reconnectDelay(3, min, max));
  assert.ok(new Set(draws).size > 990, "random");
  assert.ok(Math.min(...draws) < 2400 && Math.max(...draws) > 5600, "spread over [2000, 6000)");
});

test("against a port nobody listens on, the waits between attempts grow", async (t) => {
  const client = newClient(`ws://127.0.0.1:${await freePort()}/ws`, { minReconnectDelay: 40, maxReconnectDelay: 320 });
  const marks = [];
  client.on("state", (state) => marks.push([state, performance.now()]));
  await until("eight failed attempts", () => marks.filter(([state]) => state === "connecting").length > 8);
  client.close();
  const waits = [];
  for (let index = 1; index < marks.length; index += 1) {
    if (marks[index - 1][0] === "disconnected" && marks[index][0] === "connecting") {
      waits.push(marks[index][1] - marks[index - 1][1]);
    }
  }
  t.diagnostic(`waits (ms): ${waits.map(Math.round).join(", ")}`);
  // A timer never fires early: each wait is at least half its attempt's base.
  waits.slice(0, 8).forEach((wait, attempt) => {
    const floor = Math.min(320, 40 * 2 ** attempt) / 2;
    assert.ok(wait >= floor - 1, `wait ${attempt}: ${wait} ms, below ${floor}`);
  });
  assert.ok(!marks.some(([state]) => state === "connected"));
});

test("200 clients cut at once come back spread over the first delay's window", async (t) => {
  const server = new Server();
  await server.start();
  const proxy = await new Proxy(server.port).start();
  try {
    const topic = newTopic("storm");
    await server.createTopic(topic);
    // Default delays: the first wait is within [250, 750) ms.
    const clients = Array.from({ length: 200 }, () => {
      const client = newClient(proxy.ws, { minReconnectDelay: 500, maxReconnectDelay: 20_000 });
      return { client, states: recordStates(client), seen: record(client, topic) };
    });
    await until("200 subscribed", () => clients.every(({ seen }) => seen.recoveries.length === 1));

    const before = proxy.accepted.length;
    const cutAt = performance.now();
    proxy.cut();
    await until("200 resubscribed", () => clients.every(({ seen }) => seen.recoveries.length === 2));
    const back = proxy.accepted.slice(before).map((at) => at - cutAt).sort((a, b) => a - b);
    assert.equal(back.length, 200, "one attempt each");
    let busiest = 0;
    for (let first = 0, last = 0; last < back.length; last += 1) {
      while (back[last] - back[first] >= 100) {
        first += 1;
      }
      busiest = Math.max(busiest, last - first + 1);
    }
    t.diagnostic(
      `reconnects after the cut: first ${back[0].toFixed(0)} ms, last ${back.at(-1).toFixed(0)} ms, ` +
        `at most ${busiest} of 200 within any 100 ms`,
    );
    assert.ok(back[0] >= 249, `no wait shorter than min/2: ${back[0]} ms`);
    assert.ok(busiest < 100, `${busiest} of 200 came back within one 100 ms window`);
    for (const { states, seen } of clients) {
      assert.deepEqual(states, ["connecting", "connected", "disconnected", "connecting", "connected"]);
      assert.equal(seen.recoveries[1].recovered, true);
    }
    for (const { client } of clients) {
      client.close();
    }
  } finally {
    await proxy.close();
    await server.stop();
  }
});
