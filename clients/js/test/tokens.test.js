// Short-lived access tokens: the client replaces each before it expires,
// and reconnects with a fresh one when the server closed it for expiry.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { refreshAt } from "../dist/token.js";
import { newClient, newTopic, record, recordStates, upTo } from "./support/clients.js";
import { accessToken, JWT_SECRET } from "./support/jwt.js";
import { Server, sleep, until } from "./support/server.js";

const server = new Server({ JWT_SECRET });
before(() => server.start());
after(() => server.stop());

test("a token is replaced 30 s before it expires, or after three quarters of a short life", () => {
  const now = 1_800_000_000_000;
  const expiring = (seconds, claims = {}) => accessToken(0, { exp: now / 1000 + seconds, ...claims });
  assert.equal(refreshAt(expiring(15 * 60), now), now + (15 * 60 - 30) * 1000);
  assert.equal(refreshAt(expiring(120), now), now + 90_000);
  assert.equal(refreshAt(expiring(60), now), now + 45_000);
  assert.equal(refreshAt(expiring(3), now), now + 2250);
  assert.ok(refreshAt(expiring(-5), now) <= now, "expired: at once");
  assert.equal(refreshAt(expiring(60, { exp: undefined }), now), undefined, "no exp: never");
  assert.equal(refreshAt("an-opaque-token", now), undefined);
});

/**
 * A client whose only credential is `getToken`, which returns
 * `token(call)` for its call-th call; subscribed to a new topic.
 */
async function subscribedWithTokens(name, token) {
  const topic = newTopic(name);
  await server.createTopic(topic);
  const getToken = { calls: 0 };
  const client = newClient(server.ws, {
    apiKey: undefined,
    getToken: async () => {
      getToken.calls += 1;
      return token(getToken.calls);
    },
  });
  const states = recordStates(client);
  const seen = record(client, topic);
  await until("the subscribe ack", () => seen.recoveries.length === 1);
  return { topic, client, states, seen, getToken };
}

test("a token given as an option is sent; none at all is refused", async () => {
  const topic = newTopic("static");
  await server.createTopic(topic);
  const client = newClient(server.ws, { apiKey: undefined, token: accessToken(60) });
  const seen = record(client, topic);
  await until("the subscribe ack", () => seen.recoveries.length === 1);
  client.close();

  const refused = newClient(server.ws, { apiKey: undefined });
  const states = recordStates(refused);
  await until("two failed attempts", () => states.filter((state) => state === "disconnected").length >= 2);
  assert.ok(!states.includes("connected"));
  refused.close();
});

test("getToken replaces each 3-second token before it expires: the connection lives through four of them", async () => {
  const { topic, client, states, seen, getToken } = await subscribedWithTokens("refresh", () => accessToken(3));
  for (let n = 1; n <= 45; n += 1) {
    await server.publish(topic, n);
    await sleep(200);
  }
  await until("every event", () => seen.events.length === 45);
  assert.deepEqual(seen.events.map((event) => event.payload), upTo(45));
  assert.ok(getToken.calls >= 4, `getToken called ${getToken.calls} times in 9 s of 3 s tokens`);
  assert.deepEqual(states, ["connecting", "connected"], "never disconnected");
  assert.equal(seen.recoveries.length, 1);
  client.close();
});

test("closed for an expired token (the refresh came too late), the client reconnects with a fresh one and resumes", async () => {
  const { topic, client, states, seen, getToken } = await subscribedWithTokens("expired", async (call) => {
    if (call === 2) {
      await sleep(3500); // past the first token's expiry
    }
    return accessToken(2);
  });
  await server.publish(topic, 1);
  await until("the disconnect for expiry", () => states.includes("disconnected"), 10_000);
  await server.publish(topic, 2);
  await until("the resubscribe", () => seen.recoveries.length === 2);
  await server.publish(topic, 3);
  await until("every event", () => seen.events.length === 3);
  assert.deepEqual(seen.events.map((event) => event.payload), [1, 2, 3]);
  assert.equal(seen.recoveries[1].recovered, true);
  assert.ok(getToken.calls >= 3, `getToken called ${getToken.calls} times`);
  assert.equal(states.filter((state) => state === "disconnected").length, 1);
  client.close();
});
