// ringcast-client, bundled from clients/js by esbuild; pages/vendor/ringcast-client.js is this file (npm run vendor), which CI checks.

// dist/backoff.js
function reconnectDelay(attempt, min, max, random = Math.random) {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 30));
  const jittered = base * (0.5 + random());
  return Math.min(max, Math.max(min / 2, jittered));
}

// dist/callback.js
function invoke(callback, value) {
  if (callback === void 0) {
    return;
  }
  try {
    callback(value);
  } catch (error) {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}

// dist/errors.js
var RingcastError = class extends Error {
  code;
  constructor(code, message) {
    super(message);
    this.name = "RingcastError";
    this.code = code;
  }
};

// dist/publishes.js
var Publishes = class {
  #pending = /* @__PURE__ */ new Map();
  /** Waits for the reply to `requestId` up to `timeout` ms, then rejects with `TIMEOUT`. */
  add(requestId, frame, timeout, resolve, reject) {
    const timer = setTimeout(() => {
      this.#pending.delete(requestId);
      reject(new RingcastError("TIMEOUT", `no ack within ${timeout} ms`));
    }, timeout);
    this.#pending.set(requestId, { frame, resolve, reject, timer });
  }
  /** Settles the publish `requestId` with its ack, or its error. Returns whether there was one. */
  settle(requestId, reply, error) {
    const pending = this.#pending.get(requestId);
    if (pending === void 0) {
      return false;
    }
    this.#pending.delete(requestId);
    clearTimeout(pending.timer);
    if (error !== void 0) {
      pending.reject(error);
    } else {
      pending.resolve({
        ...typeof reply.seq === "number" ? { seq: reply.seq } : {},
        ...reply.duplicate !== void 0 ? { duplicate: reply.duplicate } : {}
      });
    }
    return true;
  }
  /** The frames of every publish not acked yet, oldest first. */
  frames() {
    return Array.from(this.#pending.values(), (pending) => pending.frame);
  }
  rejectAll(error) {
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
  }
};

// dist/socket.js
var utf8 = new TextDecoder();
function decode(data) {
  const text = typeof data === "string" ? data : data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? utf8.decode(data) : void 0;
  if (text === void 0) {
    return void 0;
  }
  try {
    return JSON.parse(text);
  } catch {
    return void 0;
  }
}

// dist/subscription.js
var TOPIC_GONE = /* @__PURE__ */ new Set(["TOPIC_NOT_FOUND", "TOPIC_DELETED"]);
var Subscription = class {
  topic;
  #options;
  #owner;
  /** The `seq` of the last event delivered (or, before any, where delivery starts). */
  #cursor = 0;
  /** The epoch `#cursor` counts in; undefined until the first ack. */
  #epoch;
  /** Acked on the current connection: its events are delivered. */
  #joined = false;
  /** @internal Made by `Client.subscribe`. */
  constructor(topic, options, owner) {
    this.topic = topic;
    this.#options = options;
    this.#owner = owner;
  }
  /** Ends the subscription; no callback is called after this. */
  unsubscribe() {
    this.#owner.remove(this);
  }
  /** @internal Whether the server acked it on the current connection. */
  get joined() {
    return this.#joined;
  }
  /**
   * @internal The subscribe request: the first asks for `last_n`; every later one
   * resumes with `since_seq` and `epoch`.
   */
  request(requestId) {
    this.#joined = false;
    if (this.#epoch === void 0) {
      const lastN = this.#options.lastN;
      return { type: "subscribe", topic: this.topic, request_id: requestId, ...lastN ? { last_n: lastN } : {} };
    }
    return { type: "subscribe", topic: this.topic, since_seq: this.#cursor, epoch: this.#epoch, request_id: requestId };
  }
  /** @internal The subscribe ack: events follow it. */
  acked(ack) {
    const seq = ack.seq ?? 0;
    const epoch = ack.epoch ?? "";
    if (this.#epoch === void 0) {
      this.#cursor = Math.max(0, seq - (this.#options.lastN ?? 0));
    } else if (epoch !== this.#epoch) {
      this.#cursor = seq;
    }
    this.#epoch = epoch;
    this.#joined = true;
    invoke(this.#options.onRecovery, { recovered: ack.recovered ?? true, epoch, seq });
  }
  /** @internal An event of the topic; one at or before the cursor was delivered already. */
  deliver(frame) {
    const seq = frame.seq;
    if (!this.#joined || frame.message === void 0 || typeof seq !== "number" || seq <= this.#cursor) {
      return;
    }
    this.#cursor = seq;
    invoke(this.#options.onEvent, {
      topic: this.topic,
      id: frame.message.id,
      payload: frame.message.payload,
      seq,
      ts: frame.ts ?? ""
    });
  }
  /**
   * @internal The server refused or ended the subscription. Returns whether it is to
   * be subscribed again: only when it had joined once and its topic
   * disappeared (deleted, or lost in a server restart).
   */
  failed(error) {
    this.#joined = false;
    invoke(this.#options.onError, error);
    return this.#epoch !== void 0 && TOPIC_GONE.has(error.code);
  }
  /** @internal The connection was lost. */
  left() {
    this.#joined = false;
  }
};

// dist/token.js
var LEAD_MS = 3e4;
function expiresAt(token) {
  const payload = token.split(".")[1];
  if (payload === void 0) {
    return void 0;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
    return typeof claims.exp === "number" ? claims.exp * 1e3 : void 0;
  } catch {
    return void 0;
  }
}
function refreshAt(token, now) {
  const expiry = expiresAt(token);
  if (expiry === void 0) {
    return void 0;
  }
  const remaining = expiry - now;
  return now + Math.max(remaining - LEAD_MS, remaining * 0.75);
}

// dist/uuid.js
function uuid() {
  if (typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = bytes[6] & 15 | 64;
  bytes[8] = bytes[8] & 63 | 128;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// dist/client.js
var MAX_TIMER_MS = 2 ** 31 - 1;
var ENDED_BY_SERVER = {
  topic_deleted: "TOPIC_DELETED",
  permission_revoked: "PERMISSION_REVOKED",
  unsubscribed: "UNSUBSCRIBED"
};
var Client = class {
  #url;
  #options;
  #WebSocket;
  #minDelay;
  #maxDelay;
  #publishTimeout;
  #listeners = /* @__PURE__ */ new Set();
  #state = "connecting";
  #closed = false;
  #socket = null;
  /** Whether `#socket` is open: requests go out at once only then. */
  #open = false;
  /** Failed attempts since the last connection. */
  #attempt = 0;
  #reconnectTimer;
  #token;
  /** Set when the server may have refused the token: get a new one before connecting. */
  #tokenStale = false;
  #refreshTimer;
  /** When to replace the token in force (ms since the epoch), set when it is put in force. */
  #refreshAt;
  #authRequest;
  #subscriptions = /* @__PURE__ */ new Map();
  /** Subscribe requests in flight, by request id. */
  #subscribing = /* @__PURE__ */ new Map();
  #resubscribeTimers = /* @__PURE__ */ new Map();
  #publishes = new Publishes();
  #lastRequest = 0;
  #owner = { remove: (subscription) => this.#remove(subscription) };
  /** Starts connecting at once; `state` events follow asynchronously. */
  constructor(url, options = {}) {
    this.#url = new URL(url).toString();
    this.#options = options;
    const WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (WebSocket === void 0) {
      throw new TypeError("no global WebSocket here: pass one as options.WebSocket (e.g. the ws package's)");
    }
    this.#WebSocket = WebSocket;
    this.#minDelay = options.minReconnectDelay ?? 500;
    this.#maxDelay = Math.max(options.maxReconnectDelay ?? 2e4, this.#minDelay);
    this.#publishTimeout = options.publishTimeout ?? 1e4;
    if (options.token !== void 0) {
      this.#putInForce(options.token);
    }
    queueMicrotask(() => void this.#connect());
  }
  /** The current state. */
  get state() {
    return this.#state;
  }
  /** Adds a listener of the connection's state. */
  on(event, listener) {
    if (event !== "state") {
      throw new TypeError(`unknown event ${String(event)}`);
    }
    this.#listeners.add(listener);
    return this;
  }
  /** Removes a listener added with `on`. */
  off(event, listener) {
    if (event === "state") {
      this.#listeners.delete(listener);
    }
    return this;
  }
  /**
   * Subscribes to `topic` until `unsubscribe()` or `close()`, across
   * reconnects. One subscription per topic and client.
   */
  subscribe(topic, options = {}) {
    if (this.#closed) {
      throw new RingcastError("CLOSED", "the client is closed");
    }
    if (this.#subscriptions.has(topic)) {
      throw new RingcastError("ALREADY_SUBSCRIBED", `already subscribed to ${topic}`);
    }
    const subscription = new Subscription(topic, options, this.#owner);
    this.#subscriptions.set(topic, subscription);
    if (this.#open) {
      this.#sendSubscribe(subscription);
    }
    return subscription;
  }
  /**
   * Publishes `payload` (any JSON value) to `topic`. Resolves with the ack;
   * rejects with the server's error code, `TIMEOUT` after `publishTimeout`
   * ms, or `CLOSED`. Sent again with the same id after a reconnect until
   * acked.
   */
  async publish(topic, payload, options = {}) {
    if (this.#closed) {
      throw new RingcastError("CLOSED", "the client is closed");
    }
    const requestId = this.#nextRequestId("p");
    const frame = JSON.stringify({
      type: "publish",
      topic,
      message: { id: options.id ?? uuid(), payload: payload === void 0 ? null : payload },
      request_id: requestId
    });
    return new Promise((resolve, reject) => {
      this.#publishes.add(requestId, frame, this.#publishTimeout, resolve, reject);
      if (this.#open) {
        this.#send(frame);
      }
    });
  }
  /** Closes the connection for good: pending publishes reject with `CLOSED`. */
  close() {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#refreshTimer);
    for (const retry of this.#resubscribeTimers.values()) {
      clearTimeout(retry.timer);
    }
    this.#resubscribeTimers.clear();
    this.#subscriptions.clear();
    this.#subscribing.clear();
    const socket = this.#socket;
    this.#socket = null;
    this.#open = false;
    socket?.close(1e3);
    this.#publishes.rejectAll(new RingcastError("CLOSED", "the client was closed"));
    this.#setState("closed");
  }
  // --- the connection ---------------------------------------------------
  async #connect() {
    this.#reconnectTimer = void 0;
    if (this.#closed) {
      return;
    }
    this.#setState("connecting");
    let token;
    try {
      token = await this.#tokenForConnecting();
    } catch {
      this.#retry();
      return;
    }
    if (this.#closed) {
      return;
    }
    const url = new URL(this.#url);
    if (this.#options.apiKey !== void 0) {
      url.searchParams.set("api_key", this.#options.apiKey);
    }
    if (token !== void 0) {
      url.searchParams.set("token", token);
    }
    let socket;
    try {
      socket = new this.#WebSocket(url.toString());
    } catch {
      this.#retry();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    socket.onopen = () => this.#opened(socket);
    socket.onmessage = (message) => {
      const frame = socket === this.#socket ? decode(message.data) : void 0;
      if (frame !== void 0) {
        this.#onFrame(frame);
      }
    };
    socket.onclose = (close) => this.#lost(socket, close.code);
    socket.onerror = () => {
    };
  }
  #opened(socket) {
    if (socket !== this.#socket) {
      return;
    }
    this.#open = true;
    this.#attempt = 0;
    for (const subscription of this.#subscriptions.values()) {
      this.#sendSubscribe(subscription);
    }
    for (const frame of this.#publishes.frames()) {
      this.#send(frame);
    }
    this.#scheduleRefresh();
    this.#setState("connected");
  }
  #lost(socket, code) {
    if (socket !== this.#socket) {
      return;
    }
    const wasOpen = this.#open;
    this.#socket = null;
    this.#open = false;
    clearTimeout(this.#refreshTimer);
    this.#authRequest = void 0;
    this.#subscribing.clear();
    for (const retry of this.#resubscribeTimers.values()) {
      clearTimeout(retry.timer);
    }
    this.#resubscribeTimers.clear();
    for (const subscription of this.#subscriptions.values()) {
      subscription.left();
    }
    if (!wasOpen || code === 1008) {
      this.#tokenStale = true;
    }
    this.#retry();
  }
  /** Reports the loss and waits before the next attempt. */
  #retry() {
    if (this.#closed) {
      return;
    }
    this.#setState("disconnected");
    const delay = reconnectDelay(this.#attempt, this.#minDelay, this.#maxDelay);
    this.#attempt += 1;
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
  }
  #setState(state) {
    if (this.#state === "closed") {
      return;
    }
    this.#state = state;
    for (const listener of this.#listeners) {
      invoke(listener, state);
    }
  }
  #send(frame) {
    try {
      this.#socket?.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    } catch {
    }
  }
  #nextRequestId(kind) {
    this.#lastRequest += 1;
    return `${kind}${this.#lastRequest}`;
  }
  // --- access tokens ------------------------------------------------------
  async #tokenForConnecting() {
    const getToken = this.#options.getToken;
    const due = this.#token === void 0 || this.#tokenStale || (this.#refreshAt ?? Infinity) <= Date.now();
    if (getToken !== void 0 && due) {
      this.#putInForce(await getToken());
      this.#tokenStale = false;
    }
    return this.#token;
  }
  #putInForce(token) {
    this.#token = token;
    this.#refreshAt = refreshAt(token, Date.now());
  }
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    if (this.#options.getToken === void 0 || this.#refreshAt === void 0) {
      return;
    }
    const wait = Math.min(Math.max(this.#refreshAt - Date.now(), 0), MAX_TIMER_MS);
    this.#refreshTimer = setTimeout(() => void this.#refresh(), wait);
  }
  /** Puts a fresh token in force on the open connection with an `auth` frame. */
  async #refresh() {
    const socket = this.#socket;
    if ((this.#refreshAt ?? 0) > Date.now()) {
      this.#scheduleRefresh();
      return;
    }
    let token;
    try {
      token = await this.#options.getToken();
    } catch {
      token = void 0;
    }
    if (socket !== this.#socket || !this.#open) {
      return;
    }
    if (token === void 0) {
      this.#refreshTimer = setTimeout(() => void this.#refresh(), this.#minDelay);
      return;
    }
    const id = this.#nextRequestId("a");
    this.#authRequest = { id, token };
    this.#send({ type: "auth", token, request_id: id });
  }
  #authReply(error) {
    const token = this.#authRequest.token;
    this.#authRequest = void 0;
    if (error === void 0) {
      this.#putInForce(token);
      this.#scheduleRefresh();
    } else {
      this.#refreshTimer = setTimeout(() => void this.#refresh(), this.#minDelay);
    }
  }
  // --- frames ---------------------------------------------------------------
  #onFrame(frame) {
    switch (frame.type) {
      case "event":
        this.#subscriptions.get(frame.topic ?? "")?.deliver(frame);
        break;
      case "ack":
        this.#onReply(frame, void 0);
        break;
      case "error":
        this.#onReply(frame, new RingcastError(frame.error?.code ?? "INTERNAL", frame.error?.message ?? ""));
        break;
      case "info":
        this.#onInfo(frame);
        break;
    }
  }
  /** An ack or error: to a subscribe, an `auth` or a publish. */
  #onReply(frame, error) {
    const id = frame.request_id;
    if (id === void 0) {
      return;
    }
    const subscription = this.#subscribing.get(id);
    if (subscription !== void 0) {
      this.#subscribing.delete(id);
      if (this.#subscriptions.get(subscription.topic) !== subscription) {
        return;
      }
      if (error === void 0) {
        this.#resubscribeTimers.delete(subscription);
        subscription.acked(frame);
      } else {
        this.#subscriptionFailed(subscription, error);
      }
    } else if (this.#authRequest?.id === id) {
      this.#authReply(error);
    } else {
      this.#publishes.settle(id, frame, error);
    }
  }
  #onInfo(frame) {
    const code = ENDED_BY_SERVER[frame.msg ?? ""];
    const subscription = this.#subscriptions.get(frame.topic ?? "");
    if (code !== void 0 && subscription?.joined) {
      this.#subscriptionFailed(subscription, new RingcastError(code, `${frame.topic}: ${frame.msg}`));
    }
  }
  // --- subscriptions ----------------------------------------------------------
  #sendSubscribe(subscription) {
    const id = this.#nextRequestId("s");
    this.#subscribing.set(id, subscription);
    this.#send(subscription.request(id));
  }
  /** Ends the subscription, or subscribes again with backoff while its topic is gone. */
  #subscriptionFailed(subscription, error) {
    const again = subscription.failed(error);
    if (this.#subscriptions.get(subscription.topic) !== subscription) {
      return;
    }
    if (!again) {
      this.#subscriptions.delete(subscription.topic);
      this.#resubscribeTimers.delete(subscription);
      return;
    }
    const retry = this.#resubscribeTimers.get(subscription) ?? { attempt: 0 };
    const delay = reconnectDelay(retry.attempt, this.#minDelay, this.#maxDelay);
    retry.attempt += 1;
    retry.timer = setTimeout(() => {
      if (this.#open && this.#subscriptions.get(subscription.topic) === subscription) {
        this.#sendSubscribe(subscription);
      }
    }, delay);
    this.#resubscribeTimers.set(subscription, retry);
  }
  #remove(subscription) {
    if (this.#subscriptions.get(subscription.topic) !== subscription) {
      return;
    }
    this.#subscriptions.delete(subscription.topic);
    clearTimeout(this.#resubscribeTimers.get(subscription)?.timer);
    this.#resubscribeTimers.delete(subscription);
    if (this.#open) {
      this.#send({ type: "unsubscribe", topic: subscription.topic, request_id: this.#nextRequestId("u") });
    }
  }
};
export {
  Client,
  RingcastError
};
