/**
 * Accounts: registration (the browser's derived secret hashed with bcrypt, the record stored on
 * the ring once W copies are durable) and lookups, cached because an account never changes once
 * created. A refusal is a {@link UserError}; nothing is stored before validation succeeds.
 */
import { compare, hash } from "bcryptjs";
import type { AccountKeys, AccountRecord } from "../../shared/mod.ts";
import type { Clock } from "../../shared/clock.ts";
import { UnavailableError, UsernameTakenError } from "../replication/mod.ts";
import type { Metrics } from "../telemetry/mod.ts";
import { UserError } from "./errors.ts";
import type { AccountRecords } from "./ports.ts";
import { addressKey, type BucketRule, DEFAULT_LIMITS, KeyedLimiter } from "./rate_limit.ts";

/** Collaborators of {@link Accounts}. */
export interface AccountsDeps {
  records: AccountRecords;
  metrics: Metrics;
  clock: Clock;
}

/** Configuration of {@link Accounts}. */
export interface AccountsOptions {
  /** bcrypt cost factor of stored secrets. @default 10 */
  bcryptCost?: number;
  /** Most accounts kept in the lookup cache. @default 10000 */
  cacheSize?: number;
  /** Registrations per client address (IPv6 by /64). @default DEFAULT_LIMITS */
  registrationsPerAddress?: BucketRule;
}

/** A registration as the browser asks for it. */
export interface Registration {
  username: string;
  /** The client-derived auth secret (never the password). */
  secret: string;
  keys?: AccountKeys;
}

/** Registers accounts and reads them from the ring. */
export class Accounts {
  #deps: AccountsDeps;
  #bcryptCost: number;
  #cacheSize: number;
  #cache = new Map<string, AccountRecord>();
  #dummy: Promise<string> | undefined;
  #registrations: KeyedLimiter;

  /** Creates the service. */
  constructor(deps: AccountsDeps, options: AccountsOptions = {}) {
    this.#deps = deps;
    this.#bcryptCost = options.bcryptCost ?? 10;
    this.#cacheSize = options.cacheSize ?? 10_000;
    this.#registrations = new KeyedLimiter(
      options.registrationsPerAddress ?? DEFAULT_LIMITS.registrationsPerAddress,
      () => deps.clock.now(),
    );
    deps.metrics.describe("p2pchat_registrations_total", "counter", "Registrations, by result");
  }

  /**
   * Registers a new account for a client at `address`; resolves once W copies are durable.
   * Throws a {@link UserError}: `rate_limited` (too many registrations from that address),
   * `username_taken`, or `unavailable` when the ring cannot store it now.
   */
  async register(registration: Registration, address = "unknown"): Promise<void> {
    const { metrics } = this.#deps;
    // Charged before any lookup or bcrypt: each registration costs both, and durable writes.
    const key = addressKey(address);
    if (!this.#registrations.take(key)) {
      metrics.inc("p2pchat_registrations_total", { result: "rate_limited" });
      const seconds = Math.ceil(this.#registrations.retryAfterMs(key) / 1000);
      throw new UserError(
        "rate_limited",
        `Too many new accounts from your address: try again in ${seconds} s`,
      );
    }
    const taken = () => {
      metrics.inc("p2pchat_registrations_total", { result: "taken" });
      return new UserError(
        "username_taken",
        `Username "${registration.username}" is taken: choose another`,
      );
    };
    if (await this.get(registration.username, "Accounts cannot be read right now")) throw taken();
    const account: AccountRecord = {
      username: registration.username,
      hash: await hash(registration.secret, this.#bcryptCost),
      createdAt: this.#deps.clock.now(),
    };
    if (registration.keys) account.keys = registration.keys;
    try {
      await this.#deps.records.registerAccount(account);
    } catch (err) {
      if (err instanceof UsernameTakenError) throw taken();
      if (!(err instanceof UnavailableError)) throw err;
      metrics.inc("p2pchat_registrations_total", { result: "unavailable" });
      throw new UserError("unavailable", "No server could store the account: try again shortly");
    }
    metrics.inc("p2pchat_registrations_total", { result: "ok" });
    this.#remember(account);
  }

  /**
   * The account of `username`, or undefined if there is none. Throws a {@link UserError}
   * `unavailable` (with `unavailableMessage`) when the ring cannot answer now.
   */
  async get(
    username: string,
    unavailableMessage = "Accounts cannot be read right now",
  ): Promise<AccountRecord | undefined> {
    const cached = this.#cache.get(username);
    if (cached) return cached;
    try {
      const account = await this.#deps.records.getAccount(username);
      if (account) this.#remember(account);
      return account;
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      throw new UserError("unavailable", `${unavailableMessage}: try again shortly`);
    }
  }

  /**
   * The account if `secret` is its auth secret; undefined for an unknown name or a wrong one.
   * An unknown name costs one bcrypt comparison too, so timing does not tell names apart.
   */
  async verify(username: string, secret: string): Promise<AccountRecord | undefined> {
    const account = await this.get(username);
    if (!account) {
      await compare(secret, await this.#dummyHash());
      return undefined;
    }
    return (await compare(secret, account.hash)) ? account : undefined;
  }

  /** A bcrypt hash at this server's cost that no secret matches in practice. */
  #dummyHash(): Promise<string> {
    this.#dummy ??= hash(crypto.randomUUID(), this.#bcryptCost);
    return this.#dummy;
  }

  #remember(account: AccountRecord): void {
    if (this.#cache.size >= this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(account.username, account);
  }
}
