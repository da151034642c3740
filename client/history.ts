/**
 * Local chat history of one user: a sql.js (SQLite in WebAssembly) database for queries, backed by
 * an IndexedDB object store for durability.
 *
 * Persistence: each row is written on its own to an IndexedDB object store keyed by message id
 * (one `put`, O(1) per message: persisting costs the same with 100 or 100,000 messages of
 * history, DESIGN §5). That store is a log: from time to time (when it holds more than a tenth of
 * the history, and at least {@link SNAPSHOT_MIN_LOG} rows) the whole sql.js image (`db.export()`,
 * ~25 ms and ~16 MB at 100k rows, stored as a Blob so the page is not frozen while IndexedDB
 * serializes it) is saved and the log cleared in the same IndexedDB transaction,
 * so the work stays O(1) per message amortized. Opening reads the image (one record) and only the
 * rows written since, instead of rebuilding SQLite from every row.
 *
 * Every user has their own IndexedDB database (`p2pchat-history-<username>`), because two tabs
 * of one browser may be two different users. The store sits behind {@link RowStore}, so tests run
 * the same logic against {@link createMemoryRowStores}.
 *
 * Message ids are globally unique and inserts are `INSERT OR IGNORE`, so a message that arrives
 * twice (data channel and relay) is stored and shown once (DESIGN §3).
 */
import { deleteDB, openDB } from "idb";
import { bodyOf, isFinalText } from "./message_ops.ts";

/**
 * Which path carried a message: the data channel, a `relay` frame through the servers, or the
 * recipient's offline mailbox on the servers.
 */
export type MessageVia = "p2p" | "relay" | "mailbox";
/**
 * Delivery state of a message, from the sender's point of view (received ones are `delivered`):
 * `sending` (not yet handed to any path, e.g. while the WebSocket is down), `sent` (on its way,
 * or stored in the recipient's mailbox: pending), `delivered` (the recipient stored it), `failed`
 * (the servers refused it; retried later).
 */
export type MessageStatus = "sending" | "sent" | "delivered" | "failed";

/** One stored message. */
export interface MessageRow {
  /** Global message id (random, see `newMessageId`). */
  id: string;
  /** The other user of the conversation. */
  peer: string;
  sender: string;
  recipient: string;
  /** Sender's clock, ms since the epoch. */
  sentAt: number;
  /** Receiver's clock when stored, or null for own messages. */
  receivedAt: number | null;
  text: string;
  via: MessageVia;
  status: MessageStatus;
  /** Files (issue 15): the JSON `FileMeta` of the file this message announces, if any. */
  attachment?: string | null;
}

/** A message's place in its conversation: send time, then id. */
export interface MessageKey {
  sentAt: number;
  id: string;
}

/** Rows in a fixed order, read on demand (an array is one). */
export interface RowSource {
  /** How many rows there are. */
  readonly length: number;
  /** Rows `start` to `end` (exclusive). */
  slice(start: number, end: number): MessageRow[];
}

/** Durable per-user row storage (IndexedDB in the browser, memory in tests). */
export interface RowStore {
  /** Writes one row (insert or replace by id). */
  put(row: MessageRow): Promise<void>;
  /** Writes many rows in one transaction (insert or replace by id): all or none. */
  putMany(rows: readonly MessageRow[]): Promise<void>;
  /** Every row written since the last snapshot (all rows if none), in no particular order. */
  all(): Promise<MessageRow[]>;
  /** The last saved database image, or null. */
  loadSnapshot(): Promise<Uint8Array | null>;
  /**
   * Saves `image` and empties the row log, in one transaction: all or none. The write is queued
   * before this returns (synchronously), so a row written after the image was taken lands after
   * the log is emptied and is kept.
   */
  saveSnapshot(image: Uint8Array): Promise<void>;
  /** Releases the store. */
  close(): void;
  /** Releases the store and deletes every row it held, for good. */
  destroy(): Promise<void>;
}

/** Opens the row store of one user. */
export type RowStoreOpener = (owner: string) => Promise<RowStore>;

/** The parts of a sql.js statement used here. */
export interface SqlStatement {
  /** Binds `params`, runs the statement once and resets it. */
  run(params?: unknown[]): void;
  bind(params: unknown[]): boolean;
  step(): boolean;
  get(): unknown[];
  free(): boolean;
}

/** The parts of a sql.js database used here. */
export interface SqlDatabase {
  run(sql: string, params?: unknown[]): unknown;
  prepare(sql: string): SqlStatement;
  getRowsModified(): number;
  /** The whole database as an SQLite file image (open statements stay usable). */
  export(): Uint8Array;
  close(): void;
}

/** The sql.js module (result of `initSqlJs`). */
export interface SqlJs {
  Database: new (image?: Uint8Array) => SqlDatabase;
}

const STATUS_RANK: Record<MessageStatus, number> = {
  sending: 0,
  failed: 1,
  sent: 2,
  delivered: 3,
};

