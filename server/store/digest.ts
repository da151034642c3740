/**
 * Digests of ring ranges that cost little however much a node holds. Each replicated item
 * (mailbox entry with its `seq`, tombstone, account copy with its state stamp) has a 256-bit hash
 * of its identity; a range's digest is the number of its items and the sum of their hashes
 * modulo 2^256 (a multiset hash: independent of order, so sums of parts add up). Sums are kept
 * in memory per ring key (one user's records) and per bucket of ring keys (the first
 * {@link BUCKET_CHARS} hex digits). Every write marks the ring keys it touched dirty — TEMP
 * triggers, plain SQL in the write's own transaction, so a rolled-back write marks nothing it
 * did not do and no write is missed — and a digest first hashes again the items of the dirty
 * keys only. A range then adds up the buckets wholly inside it and the keys of the (at most two)
 * buckets its ends cut. Nothing of this is stored on disk: it is built from the rows when first
 * needed.
 */
import type { DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { KeyRange } from "./mailbox.ts";
import type { AccountRow } from "./accounts.ts";

/** Ring-key prefix length of a bucket: 256 buckets. */
export const BUCKET_CHARS = 2;

const MOD = 1n << 256n;

/** The points `splitRange` cuts at: the boundaries between first hex digits of ring keys. */
const HEX_POINTS = Array.from({ length: 16 }, (_, i) => i.toString(16));

/**
 * `range` cut at every one of `points` that lies strictly inside it, in ring order: pieces whose
 * union is the range, none overlapping. A point `p` ends the piece of the keys up to `p`: with
 * one hex digit, the keys that start with the digit before it (ring keys are fixed-width hex).
 */
export function splitRange(range: KeyRange, points: readonly string[] = HEX_POINTS): KeyRange[] {
  const { start, end } = range;
  const whole = start === end;
  const inside = (p: string) =>
    p !== end && p !== start &&
    (whole || (start < end ? p > start && p < end : p > start || p < end));
  // In ring order from the start: points after it first, then those that wrap around.
  const cuts = [...new Set(points)].filter(inside).sort();
  const after = cuts.filter((p) => p > start);
  const ordered = [...after, ...cuts.filter((p) => p <= start)];
  if (!ordered.length) return [range];
  const pieces: KeyRange[] = [];
  let from = start;
  for (const p of ordered) {
    pieces.push({ start: from, end: p });
    from = p;
  }
  pieces.push({ start: from, end });
  return pieces;
}

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

/** SQL of an item's identity text per table (`t` the row); accounts finish theirs in JS. */
const ITEM_TEXT = {
  mailbox: "'m/' || t.recipient || '/' || t.message_id || '/' || t.seq",
  tombstones: "'t/' || t.recipient || '/' || t.message_id",
} as const;

/** Columns whose change changes an item's identity or ring key, per table. */
const IDENTITY_COLUMNS = {
  mailbox: "recipient, message_id, seq, ring_key",
  tombstones: "recipient, message_id, ring_key",
  accounts: "username, hash, created_at, keys, state, ring_key",
} as const;

type Table = keyof typeof IDENTITY_COLUMNS;
const TABLES = Object.keys(IDENTITY_COLUMNS) as Table[];

interface Sum {
  n: number;
  sum: bigint;
}

const ZERO: Sum = { n: 0, sum: 0n };

/** More dirty ring keys than this are hashed again in one pass over every row. */
const REHASH_ALL_ABOVE = 256;

const bucketOf = (ringKey: string) => ringKey.slice(0, BUCKET_CHARS);

/** Range digests of one node's database (see the module comment). */
export class RangeDigests {
  #db: DatabaseSync;
  #accountItem: (row: AccountRow) => string;
  #ready = false;
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
    this.#refresh();
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

  /** Builds the sums once (installing the triggers), then hashes the dirty ring keys again. */
  #refresh(): void {
    const db = this.#db;
    if (!this.#ready) {
      db.exec(`CREATE TEMP TABLE IF NOT EXISTS p2p_dirty_keys (ring_key TEXT PRIMARY KEY)`);
      const mark = (r: "NEW" | "OLD") =>
        // (Not INSERT OR IGNORE: in a trigger the outer statement's conflict policy wins.)
        `INSERT INTO temp.p2p_dirty_keys (ring_key) SELECT ${r}.ring_key
         WHERE NOT EXISTS (SELECT 1 FROM temp.p2p_dirty_keys WHERE ring_key = ${r}.ring_key);`;
      for (const table of TABLES) {
        db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_dirty_${table}_insert
          AFTER INSERT ON main.${table} BEGIN ${mark("NEW")} END`);
        db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_dirty_${table}_delete
          AFTER DELETE ON main.${table} BEGIN ${mark("OLD")} END`);
        db.exec(`CREATE TEMP TRIGGER IF NOT EXISTS p2p_dirty_${table}_update
          AFTER UPDATE OF ${IDENTITY_COLUMNS[table]} ON main.${table}
          BEGIN ${mark("OLD")} ${mark("NEW")} END`);
      }
      this.#ready = true;
      this.#byKey.clear();
      this.#buckets.clear();
      this.#rehash(undefined);
      db.exec("DELETE FROM temp.p2p_dirty_keys");
      return;
    }
    const dirty = (db.prepare("SELECT ring_key FROM temp.p2p_dirty_keys").all() as {
      ring_key: string;
    }[]).map((r) => r.ring_key);
    if (!dirty.length) return;
    db.exec("DELETE FROM temp.p2p_dirty_keys");
    this.#rehash(dirty);
  }

  /** Hashes again every item under `ringKeys` (every item of the database if undefined). */
  #rehash(ringKeys: readonly string[] | undefined): void {
    // Many dirty keys: one pass over every row costs less than one query per key.
    if (ringKeys && ringKeys.length > REHASH_ALL_ABOVE) ringKeys = undefined;
    const where = ringKeys === undefined ? "" : "WHERE ring_key = ?";
    const statements = {
      mailbox: this.#db.prepare(
        `SELECT ring_key, ${ITEM_TEXT.mailbox} AS text FROM mailbox AS t ${where}`,
      ),
      tombstones: this.#db.prepare(
        `SELECT ring_key, ${ITEM_TEXT.tombstones} AS text FROM tombstones AS t ${where}`,
      ),
      accounts: this.#db.prepare(
        `SELECT ring_key, username, hash, created_at, keys, state FROM accounts ${where}`,
      ),
    };
    const sums = new Map<string, Sum>();
    const add = (key: string, text: string) => {
      let s = sums.get(key);
      if (!s) sums.set(key, s = { n: 0, sum: 0n });
      s.n++;
      s.sum += itemHash(text);
    };
    const read = (params: string[]) => {
      for (const table of ["mailbox", "tombstones"] as const) {
        const rows = statements[table].all(...params) as { ring_key: string; text: string }[];
        for (const r of rows) add(r.ring_key, r.text);
      }
      const accounts = statements.accounts.all(...params) as unknown as (AccountRow & {
        ring_key: string;
      })[];
      for (const r of accounts) add(r.ring_key, `a/${r.username}/${this.#accountItem(r)}`);
    };
    if (ringKeys === undefined) {
      read([]);
      for (const key of [...this.#byKey.keys()]) if (!sums.has(key)) this.#set(key, ZERO);
    } else {
      for (const key of ringKeys) {
        sums.set(key, { n: 0, sum: 0n });
        read([key]);
      }
    }
    for (const [key, s] of sums) this.#set(key, { n: s.n, sum: s.sum % MOD });
  }

  /** Replaces the sum of `key` (and its share of its bucket). */
  #set(key: string, next: Sum): void {
    const bucketKey = bucketOf(key);
    let bucket = this.#buckets.get(bucketKey);
    if (!bucket) this.#buckets.set(bucketKey, bucket = { n: 0, sum: 0n, keys: new Set() });
    const before = this.#byKey.get(key);
    if (before) {
      bucket.n -= before.n;
      bucket.sum = (bucket.sum - before.sum + MOD) % MOD;
    }
    if (next.n === 0) {
      this.#byKey.delete(key);
      bucket.keys.delete(key);
    } else {
      this.#byKey.set(key, next);
      bucket.keys.add(key);
      bucket.n += next.n;
      bucket.sum = (bucket.sum + next.sum) % MOD;
    }
    if (bucket.keys.size === 0) this.#buckets.delete(bucketKey);
  }
}
