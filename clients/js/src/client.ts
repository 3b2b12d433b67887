// The connection's life: connect, lose, wait with backoff, reconnect; on
// each new connection every subscription resumes and every unacked publish
// is sent again. Access tokens are replaced before they expire.

import { reconnectDelay } from "./backoff.js";
import { invoke } from "./callback.js";
import { RingcastError } from "./errors.js";
import { Publishes } from "./publishes.js";
import { decode, type Frame, type WebSocketLike } from "./socket.js";
import { Subscription, type SubscriptionOwner } from "./subscription.js";
import { refreshAt } from "./token.js";
import type {
  ClientOptions,
  PublishAck,
  PublishOptions,
  State,
  SubscribeOptions,
  WebSocketConstructor,
} from "./types.js";
import { uuid } from "./uuid.js";

/** The longest wait `setTimeout` takes; a longer one would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the server's `info` notices about one subscription mean to it. */
const ENDED_BY_SERVER: Record<string, string> = {
  topic_deleted: "TOPIC_DELETED",
  permission_revoked: "PERMISSION_REVOKED",
  unsubscribed: "UNSUBSCRIBED",
};

export class Client {
  readonly #url: string;
  readonly #options: ClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  readonly #publishTimeout: number;
  readonly #listeners = new Set<(state: State) => void>();
  #state: State = "connecting";
  #closed = false;

  #socket: WebSocketLike | null = null;
  /** Whether `#socket` is open: requests go out at once only then. */
  #open = false;
  /** Failed attempts since the last connection. */
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;

  #token: string | undefined;
  /** Set when the server may have refused the token: get a new one before connecting. */
  #tokenStale = false;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** When to replace the token in force (ms since the epoch), set when it is put in force. */
  #refreshAt: number | undefined;
  #authRequest: { id: string; token: string } | undefined;

  readonly #subscriptions = new Map<string, Subscription>();
  /** Subscribe requests in flight, by request id. */
  readonly #subscribing = new Map<string, Subscription>();
  readonly #resubscribeTimers = new Map<Subscription, { attempt: number; timer?: ReturnType<typeof setTimeout> }>();
  readonly #publishes = new Publishes();
  #lastRequest = 0;
  readonly #owner: SubscriptionOwner = { remove: (subscription) => this.#remove(subscription) };

  /** Starts connecting at once; `state` events follow asynchronously. */
  constructor(url: string, options: ClientOptions = {}) {
    this.#url = new URL(url).toString();
    this.#options = options;
    const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WebSocket === undefined) {
      throw new TypeError("no global WebSocket here: pass one as options.WebSocket (e.g. the ws package's)");
    }
    this.#WebSocket = WebSocket;
    this.#minDelay = options.minReconnectDelay ?? 500;
    this.#maxDelay = Math.max(options.maxReconnectDelay ?? 20_000, this.#minDelay);
    this.#publishTimeout = options.publishTimeout ?? 10_000;
    if (options.token !== undefined) {
      this.#putInForce(options.token);
    }
    queueMicrotask(() => void this.#connect());
  }

  /** The current state. */
  get state(): State {
    return this.#state;
  }

  /** Adds a listener of the connection's state. */
  on(event: "state", listener: (state: State) => void): this {
    if (event !== "state") {
      throw new TypeError(`unknown event ${String(event)}`);
    }
    this.#listeners.add(listener);
    return this;
  }

  /** Removes a listener added with `on`. */
  off(event: "state", listener: (state: State) => void): this {
    if (event === "state") {
      this.#listeners.delete(listener);
    }
    return this;
  }

  /**
   * Subscribes to `topic` until `unsubscribe()` or `close()`, across
   * reconnects. One subscription per topic and client.
   */
  subscribe(topic: string, options: SubscribeOptions = {}): Subscription {
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
  async publish(topic: string, payload: unknown, options: PublishOptions = {}): Promise<PublishAck> {
    if (this.#closed) {
      throw new RingcastError("CLOSED", "the client is closed");
    }
    const requestId = this.#nextRequestId("p");
    const frame = JSON.stringify({
      type: "publish",
      topic,
      message: { id: options.id ?? uuid(), payload: payload === undefined ? null : payload },
      request_id: requestId,
    });
    return new Promise((resolve, reject) => {
      this.#publishes.add(requestId, frame, this.#publishTimeout, resolve, reject);
      if (this.#open) {
        this.#send(frame);
      }
    });
  }

  /** Closes the connection for good: pending publishes reject with `CLOSED`. */
  close(): void {
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
    socket?.close(1000);
    this.#publishes.rejectAll(new RingcastError("CLOSED", "the client was closed"));
    this.#setState("closed");
  }

  // --- the connection ---------------------------------------------------

  async #connect(): Promise<void> {
    this.#reconnectTimer = undefined;
    if (this.#closed) {
      return;
    }
    this.#setState("connecting");
    let token: string | undefined;
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
    if (this.#options.apiKey !== undefined) {
      url.searchParams.set("api_key", this.#options.apiKey);
    }
    if (token !== undefined) {
      url.searchParams.set("token", token);
    }
    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(url.toString()) as WebSocketLike;
    } catch {
      this.#retry();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    socket.onopen = () => this.#opened(socket);
    socket.onmessage = (message) => {
      const frame = socket === this.#socket ? decode(message.data) : undefined;
      if (frame !== undefined) {
        this.#onFrame(frame);
      }
    };
    socket.onclose = (close) => this.#lost(socket, close.code);
    // A close event follows every error.
    socket.onerror = () => {};
  }

  #opened(socket: WebSocketLike): void {
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

  #lost(socket: WebSocketLike, code: number): void {
    if (socket !== this.#socket) {
      return;
    }
    const wasOpen = this.#open;
    this.#socket = null;
    this.#open = false;
    clearTimeout(this.#refreshTimer);
    this.#authRequest = undefined;
    this.#subscribing.clear();
    for (const retry of this.#resubscribeTimers.values()) {
      clearTimeout(retry.timer);
    }
    this.#resubscribeTimers.clear();
    for (const subscription of this.#subscriptions.values()) {
      subscription.left();
    }
    // A refused upgrade shows only as a failed attempt, and 1008 may be an
    // expired token: either way, a fresh token for the next attempt.
    if (!wasOpen || code === 1008) {
      this.#tokenStale = true;
    }
    this.#retry();
  }

  /** Reports the loss and waits before the next attempt. */
  #retry(): void {
    if (this.#closed) {
      return;
    }
    this.#setState("disconnected");
    const delay = reconnectDelay(this.#attempt, this.#minDelay, this.#maxDelay);
    this.#attempt += 1;
    this.#reconnectTimer = setTimeout(() => void this.#connect(), delay);
  }

  #setState(state: State): void {
    if (this.#state === "closed") {
      return;
    }
    this.#state = state;
    for (const listener of this.#listeners) {
      invoke(listener, state);
    }
  }

