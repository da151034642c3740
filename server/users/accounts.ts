/**
 * Accounts: registration (the browser's derived secret hashed with bcrypt, the record stored on
 * the ring once W copies are durable) and lookups, cached (for `cacheTtlMs` at most) because an
 * account never changes once created — except when two sides of a partition registered one name:
 * then the older registration wins on every copy, the ring tells every server, and the cache
 * takes the winner and tells {@link Accounts.onLost} listeners (sessions of the loser end). A
 * refusal is a {@link UserError}; nothing is stored before validation succeeds.
 */
import { compare, hash } from "bcryptjs";
import type { AccountKeys, AccountRecord } from "../../shared/mod.ts";
import type { Clock } from "../../shared/clock.ts";
import { toBase64Url } from "../../shared/crypto/encoding.ts";
import { UnavailableError, UsernameTakenError } from "../replication/mod.ts";
import { type AccountReplacement, accountVersion, credentialsOf } from "../store/mod.ts";
import type { Metrics } from "../telemetry/mod.ts";
import { UserError } from "./errors.ts";
import type { AccountRecords } from "./ports.ts";
import type { BucketRule } from "./rate_limit.ts";
import type { SharedLimits } from "./shared_limits.ts";

/**
 * The salt served for a name that has no account: derived from the name with a secret every
 * server of the ring shares (the cluster secret's HMAC), so every server answers the same salt
 * for it, always, in the form of a real one (16 bytes, base64url).
 */
export type FakeSalt = (username: string) => Promise<string>;

/** Collaborators of {@link Accounts}. */
export interface AccountsDeps {
  records: AccountRecords;
  fakeSalt: FakeSalt;
  /** Registrations per address (shared across the ring in the server). */
  limits: SharedLimits;
  metrics: Metrics;
  clock: Clock;
}

/** Configuration of {@link Accounts}. */
export interface AccountsOptions {
  /** bcrypt cost factor of stored secrets. @default 10 */
  bcryptCost?: number;
  /** Most accounts kept in the lookup cache. @default 10000 */
  cacheSize?: number;
  /**
   * How long a cached account is trusted before it is read from the ring again, in ms: bounds how
   * long a server that missed an `account_replaced` notice (it was cut off then) believes a
   * registration that lost its name. @default 300000 (5 minutes)
   */
  cacheTtlMs?: number;
  /**
   * Registrations per client address (IPv6 by /64) of the in-process counters
   * `createUserServices` builds when it is given no shared limits. @default DEFAULT_LIMITS
   */
  registrationsPerAddress?: BucketRule;
}

/** A registration as the browser asks for it. */
export interface Registration {
  username: string;
  /** The client-derived auth secret (never the password). */
  secret: string;
  /** The random salt the browser derived `secret` with (base64url, 16 bytes). */
  salt: string;
  /** Every account has keys: the public keys and the password-wrapped private keys. */
  keys: AccountKeys;
}

/** New credentials of a logged-in account (`rekey`). */
export interface Rekey {
  salt: string;
  secret: string;
  wrapped: string;
}

/** The salt of a legacy account: SHA-256("p2p-chat:" + username), base64url. */
export async function legacySalt(username: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode("p2p-chat:" + username.trim().normalize("NFC")),
  );
  return toBase64Url(new Uint8Array(digest));
}

/** What a request is told when the ring cannot read or write the account now. */
export const UNREACHABLE_MESSAGE = "The servers holding your account are unreachable, retrying…";

/** What the loser of a name is told: its sessions end and its tokens are refused. */
export const NAME_LOST_MESSAGE =
  "This name now belongs to an older account (it was registered twice during a network " +
  "partition): register another name";

/** Called when a registration lost its name to an older one; `loser` is its account version. */
export type NameLostListener = (username: string, loser: string) => void;

/**
 * Whether `registration` is a retry of the one stored as `account`: the same keys, exactly, and a
 * secret that matches the stored bcrypt hash.
 */
async function isSameRegistration(
  account: AccountRecord,
  registration: Registration,
): Promise<boolean> {
  const [a, b] = [account.keys, registration.keys];
  const sameKeys = a !== undefined && a.encryption === b.encryption &&
    a.signing === b.signing && a.wrapped === b.wrapped;
  return sameKeys && account.salt === registration.salt &&
    await compare(registration.secret, account.hash);
}

/** Registers accounts and reads them from the ring. */
export class Accounts {
  #deps: AccountsDeps;
  #bcryptCost: number;
  #cacheSize: number;
  #cache = new Map<string, { account: AccountRecord; until: number }>();
  #cacheTtlMs: number;
  #lostListeners = new Set<NameLostListener>();
  /** Account versions known to have lost their name, by username (bounded like the cache). */
  #lost = new Map<string, Set<string>>();
  #dummy: Promise<string> | undefined;

