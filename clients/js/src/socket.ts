// The part of the browser's WebSocket interface the client uses, which the
// `ws` package's WebSocket has too.

export interface WebSocketLike {
  binaryType: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A server frame as received. */
export interface Frame {
  type?: string;
  request_id?: string;
  topic?: string;
  msg?: string;
  seq?: number;
  epoch?: string;
  recovered?: boolean;
  duplicate?: boolean;
  ts?: string;
  message?: { id: string; payload: unknown };
  error?: { code: string; message: string };
}

const utf8 = new TextDecoder();

/** The frame in a message's data (text, or JSON in a binary frame), or undefined when it is not JSON. */
export function decode(data: unknown): Frame | undefined {
  const text =
    typeof data === "string"
      ? data
      : data instanceof ArrayBuffer || ArrayBuffer.isView(data)
        ? utf8.decode(data as ArrayBuffer)
        : undefined;
  if (text === undefined) {
    return undefined;
  }
  try {
    return JSON.parse(text) as Frame;
  } catch {
    return undefined;
  }
}
