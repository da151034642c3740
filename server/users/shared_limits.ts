/**
 * Login and registration limits that hold across the whole ring. Each counter — failed logins
 * per username, per client address, registrations per address — is a token bucket kept on one
 * server, the *holder*: the primary of the username's ring key ({@link userRingKey}) or of the
 * address's ({@link addressRingKey}). A server charges an attempt on the holder BEFORE the
 * expensive work (bcrypt, durable writes), so attempts in flight count, and refunds it there when
 * it turns out not to count (a login that succeeded). An attacker who spreads guesses over every
 * server thus meets one budget, not one per server.
 *
 * When the holder cannot be asked in time (it died, a partition, a lookup that fails, a holder too
 * busy to answer within the bound), the attempt is charged on this server's own fallback counters
 * instead ("fallback"), which hold a share of each budget: 1/N of the burst (at least one attempt)
 * and of the refill, N the servers this one sees alive, all of which may be falling back too. So
 * an attacker who overloads the ring to make every server count on its own gains little (the
 * holder's own budget plus the shares: under 2 × the limit, not N ×), and a lone survivor keeps
 * the whole limit. Limits are never switched off. Counters are soft state: a holder that
 * restarts, or a key whose primary moves, starts from a full bucket.
 *
 * {@link LocalLimits} is the in-process implementation (one server, unit tests) and also the
 * counters a holder keeps for the ring; {@link RingLimits} routes every charge to the holder.
 */
import { createHash } from "node:crypto";
import type { Clock } from "../../shared/clock.ts";
import type { LimitCall, LimitHolder, LimitKind } from "../cluster/mod.ts";
import { userRingKey } from "../store/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import {
  type AbuseLimits,
  addressKey,
  type BucketRule,
  DEFAULT_LIMITS,
  KeyedLimiter,
} from "./rate_limit.ts";

/** The rules of the ring-shared counters. */
export type SharedLimitRules = Pick<
  AbuseLimits,
  "loginFailuresPerUser" | "loginFailuresPerAddress" | "registrationsPerAddress"
>;

/** One attempt charged before its expensive work. */
export interface Charge {
  /** 0 when the attempt may go ahead; otherwise the milliseconds to wait (nothing charged). */
  blockedMs: number;
  /** Gives the attempt back to the counters it was charged to; never rejects. */
  refund(): Promise<void>;
}

/** The limits {@link Sessions} and {@link Accounts} charge. */
export interface SharedLimits {
  /** Charges one login attempt of `username` from `address` (per username and per address). */
  beginLogin(username: string, address: string): Promise<Charge>;
  /** Charges one registration from `address`. */
  beginRegistration(address: string): Promise<Charge>;
}

/** The ring key under which the counters of client address key `key` live. */
export function addressRingKey(key: string): string {
  return createHash("sha1").update(`addr:${key}`).digest("hex");
}

/** One counter charged (or refused), and how to give it back. */
interface Taken {
  waitMs: number;
  refund(): Promise<void>;
}

/** Takes one token from `key`'s counter of `kind`, kept under ring key `ringKey`. */
type Take = (kind: LimitKind, key: string, ringKey: string) => Promise<Taken>;

const nothing = (): Promise<void> => Promise.resolve();

/**
 * Charges the counters in order, as a local limiter would: when one refuses, those already
 * charged are given back and the attempt waits (so a blocked username does not use up its
 * address's budget, and a burst for one name gets exactly that name's budget through).
 */
async function chargeAll(
  take: Take,
  counters: readonly [LimitKind, string, string][],
): Promise<Charge> {
  const taken: Taken[] = [];
  const refundAll = async () => {
    await Promise.all(taken.map((t) => t.refund()));
  };
  for (const [kind, key, ringKey] of counters) {
    const t = await take(kind, key, ringKey);
    if (t.waitMs > 0) {
      await refundAll();
      return { blockedMs: t.waitMs, refund: nothing };
    }
    taken.push(t);
  }
  return { blockedMs: 0, refund: refundAll };
}

function loginCounters(username: string, address: string): [LimitKind, string, string][] {
  const key = addressKey(address);
  return [
    ["login_user", username, userRingKey(username)],
    ["login_address", key, addressRingKey(key)],
  ];
}

function registrationCounters(address: string): [LimitKind, string, string][] {
  const key = addressKey(address);
  return [["registration_address", key, addressRingKey(key)]];
}

