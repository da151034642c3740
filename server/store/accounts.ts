/**
 * Accounts in the node's SQLite database: username → bcrypt hash of the login secret, public keys
 * and wrapped private keys. An account lives on the primary of its ring key and K successors;
 * `held_as` records which role this node has. Accounts never change once created, except when
 * two servers registered the same name on both sides of a network partition: then the older
 * registration (smaller `createdAt`, then smaller hash) wins on every copy, so replicas converge.
 */
import type { DatabaseSync } from "node:sqlite";
import type { AccountRecord } from "../../shared/mod.ts";

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

type AccountRow = { username: string; hash: string; created_at: number; keys: string | null };

function toAccount(row: AccountRow): AccountRecord {
  const account: AccountRecord = {
    username: row.username,
    hash: row.hash,
    createdAt: row.created_at,
  };
  if (row.keys) account.keys = JSON.parse(row.keys);
  return account;
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

/** What {@link AccountStore.put} did with one account. */
export type PutResult = "added" | "present" | "replaced" | "kept";

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
    if (existing) {
      if (accountVersion(existing) === accountVersion(account)) return "present";
      if (!winsOver(account, existing)) return "kept";
    }
    this.#db.prepare(
      `INSERT OR REPLACE INTO accounts (username, hash, created_at, keys, ring_key)
       VALUES (?, ?, ?, ?, ?)`,
    ).run(
      account.username,
      account.hash,
      account.createdAt,
      account.keys ? JSON.stringify(account.keys) : null,
      this.#ringKeyOf(account.username),
    );
    return existing ? "replaced" : "added";
  }

  /** Removes the copy of `username` (undoing a registration that did not reach W copies). */
  delete(username: string): void {
    this.#db.prepare("DELETE FROM accounts WHERE username = ?").run(username);
  }

  /** This node's copy of the account of `username`, or undefined. */
  get(username: string): AccountRecord | undefined {
    const row = this.#db.prepare(
      "SELECT username, hash, created_at, keys FROM accounts WHERE username = ?",
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
