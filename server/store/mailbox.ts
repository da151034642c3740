/**
 * Offline mailboxes in the node's SQLite database: `(recipient, messageId)` → encrypted
 * envelope, plus tombstones for entries the recipient acknowledged. Inserts are idempotent and
 * never resurrect a tombstoned entry; every row carries its ring key (fixed-width lowercase hex,
 * so string order is ring order) so that ranges can be listed, digested and moved as the ring
 * changes. Whether a row is held as the primary copy or as a replica is recorded in `held_as`.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { WalSync } from "./wal_sync.ts";

/** One stored offline message. */
export interface MailboxEntry {
  recipient: string;
  messageId: string;
  /** Ring key of the recipient (hex id of "user:" + recipient). */
  ringKey: string;
  sender: string;
  /** The sender's clock, for display only. */
  sentAt: number;
  /** The coordinator's hybrid logical clock: delivery order within a mailbox. */
  seq: number;
  /** The encrypted envelope, opaque to servers. */
  envelope: string;
}

/** An acknowledged (deleted) entry; kept so a late replica copy cannot bring it back. */
export interface Tombstone {
  recipient: string;
  messageId: string;
  ringKey: string;
  deletedAt: number;
}

/** A half-open ring range `(start, end]` of hex keys; `start === end` is the whole ring. */
export interface KeyRange {
  start: string;
  end: string;
}

/**
 * Identity of an item for anti-entropy: kind, user and id. Kinds: `m` a mailbox entry and `t` a
 * tombstone (recipient, message id); `a` an account (username, version). A mailbox entry also
 * carries its `seq`, so two copies that disagree on the order of a message differ in the digest
 * and are reconciled (the smaller `seq` wins on every copy).
 */
export type ItemKey = [kind: "m" | "t" | "a", user: string, id: string, seq?: number];

/**
 * SQL of a migration: the per-sender index also holds each envelope's length, so the per-sender
 * quotas (count and characters) are read from the index without touching the envelopes.
 */
export const MAILBOX_BY_SENDER_SCHEMA = `
  DROP INDEX mailbox_by_sender;
  CREATE INDEX mailbox_by_sender ON mailbox (recipient, sender, length(envelope));
`;

/**
 * SQL of {@link MailboxStore.countPendingFrom}: answered from the index mailbox_by_sender alone
 * (it holds `length(envelope)`).
 */
export const PENDING_FROM_SQL = `SELECT count(*) AS n, total(length(envelope)) AS chars
  FROM mailbox WHERE recipient = ? AND sender = ?`;

/** SQL for the mailbox tables (migration 2). */
export const MAILBOX_SCHEMA = `
  CREATE TABLE mailbox (
    recipient  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    ring_key   TEXT NOT NULL,
    sender     TEXT NOT NULL,
    sent_at    INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    envelope   TEXT NOT NULL,
    held_as    TEXT NOT NULL DEFAULT 'replica' CHECK (held_as IN ('primary', 'replica')),
    PRIMARY KEY (recipient, message_id)
  ) STRICT;
  CREATE INDEX mailbox_by_ring_key ON mailbox (ring_key);
  CREATE TABLE tombstones (
    recipient  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    ring_key   TEXT NOT NULL,
    deleted_at INTEGER NOT NULL,
    PRIMARY KEY (recipient, message_id)
  ) STRICT;
  CREATE INDEX tombstones_by_ring_key ON tombstones (ring_key);
`;

/** A row of the `mailbox` table. */
export type MailboxRow = {
  recipient: string;
  message_id: string;
  ring_key: string;
  sender: string;
  sent_at: number;
  seq: number;
  envelope: string;
};
type Row = MailboxRow;

/** A row of the `tombstones` table. */
export type TombstoneRow = {
  recipient: string;
  message_id: string;
  ring_key: string;
  deleted_at: number;
};

/** The tombstone a row of the `tombstones` table holds. */
export function toTombstone(r: TombstoneRow): Tombstone {
  return {
    recipient: r.recipient,
    messageId: r.message_id,
    ringKey: r.ring_key,
    deletedAt: r.deleted_at,
  };
}

