/**
 * The durable storage of one server node: accounts, presence and offline mailboxes in one SQLite
 * database (WAL, synchronous=FULL), migrated by `PRAGMA user_version`. Every replicated record
 * carries the ring key of its user, so replication can list, digest, move and drop the records
 * of a ring range without knowing their kinds.
 */
import { DatabaseSync } from "node:sqlite";
import {
  ACCOUNT_RING_SCHEMA,
  ACCOUNT_STATE_SCHEMA,
  accountItemId,
  type AccountRow,
  AccountStore,
  backfillAccountRingKeys,
  toAccount,
} from "./accounts.ts";
import type { AccountRecord } from "../../shared/mod.ts";
import {
  type ItemKey,
  type KeyRange,
  MAILBOX_BY_SENDER_SCHEMA,
  MAILBOX_SCHEMA,
  type MailboxEntry,
  MailboxStore,
  markHeldAs,
  rangeWhere,
  type Tombstone,
} from "./mailbox.ts";
import { PRESENCE_SCHEMA, PresenceStore } from "./presence.ts";
import { RangeDigests } from "./digest.ts";
import { userRingKey } from "./ring_key.ts";
import { cacheStatements } from "./statement_cache.ts";
import { type SyncableFile, WalSync } from "./wal_sync.ts";

type Migration =
  | string
  | ((db: DatabaseSync, options: { ringKeyOf: (username: string) => string }) => void);

/** Options of a {@link NodeStore}. */
export interface NodeStoreOptions {
  /**
   * Ring key of a user's records; must be the key the ring looks up. @default userRingKey (the
   * 160-bit ring of real servers)
   */
  ringKeyOf?: (username: string) => string;
  /**
   * The handle whose `syncData` makes commits durable (see wal_sync.ts). @default the database's
   * WAL file, opened; none for ":memory:". Tests pass one to watch or hold the syncs.
   */
  walFile?: SyncableFile;
}

const MIGRATIONS: readonly Migration[] = [
  `CREATE TABLE accounts (
     username   TEXT PRIMARY KEY,
     hash       TEXT NOT NULL,
     created_at INTEGER NOT NULL
   ) STRICT`,
  MAILBOX_SCHEMA,
  // Public keys and password-wrapped private keys (JSON of AccountKeys), null for old accounts.
  `ALTER TABLE accounts ADD COLUMN keys TEXT`,
  // Accounts placed on the ring (ring key, primary or replica) and presence records.
  (db, options) => {
    db.exec(ACCOUNT_RING_SCHEMA);
    backfillAccountRingKeys(db, options.ringKeyOf);
    db.exec(PRESENCE_SCHEMA);
  },
  // The per-sender quota counts one sender's entries in a mailbox on every put.
  `CREATE INDEX mailbox_by_sender ON mailbox (recipient, sender)`,
  // The changing state of accounts: salt, rekey, newest session.
  ACCOUNT_STATE_SCHEMA,
  // The per-sender quotas read count and envelope characters from one index.
  MAILBOX_BY_SENDER_SCHEMA,
  // Every address this database was served under (a restart may come on another port).
  `CREATE TABLE own_addresses (
     address    TEXT PRIMARY KEY,
     first_seen INTEGER NOT NULL
   ) STRICT`,
];

/** Replicated records as they travel between nodes (push, anti-entropy). */
export interface RingItems {
  entries: MailboxEntry[];
  tombstones: Tombstone[];
  accounts: AccountRecord[];
}

/** A registration this node held that lost to an older one of the same name. */
export interface AccountReplacement {
  winner: AccountRecord;
  loser: AccountRecord;
}

/** Durable storage of one server node. */
export class NodeStore {
  #db: DatabaseSync;
  /** Accounts (registry) this node holds as primary or replica. */
  readonly accounts: AccountStore;
  /** Presence records (soft state with a time to live). */
  readonly presence: PresenceStore;
  /** Offline mailbox entries and tombstones. */
  readonly mailbox: MailboxStore;
  #digests: RangeDigests;
  #wal: WalSync | undefined;

