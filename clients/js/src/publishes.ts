// Publishes waiting for their ack. They are sent again, with the same
// message id, on every new connection until acked: the server's dedup
// window answers a repeat of one it already has as a duplicate.

import { RingcastError } from "./errors.js";
import type { Frame } from "./socket.js";
import type { PublishAck } from "./types.js";

interface Pending {
  frame: string;
  resolve: (ack: PublishAck) => void;
  reject: (error: RingcastError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class Publishes {
  readonly #pending = new Map<string, Pending>();

  /** Waits for the reply to `requestId` up to `timeout` ms, then rejects with `TIMEOUT`. */
  add(
    requestId: string,
    frame: string,
    timeout: number,
    resolve: (ack: PublishAck) => void,
    reject: (error: RingcastError) => void,
  ): void {
    const timer = setTimeout(() => {
      this.#pending.delete(requestId);
      reject(new RingcastError("TIMEOUT", `no ack within ${timeout} ms`));
    }, timeout);
    this.#pending.set(requestId, { frame, resolve, reject, timer });
  }

  /** Settles the publish `requestId` with its ack, or its error. Returns whether there was one. */
  settle(requestId: string, reply: Frame, error: RingcastError | undefined): boolean {
    const pending = this.#pending.get(requestId);
    if (pending === undefined) {
      return false;
    }
    this.#pending.delete(requestId);
    clearTimeout(pending.timer);
    if (error !== undefined) {
      pending.reject(error);
    } else {
      pending.resolve({
        ...(typeof reply.seq === "number" ? { seq: reply.seq } : {}),
        ...(reply.duplicate !== undefined ? { duplicate: reply.duplicate } : {}),
      });
    }
    return true;
  }

  /** The frames of every publish not acked yet, oldest first. */
  frames(): string[] {
    return Array.from(this.#pending.values(), (pending) => pending.frame);
  }

  rejectAll(error: RingcastError): void {
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.#pending.clear();
  }
}
