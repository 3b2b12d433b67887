// Connections lost under the client: cut by a proxy in front of the
// server, or by a server restart. The client reconnects by itself and
// resumes each subscription from the last seq it delivered. Each test runs
// against a server with its default runtime and with one worker thread
// (TOKIO_WORKER_THREADS=1), so none depends on the server's tasks running
// in parallel.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { newClient, newTopic, record, recordStates, upTo } from "./support/clients.js";
import { Proxy } from "./support/proxy.js";
import { Server, sleep, until } from "./support/server.js";

for (const workers of ["default", "1"]) {
  describe(`server worker threads: ${workers}`, () => {
    const server = new Server(workers === "default" ? {} : { TOKIO_WORKER_THREADS: workers });
    let proxy;
    before(async () => {
      await server.start();
      proxy = await new Proxy(server.port).start();
    });
    after(async () => {
      await proxy.close();
      await server.stop();
    });
    reconnectTests(server, () => proxy);
  });
}

function reconnectTests(server, currentProxy) {
  test("cut three times while REST publishing goes on: every event once, in order, recovered each time", async () => {
    const proxy = currentProxy();
    const topic = newTopic("cut");
    await server.createTopic(topic);
    const client = newClient(proxy.ws);
    const states = recordStates(client);
    const seen = record(client, topic);
    await until("the subscribe ack", () => seen.recoveries.length === 1);

    let publishing = true;
    let published = 0;
    const publisher = (async () => {
      while (publishing) {
        await server.publish(topic, { n: published + 1 });
        published += 1;
        await sleep(2);
      }
    })();
    for (let cut = 1; cut <= 3; cut += 1) {
      const delivered = seen.events.length;
      await until(`events after resubscribe ${cut}`, () => seen.events.length >= delivered + 20);
      proxy.cut();
      await until(`resubscribe ${cut}`, () => seen.recoveries.length === cut + 1);
    }
    const delivered = seen.events.length;
    await until("events after the last resubscribe", () => seen.events.length >= delivered + 20);
    publishing = false;
    await publisher;
    await until(`all ${published} events`, () => seen.events.length >= published);
    await sleep(100); // time for a duplicate to show, were there one

    assert.deepEqual(seen.events.map((event) => event.seq), upTo(published));
    assert.deepEqual(seen.events.map((event) => event.payload.n), upTo(published));
    const [first, ...resumed] = seen.recoveries;
    assert.equal(resumed.length, 3);
    for (const recovery of resumed) {
      assert.equal(recovery.recovered, true);
      assert.equal(recovery.epoch, first.epoch);
    }
    assert.equal(states.filter((state) => state === "disconnected").length, 3);
    client.close();
  });

  test("after a restart that lost the history: recovered false, and the cursor restarts in the new epoch", async () => {
    const proxy = currentProxy();
    const topic = newTopic("restart");
    await server.createTopic(topic);
    const client = newClient(proxy.ws);
    const seen = record(client, topic);
    await until("the subscribe ack", () => seen.recoveries.length === 1);
    for (let n = 1; n <= 5; n += 1) {
      await server.publish(topic, `old ${n}`);
    }
    await until("the old events", () => seen.events.length === 5);

    // The client stays away until the new server's topic has two events:
    // the resubscribe ack then says seq 2, under another epoch.
    proxy.refusing = true;
    await server.stop();
    await server.start(server.port);
    await server.createTopic(topic);
    await server.publish(topic, "lost 1");
    await server.publish(topic, "lost 2");
    proxy.refusing = false;
    await until("the resubscribe", () => seen.recoveries.length === 2);
    const recovery = seen.recoveries[1];
    assert.equal(recovery.recovered, false);
    assert.equal(recovery.seq, 2);
    assert.notEqual(recovery.epoch, seen.recoveries[0].epoch);

    // seq 3 to 5 again, in the new epoch: a cursor left at the old 5 would drop them.
    for (let n = 3; n <= 5; n += 1) {
      await server.publish(topic, `new ${n}`);
    }
    await until("the new events", () => seen.events.length === 8);
    assert.deepEqual(
      seen.events.map((event) => `${event.payload}#${event.seq}`),
      ["old 1#1", "old 2#2", "old 3#3", "old 4#4", "old 5#5", "new 3#3", "new 4#4", "new 5#5"],
    );
    assert.deepEqual(seen.errors, []);
    client.close();
  });

  test("a publish whose ack is lost resolves once, and the topic holds its event once", async () => {
    const proxy = currentProxy();
    const topic = newTopic("lost-ack");
    await server.createTopic(topic);
    const watcher = newClient(server.ws);
    const watched = record(watcher, topic);
    const client = newClient(proxy.ws);
    const states = recordStates(client);
    const seen = record(client, topic);
    await until("both subscribe acks", () => watched.recoveries.length === 1 && seen.recoveries.length === 1);

    // The server gets the publish and answers; the answer is dropped with the connection.
    const id = crypto.randomUUID();
    const lost = proxy.cutAfterNextRequest();
    const ack = client.publish(topic, { once: true }, { id });
    await lost;
    assert.deepEqual(await ack, { seq: 1, duplicate: true });
    assert.equal(states.filter((state) => state === "disconnected").length, 1);

    await until("the event at both subscribers", () => watched.events.length === 1 && seen.events.length === 1);
    await client.publish(topic, "after");
    await until("the next event", () => watched.events.length === 2 && seen.events.length === 2);
    for (const events of [watched.events, seen.events]) {
      assert.deepEqual(events.map((event) => [event.id === id, event.seq]), [[true, 1], [false, 2]]);
    }
    const history = await server.history(topic);
    assert.deepEqual(history.filter((message) => message.id === id).length, 1);
    watcher.close();
    client.close();
  });

  test("a publish made while disconnected waits for the connection, up to publishTimeout", async () => {
    const proxy = currentProxy();
    const topic = newTopic("offline");
    await server.createTopic(topic);
    proxy.refusing = true;
    const hasty = newClient(proxy.ws, { publishTimeout: 300 });
    await assert.rejects(hasty.publish(topic, "never sent"), { code: "TIMEOUT" });
    hasty.close();
    const client = newClient(proxy.ws);
    const states = recordStates(client);
    const waiting = client.publish(topic, "sent once connected");
    await until("a refused attempt", () => states.includes("disconnected"));
    proxy.refusing = false;
    assert.deepEqual(await waiting, { seq: 1 });
    assert.deepEqual((await server.history(topic)).map((message) => message.payload), ["sent once connected"]);
    client.close();
  });
}