/** The counters of this process: the whole story on one server, a holder's share in a ring. */
export class LocalLimits implements SharedLimits, LimitHolder {
  #byKind: Record<LimitKind, KeyedLimiter>;
  #rules: Record<LimitKind, BucketRule>;
  #now: () => number;
  /** Fallback counters holding 1/N of a budget, by kind and N (see {@link takeShare}). */
  #shares = new Map<string, KeyedLimiter>();

  /** Creates full counters; missing rules take {@link DEFAULT_LIMITS}. */
  constructor(rules: Partial<SharedLimitRules> = {}, clock: Pick<Clock, "now"> = Date) {
    const now = () => clock.now();
    const r = { ...DEFAULT_LIMITS, ...rules };
    this.#now = now;
    this.#rules = {
      login_user: r.loginFailuresPerUser,
      login_address: r.loginFailuresPerAddress,
      registration_address: r.registrationsPerAddress,
    };
    this.#byKind = {
      login_user: new KeyedLimiter(r.loginFailuresPerUser, now),
      login_address: new KeyedLimiter(r.loginFailuresPerAddress, now),
      registration_address: new KeyedLimiter(r.registrationsPerAddress, now),
    };
  }

  /** Charges `key`; 0 when taken, else the milliseconds until a token is available. */
  take(kind: LimitKind, key: string): number {
    const limiter = this.#byKind[kind];
    return limiter.take(key) ? 0 : Math.max(1, limiter.retryAfterMs(key));
  }

  /** Gives `key` one token back. */
  refund(kind: LimitKind, key: string): void {
    this.#byKind[kind].refund(key);
  }

  /** {@link take} with its refund, as a charge of this process. */
  takeHere(kind: LimitKind, key: string): Taken {
    const waitMs = this.take(kind, key);
    return {
      waitMs,
      refund: () => {
        this.refund(kind, key);
        return Promise.resolve();
      },
    };
  }

  /**
   * {@link takeHere} on counters of their own that hold 1/`share` of each budget (a burst of at
   * least one): what a server charges while `share` servers may each be counting on their own.
   */
  takeShare(kind: LimitKind, key: string, share: number): Taken {
    const n = Math.max(1, Math.floor(share));
    if (n === 1) return this.takeHere(kind, key);
    const id = `${kind}/${n}`;
    let limiter = this.#shares.get(id);
    if (!limiter) {
      const rule = this.#rules[kind];
      limiter = new KeyedLimiter(
        { capacity: Math.max(1, Math.floor(rule.capacity / n)), perSecond: rule.perSecond / n },
        this.#now,
      );
      this.#shares.set(id, limiter);
    }
    const counter = limiter;
    const waitMs = counter.take(key) ? 0 : Math.max(1, counter.retryAfterMs(key));
    return {
      waitMs,
      refund: () => {
        counter.refund(key);
        return Promise.resolve();
      },
    };
  }

  beginLogin(username: string, address: string): Promise<Charge> {
    return chargeAll(
      (kind, key) => Promise.resolve(this.takeHere(kind, key)),
      loginCounters(username, address),
    );
  }

  beginRegistration(address: string): Promise<Charge> {
    return chargeAll(
      (kind, key) => Promise.resolve(this.takeHere(kind, key)),
      registrationCounters(address),
    );
  }
}

/** Collaborators of {@link RingLimits}. */
export interface RingLimitsDeps {
  /** This server's address. */
  self: string;
  /** The counters this server holds for the ring, and charges itself when a holder is away. */
  local: LocalLimits;
  /** The holder (primary) of a ring key; rejects when the ring cannot say. */
  holderOf(ringKey: string): Promise<string>;
  /** Whether a server is believed alive (a dead holder is not asked). */
  isLive(address: string): boolean;
  /**
   * How many servers (this one included) are believed alive: a fallback charges a share of the
   * budget this small. @default () => 1 (the whole budget)
   */
  liveServerCount?: () => number;
  /** A signed limits request to another server. */
  call: LimitCall;
  metrics: Metrics;
  log: Log;
  clock: Clock;
}

/** Configuration of {@link RingLimits}. */
export interface RingLimitsOptions {
  /**
   * Longest one charge may take to find and ask its holder, in ms; past it the attempt is
   * charged on this server instead. @default 1500
   */
  holderTimeoutMs?: number;
}

