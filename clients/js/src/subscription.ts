// One topic's subscription: the cursor (the last `seq` delivered and the
// epoch it counts in) that makes a resubscribe resume where it left off.

import { invoke } from "./callback.js";
import { RingcastError } from "./errors.js";
import type { Frame } from "./socket.js";
import type { SubscribeOptions } from "./types.js";

/** @internal What a subscription needs of its client. */
export interface SubscriptionOwner {
  remove(subscription: Subscription): void;
}

/** Codes of a topic that disappeared: it is subscribed again until it exists again. */
const TOPIC_GONE = new Set(["TOPIC_NOT_FOUND", "TOPIC_DELETED"]);

export class Subscription {
  readonly topic: string;
  readonly #options: SubscribeOptions;
  readonly #owner: SubscriptionOwner;
  /** The `seq` of the last event delivered (or, before any, where delivery starts). */
  #cursor = 0;
  /** The epoch `#cursor` counts in; undefined until the first ack. */
  #epoch: string | undefined;
  /** Acked on the current connection: its events are delivered. */
  #joined = false;

  /** @internal Made by `Client.subscribe`. */
  constructor(topic: string, options: SubscribeOptions, owner: SubscriptionOwner) {
    this.topic = topic;
    this.#options = options;
    this.#owner = owner;
  }

  /** Ends the subscription; no callback is called after this. */
  unsubscribe(): void {
    this.#owner.remove(this);
  }

  /** @internal Whether the server acked it on the current connection. */
  get joined(): boolean {
    return this.#joined;
  }

  /**
   * @internal The subscribe request: the first asks for `last_n`; every later one
   * resumes with `since_seq` and `epoch`.
   */
  request(requestId: string): object {
    this.#joined = false;
    if (this.#epoch === undefined) {
      const lastN = this.#options.lastN;
      return { type: "subscribe", topic: this.topic, request_id: requestId, ...(lastN ? { last_n: lastN } : {}) };
    }
    return { type: "subscribe", topic: this.topic, since_seq: this.#cursor, epoch: this.#epoch, request_id: requestId };
  }

  /** @internal The subscribe ack: events follow it. */
  acked(ack: Frame): void {
    const seq = ack.seq ?? 0;
    const epoch = ack.epoch ?? "";
    if (this.#epoch === undefined) {
      // The replay of up to `lastN` events comes next, all after this.
      this.#cursor = Math.max(0, seq - (this.#options.lastN ?? 0));
    } else if (epoch !== this.#epoch) {
      // Another history (the topic was recreated, or lost in a restart):
      // its events count from 1 again and none of it is replayed.
      this.#cursor = seq;
    }
    this.#epoch = epoch;
    this.#joined = true;
    invoke(this.#options.onRecovery, { recovered: ack.recovered ?? true, epoch, seq });
  }

  /** @internal An event of the topic; one at or before the cursor was delivered already. */
  deliver(frame: Frame): void {
    const seq = frame.seq;
    if (!this.#joined || frame.message === undefined || typeof seq !== "number" || seq <= this.#cursor) {
      return;
    }
    this.#cursor = seq;
    invoke(this.#options.onEvent, {
      topic: this.topic,
      id: frame.message.id,
      payload: frame.message.payload,
      seq,
      ts: frame.ts ?? "",
    });
  }

  /**
   * @internal The server refused or ended the subscription. Returns whether it is to
   * be subscribed again: only when it had joined once and its topic
   * disappeared (deleted, or lost in a server restart).
   */
  failed(error: RingcastError): boolean {
    this.#joined = false;
    invoke(this.#options.onError, error);
    return this.#epoch !== undefined && TOPIC_GONE.has(error.code);
  }

  /** @internal The connection was lost. */
  left(): void {
    this.#joined = false;
  }
}
