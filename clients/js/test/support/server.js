// A ringcast process on a loopback port, and REST calls to it.

import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const BINARY =
  process.env.RINGCAST_BIN ?? fileURLToPath(new URL("../../../../target/release/ringcast", import.meta.url));

export const API_KEY = "client-tests-key";

/** A port nothing listens on right now. */
export async function freePort() {
  const listener = net.createServer();
  await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address();
  await new Promise((resolve) => listener.close(resolve));
  return port;
}

export class Server {
  /** `env`: the server's settings, on top of `API_KEY` for REST. */
  constructor(env = {}) {
    this.env = { API_KEY, ...env };
    this.port = 0;
    this.process = null;
    this.output = "";
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Starts on `port`, or on a free one. */
  async start(port) {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      this.port = port ?? (await freePort());
      // An empty working directory: no stray `.env` file applies.
      const cwd = mkdtempSync(path.join(os.tmpdir(), "ringcast-client-test-"));
      const child = spawn(BINARY, [], {
        cwd,
        env: { PATH: process.env.PATH, HOST: "127.0.0.1", PORT: String(this.port), RUST_LOG: "warn", ...this.env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      this.process = child;
      this.output = "";
      child.stdout.on("data", (chunk) => (this.output += chunk));
      child.stderr.on("data", (chunk) => (this.output += chunk));
      const exited = new Promise((resolve) => child.once("exit", () => resolve(false)));
      child.once("error", (error) => (this.output += String(error)));
      if (await Promise.race([this.#healthy(), exited])) {
        return this;
      }
      await this.stop();
    }
    throw new Error(`ringcast (${BINARY}) did not start: ${this.output}`);
  }

  async #healthy() {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && this.process.exitCode === null) {
      try {
        if ((await fetch(`${this.http}/health`)).ok) {
          return true;
        }
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    return false;
  }

  /** Stops the process: SIGTERM is the graceful shutdown (close 1001), SIGKILL a crash. */
  async stop(signal = "SIGTERM") {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  /** A REST call with the key; resolves with `{status, body}`. */
  async request(method, route, body) {
    const response = await fetch(this.http + route, {
      method,
      headers: { "content-type": "application/json", "x-api-key": API_KEY },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : undefined };
  }

  async createTopic(name) {
    const { status, body } = await this.request("POST", "/topics", { name });
    if (status !== 201) {
      throw new Error(`creating ${name}: ${status} ${JSON.stringify(body)}`);
    }
  }

  /** Publishes over REST; resolves with the event's seq. */
  async publish(topic, payload, id = crypto.randomUUID()) {
    const { status, body } = await this.request("POST", `/topics/${topic}/messages`, { id, payload });
    if (status !== 200) {
      throw new Error(`publishing to ${topic}: ${status} ${JSON.stringify(body)}`);
    }
    return body.seq;
  }

  /** Every retained event of `topic`, oldest first. */
  async history(topic) {
    const { status, body } = await this.request("GET", `/topics/${topic}/messages?since_seq=0&limit=1000`);
    if (status !== 200) {
      throw new Error(`history of ${topic}: ${status} ${JSON.stringify(body)}`);
    }
    return body.messages;
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `check()` is truthy (polled), with its value; rejects after `timeout` ms naming `what`. */
export async function until(what, check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(20);
  }
}