  /** Creates the service; it follows the ring's account replacements from then on. */
  constructor(deps: AccountsDeps, options: AccountsOptions = {}) {
    this.#deps = deps;
    this.#bcryptCost = options.bcryptCost ?? 10;
    this.#cacheSize = options.cacheSize ?? 10_000;
    this.#cacheTtlMs = options.cacheTtlMs ?? 300_000;
    deps.metrics.describe("p2pchat_registrations_total", "counter", "Registrations, by result");
    deps.metrics.describe(
      "p2pchat_names_lost_total",
      "counter",
      "Registrations that lost their name to an older one after a partition",
    );
    deps.metrics.describe(
      "p2pchat_login_work_total",
      "counter",
      "Work of checking login secrets, by step (account_read from the ring, bcrypt comparison): " +
        "an unknown username costs the same steps as a known one",
    );
    deps.metrics.describe(
      "p2pchat_accounts_rekeyed_total",
      "counter",
      "Legacy accounts moved to a random salt at a login",
    );
    deps.records.onAccountReplaced((r) => this.#replaced(r));
  }

  /** Calls `listener` whenever a registration loses its name; returns the unsubscriber. */
  onLost(listener: NameLostListener): () => void {
    this.#lostListeners.add(listener);
    return () => this.#lostListeners.delete(listener);
  }

  /** Whether account version `version` of `username` lost its name to an older registration. */
  hasLost(username: string, version: string): boolean {
    return this.#lost.get(username)?.has(version) ?? false;
  }

  #replaced({ winner, loser }: AccountReplacement): void {
    const username = winner.username;
    const lostVersion = accountVersion(loser);
    if (accountVersion(winner) === lostVersion) return;
    const cached = this.#cache.get(username)?.account;
    // A notice can arrive late or twice: only an older registration replaces what is cached.
    if (!cached || accountVersion(cached) === lostVersion || winner.createdAt <= cached.createdAt) {
      this.#cache.delete(username);
      this.#remember(winner);
    }
    const lost = this.#lost.get(username) ?? new Set<string>();
    if (lost.has(lostVersion)) return;
    if (this.#lost.size >= this.#cacheSize) this.#lost.delete(this.#lost.keys().next().value!);
    lost.add(lostVersion);
    this.#lost.set(username, lost);
    this.#deps.metrics.inc("p2pchat_names_lost_total");
    for (const listener of this.#lostListeners) listener(username, lostVersion);
  }

  /**
   * Registers a new account for a client at `address`; resolves once W copies are durable. A
   * retry of a registration already stored (same name, secret and keys) succeeds the same way.
   * Throws a {@link UserError}: `rate_limited` (too many registrations from that address),
   * `username_taken`, or `unavailable` when the ring cannot store it now.
   */
  async register(registration: Registration, address = "unknown"): Promise<void> {
    const { metrics } = this.#deps;
    // Charged (on the counter's holder) before any lookup or bcrypt: each registration costs
    // both, and durable writes.
    const { blockedMs } = await this.#deps.limits.beginRegistration(address);
    if (blockedMs > 0) {
      metrics.inc("p2pchat_registrations_total", { result: "rate_limited" });
      const seconds = Math.ceil(blockedMs / 1000);
      throw new UserError(
        "rate_limited",
        `Too many new accounts from your address: try again in ${seconds} s`,
      );
    }
    if (!registration.keys) {
      metrics.inc("p2pchat_registrations_total", { result: "keys_required" });
      throw new UserError(
        "keys_required",
        "An account needs keys: register with your public keys and wrapped private keys",
      );
    }
    const taken = () => {
      metrics.inc("p2pchat_registrations_total", { result: "taken" });
      return new UserError(
        "username_taken",
        `Username "${registration.username}" is taken: choose another`,
      );
    };
    const existing = await this.get(registration.username, "Accounts cannot be read right now");
    // The same registration again (its answer was cut off, it may sit on fewer than W copies):
    // completed as it was stored, so the ring repairs it to K + 1 copies. Anyone else is refused.
    if (existing && !(await isSameRegistration(existing, registration))) throw taken();
    const account: AccountRecord = existing ?? {
      username: registration.username,
      hash: await hash(registration.secret, this.#bcryptCost),
      createdAt: this.#deps.clock.now(),
      keys: registration.keys,
      salt: registration.salt,
    };
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
    return this.#cached(username) ??
      await this.#read(username, `${unavailableMessage}: try again shortly`);
  }

  /**
   * The account of `username` as the ring holds it now (never the cache): the state a session
   * check needs (the newest session, signed out or not). Undefined if there is none; throws a
   * {@link UserError} `unavailable` when the ring cannot answer for sure.
   */
  current(username: string): Promise<AccountRecord | undefined> {
    return this.#read(username, UNREACHABLE_MESSAGE);
  }

  /**
   * Writes new state of `account` (its newest session, its rekey) on its copies; resolves with
   * it once W copies are durable. Throws a {@link UserError}: `not_authenticated` when the
   * registration lost its name, `unavailable` when the ring cannot store it now.
   */
  async update(account: AccountRecord): Promise<AccountRecord> {
    try {
      await this.#deps.records.updateAccount(account);
    } catch (err) {
      if (err instanceof UsernameTakenError) {
        throw new UserError("not_authenticated", NAME_LOST_MESSAGE);
      }
      if (!(err instanceof UnavailableError)) throw err;
      throw new UserError("unavailable", UNREACHABLE_MESSAGE);
    }
    this.#remember(account);
    return account;
  }

  /**
   * The salt `username`'s login secret is derived with, served before login to anyone: the
   * account's random salt, or for a name without an account a fake one from the ring's shared
   * secret ({@link FakeSalt}). Both read the ring and compute the fake salt, so neither form nor
   * work tells them apart. A legacy account (salted with its name) answers its name-derived salt
   * (32 bytes): it shows that the name exists until its user's next login moves it. Throws a
   * {@link UserError} `unavailable` when the ring cannot answer and the name is not cached.
   */
  async loginParams(username: string): Promise<{ salt: string }> {
    const { metrics } = this.#deps;
    metrics.inc("p2pchat_login_work_total", { step: "salt_read" });
    const fake = this.#deps.fakeSalt(username);
    const account = await this.#readOrCached(username);
    const fakeSalt = await fake;
    if (!account) return { salt: fakeSalt };
    return { salt: credentialsOf(account).salt ?? await legacySalt(username) };
  }

  /**
   * Replaces the credentials of `account` (already authenticated by its session): a new salt,
   * the bcrypt hash of the secret derived with it, and the private keys wrapped again, stored in
   * one record so the copies hold either the old three or the new three. Throws a
   * {@link UserError} as {@link update}.
   */
  async rekey(account: AccountRecord, rekey: Rekey): Promise<AccountRecord> {
    const rekeyed = {
      salt: rekey.salt,
      hash: await hash(rekey.secret, this.#bcryptCost),
      wrapped: rekey.wrapped,
      at: this.#deps.clock.now(),
    };
    const updated = await this.update({ ...account, rekeyed });
    this.#deps.metrics.inc("p2pchat_accounts_rekeyed_total");
    return updated;
  }

  /** The cached account of `username`, if it has not expired. */
  #cached(username: string): AccountRecord | undefined {
    const cached = this.#cache.get(username);
    if (cached && cached.until > this.#deps.clock.now()) return cached.account;
    if (cached) this.#cache.delete(username);
    return undefined;
  }

  /** Reads `username`'s account from the ring (and caches it when it exists). */
  async #read(
    username: string,
    unavailableMessage: string,
  ): Promise<AccountRecord | undefined> {
    try {
      const account = await this.#deps.records.getAccount(username);
      if (account) this.#remember(account);
      return account;
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      throw new UserError("unavailable", unavailableMessage);
    }
  }

  /**
   * `username`'s account from the ring; when the ring cannot answer (`unavailable`), the copy
   * read in the last minutes if there is one (`onCached` is told), else the error.
   */
  async #readOrCached(
    username: string,
    onCached?: () => void,
  ): Promise<AccountRecord | undefined> {
    try {
      return await this.#read(username, UNREACHABLE_MESSAGE);
    } catch (err) {
      const cached = this.#cached(username);
      if (!(err instanceof UserError) || err.code !== "unavailable" || !cached) throw err;
      onCached?.();
      return cached;
    }
  }

  /**
   * The account if `secret` is its auth secret; undefined for an unknown name or a wrong one.
   * Both cost the same steps, so timing does not tell names apart: one read from the ring (never
   * the cache, which only knows names that exist) and one bcrypt comparison (against a dummy hash
   * of the same cost for an unknown name). Only when the ring cannot answer for sure (a busy or
   * failing ring) does a name this server read recently log in from its cached copy, so a
   * loaded ring does not lock out users it has just seen.
   */
  async verify(username: string, secret: string): Promise<AccountRecord | undefined> {
    const { metrics } = this.#deps;
    metrics.inc("p2pchat_login_work_total", { step: "account_read" });
    const account = await this.#readOrCached(
      username,
      () => metrics.inc("p2pchat_login_work_total", { step: "cached_account" }),
    );
    metrics.inc("p2pchat_login_work_total", { step: "bcrypt" });
    if (!account) {
      await compare(secret, await this.#dummyHash());
      return undefined;
    }
    return (await compare(secret, credentialsOf(account).hash)) ? account : undefined;
  }

  /** A bcrypt hash at this server's cost that no secret matches in practice. */
  #dummyHash(): Promise<string> {
    this.#dummy ??= hash(crypto.randomUUID(), this.#bcryptCost);
    return this.#dummy;
  }

  #remember(account: AccountRecord): void {
    if (this.#cache.size >= this.#cacheSize) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(account.username, {
      account,
      until: this.#deps.clock.now() + this.#cacheTtlMs,
    });
  }
}