/** SQL: the row is a message operation (its text starts with U+001D, see message_ops.ts). */
const IS_OP = "substr(text, 1, 1) = char(29)";
/** SQL: the row is shown in its conversation (not an operation, not deleted on this device). */
const IS_SHOWN = `substr(text, 1, 1) != char(29) AND text != char(30) || 'hidden'`;
/** SQL: row `r`'s text is searched (not an operation or a tombstone). */
const IS_SEARCHED = (r: string) => `substr(${r}.text, 1, 1) NOT IN (char(29), char(30))`;
/** SQL: text `t` is final (see `isFinalText`): a changed row's text wins over the old one. */
const IS_FINAL = (t: string) =>
  `(substr(${t}, 1, 1) = char(30) OR substr(${t}, 1, 8) = char(29) || 'delete' || char(29))`;

/** The tables and indexes of a history database (exported for the query-plan tests). */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  peer TEXT NOT NULL,
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  sent_at INTEGER NOT NULL,
  received_at INTEGER,
  text TEXT NOT NULL,
  via TEXT NOT NULL CHECK (via IN ('p2p', 'relay', 'mailbox')),
  status TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'delivered', 'failed'))
);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, sent_at, id);
-- Partial indexes for the queries a send, an opened channel and a recheck run: they hold only
-- the few messages still on their way, so those queries cost the same at 100 and 100,000 rows.
-- A query uses them only if its WHERE clause repeats the index's condition word for word.
CREATE INDEX IF NOT EXISTS messages_undelivered ON messages (peer, sender, sent_at, id)
  WHERE status != 'delivered';
CREATE INDEX IF NOT EXISTS messages_unsent ON messages (sender, peer)
  WHERE status IN ('sending', 'failed');
-- Message operations (edits, reactions, deletes: client/message_ops.ts), by conversation and
-- text (an operation's target), and by conversation in time order (every refresh of the open
-- chat reads them: without it the planner walks messages_by_peer for the order, all 100,000 rows).
CREATE INDEX IF NOT EXISTS messages_ops ON messages (peer, text) WHERE ${IS_OP};
CREATE INDEX IF NOT EXISTS messages_ops_in_time ON messages (peer, sent_at, id) WHERE ${IS_OP};
`;

/**
 * Full-text index over message texts (FTS4, words folded to lower case without accents), kept in
 * step with the table by triggers; an image from before it existed is indexed once at open.
 */
const SEARCH_SCHEMA = `
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts4(content="messages", text,
  tokenize=unicode61);
DROP TRIGGER IF EXISTS messages_fts_insert;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN ${IS_SEARCHED("new")} BEGIN
  INSERT INTO messages_fts (docid, text) VALUES (new.rowid, new.text);
END;
DROP TRIGGER IF EXISTS messages_fts_delete;
CREATE TRIGGER messages_fts_delete BEFORE DELETE ON messages WHEN ${IS_SEARCHED("old")} BEGIN
  DELETE FROM messages_fts WHERE docid = old.rowid;
END;
-- A text changes only when a message is deleted for everyone (message_ops.ts): out of the index.
CREATE TRIGGER IF NOT EXISTS messages_fts_unindex BEFORE UPDATE OF text ON messages
  WHEN old.text != new.text AND ${IS_SEARCHED("old")} BEGIN
  DELETE FROM messages_fts WHERE docid = old.rowid;
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_reindex AFTER UPDATE OF text ON messages
  WHEN old.text != new.text AND ${IS_SEARCHED("new")} BEGIN
  INSERT INTO messages_fts (docid, text) VALUES (new.rowid, new.text);
