export { Client } from "./client.js";
export { RingcastError } from "./errors.js";
export type { Subscription } from "./subscription.js";
export type {
  ClientOptions,
  PublishAck,
  PublishOptions,
  Recovery,
  RingcastEvent,
  State,
  SubscribeOptions,
  WebSocketConstructor,
} from "./types.js";
