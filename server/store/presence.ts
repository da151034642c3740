/**
 * Presence records: which server holds a user's session, as soft state with a time to live. The
 * home server writes a record when a session starts and refreshes it while the session lives; a
 * record past its `expiresAt` means offline. A logout is a write of an already expired record,
 * so every write is last-writer-wins by the coordinator's `updatedAt` and replicas converge
 * without tombstones. Expired records are garbage collected.
 */
import type { DatabaseSync } from "node:sqlite";

/** One user's presence as the ring stores it. */
export interface PresenceRecord {
  username: string;
  /** Ring key of the user (see `userRingKey`). */
  ringKey: string;
  /** Base URL of the server holding the session. */
  home: string;
  /** The coordinator's clock at the write: later writes win. */
  updatedAt: number;
  /** The record means online until this time (ms since the epoch). */
  expiresAt: number;
}

/** SQL of the presence table (part of migration 4). */
export const PRESENCE_SCHEMA = `
  CREATE TABLE presence (
    username   TEXT PRIMARY KEY,
    ring_key   TEXT NOT NULL,
    home       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
  ) STRICT;
`;

type Row = {
  username: string;
  ring_key: string;
  home: string;
  updated_at: number;
  expires_at: number;
};

const toRecord = (r: Row): PresenceRecord => ({
  username: r.username,
  ringKey: r.ring_key,
  home: r.home,
  updatedAt: r.updated_at,
  expiresAt: r.expires_at,
});

/** The presence records of one node. */
export class PresenceStore {
  #db: DatabaseSync;

  /** Wraps an open, migrated database. */
  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /**
   * Applies `records` (last writer wins by `updatedAt`) in one transaction; returns how many
   * applied. Presence is soft state (every online session rewrites its record every few seconds,
   * and a record past its time to live means offline), so its commits skip the fsync that
   * synchronous=FULL costs (`synchronous = NORMAL` for this transaction only): a kill -9 loses
   * nothing (the WAL is written before COMMIT returns), and a power cut can only lose the last
   * few seconds of refreshes. The next FULL commit (a mailbox write) syncs the WAL, these frames
   * included. Measured: presence commits were a third of a server's fsync time under bench:store.
   */
  put(records: readonly PresenceRecord[]): number {
    if (records.length === 0) return 0;
    const upsert = this.#db.prepare(
      `INSERT INTO presence (username, ring_key, home, updated_at, expires_at)
       VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (username) DO UPDATE SET
         ring_key = excluded.ring_key, home = excluded.home,
         updated_at = excluded.updated_at, expires_at = excluded.expires_at
       WHERE excluded.updated_at > presence.updated_at`,
    );
    let applied = 0;
    this.#db.exec("PRAGMA synchronous = NORMAL");
    try {
      this.#db.exec("BEGIN IMMEDIATE");
      try {
        for (const r of records) {
          applied += Number(
            upsert.run(r.username, r.ringKey, r.home, r.updatedAt, r.expiresAt).changes,
          );
        }
        this.#db.exec("COMMIT");
      } catch (err) {
        this.#db.exec("ROLLBACK");
        throw err;
      }
    } finally {
      this.#db.exec("PRAGMA synchronous = FULL");
    }
    return applied;
  }

  /** This node's record of `username`, expired or not. */
  get(username: string): PresenceRecord | undefined {
    const row = this.#db.prepare("SELECT * FROM presence WHERE username = ?").get(username) as
      | Row
      | undefined;
    return row && toRecord(row);
  }

  /** Every record that is online at `now`. */
  online(now: number): PresenceRecord[] {
    return (this.#db.prepare("SELECT * FROM presence WHERE expires_at > ? ORDER BY username")
      .all(now) as Row[]).map(toRecord);
  }

  /** Records that expired in `(since, now]`: the users that just went offline. */
  expiredBetween(since: number, now: number): PresenceRecord[] {
    return (this.#db.prepare(
      "SELECT * FROM presence WHERE expires_at > ? AND expires_at <= ? ORDER BY username",
    ).all(since, now) as Row[]).map(toRecord);
  }

  /** Deletes records expired before `cutoff`; returns how many went. */
  collect(cutoff: number): number {
    return Number(
      this.#db.prepare("DELETE FROM presence WHERE expires_at < ?").run(cutoff).changes,
    );
  }
}