END;
`;

/** Marks the start and end of a matched word in {@link SearchHit.snippet}. */
export const MATCH_START = "\u0001";
export const MATCH_END = "\u0002";

/** A message found by {@link History.search}. */
export interface SearchHit {
  id: string;
  peer: string;
  sender: string;
  sentAt: number;
  /**
   * The text around the matches, each matched word between {@link MATCH_START} and
   * {@link MATCH_END} (plain text: the caller renders it, nothing is HTML).
   */
  snippet: string;
}

/**
 * The FTS query for what a user typed: every word must occur, each as a word prefix. Quotes and
 * operators in the input are words like any other, never query syntax.
 */
export function searchQuery(input: string): string | null {
  const words = input.normalize("NFC").match(WORD) ?? [];
  if (words.length === 0) return null;
  return words.slice(0, 16).map((w) => `"${w}*"`).join(" ");
}

/** Words of a search or a text: runs of letters and digits (as the FTS tokenizer splits them). */
const WORD = /[\p{L}\p{N}]+/gu;

/** A word as the FTS index compares it: lower case, without accents. */
function foldWord(word: string): string {
  return word.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
}

/** Whether `text` has every word of `input`, each as a word prefix (as the index matches). */
export function hasEveryWord(text: string, input: string): boolean {
  const words = (text.normalize("NFC").match(WORD) ?? []).map(foldWord);
  const wanted = (input.normalize("NFC").match(WORD) ?? []).slice(0, 16).map(foldWord);
  return wanted.length > 0 && wanted.every((w) => words.some((t) => t.startsWith(w)));
}

/** Words a snippet shows at most. */
export const SNIPPET_WORDS = 12;

/**
 * The part of `text` a search result shows: at most {@link SNIPPET_WORDS} words, where the
 * most of the searched words (`input`, each a word prefix) occur, each matching word between
 * {@link MATCH_START} and {@link MATCH_END}, "…" where text was cut. Made here rather than with
 * FTS's `snippet()`, which SQLite computes for every match before keeping the newest few (a
 * one-letter search over 100,000 messages took over a second).
 */
export function searchSnippet(text: string, input: string): string {
  const wanted = [
    ...new Set((input.normalize("NFC").match(WORD) ?? []).slice(0, 16).map(foldWord)),
  ];
  const words = [...text.matchAll(WORD)].map((m) => {
    const folded = foldWord(m[0]);
    return {
      start: m.index,
      end: m.index + m[0].length,
      // Which searched words this one matches (as a prefix), as a bit set.
      matches: wanted.reduce((set, w, i) => folded.startsWith(w) ? set | (1 << i) : set, 0),
    };
  });
  // The window with the most distinct searched words, then the most matches; the first such.
  let from = 0;
  let best = [-1, -1];
  for (let s = 0; s <= Math.max(0, words.length - SNIPPET_WORDS); s++) {
    let set = 0;
    let count = 0;
    for (const w of words.slice(s, s + SNIPPET_WORDS)) {
      set |= w.matches;
      if (w.matches) count++;
    }
    let distinct = 0;
    for (let b = set; b; b &= b - 1) distinct++;
    if (distinct > best[0]! || (distinct === best[0] && count > best[1]!)) {
      best = [distinct, count];
      from = s;
    }
  }
  const shown = words.slice(from, from + SNIPPET_WORDS);
  if (shown.length === 0) return text;
  const isCutBefore = from > 0;
  const isCutAfter = from + SNIPPET_WORDS < words.length;
  let at = isCutBefore ? shown[0]!.start : 0;
  let out = isCutBefore ? "…" : "";
  for (const w of shown) {
    if (!w.matches) continue;
    out += text.slice(at, w.start) + MATCH_START + text.slice(w.start, w.end) + MATCH_END;
    at = w.end;
  }
  return out + text.slice(at, isCutAfter ? shown.at(-1)!.end : text.length) +
    (isCutAfter ? "…" : "");
}

/** The row log is saved into a snapshot once it holds this many rows and a tenth of the history. */
export const SNAPSHOT_MIN_LOG = 2_000;

/** Rank of a status in SQL, for {@link UPSERT}. */
const SQL_RANK = (col: string) =>
  `CASE ${col} WHEN 'sending' THEN 0 WHEN 'failed' THEN 1 WHEN 'sent' THEN 2 ELSE 3 END`;

const COLUMNS = "id, peer, sender, recipient, sent_at, received_at, text, via, status, attachment";
/** Every operation row of one conversation, in time order (read at each refresh of the chat). */
export const OPS_QUERY =
  `SELECT ${COLUMNS} FROM messages WHERE peer = ? AND ${IS_OP} ORDER BY sent_at, id`;

/**
 * The queries of {@link History.page} (parameters: peer, then the key's send time and id, then
 * the limit; exported for the query-plan tests).
 */
export const PAGE_QUERIES = {
  newest: `SELECT * FROM (SELECT ${COLUMNS} FROM messages WHERE peer = ? AND ${IS_SHOWN}
    ORDER BY sent_at DESC, id DESC LIMIT ?) ORDER BY sent_at, id`,
  before: `SELECT * FROM (SELECT ${COLUMNS} FROM messages WHERE peer = ?
    AND (sent_at, id) < (?, ?) AND ${IS_SHOWN} ORDER BY sent_at DESC, id DESC LIMIT ?)
    ORDER BY sent_at, id`,
  from: `SELECT ${COLUMNS} FROM messages WHERE peer = ? AND (sent_at, id) >= (?, ?)
    AND ${IS_SHOWN} ORDER BY sent_at, id LIMIT ?`,
  after: `SELECT ${COLUMNS} FROM messages WHERE peer = ? AND (sent_at, id) > (?, ?)
    AND ${IS_SHOWN} ORDER BY sent_at, id LIMIT ?`,
} as const;

/** Every conversation of {@link History.peers} (exported for the query-plan tests). */
export const PEERS_QUERY = "SELECT DISTINCT peer FROM messages ORDER BY peer";

const INSERT = `INSERT OR IGNORE INTO messages (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/**
 * A row of the log laid over the snapshot: new, or a later state of a row the image holds (the
 * status never moves back).
 */
const UPSERT = `INSERT INTO messages (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET status = excluded.status, via = excluded.via,
    text = CASE WHEN ${IS_FINAL("excluded.text")} THEN excluded.text ELSE messages.text END
  WHERE ${SQL_RANK("excluded.status")} >= ${SQL_RANK("messages.status")}`;

function toParams(r: MessageRow): unknown[] {
  return [
    r.id,
    r.peer,
    r.sender,
    r.recipient,
    r.sentAt,
    r.receivedAt,
    r.text,
    r.via,
    r.status,
    r.attachment ?? null,
  ];
}

function fromSql(v: unknown[]): MessageRow {
  return {
    id: String(v[0]),
    peer: String(v[1]),
    sender: String(v[2]),
    recipient: String(v[3]),
    sentAt: Number(v[4]),
    receivedAt: v[5] === null || v[5] === undefined ? null : Number(v[5]),
    text: String(v[6]),
    via: v[7] as MessageVia,
    status: v[8] as MessageStatus,
    ...(v[9] === null || v[9] === undefined ? {} : { attachment: String(v[9]) }),
  };
}

/** The chat history of one user. */
export class History {
  #db: SqlDatabase;
  #store: RowStore;

  private constructor(db: SqlDatabase, store: RowStore, logRows: number) {
    this.#db = db;
    this.#store = store;
    this.#logRows = logRows;
  }

  /** Rows written to the store since the last snapshot. */
  #logRows: number;
  #snapshotting: Promise<void> | null = null;
  #closed = false;

  /**
   * Opens `owner`'s history: the last snapshot, with the rows written since laid over it (or every
   * stored row into a fresh database if there is no snapshot yet).
   */
  static async open(deps: { sql: SqlJs; openStore: RowStoreOpener }, owner: string) {
    const store = await deps.openStore(owner);
    const [image, rows] = await Promise.all([store.loadSnapshot(), store.all()]);
    const db = new deps.sql.Database(image ?? undefined);
    db.run(SCHEMA);
    addAttachmentColumn(db);
    const hadSearch = image !== null && tableExists(db, "messages_fts");
    db.run(SEARCH_SCHEMA);
    if (image !== null && !hadSearch) {
      db.run("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')");
    }
    db.run("BEGIN");
    const upsert = db.prepare(UPSERT);
    try {
      for (const row of rows) upsert.run(toParams(row));
    } finally {
      upsert.free();
    }
    db.run("COMMIT");
    const history = new History(db, store, rows.length);
    // A long log (or a history from before snapshots) is folded into one after the first paint.
    setTimeout(() => history.#maybeSnapshot(), 0);
    return history;
  }

  /**
   * Saves a snapshot if the log has grown past {@link SNAPSHOT_MIN_LOG} rows and a tenth of the
   * history; resolves when it is durable (at once if none was due). Called after every write.
   */
  snapshotIfDue(): Promise<void> {
    this.#maybeSnapshot();
    return this.#snapshotting ?? Promise.resolve();
  }

  #maybeSnapshot(): void {
    if (this.#closed || this.#snapshotting || this.#logRows < SNAPSHOT_MIN_LOG) return;
    // COUNT(*) reads the whole table: only asked once the log is long.
    if (this.#logRows < this.count() / 10) return;
    const image = this.#db.export();
    const logged = this.#logRows;
    const saving = this.#store.saveSnapshot(image);
    this.#snapshotting = saving.then(
      () => {
        this.#logRows -= logged;
      },
      (err) => console.warn("History snapshot not saved (the row log stays):", err),
    ).finally(() => {
      this.#snapshotting = null;
    });
  }

  async #put(row: MessageRow): Promise<void> {
    await this.#store.put(row);
    this.#logRows++;
    this.#maybeSnapshot();
  }

  async #putMany(rows: readonly MessageRow[]): Promise<void> {
    await this.#store.putMany(rows);
    this.#logRows += rows.length;
    this.#maybeSnapshot();
  }

  /** Stores a message once; resolves `true` if it was new (and is now durable). */
  async insert(row: MessageRow): Promise<boolean> {
    this.#db.run(INSERT, toParams(row));
    if (this.#db.getRowsModified() === 0) return false;
    await this.#put(row);
    return true;
  }

  /**
   * Moves a message's status forward (never back: a `delivered` message stays delivered) and
   * optionally records the path it went by. Resolves the updated row, or null if unknown.
   */
  async update(
    id: string,
    change: { status: MessageStatus; via?: MessageVia },
  ): Promise<MessageRow | null> {
    const row = this.get(id);
    if (!row) return null;
    const status = STATUS_RANK[change.status] >= STATUS_RANK[row.status]
      ? change.status
      : row.status;
    const via = change.via ?? row.via;
    if (status === row.status && via === row.via) return row;
    const next = { ...row, status, via };
    this.#db.run("UPDATE messages SET status = ?, via = ? WHERE id = ?", [status, via, id]);
    await this.#put(next);
    return next;
  }

  /**
   * Takes a row from another device of this user (the history hand-over): stored if new, and an
   * existing row only moves its status forward, so importing twice, or a row that also came
   * from the mailbox, changes nothing. Resolves `true` if the row was new.
   */
  async importRow(row: MessageRow): Promise<boolean> {
    if (await this.insert(row)) return true;
    await this.update(row.id, { status: row.status });
    if (isFinalText(row.text)) await this.replaceText(row.id, row.text);
    return false;
  }

  /**
   * Takes many rows from another device of this user at once, like {@link importRow} for each,
   * in one sql.js transaction and one durable write: a hand-over batch costs one IndexedDB
   * transaction, not one per row. Resolves how many rows were new.
   */
  async importRows(rows: readonly MessageRow[]): Promise<number> {
    const changed: MessageRow[] = [];
    let fresh = 0;
    // One prepared statement for the batch: `run(sql, params)` would compile it per row.
    const insert = this.#db.prepare(INSERT);
    this.#db.run("BEGIN");
    try {
      for (const row of rows) {
        insert.run(toParams(row));
        if (this.#db.getRowsModified() > 0) {
          fresh++;
          changed.push(row);
          continue;
        }
        const have = this.get(row.id);
        if (!have) continue;
        const status = STATUS_RANK[row.status] > STATUS_RANK[have.status]
          ? row.status
          : have.status;
        // A message deleted on the other device is deleted here too.
        const text = isFinalText(row.text) && !isFinalText(have.text) ? row.text : have.text;
        if (status !== have.status || text !== have.text) {
          this.#db.run("UPDATE messages SET status = ?, text = ? WHERE id = ?", [
            status,
            text,
            row.id,
          ]);
          changed.push({ ...have, status, text });
        }
      }
      this.#db.run("COMMIT");
    } catch (err) {
      this.#db.run("ROLLBACK");
      throw err;
    } finally {
      insert.free();
    }
    if (changed.length > 0) await this.#putMany(changed);
    return fresh;
  }

  /**
   * Replaces the text of message `id` (only ever with a final text: a message deleted, an edit
   * voided, see message_ops.ts); the search index follows. Resolves the new row once durable,
   * or null if unknown.
   */
  async replaceText(id: string, text: string): Promise<MessageRow | null> {
    const row = this.get(id);
    if (!row) return null;
    if (row.text === text) return row;
    const next = { ...row, text };
    this.#db.run("UPDATE messages SET text = ? WHERE id = ?", [text, id]);
    await this.#put(next);
    return next;
  }

  /** The operation rows of the conversation with `peer` (message_ops.ts), by send time. */
  ops(peer: string): MessageRow[] {
    return this.#query(OPS_QUERY, [peer]);
  }

  /** The operation rows of the conversation with `peer` whose text starts with `prefix`. */
  opsWithPrefix(peer: string, prefix: string): MessageRow[] {
    return this.#query(
      `SELECT ${COLUMNS} FROM messages WHERE peer = ? AND ${IS_OP} AND text >= ? AND text < ?`,
      [peer, prefix, `${prefix}\u{10FFFF}`],
    );
  }

  /** Every stored message, ordered by send time then id. */
  all(): MessageRow[] {
    return this.#query(`SELECT ${COLUMNS} FROM messages ORDER BY sent_at, id`, []);
  }

  /**
   * Every stored message, newest first (send time, then id, descending): the order of the
   * history hand-over, so what the user needs most arrives first.
   */
  newestFirst(): MessageRow[] {
    return this.#query(`SELECT ${COLUMNS} FROM messages ORDER BY sent_at DESC, id DESC`, []);
  }

  /**
   * The whole history newest first, read a page at a time as it is needed (keyset pagination),
   * so a hand-over of 100,000 rows can send its first batch without loading them all. The rows
   * read stay cached (a resumed transfer sends batches again); `length` is fixed when called.
   */
  newestFirstSource(): RowSource {
    const length = this.count();
    const loaded: MessageRow[] = [];
    // One statement stepped as far as needed: SQLite sorts once, at the first step. (sql.js
    // exports through SQLite's backup API, so a snapshot in between leaves it working.)
    let cursor: SqlStatement | null = null;
    let isExhausted = length === 0;
    const load = (upTo: number) => {
      if (isExhausted || loaded.length >= upTo) return;
      cursor ??= this.#db.prepare(
        `SELECT ${COLUMNS} FROM messages ORDER BY sent_at DESC, id DESC`,
      );
      while (loaded.length < upTo) {
        if (loaded.length >= length || !cursor.step()) {
          isExhausted = true;
          cursor.free();
          return;
        }
        loaded.push(fromSql(cursor.get()));
      }
    };
    return {
      length,
      slice(start, end) {
        load(end);
        return loaded.slice(start, end);
      },
    };
  }

  /**
   * Messages whose text has every word of `input` (as word prefixes), newest first, at most
   * `limit`; `peer` limits the search to one conversation. An edited message is found by its
   * latest text only (the index holds the texts as stored; the few edits are checked here).
   */
  search(input: string, options: { peer?: string; limit?: number } = {}): SearchHit[] {
    const match = searchQuery(input);
    if (!match) return [];
    const limit = options.limit ?? 50;
    const edited = this.#editedTexts(options.peer);
    // The snippets are made for the few rows kept, not by SQLite for every match.
    const stmt = this.#db.prepare(
      `SELECT m.id, m.peer, m.sender, m.sent_at, m.text
       FROM messages_fts JOIN messages m ON m.rowid = messages_fts.docid
       WHERE messages_fts MATCH ? ${options.peer === undefined ? "" : "AND m.peer = ?"}
       ORDER BY m.sent_at DESC, m.id DESC LIMIT ?`,
    );
    let found: Array<Omit<SearchHit, "snippet"> & { text: string }> = [];
    try {
      // Edited messages among the hits are left out: fetched again with room for them, until
      // the newest `limit` unedited hits are all in (once, unless an edited message is recent).
      for (let room = 0;;) {
        stmt.bind([
          match,
          ...(options.peer === undefined ? [] : [options.peer]),
          limit + room,
        ]);
        found = [];
        let rows = 0;
        while (stmt.step()) {
          const v = stmt.get();
          rows++;
          if (edited.has(String(v[0]))) continue;
          found.push({
            id: String(v[0]),
            peer: String(v[1]),
            sender: String(v[2]),
            sentAt: Number(v[3]),
            text: String(v[4]),
          });
        }
        const skipped = rows - found.length;
        if (skipped === room || rows < limit + room) break;
        room = skipped;
      }
    } finally {
      stmt.free();
    }
    for (const e of edited.values()) if (hasEveryWord(e.text, input)) found.push(e);
    found.sort((a, b) => b.sentAt - a.sentAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    return found.slice(0, limit).map(({ text, ...hit }) => ({
      ...hit,
      snippet: searchSnippet(text, input),
    }));
  }

  /**
   * The messages with an edit by their author (of `peer`'s conversation, or all), each with the
   * text of its latest edit (send time, then id), as the chat shows it (`foldOps`). A message
   * deleted for everyone has no edit left (its edits became deletes). One query: the edits
   * through their partial index, each joined to its target by id.
   */
  #editedTexts(peer?: string): Map<string, Omit<SearchHit, "snippet"> & { text: string }> {
    const prefix = "\u001dedit\u001d";
    const target = "substr(op.text, 7, instr(substr(op.text, 7), char(29)) - 1)";
    const stmt = this.#db.prepare(
      `SELECT op.id, op.sender, op.sent_at, op.text, t.id, t.peer, t.sender, t.sent_at
       FROM messages op INDEXED BY messages_ops CROSS JOIN messages t ON t.id = ${target}
       WHERE substr(op.text, 1, 1) = char(29) AND op.text >= ? AND op.text < ?
         AND op.peer = t.peer AND substr(t.text, 1, 1) NOT IN (char(29), char(30))
         ${peer === undefined ? "" : "AND op.peer = ?"}`,
    );
    type Edited = Omit<SearchHit, "snippet"> & { text: string };
    const latest = new Map<string, { at: number; op: string; hit: Edited }>();
    try {
      stmt.bind([prefix, `${prefix}\u{10FFFF}`, ...(peer === undefined ? [] : [peer])]);
      while (stmt.step()) {
        const v = stmt.get();
        const [opId, opSender, at, text] = [String(v[0]), String(v[1]), Number(v[2]), String(v[3])];
        const body = bodyOf(text);
        const id = String(v[4]);
        // Only the author's edit counts (mayChange: same sender, same conversation).
        if (body.kind !== "edit" || body.target !== id || opSender !== String(v[6])) continue;
        const have = latest.get(id);
        if (have && (have.at > at || (have.at === at && have.op > opId))) continue;
        const hit = { id, peer: String(v[5]), sender: String(v[6]), sentAt: Number(v[7]) };
        latest.set(id, { at, op: opId, hit: { ...hit, text: body.text } });
      }
    } finally {
      stmt.free();
    }
    return new Map([...latest].map(([id, e]) => [id, e.hit]));
  }

  /**
   * How many messages of the conversation with `peer` are as new as message `id` or newer (its
   * place counted from the end), or null if `id` is not in that conversation.
   */
  positionFromEnd(peer: string, id: string): number | null {
    const row = this.get(id);
    if (!row || row.peer !== peer) return null;
    const stmt = this.#db.prepare(
      `SELECT COUNT(*) FROM messages WHERE peer = ? AND (sent_at, id) >= (?, ?) AND ${IS_SHOWN}`,
    );
    try {
      stmt.bind([peer, row.sentAt, row.id]);
      stmt.step();
      return Number(stmt.get()[0]);
    } finally {
      stmt.free();
    }
  }

  /** One message by id. */
  get(id: string): MessageRow | null {
    return this.#query(`SELECT ${COLUMNS} FROM messages WHERE id = ?`, [id])[0] ?? null;
  }

  /** The conversation with `peer`, ordered by send time then id (the last `limit` messages). */
  list(peer: string, limit = 1000): MessageRow[] {
    return this.#query(
      `SELECT * FROM (SELECT ${COLUMNS} FROM messages WHERE peer = ? AND ${IS_SHOWN}
         ORDER BY sent_at DESC, id DESC LIMIT ?) ORDER BY sent_at, id`,
      [peer, limit],
    );
  }

  /**
   * A page of the conversation with `peer` (shown messages only), in order (send time, then
   * id), read by keyset through `messages_by_peer` so that it costs the same anywhere in a
   * history of 100,000: `"before"` the `limit` messages just older than `key` (without `key`:
   * the newest), `"from"` the `limit` messages from `key` on (`key` included), `"after"` those
   * just newer than `key`.
   */
  page(
    peer: string,
    direction: "before" | "from" | "after",
    key: MessageKey | null,
    limit: number,
  ): MessageRow[] {
    if (!key) {
      if (direction !== "before") throw new TypeError(`A "${direction}" page needs a key`);
      return this.#query(PAGE_QUERIES.newest, [peer, limit]);
    }
    return this.#query(PAGE_QUERIES[direction], [peer, key.sentAt, key.id, limit]);
  }

  /**
   * Every conversation with a message stored, by name: one step per conversation through
   * `messages_by_peer` (the rows themselves are not read).
   */
  peers(): string[] {
    const stmt = this.#db.prepare(PEERS_QUERY);
    try {
      const peers: string[] = [];
      while (stmt.step()) peers.push(String(stmt.get()[0]));
      return peers;
    } finally {
      stmt.free();
    }
  }

  /** Own messages to `peer` not yet acknowledged (to send again when a path appears). */
  pending(me: string, peer: string): MessageRow[] {
    return this.#query(
      `SELECT ${COLUMNS} FROM messages WHERE peer = ? AND sender = ? AND status != 'delivered'
       ORDER BY sent_at, id`,
      [peer, me],
    );
  }

  /** Contacts to whom some own message was never handed to a path (`sending` or `failed`). */
  peersWithUnsent(me: string): string[] {
    const stmt = this.#db.prepare(
      `SELECT DISTINCT peer FROM messages WHERE sender = ? AND status IN ('sending', 'failed')
       ORDER BY peer`,
    );
    try {
      stmt.bind([me]);
      const peers: string[] = [];
      while (stmt.step()) peers.push(String(stmt.get()[0]));
      return peers;
    } finally {
      stmt.free();
    }
  }

  /** Number of stored messages. */
  count(): number {
    const stmt = this.#db.prepare("SELECT COUNT(*) FROM messages");
    try {
      stmt.step();
      return Number(stmt.get()[0]);
    } finally {
      stmt.free();
    }
  }

  /** Closes the database and the store. */
  close(): void {
    this.#closed = true;
    this.#db.close();
    this.#store.close();
  }

  /**
   * Closes the database and deletes this user's stored history from the device, for good (after
   * a confirmed hand-over to the user's new device).
   */
  async destroy(): Promise<void> {
    this.#closed = true;
    this.#db.close();
    await this.#store.destroy();
  }

  #query(sql: string, params: unknown[]): MessageRow[] {
    const stmt = this.#db.prepare(sql);
    try {
      stmt.bind(params);
      const rows: MessageRow[] = [];
      while (stmt.step()) rows.push(fromSql(stmt.get()));
      return rows;
    } finally {
      stmt.free();
    }
  }
}

