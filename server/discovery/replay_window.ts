/**
 * Remembers the nonces of accepted announcements until they could no longer pass the staleness
 * check anyway, so each signed datagram is accepted at most once.
 */

/** Options of a {@link ReplayWindow}. */
export interface ReplayWindowOptions {
  /**
   * Most nonces remembered. When full, the oldest is forgotten first: only authenticated
   * announcements enter the window, so only a cluster member could fill it.
   * @default 10000
   */
  maxEntries?: number;
}

/** A set of nonces, each remembered until its expiry time. */
export class ReplayWindow {
  #expiries = new Map<string, number>();
  #maxEntries: number;
  #lastPrune = 0;

  /** Creates an empty window. */
  constructor(options: ReplayWindowOptions = {}) {
    this.#maxEntries = options.maxEntries ?? 10_000;
  }

  /** How many nonces are remembered now. */
  get size(): number {
    return this.#expiries.size;
  }

  /**
   * Records `nonce` until `expiresAt`; returns false if it was already recorded and has not
   * expired by `now` (a replay).
   */
  admit(nonce: string, expiresAt: number, now: number): boolean {
    const seen = this.#expiries.get(nonce);
    if (seen !== undefined && seen > now) return false;
    if (now - this.#lastPrune >= 1000 || this.#expiries.size >= this.#maxEntries) this.#prune(now);
    while (this.#expiries.size >= this.#maxEntries) {
      const oldest = this.#expiries.keys().next().value as string;
      this.#expiries.delete(oldest);
    }
    this.#expiries.delete(nonce);
    this.#expiries.set(nonce, expiresAt);
    return true;
  }

  #prune(now: number): void {
    this.#lastPrune = now;
    for (const [nonce, expiresAt] of this.#expiries) {
      if (expiresAt <= now) this.#expiries.delete(nonce);
    }
  }
}
