/**
 * Virtual time for simulations: a clock that only moves when a test or the simulated network
 * tells it to, and fires the timers due on the way in time order. Nothing ever sleeps, so hours of
 * ring maintenance run in milliseconds and replay exactly.
 */

import { setImmediate } from "node:timers";
import type { Clock, TimerId, Timers } from "./clock.ts";

/** {@link SimClock.run} found no timer left while the operation was still pending. */
export class SimDeadlockError extends Error {
  override name = "SimDeadlockError";
  /** Creates the error. */
  constructor() {
    super("Cannot finish the simulated operation: it waits on something no event will deliver");
  }
}

interface Timer {
  readonly time: number;
  readonly seq: number;
  readonly fire: () => void;
  isCancelled: boolean;
}

/** Yields to the macrotask queue, so every pending microtask (promise continuation) has run. */
function drainMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Virtual time with timers. Between two timers firing at different times, every pending promise
 * continuation runs first, so work a fired timer starts sees the time it fired at and schedules
 * its own timers from there (a discrete-event simulation). Timers due at the same time fire in the
 * order they were set.
 *
 * @example
 * ```ts
 * const clock = new SimClock();
 * let fired = 0;
 * clock.setTimer(() => fired++, 500);
 * await clock.advance(499); // fired === 0
 * await clock.advance(1); // fired === 1, clock.now() === 500
 * ```
 */
export class SimClock implements Clock, Timers {
  #now: number;
  /** Binary min-heap on (time, seq); cancelled timers are dropped when they reach the top. */
  readonly #queue: Timer[] = [];
  readonly #byId = new Map<TimerId, Timer>();
  #seq = 0;
  #isRunning = false;

  /** Starts the clock at `start` milliseconds. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** Current virtual time in milliseconds. */
  now(): number {
    return this.#now;
  }

  /** Number of timers set and not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.#byId.size;
  }

  /** Sets a timer `delayMs` of virtual time from now. */
  setTimer(callback: () => void, delayMs: number): TimerId {
    const id = ++this.#seq;
    const timer: Timer = {
      time: this.#now + (delayMs > 0 ? delayMs : 0),
      seq: id,
      fire: callback,
      isCancelled: false,
    };
    this.#byId.set(id, timer);
    this.#push(timer);
    return id;
  }

  /** Cancels a pending timer. */
  clearTimer(id: TimerId): void {
    const timer = this.#byId.get(id);
    if (timer === undefined) return;
    timer.isCancelled = true;
    this.#byId.delete(id);
  }

  /**
   * Moves time forward by `ms`, firing every timer due on the way in time order and letting the
   * work they start run, as if that much time had passed.
   */
  async advance(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance the clock by ${ms} ms`);
    await this.advanceTo(this.#now + ms);
  }

  /** Moves time forward to `time` (if later than now), firing the timers due on the way. */
  async advanceTo(time: number): Promise<void> {
    this.#enter("advance the clock");
    try {
      for (;;) {
        await drainMicrotasks();
        const next = this.#peek();
        if (next === undefined || next.time > time) break;
        this.#fireAt(next.time);
      }
      if (time > this.#now) this.#now = time;
      await drainMicrotasks();
    } finally {
      this.#isRunning = false;
    }
  }

  /**
   * Fires timers in time order until `operation` settles, and returns its result. Throws
   * {@link SimDeadlockError} when no timer is left and the operation is still pending.
   */
  async run<T>(operation: Promise<T>): Promise<T> {
    this.#enter("run the simulation");
    let isSettled = false;
    const settled = operation.finally(() => {
      isSettled = true;
    });
    settled.catch(() => {});
    try {
      for (;;) {
        await drainMicrotasks();
        if (isSettled) return await settled;
        const next = this.#peek();
        if (next === undefined) throw new SimDeadlockError();
        this.#fireAt(next.time);
      }
    } finally {
      this.#isRunning = false;
    }
  }

  #enter(what: string): void {
    if (this.#isRunning) throw new RangeError(`Cannot ${what}: the simulation is already running`);
    this.#isRunning = true;
  }

  /** Moves to `time` and fires every timer due by then, including ones set while firing. */
  #fireAt(time: number): void {
    if (time > this.#now) this.#now = time;
    for (let next = this.#peek(); next !== undefined && next.time <= time; next = this.#peek()) {
      this.#pop();
      this.#byId.delete(next.seq);
      next.fire();
    }
  }

  /** The earliest pending timer, dropping cancelled ones from the top. */
  #peek(): Timer | undefined {
    let top = this.#queue[0];
    while (top !== undefined && top.isCancelled) {
      this.#pop();
      top = this.#queue[0];
    }
    return top;
  }

  #push(timer: Timer): void {
    const queue = this.#queue;
    queue.push(timer);
    let i = queue.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(queue[i]!, queue[parent]!)) break;
      [queue[i], queue[parent]] = [queue[parent]!, queue[i]!];
      i = parent;
    }
  }

  #pop(): void {
    const queue = this.#queue;
    const last = queue.pop();
    if (last === undefined || queue.length === 0) return;
    queue[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let smallest = i;
      if (l < queue.length && before(queue[l]!, queue[smallest]!)) smallest = l;
      if (r < queue.length && before(queue[r]!, queue[smallest]!)) smallest = r;
      if (smallest === i) break;
      [queue[i], queue[smallest]] = [queue[smallest]!, queue[i]!];
      i = smallest;
    }
  }
}

function before(a: Timer, b: Timer): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}