// --- Files (issue 15) ----------------------------------------------------------------------------
/** Adds the nullable `attachment` column to a database from before files (once; exported for tests). */
export function addAttachmentColumn(db: SqlDatabase): void {
  const stmt = db.prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'attachment'");
  let has: boolean;
  try {
    has = stmt.step();
  } finally {
    stmt.free();
  }
  if (!has) db.run("ALTER TABLE messages ADD COLUMN attachment TEXT");
}
// -------------------------------------------------------------------------------------------------

function tableExists(db: SqlDatabase, name: string): boolean {
  const stmt = db.prepare("SELECT 1 FROM sqlite_master WHERE name = ?");
  try {
    stmt.bind([name]);
    return stmt.step();
  } finally {
    stmt.free();
  }
}

/** Name of a user's IndexedDB database. */
export function historyDbName(owner: string): string {
  return `p2pchat-history-${owner}`;
}

/** Opens `owner`'s row store in IndexedDB (one object store, rows keyed by message id). */
/**
 * Merges the rows of the two IndexedDB stores into one row per id: a row can be in both (stored
 * on its own, then moved forward by a hand-over batch, or the other way round), and the stored
 * copy whose status is furthest along wins; on a tie the single row, written by this device.
 */
export function mergeStoredRows(
  single: readonly MessageRow[],
  chunks: ReadonlyArray<readonly MessageRow[]>,
): MessageRow[] {
  const byId = new Map<string, MessageRow>();
  for (const row of single) byId.set(row.id, row);
  for (const chunk of chunks) {
    for (const row of chunk) {
      const have = byId.get(row.id);
      if (!have) {
        byId.set(row.id, row);
        continue;
      }
      const merged = STATUS_RANK[row.status] > STATUS_RANK[have.status] ? row : have;
      // A final text (a message deleted) wins whichever copy has the furthest status.
      const final = [row, have].find((r) => isFinalText(r.text));
      byId.set(
        row.id,
        final && !isFinalText(merged.text) ? { ...merged, text: final.text } : merged,
      );
    }
  }
  return [...byId.values()];
}

