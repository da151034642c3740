/**
 * Digests of ring ranges that cost little however much a node holds. Each replicated item
 * (mailbox entry with its `seq`, tombstone, account copy with its state stamp) has a 256-bit hash
 * of its identity; a range's digest is the number of its items and the sum of their hashes
 * modulo 2^256 (a multiset hash: independent of order, so sums of parts add up). Sums are kept
 * in memory per ring key (one user's records) and per bucket of ring keys (the first
 * {@link BUCKET_CHARS} hex digits). Every write logs the identities of the items it added and
 * removed — TEMP triggers, plain SQL in the write's own transaction, so a rolled-back write logs
 * nothing and no write is missed — and a digest first folds the log into the sums: each item
 * written is hashed once, never again per round. A range then adds up the buckets wholly inside
 * it and the keys of the (at most two) buckets its ends cut. Nothing of this is stored on disk:
 * it is built from the rows when first needed.
 */
import type { DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { KeyRange } from "./mailbox.ts";
import type { AccountRow } from "./accounts.ts";

/** Ring-key prefix length of a bucket: 256 buckets. */
export const BUCKET_CHARS = 2;

const MOD = 1n << 256n;

/** The 256-bit hash of an item's identity text, as a BigInt. */
export function itemHash(text: string): bigint {
  return BigInt("0x" + createHash("sha256").update(text).digest("hex"));
}

/**
 * A range's digest from its item count and hash sum, as lowercase hex (both sides of a sync
 * compute it alike).
 */
export function formatDigest(count: number, sum: bigint): string {
  return createHash("sha256").update(`${count}/${sum.toString(16)}`).digest("hex");
}

/** SQL of an item's identity text per table (`r` the row: NEW or OLD). */
const ITEM_TEXT = {
  mailbox: (r: string) => `'m/' || ${r}.recipient || '/' || ${r}.message_id || '/' || ${r}.seq`,
  tombstones: (r: string) => `'t/' || ${r}.recipient || '/' || ${r}.message_id`,
  // An account's identity needs its state stamp, made in JS: its columns are logged.
  accounts: (r: string) =>
    `json_array(${r}.username, ${r}.hash, ${r}.created_at, ${r}.keys, ${r}.state)`,
} as const;

/** Columns whose change changes an item's identity or ring key, per table. */
const IDENTITY_COLUMNS = {
  mailbox: "recipient, message_id, seq, ring_key",
  tombstones: "recipient, message_id, ring_key",
  accounts: "username, hash, created_at, keys, state, ring_key",
} as const;

type Table = keyof typeof ITEM_TEXT;
const TABLES = Object.keys(ITEM_TEXT) as Table[];

interface Sum {
  n: number;
  sum: bigint;
}

/** A log this long is folded at the next write even if no digest asks (memory stays bounded). */
const FOLD_LOG_ABOVE = 50_000;

const bucketOf = (ringKey: string) => ringKey.slice(0, BUCKET_CHARS);

/** Range digests of one node's database (see the module comment). */
export class RangeDigests {
  #db: DatabaseSync;
  #accountItem: (row: AccountRow) => string;
  #ready = false;
  /**
   * `PRAGMA data_version` when the sums were last brought up to date: it changes when another
   * connection (another process: an operator's repair, a restored copy) commits to the file,
   * whose writes no TEMP trigger of this connection saw, so the sums are built again.
   */
  #dataVersion = -1;
  /** Writes since the log's length was last looked at. */
  #writes = 0;
  /** Count and hash sum of the items under each ring key that has any. */
  #byKey = new Map<string, Sum>();
  /** Count and hash sum of each bucket, and its ring keys. */
  #buckets = new Map<string, Sum & { keys: Set<string> }>();

  /**
   * Wraps `db` (migrated); `accountItem` gives an account copy's identity from its row. Built by
   * the first {@link digest}.
   */
  constructor(db: DatabaseSync, accountItem: (row: AccountRow) => string) {
    this.#db = db;
    this.#accountItem = accountItem;
  }

  /** The digest and item count of every item in `range`. */
  digest(range: KeyRange): { digest: string; count: number } {
    const version = this.#version();
    if (!this.#ready || version !== this.#dataVersion) this.#build();
    else this.#fold();
    this.#dataVersion = version;
    let count = 0;
    let sum = 0n;
    const whole = range.start === range.end;
    const bs = bucketOf(range.start);
    const be = bucketOf(range.end);
    const inRange = (key: string) =>
      whole ||
      (range.start < range.end
        ? key > range.start && key <= range.end
        : key > range.start || key <= range.end);
    for (const [bucket, b] of this.#buckets) {
      const cut = !whole && (bucket === bs || bucket === be);
      // Buckets strictly between the buckets of the range's ends lie wholly inside it.
      const inside = whole ||
        (range.start < range.end ? bucket > bs && bucket < be : bucket > bs || bucket < be);
      if (cut) {
        for (const key of b.keys) {
          if (!inRange(key)) continue;
          const k = this.#byKey.get(key)!;
          count += k.n;
          sum += k.sum;
        }
      } else if (inside) {
        count += b.n;
        sum += b.sum;
      }
    }
    return { digest: formatDigest(count, sum % MOD), count };
  }

  /**
   * Told after each committed write: once in a while the log's length is looked at, and a long
   * log is folded even though no digest asked (a node that stopped syncing).
   */
  wrote(): void {
    if (!this.#ready || ++this.#writes < 100) return;
    this.#writes = 0;
    const { n } = this.#db.prepare("SELECT count(*) AS n FROM temp.p2p_digest_log").get() as {
      n: number;
    };
    if (Number(n) > FOLD_LOG_ABOVE) this.#fold();
  }

  #version(): number {
    const row = this.#db.prepare("PRAGMA data_version").get() as { data_version: number };
    return Number(row.data_version);
  }

  /** Sums every row, then installs the triggers that log each change (once). */
  #build(): void {
    const db = this.#db;
    // An INSERT OR REPLACE deletes the row it replaces: its DELETE trigger must run.
    db.exec("PRAGMA recursive_triggers = ON");
    db.exec(`CREATE TEMP TABLE IF NOT EXISTS p2p_digest_log (
      ring_key TEXT NOT NULL,
      kind     TEXT NOT NULL,
      item     TEXT NOT NULL,
      sign     INTEGER NOT NULL
    )`);
    db.exec("DELETE FROM temp.p2p_digest_log");
    const sums = new Map<string, Sum>();
    for (const table of TABLES) {
      const rows = db.prepare(
        `SELECT ring_key, ${ITEM_TEXT[table]("t")} AS item FROM ${table} AS t`,
      ).all() as { ring_key: string; item: string }[];
      for (const r of rows) {
        let s = sums.get(r.ring_key);
        if (!s) sums.set(r.ring_key, s = { n: 0, sum: 0n });
        s.n++;
        s.sum += this.#hashOf(table, r.item);
      }
    }
    this.#byKey.clear();
    this.#buckets.clear();
    for (const [key, s] of sums) this.#add(key, s.n, s.sum % MOD);
    const log = (r: "NEW" | "OLD", table: Table, sign: 1 | -1) =>
      `INSERT INTO temp.p2p_digest_log (ring_key, kind, item, sign)
       VALUES (${r}.ring_key, '${table}', ${ITEM_TEXT[table](r)}, ${sign});`;
    for (const table of TABLES) {
      db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_digest_${table}_insert
        AFTER INSERT ON main.${table} BEGIN ${log("NEW", table, 1)} END`);
      db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_digest_${table}_delete
        AFTER DELETE ON main.${table} BEGIN ${log("OLD", table, -1)} END`);
      db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_digest_${table}_update
        AFTER UPDATE OF ${IDENTITY_COLUMNS[table]} ON main.${table}
        BEGIN ${log("OLD", table, -1)} ${log("NEW", table, 1)} END`);
    }
    this.#ready = true;
  }

  /** Adds the logged changes to the sums and empties the log. */
  #fold(): void {
    const rows = this.#db.prepare(
      "SELECT ring_key, kind, item, sign FROM temp.p2p_digest_log ORDER BY rowid",
    ).all() as { ring_key: string; kind: Table; item: string; sign: number }[];
    if (!rows.length) return;
    this.#db.exec("DELETE FROM temp.p2p_digest_log");
    for (const r of rows) {
      const h = this.#hashOf(r.kind, r.item);
      if (Number(r.sign) > 0) this.#add(r.ring_key, 1, h);
      else this.#add(r.ring_key, -1, (MOD - h) % MOD);
    }
  }

  /** The hash of an item as its table's identity SQL gives it. */
  #hashOf(table: Table, item: string): bigint {
    if (table !== "accounts") return itemHash(item);
    const [username, hash, createdAt, keys, state] = JSON.parse(item) as [
      string,
      string,
      number,
      string | null,
      string | null,
    ];
    const row = { username, hash, created_at: createdAt, keys, state };
    return itemHash(`a/${username}/${this.#accountItem(row)}`);
  }

  /** Adds `n` items of hash sum `sum` (mod 2^256; a removal adds its negation) under `key`. */
  #add(key: string, n: number, sum: bigint): void {
    const bucketKey = bucketOf(key);
    let bucket = this.#buckets.get(bucketKey);
    if (!bucket) this.#buckets.set(bucketKey, bucket = { n: 0, sum: 0n, keys: new Set() });
    const k = this.#byKey.get(key) ?? { n: 0, sum: 0n };
    k.n += n;
    k.sum = (k.sum + sum) % MOD;
    bucket.n += n;
    bucket.sum = (bucket.sum + sum) % MOD;
    if (k.n === 0 && k.sum === 0n) {
      this.#byKey.delete(key);
      bucket.keys.delete(key);
    } else {
      this.#byKey.set(key, k);
      bucket.keys.add(key);
    }
    if (bucket.keys.size === 0 && bucket.n === 0) this.#buckets.delete(bucketKey);
  }
}
