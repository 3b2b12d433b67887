/**
 * The wait before reconnect attempt `attempt` (0 for the first after a
 * loss): `min · 2^attempt`, capped at `max`, times a random factor in
 * [0.5, 1.5), then held within [min / 2, max]. The randomness spreads
 * clients that lost their connections at the same moment (a deploy) over
 * the whole window instead of bringing them back together.
 */
export function reconnectDelay(
  attempt: number,
  min: number,
  max: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(max, min * 2 ** Math.min(attempt, 30));
  const jittered = base * (0.5 + random());
  return Math.min(max, Math.max(min / 2, jittered));
}
