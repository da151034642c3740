/**
 * The account table in the node's SQLite database: username → bcrypt hash of the secret.
 * Inserts are idempotent so a replicated copy arriving twice changes nothing.
 */
import { DatabaseSync } from "node:sqlite";
import type { AccountRecord } from "../../shared/mod.ts";
import { MAILBOX_SCHEMA, MailboxStore } from "./mailbox.ts";

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE accounts (
     username   TEXT PRIMARY KEY,
     hash       TEXT NOT NULL,
     created_at INTEGER NOT NULL
   ) STRICT`,
  MAILBOX_SCHEMA,
  // Public keys and password-wrapped private keys (JSON of AccountKeys), null for old accounts.
  `ALTER TABLE accounts ADD COLUMN keys TEXT`,
];

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

/** Durable storage of one server node: accounts and offline mailboxes. */
export class NodeStore {
  #db: DatabaseSync;
  /** Offline mailbox entries and tombstones. */
  readonly mailbox: MailboxStore;

  /** Opens (creating and migrating if needed) the database at `path`; ":memory:" for tests. */
  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec("PRAGMA journal_mode = WAL");
    // Durable means committed with synchronous=FULL (DESIGN §7).
    this.#db.exec("PRAGMA synchronous = FULL");
    this.#db.exec("PRAGMA busy_timeout = 5000");
    this.#migrate();
    this.mailbox = new MailboxStore(this.#db);
  }

  #migrate(): void {
    const row = this.#db.prepare("PRAGMA user_version").get() as { user_version: number };
    for (let v = row.user_version; v < MIGRATIONS.length; v++) {
      this.#db.exec("BEGIN");
      try {
        this.#db.exec(MIGRATIONS[v]!);
        this.#db.exec(`PRAGMA user_version = ${v + 1}`);
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    }
  }

  /** Inserts an account; returns false (and changes nothing) when the username exists. */
  insertAccount(account: AccountRecord): boolean {
    const result = this.#db.prepare(
      "INSERT OR IGNORE INTO accounts (username, hash, created_at, keys) VALUES (?, ?, ?, ?)",
    ).run(
      account.username,
      account.hash,
      account.createdAt,
      account.keys ? JSON.stringify(account.keys) : null,
    );
    return Number(result.changes) === 1;
  }

  /** Removes an account (undoing a registration that did not reach enough copies). */
  deleteAccount(username: string): void {
    this.#db.prepare("DELETE FROM accounts WHERE username = ?").run(username);
  }

  /** The account of `username`, or undefined. */
  getAccount(username: string): AccountRecord | undefined {
    const row = this.#db.prepare(
      "SELECT username, hash, created_at, keys FROM accounts WHERE username = ?",
    ).get(username) as AccountRow | undefined;
    return row && toAccount(row);
  }

  /** Every account, ordered by username. */
  listAccounts(): AccountRecord[] {
    const rows = this.#db.prepare(
      "SELECT username, hash, created_at, keys FROM accounts ORDER BY username",
    ).all() as AccountRow[];
    return rows.map(toAccount);
  }

  /** Number of accounts held. */
  countAccounts(): number {
    const row = this.#db.prepare("SELECT count(*) AS n FROM accounts").get() as { n: number };
    return Number(row.n);
  }

  /** Closes the database. */
  close(): void {
    this.#db.close();
  }
}