  /** Opens (creating and migrating if needed) the database at `path`; ":memory:" for tests. */
  constructor(path: string, options: NodeStoreOptions = {}) {
    const resolved = { ringKeyOf: options.ringKeyOf ?? userRingKey };
    // Statements are prepared once per SQL text (see statement_cache.ts).
    this.#db = cacheStatements(new DatabaseSync(path));
    this.#db.exec("PRAGMA journal_mode = WAL");
    // Durable means committed with synchronous=FULL (DESIGN §7).
    this.#db.exec("PRAGMA synchronous = FULL");
    this.#db.exec("PRAGMA busy_timeout = 5000");
    this.#migrate(resolved);
    this.accounts = new AccountStore(this.#db, resolved.ringKeyOf);
    this.presence = new PresenceStore(this.#db);
    this.#digests = new RangeDigests(this.#db, (row) => accountItemId(toAccount(row)));
    // A database in memory has no disk to wait for.
    this.#wal = options.walFile
      ? new WalSync(options.walFile)
      : path === ":memory:"
      ? undefined
      : WalSync.open(path);
    this.mailbox = new MailboxStore(this.#db, () => this.#digests.wrote(), this.#wal);
  }

  #migrate(options: { ringKeyOf: (username: string) => string }): void {
    const row = this.#db.prepare("PRAGMA user_version").get() as { user_version: number };
    for (let v = row.user_version; v < MIGRATIONS.length; v++) {
      this.#db.exec("BEGIN");
      try {
        const step = MIGRATIONS[v]!;
        if (typeof step === "string") this.#db.exec(step);
        else step(this.#db, options);
        this.#db.exec(`PRAGMA user_version = ${v + 1}`);
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    }
  }

  // --- every replicated record of a ring range (accounts, mailbox entries, tombstones) -------

  /** Every item in `range`, sorted: the input of anti-entropy. */
  itemKeys(range: KeyRange): ItemKey[] {
    const { sql, params } = rangeWhere(range);
    const accounts = (this.#db.prepare(
      `SELECT username, hash, created_at, keys, state FROM accounts WHERE ${sql}`,
    ).all(...params) as unknown as AccountRow[]).map((r): ItemKey => [
      "a",
      r.username,
      accountItemId(toAccount(r)),
    ]);
    const all = [...this.mailbox.itemKeys(range), ...accounts];
    return all.sort((a, b) =>
      a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : a[0] < b[0] ? -1 : 1
    );
  }

  /**
   * A digest of every item in `range`: equal digests mean equal contents. Kept up to date on
   * every write (see {@link RangeDigests}), so it costs about the same however much is held.
   */
  digest(range: KeyRange): { digest: string; count: number } {
    return this.#digests.digest(range);
  }

  /** Marks records in `primary` as held as the primary copy and every other one as a replica. */
  markPrimary(primary: KeyRange): void {
    this.mailbox.markPrimary(primary);
    markHeldAs(this.#db, "accounts", primary);
  }

  /** The records named by `keys` that this node holds, as they travel between nodes. */
  items(keys: readonly ItemKey[]): RingItems {
    const pairs = (kind: "m" | "t") =>
      keys.filter((k) => k[0] === kind).map((k): [string, string] => [k[1], k[2]]);
    return {
      entries: this.mailbox.entries(pairs("m")),
      tombstones: this.mailbox.tombstones(pairs("t")),
      accounts: this.accounts.many(keys.filter((k) => k[0] === "a").map((k) => k[1])),
    };
  }

  /**
   * Stores records received from another node: idempotent, a tombstone beats its entry, of two
   * copies of an entry the smaller seq is kept, and of two registrations of a name the older.
   * Returns how many records were offered and which accounts this node's copy lost to them.
   */
  putItems(items: Partial<RingItems>): { offered: number; replaced: AccountReplacement[] } {
    const { entries = [], tombstones = [], accounts = [] } = items;
    this.mailbox.insert(entries);
    this.mailbox.tombstone(tombstones);
    const replaced: AccountReplacement[] = [];
    for (const a of accounts) {
      const before = this.accounts.get(a.username);
      if (this.accounts.put(a) === "replaced" && before) {
        replaced.push({ winner: a, loser: before });
      }
    }
    return { offered: entries.length + tombstones.length + accounts.length, replaced };
  }

  /** Ring key and identity of every item outside `keep`. */
  itemKeysOutside(keep: KeyRange): [string, ItemKey][] {
    if (keep.start === keep.end) return [];
    const { sql, params } = rangeWhere(keep);
    const accounts = (this.#db.prepare(
      `SELECT ring_key, username FROM accounts WHERE NOT ${sql}`,
    ).all(...params) as { ring_key: string; username: string }[])
      .map((r): [string, ItemKey] => [
        r.ring_key,
        ["a", r.username, accountItemId(this.accounts.get(r.username)!)],
      ]);
    return [...this.mailbox.itemKeysOutside(keep), ...accounts];
  }

  /** Deletes every record under `ringKey` (after hand-off); returns the count. */
  deleteRingKey(ringKey: string): number {
    const accounts = Number(
      this.#db.prepare("DELETE FROM accounts WHERE ring_key = ?").run(ringKey).changes,
    );
    return accounts + this.mailbox.deleteRingKey(ringKey);
  }

  /**
   * Remembers that this database is served at `address` (durably, once per address), and returns
   * every address it has been served at, `address` among them: a restart on another port still
   * knows its earlier addresses for its own.
   */
  noteOwnAddress(address: string, now = Date.now()): string[] {
    this.#db.prepare("INSERT OR IGNORE INTO own_addresses (address, first_seen) VALUES (?, ?)")
      .run(address, now);
    return this.ownAddresses();
  }

  /** Every address this database has been served at, oldest first. */
  ownAddresses(): string[] {
    return (this.#db.prepare("SELECT address FROM own_addresses ORDER BY first_seen, address")
      .all() as { address: string }[]).map((r) => r.address);
  }

  /** Counts of account copies by role, for `/metrics`. */
  accountCounts(): { primary: number; replica: number } {
    const rows = this.#db.prepare("SELECT held_as, count(*) AS n FROM accounts GROUP BY held_as")
      .all() as { held_as: string; n: number }[];
    const of = (role: string) => Number(rows.find((r) => r.held_as === role)?.n ?? 0);
    return { primary: of("primary"), replica: of("replica") };
  }

  /** How many accounts, presence records and pending mailbox entries this node holds (counts only). */
  recordCounts(): { accounts: number; presence: number; mailbox: number } {
    const count = (table: string) =>
      Number((this.#db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n);
    return { accounts: count("accounts"), presence: count("presence"), mailbox: count("mailbox") };
  }

  /** Closes the database. */
  close(): void {
    void this.#wal?.close();
    this.#db.close();
  }
}
