/**
 * Time as a collaborator: components take a {@link Clock} instead of calling `Date.now` and
 * `setTimeout` themselves, so tests run them on virtual time ({@link ManualClock}) without
 * sleeping, and the server passes {@link systemClock}.
 */

/** An opaque timer handle. */
export type TimerHandle = unknown;

/** The current time and timers. */
export interface Clock {
  /** Milliseconds since the epoch (virtual clocks start wherever they like). */
  now(): number;
  /** Runs `fn` once after `ms`. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer from {@link setTimeout} (unknown handles are ignored). */
  clearTimeout(handle: TimerHandle): void;
  /** Runs `fn` every `ms`. */
  setInterval(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer from {@link setInterval}. */
  clearInterval(handle: TimerHandle): void;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as number),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as number),
};

interface ManualTimer {
  id: number;
  due: number;
  fn: () => void;
  /** Repeat period, for intervals. */
  every?: number;
}

/**
 * Virtual time for tests: nothing happens until {@link advance} moves the clock, which fires due
 * timers in order of their due time (then creation), each at its own time, letting promises
 * settle between them.
 *
 * @example
 * const clock = new ManualClock();
 * let fired = false;
 * clock.setTimeout(() => fired = true, 1000);
 * await clock.advance(999); // fired === false
 * await clock.advance(1);   // fired === true
 */
export class ManualClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers = new Map<number, ManualTimer>();

  /** Starts at `start` ms. */
  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  /** Current virtual time. */
  now(): number {
    return this.#now;
  }

  /** Schedules `fn` at now + `ms`. */
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.set(id, { id, due: this.#now + Math.max(0, ms), fn });
    return id;
  }

  /** Cancels a timeout. */
  clearTimeout(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  /** Schedules `fn` every `ms` (at least 1 ms). */
  setInterval(fn: () => void, ms: number): TimerHandle {
    const id = this.#nextId++;
    const every = Math.max(1, ms);
    this.#timers.set(id, { id, due: this.#now + every, fn, every });
    return id;
  }

  /** Cancels an interval. */
  clearInterval(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  /** How many timers are scheduled (a disposed component leaves none). */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way, each at its due
   * time, and letting pending promise callbacks run after each one.
   */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance the clock by ${ms} ms`);
    const end = this.#now + ms;
    for (;;) {
      await flushMicrotasks();
      let next: ManualTimer | undefined;
      for (const t of this.#timers.values()) {
        if (t.due <= end && (!next || t.due < next.due || (t.due === next.due && t.id < next.id))) {
          next = t;
        }
      }
      if (!next) break;
      this.#now = Math.max(this.#now, next.due);
      if (next.every !== undefined) next.due += next.every;
      else this.#timers.delete(next.id);
      next.fn();
    }
    this.#now = end;
    await flushMicrotasks();
  }
}

/** Lets every already-queued promise callback (and the ones they queue) run. */
async function flushMicrotasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((r) => setTimeout(r, 0));
}
