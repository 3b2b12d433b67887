// A TCP proxy in front of the server, which the tests cut: the client sees
// its connection dropped as it would by a network or a load balancer.

import net from "node:net";

export class Proxy {
  constructor(upstreamPort) {
    this.upstreamPort = upstreamPort;
    this.pairs = new Set();
    /** `performance.now()` of every connection accepted. */
    this.accepted = [];
    this.listener = null;
    this.port = 0;
    /** While true, connections are dropped as soon as they are accepted. */
    this.refusing = false;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start() {
    this.listener = net.createServer((client) => this.#accept(client));
    await new Promise((resolve) => this.listener.listen(0, "127.0.0.1", resolve));
    this.port = this.listener.address().port;
    return this;
  }

  #accept(client) {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted.push(performance.now());
    const upstream = net.connect(this.upstreamPort, "127.0.0.1");
    // dropReplies: set to a callback once the pair is to be cut on the server's next bytes.
    const pair = { client, upstream, dropReplies: null };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("data", (chunk) => {
      upstream.write(chunk);
      if (this.#lostAck !== null) {
        pair.dropReplies = this.#lostAck;
        this.#lostAck = null;
      }
    });
    upstream.on("data", (chunk) => {
      if (pair.dropReplies === null) {
        client.write(chunk);
      } else {
        end();
        pair.dropReplies();
      }
    });
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
  }

  /** Set by `cutAfterNextRequest` until a client sends. */
  #lostAck = null;

  /** Drops every connection now. */
  cut() {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /**
   * Forwards the next bytes a client sends, then drops that connection as
   * soon as the server answers, the answer unseen by the client (a lost
   * ack). Resolves once it is dropped.
   */
  cutAfterNextRequest() {
    return new Promise((resolve) => {
      this.#lostAck = resolve;
    });
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.listener.close(resolve));
  }
}