/**
 * Opens `owner`'s row store in IndexedDB: store `messages` holds rows one by one, keyed by
 * message id (a message sent or received: one small write); store `chunks` holds the batches of
 * a hand-over, one record per batch, since writing 100,000 records one by one takes IndexedDB
 * many seconds while a few dozen large ones take a fraction of that.
 */
export async function openIdbRowStore(owner: string): Promise<RowStore> {
  const db = await openDB(historyDbName(owner), 3, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) db.createObjectStore("messages", { keyPath: "id" });
      if (oldVersion < 2) db.createObjectStore("chunks", { autoIncrement: true });
      if (oldVersion < 3) db.createObjectStore("snapshot");
    },
  });
  return {
    async put(row) {
      await db.put("messages", row);
    },
    async putMany(rows) {
      await db.add("chunks", rows);
    },
    async all() {
      const [single, chunks] = await Promise.all([db.getAll("messages"), db.getAll("chunks")]);
      return mergeStoredRows(single as MessageRow[], chunks as MessageRow[][]);
    },
    async loadSnapshot() {
      const image: unknown = await db.get("snapshot", "image");
      if (image instanceof Blob) return new Uint8Array(await image.arrayBuffer());
      // Saved by a version that stored the bytes themselves.
      return image instanceof Uint8Array ? image : null;
    },
    async saveSnapshot(image) {
      // Created now, before any later row's transaction: IndexedDB runs overlapping readwrite
      // transactions in the order they were created.
      const tx = db.transaction(["snapshot", "messages", "chunks"], "readwrite");
      await Promise.all([
        // As a Blob: IndexedDB then takes a handle, and the bytes go to disk off the main thread.
        // Put as a byte array, it was serialized in the put call: 160 ms of frozen page for the
        // 16 MB image of 100,000 messages (Chromium).
        tx.objectStore("snapshot").put(new Blob([image as Uint8Array<ArrayBuffer>]), "image"),
        tx.objectStore("messages").clear(),
        tx.objectStore("chunks").clear(),
        tx.done,
      ]);
    },
    close() {
      db.close();
    },
    async destroy() {
      db.close();
      await deleteDB(historyDbName(owner));
    },
  };
}

