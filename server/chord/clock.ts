/**
 * Time as the ring sees it: a {@link Clock} is passed in, so simulations run on virtual time.
 */

/** A source of the current time in milliseconds. */
export interface Clock {
  /** Current time in milliseconds (epoch-based for real clocks, arbitrary origin for virtual). */
  now(): number;
}

/** The real clock, for servers. */
export const systemClock: Clock = { now: () => Date.now() };

/**
 * Virtual time that only moves when told to; nothing ever sleeps. {@link SimNetwork} advances it
 * as it delivers messages, and tests may advance it between rounds.
 */
export class SimClock implements Clock {
  #now: number;

  /** Starts the clock at `start` milliseconds. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** Current virtual time in milliseconds. */
  now(): number {
    return this.#now;
  }

  /** Moves time forward by `ms` (never backwards). */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`Cannot advance the clock by ${ms} ms`);
    this.#now += ms;
  }

  /** Moves time forward to `time` if it is later than now. */
  advanceTo(time: number): void {
    if (time > this.#now) this.#now = time;
  }
}
