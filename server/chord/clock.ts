/**
 * Time as the ring sees it. The core reads the time through a {@link Clock} that is passed in, and
 * whoever drives ring nodes on a schedule (the server's `RingService`) sets its timers through
 * {@link Timers}, so both run on virtual time in simulation (`SimClock` in `testing.ts`). The core
 * itself never sets a timer.
 */

/** A source of the current time in milliseconds. */
export interface Clock {
  /** Current time in milliseconds (epoch-based for real clocks, arbitrary origin for virtual). */
  now(): number;
}

/** Identifies a timer set with {@link Timers.setTimer}. */
export type TimerId = number;

/** One-shot timers on a clock's time. */
export interface Timers {
  /** Calls `callback` once, `delayMs` milliseconds from now (a negative delay counts as 0). */
  setTimer(callback: () => void, delayMs: number): TimerId;
  /** Cancels a timer that has not fired yet; does nothing otherwise. */
  clearTimer(id: TimerId): void;
}

/** The real clock and timers, for servers. */
export const systemClock: Clock & Timers = {
  now: () => Date.now(),
  // Deno's global setTimeout returns a number; Node's typings (in scope here) call it Timeout.
  setTimer: (callback, delayMs) => Number(setTimeout(callback, delayMs)),
  clearTimer: (id) => clearTimeout(id),
};