/** A holder was not answered in time. */
class HolderTimeoutError extends Error {
  override name = "HolderTimeoutError";
}

/** Limits whose counters live on their holders across the ring. */
export class RingLimits implements SharedLimits {
  #deps: RingLimitsDeps;
  #timeoutMs: number;
  /** When a fallback was last logged, by holder: an attack during an outage logs once a minute. */
  #loggedAt = new Map<string, number>();

  /** Creates the limiter. */
  constructor(deps: RingLimitsDeps, options: RingLimitsOptions = {}) {
    this.#deps = deps;
    this.#timeoutMs = options.holderTimeoutMs ?? 1500;
    deps.metrics.describe(
      "p2pchat_limit_charges_total",
      "counter",
      "Login and registration attempts charged to a ring-shared limit, by kind and where: on " +
        "this server as the holder (self), on another holder (peer), or here because the holder " +
        "could not be asked (fallback)",
    );
  }

  beginLogin(username: string, address: string): Promise<Charge> {
    return chargeAll((k, key, ring) => this.#take(k, key, ring), loginCounters(username, address));
  }

  beginRegistration(address: string): Promise<Charge> {
    return chargeAll((k, key, ring) => this.#take(k, key, ring), registrationCounters(address));
  }

  async #take(kind: LimitKind, key: string, ringKey: string): Promise<Taken> {
    const { self, local, holderOf, isLive, call, metrics } = this.#deps;
    const deadline = this.#deps.clock.now() + this.#timeoutMs;
    let holder: string | undefined;
    try {
      holder = await this.#within(holderOf(ringKey), deadline);
      if (holder === self) {
        metrics.inc("p2pchat_limit_charges_total", { kind, where: "self" });
        return local.takeHere(kind, key);
      }
      if (!isLive(holder)) return this.#fallback(kind, key, holder, "holder is not alive");
      const res = await this.#within(
        call(holder, { v: 1, type: "limit_take", kind, key }),
        deadline,
      );
      if (res.type === "limit_refunded") throw new Error("answered a take with a refund");
      metrics.inc("p2pchat_limit_charges_total", { kind, where: "peer" });
      if (res.type === "limit_refused") return { waitMs: res.retryAfterMs, refund: nothing };
      const at = holder;
      return { waitMs: 0, refund: () => this.#refundAt(at, kind, key) };
    } catch (err) {
      return this.#fallback(kind, key, holder, String(err));
    }
  }

  #fallback(kind: LimitKind, key: string, holder: string | undefined, reason: string): Taken {
    const { local, metrics, log, clock } = this.#deps;
    metrics.inc("p2pchat_limit_charges_total", { kind, where: "fallback" });
    const now = clock.now();
    const at = holder ?? "";
    if (now - (this.#loggedAt.get(at) ?? -Infinity) >= 60_000) {
      if (this.#loggedAt.size >= 1000) this.#loggedAt.clear();
      this.#loggedAt.set(at, now);
      log("limit_holder_unreachable", { kind, holder: holder ?? null, reason });
    }
    return local.takeShare(kind, key, this.#deps.liveServerCount?.() ?? 1);
  }

  /** Refunds on the holder that was charged; a lost refund only leaves the limit stricter. */
  async #refundAt(holder: string, kind: LimitKind, key: string): Promise<void> {
    const deadline = this.#deps.clock.now() + this.#timeoutMs;
    try {
      await this.#within(
        this.#deps.call(holder, { v: 1, type: "limit_refund", kind, key }),
        deadline,
      );
    } catch (err) {
      this.#deps.log("limit_refund_failed", { kind, holder, error: String(err) });
    }
  }

  /** `promise`, or a {@link HolderTimeoutError} at `deadline` (on the injected clock). */
  async #within<T>(promise: Promise<T>, deadline: number): Promise<T> {
    const { clock } = this.#deps;
    let timer: ReturnType<Clock["setTimeout"]> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = clock.setTimeout(
        () => reject(new HolderTimeoutError(`no answer within ${this.#timeoutMs} ms`)),
        Math.max(0, deadline - clock.now()),
      );
    });
    try {
      return await Promise.race([promise, timeout]);
    } finally {
      clock.clearTimeout(timer);
    }
  }
}
