// HS256 access tokens, signed as an application backend would.

import { createHmac } from "node:crypto";

export const JWT_SECRET = "client-tests-secret";

const base64url = (value) => Buffer.from(value).toString("base64url");

/** A token valid for `seconds` from now, allowed to subscribe and publish everywhere. */
export function accessToken(seconds, claims = {}) {
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = base64url(
    JSON.stringify({
      sub: "client-tests",
      exp: Math.floor(Date.now() / 1000) + seconds,
      subscribe: ["*"],
      publish: ["*"],
      ...claims,
    }),
  );
  const signature = createHmac("sha256", JWT_SECRET).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}