  #send(frame: string | object): void {
    try {
      this.#socket?.send(typeof frame === "string" ? frame : JSON.stringify(frame));
    } catch {
      // The socket is closing: its close event reconnects and resends.
    }
  }

  #nextRequestId(kind: string): string {
    this.#lastRequest += 1;
    return `${kind}${this.#lastRequest}`;
  }

  // --- access tokens ------------------------------------------------------

  async #tokenForConnecting(): Promise<string | undefined> {
    const getToken = this.#options.getToken;
    const due = this.#token === undefined || this.#tokenStale || (this.#refreshAt ?? Infinity) <= Date.now();
    if (getToken !== undefined && due) {
      this.#putInForce(await getToken());
      this.#tokenStale = false;
    }
    return this.#token;
  }

  #putInForce(token: string): void {
    this.#token = token;
    this.#refreshAt = refreshAt(token, Date.now());
  }

  #scheduleRefresh(): void {
    clearTimeout(this.#refreshTimer);
    if (this.#options.getToken === undefined || this.#refreshAt === undefined) {
      return;
    }
    const wait = Math.min(Math.max(this.#refreshAt - Date.now(), 0), MAX_TIMER_MS);
    this.#refreshTimer = setTimeout(() => void this.#refresh(), wait);
  }

  /** Puts a fresh token in force on the open connection with an `auth` frame. */
  async #refresh(): Promise<void> {
    const socket = this.#socket;
    if ((this.#refreshAt ?? 0) > Date.now()) {
      this.#scheduleRefresh(); // woken early by the timer's cap
      return;
    }
    let token: string | undefined;
    try {
      token = await this.#options.getToken!();
    } catch {
      token = undefined;
    }
    if (socket !== this.#socket || !this.#open) {
      return; // lost meanwhile: the next connection gets its own
    }
    if (token === undefined) {
      this.#refreshTimer = setTimeout(() => void this.#refresh(), this.#minDelay);
      return;
    }
    const id = this.#nextRequestId("a");
    this.#authRequest = { id, token };
    this.#send({ type: "auth", token, request_id: id });
  }

  #authReply(error: RingcastError | undefined): void {
    const token = this.#authRequest!.token;
    this.#authRequest = undefined;
    if (error === undefined) {
      this.#putInForce(token);
      this.#scheduleRefresh();
    } else {
      // The old token stays in force; try another one shortly.
      this.#refreshTimer = setTimeout(() => void this.#refresh(), this.#minDelay);
    }
  }

  // --- frames ---------------------------------------------------------------

  #onFrame(frame: Frame): void {
    switch (frame.type) {
      case "event":
        this.#subscriptions.get(frame.topic ?? "")?.deliver(frame);
        break;
      case "ack":
        this.#onReply(frame, undefined);
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
  #onReply(frame: Frame, error: RingcastError | undefined): void {
    const id = frame.request_id;
    if (id === undefined) {
      return; // e.g. SLOW_CONSUMER or an expired token: a close follows
    }
    const subscription = this.#subscribing.get(id);
    if (subscription !== undefined) {
      this.#subscribing.delete(id);
      if (this.#subscriptions.get(subscription.topic) !== subscription) {
        return;
      }
      if (error === undefined) {
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

  #onInfo(frame: Frame): void {
    const code = ENDED_BY_SERVER[frame.msg ?? ""];
    const subscription = this.#subscriptions.get(frame.topic ?? "");
    // Before its ack, a notice is about an earlier subscription to the topic.
    if (code !== undefined && subscription?.joined) {
      this.#subscriptionFailed(subscription, new RingcastError(code, `${frame.topic}: ${frame.msg}`));
    }
  }

  // --- subscriptions ----------------------------------------------------------

  #sendSubscribe(subscription: Subscription): void {
    const id = this.#nextRequestId("s");
    this.#subscribing.set(id, subscription);
    this.#send(subscription.request(id));
  }

  /** Ends the subscription, or subscribes again with backoff while its topic is gone. */
  #subscriptionFailed(subscription: Subscription, error: RingcastError): void {
    const again = subscription.failed(error);
    if (this.#subscriptions.get(subscription.topic) !== subscription) {
      return; // onError unsubscribed it
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

  #remove(subscription: Subscription): void {
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
}
