/**
 * Accounts in the node's SQLite database: username → bcrypt hash of the login secret, public keys
 * and wrapped private keys. An account lives on the primary of its ring key and K successors;
 * `held_as` records which role this node has. Accounts never change once created, except when
 * two servers registered the same name on both sides of a network partition: then the older
 * registration (smaller `createdAt`, then smaller hash) wins on every copy, so replicas converge.
 *
 * Beside the registration, each account carries state that does change: its salt (set at
 * registration), credentials that replaced the registration's (`rekeyed`, the later wins) and
 * the user's newest session (`session`, the newer wins; of the same session, signed out wins and
 * the higher refresh generation). Two copies of the same registration merge ({@link mergeAccounts}),
 * so every copy converges whichever order writes and repairs arrive in.
 */
import type { DatabaseSync } from "node:sqlite";
import type { AccountRecord, AccountSession } from "../../shared/mod.ts";

/** SQL of migration 5: the changing state of an account (salt, rekey, newest session), JSON. */
export const ACCOUNT_STATE_SCHEMA = `ALTER TABLE accounts ADD COLUMN state TEXT`;

/** SQL of migration 4: ring placement of accounts, plus the presence table. */
export const ACCOUNT_RING_SCHEMA = `
  ALTER TABLE accounts ADD COLUMN ring_key TEXT NOT NULL DEFAULT '';
  ALTER TABLE accounts ADD COLUMN held_as TEXT NOT NULL DEFAULT 'replica'
    CHECK (held_as IN ('primary', 'replica'));
  CREATE INDEX accounts_by_ring_key ON accounts (ring_key);
`;

/** Fills the ring key of accounts created before migration 4. */
export function backfillAccountRingKeys(
  db: DatabaseSync,
  ringKeyOf: (username: string) => string,
): void {
  const rows = db.prepare("SELECT username FROM accounts WHERE ring_key = ''").all() as {
    username: string;
  }[];
  const update = db.prepare("UPDATE accounts SET ring_key = ? WHERE username = ?");
  for (const { username } of rows) update.run(ringKeyOf(username), username);
}

/** The columns of an account row. */
export type AccountRow = {
  username: string;
  hash: string;
  created_at: number;
  keys: string | null;
  state: string | null;
};

/** The changing part of an account, as the `state` column keeps it. */
type AccountState = Pick<AccountRecord, "salt" | "rekeyed" | "session">;

/** An account as its row holds it. */
export function toAccount(row: AccountRow): AccountRecord {
  const account: AccountRecord = {
    username: row.username,
    hash: row.hash,
    createdAt: row.created_at,
  };
  if (row.keys) account.keys = JSON.parse(row.keys);
  if (row.state) Object.assign(account, JSON.parse(row.state) as AccountState);
  return account;
}

function stateOf(account: AccountRecord): string | null {
  const state: AccountState = {};
  if (account.salt !== undefined) state.salt = account.salt;
  if (account.rekeyed) state.rekeyed = account.rekeyed;
  if (account.session) state.session = account.session;
  return Object.keys(state).length ? JSON.stringify(state) : null;
}

/** Whether session `a` is newer than `b` (later issued; ties broken by id). */
function isNewerSession(a: AccountSession, b: AccountSession): boolean {
  return a.issuedAt !== b.issuedAt ? a.issuedAt > b.issuedAt : a.id > b.id;
}

/** The newer of two records of a user's newest session (see the module comment). */
export function mergeSessions(
  a: AccountSession | undefined,
  b: AccountSession | undefined,
): AccountSession | undefined {
  if (!a || !b) return a ?? b;
  if (a.id !== b.id) return isNewerSession(a, b) ? a : b;
  const ended = a.ended || b.ended;
  const refresh = Math.max(a.refresh ?? 0, b.refresh ?? 0);
  return {
    id: a.id,
    issuedAt: a.issuedAt,
    ...(ended ? { ended: true } : {}),
    ...(refresh ? { refresh } : {}),
  };
}

/**
 * Two copies of one account merged: of different registrations the older wins whole; of the same
 * registration the state merges (salt as set, the later rekey, the newer session).
 */