/** The entry a row of the `mailbox` table holds. */
export function toEntry(r: MailboxRow): MailboxEntry {
  return {
    recipient: r.recipient,
    messageId: r.message_id,
    ringKey: r.ring_key,
    sender: r.sender,
    sentAt: r.sent_at,
    seq: r.seq,
    envelope: r.envelope,
  };
}

/** SQL condition (and its parameters) selecting `ring_key` in a ring range. */
export function rangeWhere(range: KeyRange): { sql: string; params: string[] } {
  if (range.start === range.end) return { sql: "1", params: [] };
  if (range.start < range.end) {
    return { sql: "(ring_key > ? AND ring_key <= ?)", params: [range.start, range.end] };
  }
  return { sql: "(ring_key > ? OR ring_key <= ?)", params: [range.start, range.end] };
}

/**
 * Sets `held_as` of every row of `table` (which has `ring_key` and `held_as` columns): `primary`
 * inside `primary`, `replica` elsewhere; rows already right are not written.
 */
export function markHeldAs(db: DatabaseSync, table: "mailbox" | "accounts", primary: KeyRange) {
  const { sql, params } = rangeWhere(primary);
  db.prepare(
    `UPDATE ${table} SET held_as = CASE WHEN ${sql} THEN 'primary' ELSE 'replica' END
     WHERE held_as <> CASE WHEN ${sql} THEN 'primary' ELSE 'replica' END`,
  ).run(...params, ...params);
}

/**
 * What a node keeps (see {@link MailboxStore.retain}): entries whose `seq` is at least
 * `oldestSeq()`, tombstones whose `deletedAt` is at least `oldestTombstone()`.
 */
export interface Retention {
  oldestSeq(): number;
  oldestTombstone(): number;
}

/**
 * `syncLater`: commit without waiting for the disk (synchronous=NORMAL for this transaction; a
 * kill -9 loses nothing); the write is durable once {@link MailboxStore.synced} resolves, and
 * must not be acknowledged before.
 */
export interface DeferOption {
  syncLater?: boolean;
}

/** Mailbox entries and tombstones of one node. */
export class MailboxStore {
  #db: DatabaseSync;
  #insert: StatementSync;
  #tombstone: StatementSync;
  #deleteEntry: StatementSync;
  #getEntry: StatementSync;
  #getSeq: StatementSync;
  #countPending: StatementSync;
  #countPendingFrom: StatementSync;
  #insertedRows = 0;
  #insertedChars = 0;
  #pending: StatementSync;
  #pendingIds: StatementSync;
  #deletedOf: StatementSync;
  #getTombstone: StatementSync;
  #collect: StatementSync;

  #afterCommit: () => void;
  #wal: WalSync | undefined;
  #retention: Retention = { oldestSeq: () => -Infinity, oldestTombstone: () => -Infinity };
  #droppedTooOld = 0;

