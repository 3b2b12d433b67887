// The package's public shapes, apart from the classes.

/** The connection's state, reported by `client.on("state", …)`. */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** A constructor with the browser's `WebSocket` interface, such as the `ws` package's. */
export type WebSocketConstructor = new (url: string) => unknown;

export interface ClientOptions {
  /** An API key, sent as `?api_key=` (browsers cannot set upgrade headers). */
  apiKey?: string;
  /** An access token (JWT), sent as `?token=`. */
  token?: string;
  /** Returns a fresh access token; called before the token in force expires, and before connecting when it has. */
  getToken?: () => Promise<string>;
  /** Default `globalThis.WebSocket`; Node before 22 needs one, e.g. the `ws` package's. */
  WebSocket?: WebSocketConstructor;
  /** Milliseconds; the first reconnect waits about this long (at least half of it). Default 500. */
  minReconnectDelay?: number;
  /** Milliseconds; no reconnect waits longer. Default 20000. */
  maxReconnectDelay?: number;
  /** Milliseconds a publish waits for its ack, connection included, before rejecting with `TIMEOUT`. Default 10000. */
  publishTimeout?: number;
}

/** One event of a topic, as delivered to `onEvent`. */
export interface RingcastEvent {
  topic: string;
  /** The message id the publisher gave. */
  id: string;
  /** The event's JSON value. */
  payload: unknown;
  /** The topic's event number. */
  seq: number;
  /** The publish time: the server's RFC 3339 string, unchanged. */
  ts: string;
}

/** What a (re)subscribe ack said, as given to `onRecovery`. */
export interface Recovery {
  /** False when events after the last one delivered were lost: reload the state elsewhere. */
  recovered: boolean;
  /** This incarnation of the topic's history. */
  epoch: string;
  /** The topic's latest event number when the subscription joined. */
  seq: number;
}

export interface SubscribeOptions {
  /** Replay up to this many recent events first; only on the first subscribe. */
  lastN?: number;
  onEvent?: (event: RingcastEvent) => void;
  /** Called after every (re)subscribe ack. */
  onRecovery?: (recovery: Recovery) => void;
  /**
   * Called when the server refuses the subscription or ends it; `error.code`
   * says why (see the README). Only a topic that disappeared after the
   * subscription joined is subscribed again; every other error ends it.
   */
  onError?: (error: Error & { code: string }) => void;
}

/** A publish's ack. */
export interface PublishAck {
  /** The event's number in its topic. */
  seq?: number;
  /** True when the server had this message id already (it was not delivered again). */
  duplicate?: boolean;
}

export interface PublishOptions {
  /** The message id (a UUID); one is made when absent. */
  id?: string;
}