export function mergeAccounts(a: AccountRecord, b: AccountRecord): AccountRecord {
  if (accountVersion(a) !== accountVersion(b)) return winsOver(a, b) ? a : b;
  const merged: AccountRecord = { ...a };
  delete merged.salt;
  delete merged.rekeyed;
  delete merged.session;
  const salt = a.salt ?? b.salt;
  if (salt !== undefined) merged.salt = salt;
  const rekeyed = !a.rekeyed || !b.rekeyed
    ? a.rekeyed ?? b.rekeyed
    : a.rekeyed.at >= b.rekeyed.at
    ? a.rekeyed
    : b.rekeyed;
  if (rekeyed) merged.rekeyed = rekeyed;
  const session = mergeSessions(a.session, b.session);
  if (session) merged.session = session;
  return merged;
}

/**
 * Identity of one copy for anti-entropy: the registration's version and a stamp of its state, so
 * copies whose state differs are exchanged (and merge) like missing ones.
 */
export function accountItemId(account: AccountRecord): string {
  const s = account.session;
  const stamp =
    (s ? `s${s.issuedAt}${s.id.slice(0, 8)}${s.ended ? "e" : ""}r${s.refresh ?? 0}` : "") +
    (account.rekeyed ? `k${account.rekeyed.at}` : "");
  return stamp
    ? `${accountVersion(account)}~${stamp.replace(/[^A-Za-z0-9]/g, "")}`
    : accountVersion(account);
}

/** Login credentials of an account: its rekey if it has one, else its registration's. */
export function credentialsOf(
  account: AccountRecord,
): { hash: string; salt: string | undefined; wrapped: string | undefined } {
  if (account.rekeyed) {
    const { hash, salt, wrapped } = account.rekeyed;
    return { hash, salt, wrapped };
  }
  return { hash: account.hash, salt: account.salt, wrapped: account.keys?.wrapped };
}

/**
 * Identity of one version of an account, for anti-entropy: two copies with the same version are
 * the same registration.
 */
export function accountVersion(account: Pick<AccountRecord, "createdAt" | "hash">): string {
  return `${account.createdAt}.${account.hash.slice(-12)}`;
}

/** Whether registration `a` wins over `b` (the older one; ties broken by the hash). */
export function winsOver(a: AccountRecord, b: AccountRecord): boolean {
  return a.createdAt < b.createdAt || (a.createdAt === b.createdAt && a.hash < b.hash);
}

/** What {@link AccountStore.put} did with one account ("updated": same registration, new state). */
export type PutResult = "added" | "present" | "updated" | "replaced" | "kept";

/** The accounts of one node. */
export class AccountStore {
  #db: DatabaseSync;
  #ringKeyOf: (username: string) => string;

  /** Wraps an open, migrated database; `ringKeyOf` places an account on the ring. */
  constructor(db: DatabaseSync, ringKeyOf: (username: string) => string) {
    this.#db = db;
    this.#ringKeyOf = ringKeyOf;
  }

  /**
   * Stores a copy of `account`: added if new, nothing if the same registration is there, and if
   * another registration of the name is there the older one is kept (see the module comment).
   */
  put(account: AccountRecord): PutResult {
    const existing = this.get(account.username);
    let result: PutResult = existing ? "replaced" : "added";
    if (existing) {
      if (accountVersion(existing) === accountVersion(account)) {
        const merged = mergeAccounts(existing, account);
        if (stateOf(merged) === stateOf(existing)) return "present";
        account = merged;
        result = "updated";
      } else if (!winsOver(account, existing)) return "kept";
    }
    this.#db.prepare(
      `INSERT OR REPLACE INTO accounts (username, hash, created_at, keys, ring_key, state)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(
      account.username,
      account.hash,
      account.createdAt,
      account.keys ? JSON.stringify(account.keys) : null,
      this.#ringKeyOf(account.username),
      stateOf(account),
    );
    return result;
  }

  /** Removes the copy of `username` (undoing a registration that did not reach W copies). */
  delete(username: string): void {
    this.#db.prepare("DELETE FROM accounts WHERE username = ?").run(username);
  }

  /** This node's copy of the account of `username`, or undefined. */
  get(username: string): AccountRecord | undefined {
    const row = this.#db.prepare(
      "SELECT username, hash, created_at, keys, state FROM accounts WHERE username = ?",
    ).get(username) as AccountRow | undefined;
    return row && toAccount(row);
  }

  /** The accounts named by `usernames` that this node holds. */
  many(usernames: readonly string[]): AccountRecord[] {
    return usernames.map((u) => this.get(u)).filter((a) => a !== undefined);
  }

  /** Usernames of every account this node holds a copy of, sorted. */
  usernames(): string[] {
    return (this.#db.prepare("SELECT username FROM accounts ORDER BY username").all() as {
      username: string;
    }[]).map((r) => r.username);
  }
}