/**
 * In-memory row stores, one per user, that survive `close()` like IndexedDB does — for tests.
 * Rows are copied with `structuredClone` at the boundary, as IndexedDB would.
 */
export function createMemoryRowStores(): RowStoreOpener & { puts: number; snapshots: number } {
  const dbs = new Map<string, Map<string, MessageRow>>();
  const images = new Map<string, Uint8Array>();
  const opener = Object.assign((owner: string): Promise<RowStore> => {
    const name = historyDbName(owner);
    let rows = dbs.get(name);
    if (!rows) dbs.set(name, rows = new Map());
    const store: RowStore = {
      put(row) {
        opener.puts++;
        rows.set(row.id, structuredClone(row));
        return Promise.resolve();
      },
      putMany(list) {
        opener.puts++;
        for (const row of list) rows.set(row.id, structuredClone(row));
        return Promise.resolve();
      },
      destroy() {
        rows.clear();
        dbs.delete(name);
        images.delete(name);
        return Promise.resolve();
      },
      loadSnapshot() {
        const image = images.get(name);
        return Promise.resolve(image ? image.slice() : null);
      },
      saveSnapshot(image) {
        opener.snapshots++;
        images.set(name, image.slice());
        rows.clear();
        return Promise.resolve();
      },
      all() {
        return Promise.resolve([...rows.values()].map((r) => structuredClone(r)));
      },
      close() {},
    };
    return Promise.resolve(store);
  }, { puts: 0, snapshots: 0 });
  return opener;
}
