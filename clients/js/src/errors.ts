/**
 * An error with a code: the server's (`TOPIC_NOT_FOUND`, `UNAUTHORIZED`,
 * `RATE_LIMITED`, …) or the client's own (`TIMEOUT`, `CLOSED`, and those
 * listed in the README).
 */
export class RingcastError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.name = "RingcastError";
    this.code = code;
  }
}
