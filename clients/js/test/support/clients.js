// Clients under test, with what they report recorded.

import WebSocket from "ws";
import { Client } from "../../dist/index.js";
import { API_KEY } from "./server.js";

/** A client with `ws` as its WebSocket, the tests' API key and short reconnect delays, unless `options` say otherwise. */
export function newClient(url, options = {}) {
  return new Client(url, { WebSocket, apiKey: API_KEY, minReconnectDelay: 50, maxReconnectDelay: 500, ...options });
}

/** Records the client's states. */
export function recordStates(client) {
  const states = [];
  client.on("state", (state) => states.push(state));
  return states;
}

/** Subscribes, recording events, recoveries and errors. */
export function record(client, topic, options = {}) {
  const seen = { events: [], recoveries: [], errors: [] };
  seen.subscription = client.subscribe(topic, {
    ...options,
    onEvent: (event) => seen.events.push(event),
    onRecovery: (recovery) => seen.recoveries.push(recovery),
    onError: (error) => seen.errors.push(error),
  });
  return seen;
}

let topics = 0;

/** A topic name of its own for each test. */
export function newTopic(name) {
  topics += 1;
  return `${name}-${process.pid}-${topics}`;
}

/** 1, 2, …, n */
export const upTo = (n) => Array.from({ length: n }, (_, index) => index + 1);
