/** Scoping promises to an {@link AbortSignal}, for the work of one logged-in session. */

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as `signal` aborts, so
 * that whatever awaits a request of a disposed session stops there.
 *
 * @example
 * ```ts
 * const mail = await abortable(session.mailFetch(), signal);
 * ```
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
