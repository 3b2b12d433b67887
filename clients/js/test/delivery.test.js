// Subscribe, publish and unsubscribe over one steady connection.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { newClient, newTopic, record, recordStates } from "./support/clients.js";
import { Server, until } from "./support/server.js";

const server = new Server();
before(() => server.start());
after(() => server.stop());

test("states start with connecting, seen by a listener added right after construction", async () => {
  const client = newClient(server.ws);
  const states = recordStates(client);
  await until("connected", () => states.includes("connected"));
  client.close();
  client.close();
  assert.deepEqual(states, ["connecting", "connected", "closed"]);
});

test("events arrive in order with their id, payload, seq and the server's ts", async () => {
  const topic = newTopic("orders");
  await server.createTopic(topic);
  const client = newClient(server.ws);
  const seen = record(client, topic);
  await until("the subscribe ack", () => seen.recoveries.length === 1);
  assert.deepEqual(seen.recoveries, [{ recovered: true, epoch: seen.recoveries[0].epoch, seq: 0 }]);
  assert.ok(seen.recoveries[0].epoch.length > 0);

  const payloads = [{ n: 1, nested: { deep: [1, 2.5, "ü"] } }, "text", 3, null, [true]];
  const ids = [];
  for (const payload of payloads) {
    const id = crypto.randomUUID();
    ids.push(id);
    await server.publish(topic, payload, id);
  }
  await until("five events", () => seen.events.length === payloads.length);
  assert.deepEqual(
    seen.events.map(({ topic: t, id, payload, seq }) => ({ t, id, payload, seq })),
    payloads.map((payload, index) => ({ t: topic, id: ids[index], payload, seq: index + 1 })),
  );
  for (const event of seen.events) {
    assert.match(event.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
  client.close();
});

test("lastN replays the most recent events first, then live ones, without a gap", async () => {
  const topic = newTopic("replay");
  await server.createTopic(topic);
  for (let n = 1; n <= 8; n += 1) {
    await server.publish(topic, { n });
  }
  const client = newClient(server.ws);
  const seen = record(client, topic, { lastN: 3 });
  await until("the replay", () => seen.events.length === 3);
  assert.deepEqual(seen.recoveries.map((r) => r.seq), [8]);
  await server.publish(topic, { n: 9 });
  await until("the live event", () => seen.events.length === 4);
  assert.deepEqual(seen.events.map((event) => event.payload.n), [6, 7, 8, 9]);
  assert.deepEqual(seen.events.map((event) => event.seq), [6, 7, 8, 9]);
  client.close();
});

test("publish resolves with the ack, and every subscriber gets the event", async () => {
  const topic = newTopic("chat");
  await server.createTopic(topic);
  const publisher = newClient(server.ws);
  const subscriber = newClient(server.ws);
  const seen = record(subscriber, topic);
  await until("the subscribe ack", () => seen.recoveries.length === 1);
  const id = crypto.randomUUID();
  assert.deepEqual(await publisher.publish(topic, { text: "hi" }, { id }), { seq: 1 });
  await until("the event", () => seen.events.length === 1);
  assert.equal(seen.events[0].id, id);
  assert.deepEqual(seen.events[0].payload, { text: "hi" });
  // Without an id, the client makes one (a UUID, which the server requires).
  await publisher.publish(topic, "second");
  await until("the second event", () => seen.events.length === 2);
  assert.match(seen.events[1].id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  publisher.close();
  subscriber.close();
});

test("a refused publish rejects with the server's code; the connection stays", async () => {
  const client = newClient(server.ws);
  const states = recordStates(client);
  await assert.rejects(client.publish(newTopic("nowhere"), 1), { code: "TOPIC_NOT_FOUND" });
  await assert.rejects(client.publish(newTopic("nowhere"), 1, { id: "not-a-uuid" }), { code: "BAD_REQUEST" });
  assert.deepEqual(states, ["connecting", "connected"]);
  client.close();
  await assert.rejects(client.publish("any", 1), { code: "CLOSED" });
});

test("a subscription to a missing topic is refused through onError and ends", async () => {
  const topic = newTopic("missing");
  const client = newClient(server.ws);
  const seen = record(client, topic);
  await until("the refusal", () => seen.errors.length === 1);
  assert.equal(seen.errors[0].code, "TOPIC_NOT_FOUND");
  // It ended: the topic may be subscribed to again.
  await server.createTopic(topic);
  const again = record(client, topic);
  await until("the ack", () => again.recoveries.length === 1);
  assert.throws(() => client.subscribe(topic), { code: "ALREADY_SUBSCRIBED" });
  client.close();
});

test("unsubscribe stops the events; a new subscription gets only its own", async () => {
  const topic = newTopic("tail");
  await server.createTopic(topic);
  const client = newClient(server.ws);
  const first = record(client, topic);
  await until("the ack", () => first.recoveries.length === 1);
  await server.publish(topic, 1);
  await until("event 1", () => first.events.length === 1);

  first.subscription.unsubscribe();
  // A ping's pong would do; a publish's ack over the same connection shows
  // the unsubscribe was handled before it.
  await client.publish(topic, 2);
  const second = record(client, topic);
  await until("the second ack", () => second.recoveries.length === 1);
  await server.publish(topic, 3);
  await until("event 3", () => second.events.length === 1);
  assert.deepEqual(first.events.map((event) => event.payload), [1]);
  assert.deepEqual(second.events.map((event) => event.payload), [3]);
  const subscribers = await server.request("GET", `/topics/${topic}/subscribers`);
  assert.equal(subscribers.body.subscribers.length, 1);
  client.close();
});

test("a deleted topic is reported, and its subscription resumes when the topic exists again", async () => {
  const topic = newTopic("recreated");
  await server.createTopic(topic);
  const client = newClient(server.ws);
  const seen = record(client, topic);
  await until("the ack", () => seen.recoveries.length === 1);
  await server.publish(topic, "old");
  await until("the old event", () => seen.events.length === 1);
  await server.request("DELETE", `/topics/${topic}`);
  await until("the deletion", () => seen.errors.some((error) => error.code === "TOPIC_DELETED"));
  await server.createTopic(topic);
  await until("the resubscribe", () => seen.recoveries.length === 2);
  const [, again] = seen.recoveries;
  assert.equal(again.recovered, false, "another history");
  assert.notEqual(again.epoch, seen.recoveries[0].epoch);
  await server.publish(topic, "new");
  await until("the new event", () => seen.events.length === 2);
  assert.deepEqual(seen.events.map((event) => [event.payload, event.seq]), [["old", 1], ["new", 1]]);
  client.close();
});
