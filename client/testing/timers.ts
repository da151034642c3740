/** Timers for tests that must know whether something is still scheduled. */
import type { TimerId, Timers } from "../session.ts";

/** The global timers, keeping count of the timeouts not yet fired or cleared. */
export function countedTimers(): Timers & { pending: Set<TimerId> } {
  const pending = new Set<TimerId>();
  return {
    pending,
    setTimeout(fn, ms) {
      const id = setTimeout(() => {
        pending.delete(id);
        fn();
      }, ms);
      pending.add(id);
      return id;
    },
    clearTimeout(id) {
      pending.delete(id);
      clearTimeout(id);
    },
    setInterval: (fn, ms) => setInterval(fn, ms),
    clearInterval: (id) => clearInterval(id),
  };
}
