/**
 * Token buckets for abuse control: login failures per username and per client address, and
 * frames per WebSocket connection. The clock is injected so tests can drive time.
 */

/** The current time in ms (Date.now by default). */
export type Now = () => number;

/** Shape of one bucket: `capacity` tokens, refilled at `perSecond` tokens per second. */
export interface BucketRule {
  capacity: number;
  perSecond: number;
}

/** One token bucket. */
export class TokenBucket {
  #tokens: number;
  #updated: number;

  /** Creates a full bucket. */
  constructor(readonly rule: BucketRule, private readonly clock: Now = Date.now) {
    this.#tokens = rule.capacity;
    this.#updated = clock();
  }

  #refill(): void {
    const now = this.clock();
    const elapsed = Math.max(0, now - this.#updated) / 1000;
    this.#tokens = Math.min(this.rule.capacity, this.#tokens + elapsed * this.rule.perSecond);
    this.#updated = now;
  }

  /** Tokens available now (fractional). */
  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /** Whether the bucket is back to full capacity (an idle key can be forgotten). */
  get full(): boolean {
    return this.tokens >= this.rule.capacity;
  }

  /** Takes one token if there is one; true when taken. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Gives one token back (an attempt that turned out not to count), up to the capacity. */
  refund(): void {
    this.#refill();
    this.#tokens = Math.min(this.rule.capacity, this.#tokens + 1);
  }

  /** Milliseconds until one token is available (0 when one is available now). */
  retryAfterMs(): number {
    this.#refill();
    if (this.#tokens >= 1) return 0;
    return Math.ceil(((1 - this.#tokens) / this.rule.perSecond) * 1000);
  }
}

/** Token buckets by key (a username, an address), forgetting keys whose bucket is full again. */
export class KeyedLimiter {
  #buckets = new Map<string, TokenBucket>();

  /** Creates a limiter; at most `maxKeys` keys are tracked (idle ones are pruned first). */
  constructor(
    readonly rule: BucketRule,
    private readonly clock: Now = Date.now,
    private readonly maxKeys = 100_000,
  ) {}

  /** Milliseconds until `key` may act again (0 when it may act now). */
  retryAfterMs(key: string): number {
    return this.#buckets.get(key)?.retryAfterMs() ?? 0;
  }

  /** Charges one token to `key`; false when it had none left. */
  take(key: string): boolean {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= this.maxKeys) this.prune();
      // Still full of busy keys: drop the oldest one rather than grow without bound.
      if (this.#buckets.size >= this.maxKeys) {
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
      bucket = new TokenBucket(this.rule, this.clock);
      this.#buckets.set(key, bucket);
    }
    return bucket.take();
  }

  /** Gives `key` one token back. */
  refund(key: string): void {
    this.#buckets.get(key)?.refund();
  }

  /** Forgets every key whose bucket has refilled completely. */
  prune(): void {
    for (const [key, bucket] of this.#buckets) if (bucket.full) this.#buckets.delete(key);
  }

  /** Number of keys tracked (for tests and metrics). */
  get size(): number {
    return this.#buckets.size;
  }
}

/** How often one user may look names up (`get_keys`). */
export interface KeyLookupRules {
  /** Every lookup. @default burst 200, then 1 per second */
  lookups: BucketRule;
  /** Lookups of a name without an account (guessing names). @default burst 20, then 10 per minute */
  misses: BucketRule;
}

/** The default {@link KeyLookupRules}. */
export const DEFAULT_KEY_LOOKUPS: KeyLookupRules = {
  lookups: { capacity: 200, perSecond: 1 },
  misses: { capacity: 20, perSecond: 10 / 60 },
};

/**
 * Per-user budgets of exact-name lookups: every lookup costs a token of `lookups`, and a miss
 * (no such account) one of the stricter `misses`. A lookup is admitted only while the user also
 * has a miss token, so whether it is refused never depends on the name asked for: being refused
 * tells nothing about whether that account exists.
 */
export class KeyLookupLimiter {
  #lookups: KeyedLimiter;
  #misses: KeyedLimiter;

  /** Creates the budgets; missing rules take {@link DEFAULT_KEY_LOOKUPS}. */
  constructor(rules: Partial<KeyLookupRules> = {}, clock: Now = Date.now) {
    const r = { ...DEFAULT_KEY_LOOKUPS, ...rules };
    this.#lookups = new KeyedLimiter(r.lookups, clock);
    this.#misses = new KeyedLimiter(r.misses, clock);
  }

  /** Charges one lookup to `user`: 0 when admitted, else the milliseconds to wait. */
  admit(user: string): number {
    const missWait = this.#misses.retryAfterMs(user);
    if (missWait === 0 && this.#lookups.take(user)) return 0;
    return Math.max(1, missWait, this.#lookups.retryAfterMs(user));
  }

  /** The admitted lookup of `user` found no account: charges the miss budget. */
  miss(user: string): void {
    this.#misses.take(user);
  }
}

/** Limits of a {@link ClientHub}; every field has a default. */
export interface AbuseLimits {
  /** Failed logins per username. @default 5 per minute */
  loginFailuresPerUser: BucketRule;
  /** Failed logins per client address (IPv6 by /64). @default 20 per minute */
  loginFailuresPerAddress: BucketRule;
  /** Registrations per client address (IPv6 by /64). @default burst 30, 30 per minute */
  registrationsPerAddress: BucketRule;
  /** Frames per WebSocket connection. @default burst 100, 50 per second */
  framesPerConnection: BucketRule;
  /**
   * Frames dropped for exceeding the frame rate before the socket is closed: a bucket of
   * "strikes" per connection. @default burst 100, 10 per second
   */
  droppedFramesBeforeClose: BucketRule;
}

/** The default abuse limits. */
export const DEFAULT_LIMITS: AbuseLimits = {
  loginFailuresPerUser: { capacity: 5, perSecond: 5 / 60 },
  loginFailuresPerAddress: { capacity: 20, perSecond: 20 / 60 },
  registrationsPerAddress: { capacity: 30, perSecond: 30 / 60 },
  framesPerConnection: { capacity: 100, perSecond: 50 },
  droppedFramesBeforeClose: { capacity: 100, perSecond: 10 },
};

/**
 * The key of a client address for limits: an IPv6 address counts by its /64 (one customer's
 * prefix), an IPv4 address as itself.
 */
export function addressKey(address: string): string {
  if (!address.includes(":")) return address;
  const bare = address.replace(/^\[|\]$/g, "").split("%")[0]!.toLowerCase();
  const [head = "", tail = ""] = bare.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = bare.includes("::")
    ? [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right]
    : left;
  return groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":") + "::/64";
}
