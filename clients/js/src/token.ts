// When to refresh an access token: read from its `exp` claim.

/** Refresh at most this long before expiry, for long-lived tokens. */
const LEAD_MS = 30_000;

/** The token's `exp` in milliseconds, or undefined when it has none (or is no JWT). */
export function expiresAt(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined) {
    return undefined;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * When to replace the token (milliseconds since the epoch): 30 s before its
 * expiry or after three quarters of its remaining life from `now`,
 * whichever is later (so a short-lived token is not replaced at once).
 * Undefined: never.
 */
export function refreshAt(token: string, now: number): number | undefined {
  const expiry = expiresAt(token);
  if (expiry === undefined) {
    return undefined;
  }
  const remaining = expiry - now;
  return now + Math.max(remaining - LEAD_MS, remaining * 0.75);
}
