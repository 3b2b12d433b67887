/**
 * Calls a user's callback. What it throws is rethrown on its own turn of
 * the event loop (reported as uncaught there) instead of breaking the
 * client's bookkeeping halfway through a frame.
 */
export function invoke<T>(callback: ((value: T) => void) | undefined, value: T): void {
  if (callback === undefined) {
    return;
  }
  try {
    callback(value);
  } catch (error) {
    setTimeout(() => {
      throw error;
    }, 0);
  }
}