  /**
   * Wraps an open, migrated database; `afterCommit` is told after each committed write. With
   * `wal`, {@link insertDurably} and {@link tombstoneDurably} wait for the disk off the event loop.
   */
  constructor(db: DatabaseSync, afterCommit: () => void = () => {}, wal?: WalSync) {
    this.#db = db;
    this.#afterCommit = afterCommit;
    this.#wal = wal;
    // A copy that arrives with a smaller seq than the one held lowers it: copies of a message
    // stored by two coordinators (a retry across a ring change) converge on the smaller seq.
    this.#insert = db.prepare(
      `INSERT INTO mailbox
         (recipient, message_id, ring_key, sender, sent_at, seq, envelope)
       SELECT ?, ?, ?, ?, ?, ?, ?
       WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE recipient = ? AND message_id = ?)
       ON CONFLICT (recipient, message_id) DO UPDATE SET seq = excluded.seq
         WHERE excluded.seq < mailbox.seq`,
    );
    this.#tombstone = db.prepare(
      `INSERT OR IGNORE INTO tombstones (recipient, message_id, ring_key, deleted_at)
       VALUES (?, ?, ?, ?)`,
    );
    this.#deleteEntry = db.prepare("DELETE FROM mailbox WHERE recipient = ? AND message_id = ?");
    this.#getEntry = db.prepare("SELECT * FROM mailbox WHERE recipient = ? AND message_id = ?");
    this.#getSeq = db.prepare("SELECT seq FROM mailbox WHERE recipient = ? AND message_id = ?");
    this.#countPending = db.prepare("SELECT count(*) AS n FROM mailbox WHERE recipient = ?");
    this.#countPendingFrom = db.prepare(PENDING_FROM_SQL);
    this.#pending = db.prepare(
      `SELECT * FROM mailbox WHERE recipient = ? AND seq >= ? ORDER BY seq, message_id LIMIT ?`,
    );
    this.#getTombstone = db.prepare(
      "SELECT * FROM tombstones WHERE recipient = ? AND message_id = ?",
    );
    this.#collect = db.prepare("DELETE FROM tombstones WHERE deleted_at < ?");
    // Read from the primary key's index alone: no envelope is touched.
    this.#pendingIds = db.prepare("SELECT message_id FROM mailbox WHERE recipient = ?");
    this.#deletedOf = db.prepare(
      `SELECT message_id FROM tombstones
       WHERE recipient = ? AND message_id IN (SELECT value FROM json_each(?))`,
    );
  }

  /**
   * Stores entries in one durable transaction (group commit). Returns how many were new or
   * changed; an entry already present changes only by taking a smaller `seq`, an entry already
   * tombstoned changes nothing, and one older than the retention (see {@link retain}) is dropped.
   */
  insert(offered: readonly MailboxEntry[], options: DeferOption = {}): number {
    const deferSync = options.syncLater === true && this.#wal !== undefined;
    const oldestSeq = this.#retention.oldestSeq();
    // An entry past the retention is never stored, whoever offers it (a late replica copy, a
    // repair from a node restarted from an old disk): its tombstone may have been collected.
    const entries = offered.filter((e) => e.seq >= oldestSeq);
    this.#droppedTooOld += offered.length - entries.length;
    if (entries.length === 0) return 0;
    // Counted as offered, before the transaction: never less than what it adds.
    this.#insertedRows += entries.length;
    for (const e of entries) this.#insertedChars += e.envelope.length;
    let added = 0;
    this.#transaction(() => {
      for (const e of entries) {
        const r = this.#insert.run(
          e.recipient,
          e.messageId,
          e.ringKey,
          e.sender,
          e.sentAt,
          e.seq,
          e.envelope,
          e.recipient,
          e.messageId,
        );
        added += Number(r.changes);
      }
    }, deferSync);
    return added;
  }

  /**
   * Entries (and their envelope characters) offered to {@link insert} since this store opened:
   * it only grows. Nothing else adds entries and deletes only remove some, so a count read at one
   * moment, plus what was inserted since, is never less than the count now.
   */
  get inserted(): { rows: number; chars: number } {
    return { rows: this.#insertedRows, chars: this.#insertedChars };
  }

  /**
   * Replaces entries by tombstones (acknowledged by the recipient), in one transaction. A
   * tombstone older than the retention deletes its entry but is not kept: it would be collected
   * at once (see {@link collectTombstones}).
   */
  tombstone(tombstones: readonly Tombstone[], options: DeferOption = {}): void {
    const deferSync = options.syncLater === true && this.#wal !== undefined;
    if (tombstones.length === 0) return;
    const oldest = this.#retention.oldestTombstone();
    this.#transaction(() => {
      for (const t of tombstones) {
        if (t.deletedAt >= oldest) {
          this.#tombstone.run(t.recipient, t.messageId, t.ringKey, t.deletedAt);
        }
        this.#deleteEntry.run(t.recipient, t.messageId);
      }
    }, deferSync);
  }

  /**
   * Resolves once every write committed before this call is on disk — those made with
   * `syncLater` included (a WAL sync run off the event loop, shared by the commits that wait for
   * it; see wal_sync.ts). Rejects when the sync fails: writes waiting for it must not be
   * acknowledged. At once for a database in memory.
   */
  synced(): Promise<void> {
    return this.#wal?.sync() ?? Promise.resolve();
  }

  /**
   * Sets what this node keeps from now on: no entry older than `oldestSeq()` is stored, read as
   * pending or handed to another node, and no tombstone older than `oldestTombstone()` is stored.
   * Tombstones can then be collected safely once older than `oldestTombstone()` (which must lie
   * before `oldestSeq()` by more than the clocks of the servers may differ): the entry a
   * tombstone stands for was stored before it was acknowledged, so it is older still, and no
   * path can store it again.
   */
  retain(retention: Retention): void {
    this.#retention = retention;
  }

  /** Entries offered to {@link insert} and dropped as older than the retention, since opened. */
  get droppedTooOld(): number {
    return this.#droppedTooOld;
  }

  /**
   * Deletes the tombstones acknowledged before `deletedBefore` (garbage collection, see
   * {@link retain}); returns how many went.
   */
  collectTombstones(deletedBefore: number): number {
    let n = 0;
    this.#transaction(() => {
      n = Number(this.#collect.run(deletedBefore).changes);
    });
    return n;
  }

  /** Pending entries of `recipient` (not older than the retention), in delivery order. */
  pending(recipient: string, limit = 100_000): MailboxEntry[] {
    const rows = this.#pending.all(recipient, this.#retention.oldestSeq(), limit) as Row[];
    return rows.map(toEntry);
  }

  /**
   * The ids of `recipient`'s entries, in no particular order, those older than the retention
   * included: one search of the primary key's index, without reading a row.
   */
  pendingIds(recipient: string): string[] {
    const rows = this.#pendingIds.all(recipient) as { message_id: string }[];
    return rows.map((r) => r.message_id);
  }

  /** Which of `messageIds` in `recipient`'s mailbox this node holds a tombstone of (one query). */
  deletedOf(recipient: string, messageIds: readonly string[]): string[] {
    if (messageIds.length === 0) return [];
    const rows = this.#deletedOf.all(recipient, JSON.stringify(messageIds)) as {
      message_id: string;
    }[];
    return rows.map((r) => r.message_id);
  }

  /** Number of pending entries of `recipient` (for quotas). */
  countPending(recipient: string): number {
    const row = this.#countPending.get(recipient) as { n: number };
    return Number(row.n);
  }

  /**
   * Pending entries `sender` left for `recipient` and their envelope characters (for the
   * per-sender quotas): one search of an index, however large the mailbox's envelopes.
   */
  countPendingFrom(recipient: string, sender: string): { count: number; chars: number } {
    const row = this.#countPendingFrom.get(recipient, sender) as { n: number; chars: number };
    return { count: Number(row.n), chars: Number(row.chars) };
  }

  /** The `seq` of a pending entry, if this node holds it (its envelope is not read). */
  seqOf(recipient: string, messageId: string): number | undefined {
    const row = this.#getSeq.get(recipient, messageId) as { seq: number } | undefined;
    return row?.seq;
  }

  /** Entries named by `keys` (those this node has, not older than the retention). */
  entries(keys: readonly [string, string][]): MailboxEntry[] {
    const oldestSeq = this.#retention.oldestSeq();
    const out: MailboxEntry[] = [];
    for (const [recipient, id] of keys) {
      const row = this.#getEntry.get(recipient, id) as Row | undefined;
      if (row && row.seq >= oldestSeq) out.push(toEntry(row));
    }
    return out;
  }

  /** Tombstones named by `keys` (those this node has). */
  tombstones(keys: readonly [string, string][]): Tombstone[] {
    const get = this.#getTombstone;
    const out: Tombstone[] = [];
    for (const [recipient, id] of keys) {
      const row = get.get(recipient, id) as TombstoneRow | undefined;
      if (row) out.push(toTombstone(row));
    }
    return out;
  }

  /** Every item (entry or tombstone) in `range`, sorted: the input of anti-entropy. */
  itemKeys(range: KeyRange): ItemKey[] {
    const { sql, params } = rangeWhere(range);
    const rows = this.#db.prepare(
      `SELECT 'm' AS k, recipient, message_id, seq FROM mailbox WHERE ${sql}
       UNION ALL
       SELECT 't' AS k, recipient, message_id, NULL FROM tombstones WHERE ${sql}
       ORDER BY 2, 3, 1`,
    ).all(...params, ...params) as {
      k: "m" | "t";
      recipient: string;
      message_id: string;
      seq: number | null;
    }[];
    return rows.map((r): ItemKey =>
      r.seq === null ? [r.k, r.recipient, r.message_id] : [r.k, r.recipient, r.message_id, r.seq]
    );
  }

  /** Marks rows in `primary` as held as the primary copy and every other row as a replica. */
  markPrimary(primary: KeyRange): void {
    markHeldAs(this.#db, "mailbox", primary);
  }

  /** Ring key and identity of every item outside `keep`. */
  itemKeysOutside(keep: KeyRange): [string, ItemKey][] {
    if (keep.start === keep.end) return [];
    const { sql, params } = rangeWhere(keep);
    const rows = this.#db.prepare(
      `SELECT 'm' AS k, ring_key, recipient, message_id FROM mailbox WHERE NOT ${sql}
       UNION ALL
       SELECT 't' AS k, ring_key, recipient, message_id FROM tombstones WHERE NOT ${sql}`,
    ).all(...params, ...params) as {
      k: "m" | "t";
      ring_key: string;
      recipient: string;
      message_id: string;
    }[];
    return rows.map((r) => [r.ring_key, [r.k, r.recipient, r.message_id]]);
  }

  /** Deletes every entry and tombstone under `ringKey` (after hand-off); returns the count. */
  deleteRingKey(ringKey: string): number {
    let n = 0;
    this.#transaction(() => {
      n += Number(this.#db.prepare("DELETE FROM mailbox WHERE ring_key = ?").run(ringKey).changes);
      n += Number(
        this.#db.prepare("DELETE FROM tombstones WHERE ring_key = ?").run(ringKey).changes,
      );
    });
    return n;
  }

  /** Deletes every row (entries and tombstones) outside `keep`; returns how many went. */
  dropOutside(keep: KeyRange): number {
    if (keep.start === keep.end) return 0;
    const { sql, params } = rangeWhere(keep);
    let dropped = 0;
    this.#transaction(() => {
      dropped += Number(
        this.#db.prepare(`DELETE FROM mailbox WHERE NOT ${sql}`).run(...params).changes,
      );
      dropped += Number(
        this.#db.prepare(`DELETE FROM tombstones WHERE NOT ${sql}`).run(...params).changes,
      );
    });
    return dropped;
  }

  /** Deletes entries whose coordinator clock is older than `cutoffSeq` (retention). */
  expire(cutoffSeq: number): number {
    return Number(this.#db.prepare("DELETE FROM mailbox WHERE seq < ?").run(cutoffSeq).changes);
  }

  /** Counts of rows by role, for `/metrics` and the visualizer. */
  counts(): { primary: number; replica: number; tombstones: number } {
    const rows = this.#db.prepare("SELECT held_as, count(*) AS n FROM mailbox GROUP BY held_as")
      .all() as { held_as: string; n: number }[];
    const t = this.#db.prepare("SELECT count(*) AS n FROM tombstones").get() as { n: number };
    const of = (role: string) => Number(rows.find((r) => r.held_as === role)?.n ?? 0);
    return { primary: of("primary"), replica: of("replica"), tombstones: Number(t.n) };
  }

  /**
   * Runs `body` in one transaction. With `deferSync` the commit does not wait for the disk
   * (synchronous=NORMAL for this transaction only); the caller waits for a WAL sync instead.
   */
  #transaction(body: () => void, deferSync = false): void {
    if (deferSync) this.#db.exec("PRAGMA synchronous = NORMAL");
    try {
      this.#db.exec("BEGIN IMMEDIATE");
      try {
        body();
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    } finally {
      if (deferSync) this.#db.exec("PRAGMA synchronous = FULL");
    }
    this.#afterCommit();
  }
}
