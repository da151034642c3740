/**
 * History hand-over (DESIGN §4): when a newer login supersedes this device, the server keeps its
 * connection open for a short grace in which it may only signal the user's new session. The old
 * device ({@link HistorySender}) opens a data channel to its own username and hands its whole
 * history over in batches; the new device ({@link HistoryReceiver}) accepts such a channel only
 * from its own username and imports the rows idempotently by message id.
 *
 * Each batch is compressed, sealed and signed to the user himself
 * (`shared/crypto/handover_batch.ts`): both devices hold the same keys after login, so a server in
 * the signaling path that tampers with the WebRTC negotiation still learns nothing and cannot
 * inject rows. Rows go newest first, so the conversation the user needs arrives (and shows)
 * first. Each sealed batch is below 64 KiB; up to {@link SEND_WINDOW} go unacknowledged, so the
 * sender seals the next batch while the last travels and the receiver stores it, and the link's
 * queue keeps the channel's `bufferedAmount` within `MAX_BUFFERED_AMOUNT` (`peer_link.ts`). The
 * receiver binds the transfer to its own nonce, and its final acknowledgement is signed, so only
 * the new device can make the old one stop early.
 *
 * A transfer survives its channel: when a channel drops (a reload, an ICE failure), the sender
 * opens a new one and the receiver says hello with the same nonce; the sender goes on from the
 * first batch not acknowledged, and the receiver acknowledges again a batch it already stored.
 *
 * The first batch of each transfer also carries the keys the user pinned for his contacts
 * (`trust.ts`, ids only), which the new device merges into its own, so a key change not yet
 * accepted stays blocking on the new device too.
 *
 * The pure parts ({@link parseHandoverRows}, {@link HandoverSendJob},
 * {@link HandoverReceiveJob}) take no links or timers; the two link drivers take a
 * {@link PeerLinkFactory} and a signaling function, like `Peers`.
 */
import {
  handoverAckNonce,
  type HandoverCursor,
  type HandoverMessage,
  isValidUsername,
  MAX_FILE_BYTES,
  MAX_TEXT_LENGTH,
  MESSAGE_ID_PATTERN,
  parseHandoverMessage,
  PEER_PROTOCOL_VERSION,
  ProtocolError,
  readArray,
  readNumber,
  readObject,
  readString,
  type SignalData,
  validateFileMeta,
} from "../shared/mod.ts";
import type { ExportedFileStatus, ExportFile, ImportedFile } from "./history_export.ts";
import {
  BatchTooLargeError,
  fromBase64Url,
  importPublicKey,
  MAX_BATCH_PAYLOAD_BYTES,
  MAX_BATCH_PLAIN_BYTES,
  openBatch,
  parseSealedBatch,
  sealBatch,
  signHandoverAck,
  toBase64Url,
  verifyHandoverAck,
} from "../shared/crypto/mod.ts";
import type { MessageRow, MessageStatus, MessageVia, RowSource } from "./history.ts";
import type { OwnKeys } from "./keyring.ts";
import { parseHandoverTrust, type PinRecord } from "./trust.ts";
import { type ContactBook, parseHandoverContacts } from "./contacts.ts";
import { isOffer, type PeerLink, type PeerLinkFactory } from "./peer_link.ts";

/** The user's own keys as a hand-over uses them. */
export interface HandoverKeys {
  /** RSA-PSS private key: signs batches (sender) and the final acknowledgement (receiver). */
  signing: CryptoKey;
  /** RSA-PSS public key: verifies them. */
  verify: CryptoKey;
  /** RSA-OAEP private key: opens batches. */
  decrypt: CryptoKey;
  /** RSA-OAEP public key: seals batches. */
  encrypt: CryptoKey;
}

/** The hand-over keys of the unlocked account keys `own`. */
export async function handoverKeysOf(own: OwnKeys): Promise<HandoverKeys> {
  const [verify, encrypt] = await Promise.all([
    importPublicKey(own.signingPublic, "RSA-PSS"),
    importPublicKey(own.encryptionPublic, "RSA-OAEP"),
  ]);
  return { signing: own.signing, verify, decrypt: own.encryption, encrypt };
}

/** Largest number of rows in one batch (small rows would otherwise make huge batches). */
export const MAX_BATCH_ROWS = 5_000;

/** Batches a sender lets go unacknowledged; the link's own queue keeps `bufferedAmount` bounded. */
export const SEND_WINDOW = 4;

/** Rows the sender tries in its first batch; later batches follow the compression seen. */
const FIRST_BATCH_ROWS = 200;

const encoder = new TextEncoder();

const VIA: readonly MessageVia[] = ["p2p", "relay", "mailbox"];
const STATUS: readonly MessageStatus[] = ["sending", "sent", "delivered", "failed"];

/** Validates one row of `owner`'s history (from a hand-over batch or an export file). */
export function readRow(value: unknown, path: string, owner: string): MessageRow {
  const o = readObject(value, path);
  const row: MessageRow = {
    id: readString(o, "id", path, { pattern: MESSAGE_ID_PATTERN, max: 64 }),
    peer: readString(o, "peer", path, { max: 32 }),
    sender: readString(o, "sender", path, { max: 32 }),
    recipient: readString(o, "recipient", path, { max: 32 }),
    sentAt: readNumber(o, "sentAt", path, { min: 0, max: 8.64e15, integer: true }),
    receivedAt: o.receivedAt === null
      ? null
      : readNumber(o, "receivedAt", path, { min: 0, max: 8.64e15, integer: true }),
    text: readString(o, "text", path, { min: 1, max: MAX_TEXT_LENGTH }),
    via: o.via as MessageVia,
    status: o.status as MessageStatus,
  };
  if (o.attachment !== undefined && o.attachment !== null) {
    // The file a message announces (its size, SHA-256, key and thumbnail), checked as received.
    const json = readString(o, "attachment", path, { max: 16_384 });
    let meta: unknown;
    try {
      meta = JSON.parse(json);
    } catch {
      throw new ProtocolError("bad_json", `${path}.attachment`, "An attachment is not JSON");
    }
    row.attachment = JSON.stringify(validateFileMeta(meta, `${path}.attachment`));
  }
  if (!VIA.includes(row.via)) {
    throw new ProtocolError("bad_frame", `${path}.via`, "via must be p2p, relay or mailbox");
  }
  if (!STATUS.includes(row.status)) {
    throw new ProtocolError("bad_frame", `${path}.status`, "Unknown message status");
  }
  for (const key of ["peer", "sender", "recipient"] as const) {
    if (!isValidUsername(row[key])) {
      throw new ProtocolError("invalid_username", `${path}.${key}`, "Not a username");
    }
  }
  // A row of this user's history is a conversation between him and `peer`, one way or the other.
  const isOwnConversation = row.peer !== owner &&
    ((row.sender === owner && row.recipient === row.peer) ||
      (row.recipient === owner && row.sender === row.peer));
  if (!isOwnConversation) {
    throw new ProtocolError(
      "bad_frame",
      path,
      `Row ${row.id} (${row.sender} → ${row.recipient}) is not a conversation of ${owner}`,
    );
  }
  return row;
}

/** Parses the decrypted payload of a batch: rows of `owner`'s history. Throws a ProtocolError. */
export function parseHandoverRows(payload: string, owner: string): MessageRow[] {
  return parseHandoverPayload(payload, owner).rows;
}

/**
 * Parses the decrypted payload of a batch: an array of rows, or (a transfer's first batch)
 * `{rows, trust, contacts?}` with the user's pinned keys and contact book as well. Throws a
 * ProtocolError.
 */
export function parseHandoverPayload(
  payload: string,
  owner: string,
): {
  rows: MessageRow[];
  trust: PinRecord[] | null;
  contacts?: ContactBook;
  file?: HandoverFilePiece;
} {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    throw new ProtocolError("bad_json", "rows", "History batch is not valid JSON");
  }
  let trust: PinRecord[] | null = null;
  let contacts: ContactBook | undefined;
  let file: HandoverFilePiece | undefined;
  if (!Array.isArray(value)) {
    const o = readObject(value, "");
    if (o.file !== undefined) file = parseFilePiece(o.file);
    else trust = parseHandoverTrust(o.trust, owner);
    if (o.contacts !== undefined) contacts = parseHandoverContacts(o.contacts, owner);
    value = o.rows;
  }
  const rows = readArray(
    { rows: value },
    "rows",
    "",
    MAX_BATCH_ROWS,
    (v, p) => readRow(v, p, owner),
  );
  if (file && rows.length > 0) {
    throw new ProtocolError("bad_frame", "rows", "A batch of a file carries rows");
  }
  return { rows, trust, ...(contacts ? { contacts } : {}), ...(file ? { file } : {}) };
}

/**
 * Bytes of a file one batch carries: base64url in the payload (54,616 characters), which deflates
 * back to about 6 bits a character (~41 KB), under the batch's bound of 44 KiB even for content
 * that does not compress at all; the sealed batch stays under 64 KiB on the wire.
 */
export const HANDOVER_FILE_PIECE = 40 * 1024;

/**
 * Most bytes of files one transfer carries (the sender leaves the older ones out past it, as an
 * export does: `DEFAULT_EXPORT_FILE_BYTES`).
 */
export const MAX_HANDOVER_FILE_BYTES = 256 * 1024 * 1024;

/** Batches a file of `size` bytes takes. */
export function filePieceCount(size: number): number {
  return Math.max(1, Math.ceil(size / HANDOVER_FILE_PIECE));
}

/**
 * One piece of a file, after the rows of a transfer: the file of message `id` (its size and
 * SHA-256 are those of the message's attachment), piece `part` of `parts`.
 */
export interface HandoverFilePiece {
  id: string;
  status: ExportedFileStatus;
  size: number;
  part: number;
  parts: number;
  data: string;
}

function parseFilePiece(value: unknown): HandoverFilePiece {
  const o = readObject(value, "file");
  const status = readString(o, "status", "file", { max: 16 });
  if (status !== "complete" && status !== "sending") {
    throw new ProtocolError("bad_frame", "file.status", "A file is complete or being sent");
  }
  const size = readNumber(o, "size", "file", { min: 0, max: MAX_FILE_BYTES, integer: true });
  const parts = readNumber(o, "parts", "file", {
    min: 1,
    max: filePieceCount(MAX_FILE_BYTES),
    integer: true,
  });
  return {
    id: readString(o, "id", "file", { pattern: MESSAGE_ID_PATTERN, max: 64 }),
    status,
    size,
    part: readNumber(o, "part", "file", { min: 0, max: parts - 1, integer: true }),
    parts,
    data: readString(o, "data", "file", { max: Math.ceil(HANDOVER_FILE_PIECE * 4 / 3) + 4 }),
  };
}

/**
 * The files a transfer carries after its rows, given the rows with an attachment (newest
 * first): those the old device holds, up to {@link MAX_HANDOVER_FILE_BYTES}.
 */
export type HandoverFiles = (rows: readonly MessageRow[]) => Promise<readonly ExportFile[]>;

/** The rows `[start, end)` of a batch, or (after the rows) the file piece it carries. */
interface BatchRange {
  start: number;
  end: number;
  piece?: { file: number; part: number };
}

/** How a hand-over ended, from either side. */
export type HandoverOutcome =
  | { ok: true; rows: number }
  | { ok: false; reason: string };

/** What a job sends and reports. */
export interface JobEvents {
  /** Sends one hand-over message on the channel. */
  send(text: string): void;
  /** `done` of `total` rows are handed over (sender) or stored (receiver). */
  onProgress?(done: number, total: number, files?: FileProgressCount): void;
}

/** Batches of files handed over (sender) so far, and in all. */
export interface FileProgressCount {
  done: number;
  total: number;
}

function message(m: HandoverMessage): string {
  return JSON.stringify(m);
}

/**
 * The sender's side of one transfer, without the channel: it answers the receiver's hello with
 * sealed batches of `rows` (in the order given: newest first), up to {@link SEND_WINDOW} of them
 * unacknowledged, and resolves {@link outcome} once the receiver's signed acknowledgement
 * verifies. A hello with the nonce it already serves resumes after the last acknowledged batch.
 */
export class HandoverSendJob {
  /** Settles when the transfer ends (never rejects). */
  readonly outcome: Promise<HandoverOutcome>;
  #owner: string;
  #keys: HandoverKeys;
  #rows: RowSource;
  #events: JobEvents;
  /**
   * Row ranges of the batches made so far: batch `seq` is `rows[start, end)`; after the rows, a
   * batch of a file is `piece` (its file in {@link #fileList}, and its part) with no rows.
   */
  #ranges: BatchRange[] = [];
  /** The files to carry after the rows (listed once the last rows are sealed), if any. */
  #files: HandoverFiles | undefined;
  #fileList: readonly ExportFile[] | null = null;
  /** The content of the file being sent. */
  #reading: { file: number; bytes: Promise<Uint8Array<ArrayBuffer> | null> } | null = null;
  #rowsPerBatch = FIRST_BATCH_ROWS;
  #nonce: string | null = null;
  /** The receiver's cursor from an earlier transfer, and the first row after it. */
  #after: HandoverCursor | undefined;
  #offset = 0;
  /** Next batch to send, and batches acknowledged (always in order). */
  #next = 0;
  #acked = 0;
  /** Bumped by every hello and pause: a batch sealed for an earlier one is dropped. */
  #generation = 0;
  #isPumping = false;
  #isPaused = true;
  #settle!: (o: HandoverOutcome) => void;
  #settled = false;
  #queue: Promise<void> = Promise.resolve();
  /** The pinned keys' JSON (`trust.ts`, `handoverTrust`), sent with each transfer's first batch. */
  #trust: string | undefined;
  /** The contact book's JSON (`contacts.ts`, `handoverContacts`), sent with the trust. */
  #contacts: string | undefined;

  /**
   * Prepares the transfer of `rows` (a snapshot of the history, newest first) and, with its
   * first batch, of `trust` (the pinned keys, as `handoverTrust` serializes them).
   */
  constructor(
    owner: string,
    keys: HandoverKeys,
    rows: RowSource,
    events: JobEvents,
    trust?: string,
    contacts?: string,
    files?: HandoverFiles,
  ) {
    this.#files = files;
    this.#owner = owner;
    this.#contacts = contacts;
    this.#keys = keys;
    this.#rows = rows;
    this.#events = events;
    this.#trust = trust;
    this.outcome = new Promise((resolve) => this.#settle = resolve);
  }

  /** Rows the receiver holds so far (acknowledged, or skipped by its cursor), and the total. */
  get progress(): { done: number; total: number } {
    return { done: this.#ackedRows(), total: this.#rows.length };
  }

  /** The first row (newest first) strictly after `after`: what an interrupted transfer lacks. */
  #offsetAfter(after: HandoverCursor | undefined): number {
    if (!after) return 0;
    const isAfter = (r: MessageRow) =>
      r.sentAt < after.sentAt || (r.sentAt === after.sentAt && r.id < after.id);
    const step = 1_000;
    for (let start = 0; start < this.#rows.length; start += step) {
      const chunk = this.#rows.slice(start, Math.min(this.#rows.length, start + step));
      const i = chunk.findIndex(isAfter);
      if (i < 0) continue;
      // Only a cursor on a row of this history counts (a transfer from another device of the
      // user stopped there, say): otherwise everything goes.
      const at = start + i;
      return at > 0 && this.#rows.slice(at - 1, at)[0]?.id === after.id ? at : 0;
    }
    const n = this.#rows.length;
    return n > 0 && this.#rows.slice(n - 1, n)[0]?.id === after.id ? n : 0;
  }

  /** Feeds one message from the receiver. */
  receive(text: string): void {
    this.#queue = this.#queue.then(() => this.#receive(text)).catch((err) =>
      this.#finish({ ok: false, reason: (err as Error).message })
    );
  }

  /** The channel is gone: sends nothing until the receiver says hello again. */
  pause(): void {
    this.#isPaused = true;
    this.#generation++;
    this.#next = this.#acked;
  }

  /** Ends the job from outside (grace over, page leaving). */
  abort(reason: string): void {
    this.#finish({ ok: false, reason });
  }

  async #receive(text: string): Promise<void> {
    if (this.#settled) return;
    const msg = parseHandoverMessage(text);
    switch (msg.type) {
      case "handover_hello":
        if (msg.nonce !== this.#nonce) {
          // A new transfer (the receiver lost its state, or this device came back): everything
          // after the receiver's cursor, under its nonce.
          this.#nonce = msg.nonce;
          this.#after = msg.after;
          this.#offset = this.#offsetAfter(msg.after);
          this.#ranges = [];
          this.#acked = 0;
        }
        this.#isPaused = false;
        this.#generation++;
        this.#next = this.#acked;
        void this.#pump();
        return;
      case "handover_received": {
        if (this.#nonce === null || msg.seq < this.#acked || msg.seq >= this.#next) return;
        this.#acked = msg.seq + 1;
        this.#events.onProgress?.(this.#ackedRows(), this.#rows.length, this.#filesProgress());
        void this.#pump();
        return;
      }
      case "handover_done": {
        const nonce = this.#nonce;
        const valid = nonce !== null && msg.rows === this.#rows.length - this.#offset &&
          await verifyHandoverAck(
            this.#owner,
            handoverAckNonce(nonce, this.#after),
            msg.rows,
            msg.signature,
            this.#keys.verify,
          );
        this.#finish(
          valid
            ? { ok: true, rows: this.#rows.length }
            : { ok: false, reason: "The acknowledgement of the new device does not verify" },
        );
        return;
      }
      case "handover_rejected":
        this.#finish({ ok: false, reason: `The new device refused the history: ${msg.reason}` });
        return;
      case "handover_batch":
        throw new ProtocolError("bad_frame", "type", "The receiver sent a history batch");
    }
  }

  /** File batches acknowledged, and in all (none before the files are listed). */
  #filesProgress(): FileProgressCount {
    const list = this.#fileList ?? [];
    const total = list.reduce((n, f) => n + filePieceCount(f.size), 0);
    let done = 0;
    for (let seq = 0; seq < this.#acked; seq++) if (this.#ranges[seq]?.piece) done++;
    return { done, total };
  }

  #ackedRows(): number {
    return this.#acked === 0 ? this.#offset : this.#ranges[this.#acked - 1]!.end;
  }

  #isComplete(seq: number): boolean {
    const last = this.#ranges.at(-1);
    if (seq < this.#ranges.length || last === undefined || last.end !== this.#rows.length) {
      return false;
    }
    // The last batch made was the final one: the rows' if no file follows, or a file's last.
    return this.#files === undefined || (this.#fileList !== null && this.#nextPiece(last) === null);
  }

  /** The files to carry after the rows: listed once, from every row with an attachment. */
  async #listFiles(): Promise<readonly ExportFile[]> {
    if (this.#fileList) return this.#fileList;
    if (!this.#files) return this.#fileList = [];
    const withFiles: MessageRow[] = [];
    for (let start = 0; start < this.#rows.length; start += 1_000) {
      const end = Math.min(this.#rows.length, start + 1_000);
      for (const row of this.#rows.slice(start, end)) if (row.attachment) withFiles.push(row);
    }
    return this.#fileList ??= await this.#files(withFiles);
  }

  /** The file piece after batch `after` (null: none; the first if `after` was of rows). */
  #nextPiece(
    after: { piece?: { file: number; part: number } },
  ): { file: number; part: number } | null {
    const list = this.#fileList ?? [];
    let next = after.piece
      ? { file: after.piece.file, part: after.piece.part + 1 }
      : { file: 0, part: 0 };
    if (next.file < list.length && next.part >= filePieceCount(list[next.file]!.size)) {
      next = { file: next.file + 1, part: 0 };
    }
    return next.file < list.length ? next : null;
  }

  /** Seals the batch of a file piece. */
  async #sealPiece(
    ranges: BatchRange[],
    seq: number,
    nonce: string,
    piece: { file: number; part: number },
  ): Promise<string> {
    const list = await this.#listFiles();
    const f = list[piece.file]!;
    if (this.#reading?.file !== piece.file) {
      this.#reading = { file: piece.file, bytes: f.read() };
    }
    const bytes = await this.#reading.bytes;
    if (!bytes || bytes.length !== f.size) {
      throw new Error(`A file (${f.id}) could not be read on this device`);
    }
    const start = piece.part * HANDOVER_FILE_PIECE;
    const data = bytes.subarray(start, Math.min(f.size, start + HANDOVER_FILE_PIECE));
    const file: HandoverFilePiece = {
      id: f.id,
      status: f.status,
      size: f.size,
      part: piece.part,
      parts: filePieceCount(f.size),
      data: toBase64Url(data),
    };
    const batch = await sealBatch(
      {
        owner: this.#owner,
        nonce,
        seq,
        total: this.#rows.length - this.#offset,
        final: this.#nextPiece({ piece }) === null,
      },
      JSON.stringify({ rows: [], file }),
      this.#keys.signing,
      this.#keys.encrypt,
    );
    ranges[seq] ??= { start: this.#rows.length, end: this.#rows.length, piece };
    return message({ v: PEER_PROTOCOL_VERSION, type: "handover_batch", batch });
  }

  /** Sends batches while the window has room; one pump at a time. */
  async #pump(): Promise<void> {
    if (this.#isPumping) return;
    this.#isPumping = true;
    try {
      while (
        !this.#settled && !this.#isPaused && this.#nonce !== null &&
        this.#next - this.#acked < SEND_WINDOW &&
        !this.#isComplete(this.#next)
      ) {
        const generation = this.#generation;
        const seq = this.#next;
        const text = await this.#seal(seq, this.#nonce);
        if (this.#settled || generation !== this.#generation) continue;
        this.#next = seq + 1;
        this.#events.send(text);
      }
    } catch (err) {
      this.#finish({ ok: false, reason: (err as Error).message });
    } finally {
      this.#isPumping = false;
    }
  }

  /** Seals batch `seq`, choosing its rows the first time so it fits once compressed. */
  async #seal(seq: number, nonce: string): Promise<string> {
    // This transfer's ranges: a hello with a new nonce replaces the array, and a batch sealed
    // meanwhile for the old transfer must not leave its range in the new one.
    const ranges = this.#ranges;
    const known = ranges[seq];
    const prev = ranges[seq - 1];
    if (known?.piece) return await this.#sealPiece(ranges, seq, nonce, known.piece);
    if (!known && seq > 0 && prev?.end === this.#rows.length) {
      await this.#listFiles();
      const piece = this.#nextPiece(prev);
      if (piece) return await this.#sealPiece(ranges, seq, nonce, piece);
    }
    const start = known?.start ?? prev?.end ?? this.#offset;
    let count = known
      ? known.end - known.start
      : Math.min(this.#rowsPerBatch, MAX_BATCH_ROWS, this.#rows.length - start);
    for (;;) {
      const rows = this.#rows.slice(start, start + count);
      const payload = seq === 0 && this.#trust !== undefined
        ? `{"rows":${JSON.stringify(rows)},"trust":${this.#trust}${
          this.#contacts === undefined ? "" : `,"contacts":${this.#contacts}`
        }}`
        : JSON.stringify(rows);
      const isLastRows = start + count === this.#rows.length;
      // Files follow the last rows, if there are any to carry.
      const hasFiles = isLastRows && (await this.#listFiles()).length > 0;
      try {
        const batch = await sealBatch(
          {
            owner: this.#owner,
            nonce,
            seq,
            total: this.#rows.length - this.#offset,
            final: isLastRows && !hasFiles,
          },
          payload,
          this.#keys.signing,
          this.#keys.encrypt,
        );
        if (!known) {
          ranges[seq] = { start, end: start + count };
          // Aim the next batch at ~85% of the bound, by the compression this one got.
          const compressed = Math.max(1, (batch.ciphertext.length * 3) / 4);
          this.#rowsPerBatch = Math.max(
            1,
            Math.min(
              MAX_BATCH_ROWS,
              Math.floor(count * 0.85 * MAX_BATCH_PAYLOAD_BYTES / compressed),
            ),
          );
        }
        return message({ v: PEER_PROTOCOL_VERSION, type: "handover_batch", batch });
      } catch (err) {
        if (!(err instanceof BatchTooLargeError) || count <= 1 || known) throw err;
        const ratio = err.compressedBytes > 0
          ? (0.85 * MAX_BATCH_PAYLOAD_BYTES) / err.compressedBytes
          : (0.85 * MAX_BATCH_PLAIN_BYTES) / encoder.encode(payload).length;
        count = Math.max(1, Math.min(count - 1, Math.floor(count * ratio)));
      }
    }
  }

  #finish(outcome: HandoverOutcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle(outcome);
  }
}

/** Where a receiving job puts the rows it accepted. */
export interface ReceiveEvents extends JobEvents {
  /** Stores `rows` durably (idempotently by id); resolves how many were new. */
  importRows(rows: MessageRow[]): Promise<number>;
  /** Keeps the pinned keys of the old device (merged with this one's) before the rows. */
  importTrust?(pins: PinRecord[]): Promise<void>;
  /** Keeps the contact book of the old device (merged with this one's) before the rows. */
  importContacts?(book: ContactBook): Promise<void>;
  /** Stores a file carried after the rows (its size and SHA-256 checked against its message). */
  importFile?(file: ImportedFile): Promise<void>;
  /** A row stored here before this transfer (by an interrupted one it resumes), or null. */
  findRow?(id: string): MessageRow | null;
}

/**
 * The receiver's side of one transfer, without the channel: {@link start} says hello with its
 * nonce (again on every new channel, to resume); every batch must verify as the owner's, carry
 * that nonce and come in order, or the whole transfer is refused; rows are stored before each
 * batch is acknowledged, and a batch already stored is only acknowledged again.
 */
export class HandoverReceiveJob {
  /** Settles when the transfer ends (never rejects). */
  readonly outcome: Promise<HandoverOutcome>;
  #owner: string;
  #keys: HandoverKeys;
  #events: ReceiveEvents;
  #nonce = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
  /** Next batch to open, rows opened (verified, decrypted) and rows stored durably. */
  #seq = 0;
  #opened = 0;
  #stored = 0;
  #total: number | null = null;
  #settle!: (o: HandoverOutcome) => void;
  #settled = false;
  #queue: Promise<void> = Promise.resolve();
  #storing: Promise<void> = Promise.resolve();

  /** Where an earlier, interrupted transfer stopped, and how many rows it had stored. */
  #after: HandoverCursor | undefined;
  #base: number;
  /** The oldest row stored so far (rows come newest first). */
  #last: HandoverCursor | undefined;
  /** The rows of this transfer with an attachment, by id (a file after the rows is theirs). */
  #attachments = new Map<string, MessageRow>();
  /** The file whose pieces are arriving, the files complete, and their bytes in all. */
  #file: {
    id: string;
    status: ExportedFileStatus;
    sha256: string;
    size: number;
    parts: number;
    pieces: Uint8Array<ArrayBuffer>[];
  } | null = null;
  #filesDone = new Set<string>();
  #fileBytes = 0;

  /**
   * Prepares to receive `owner`'s history; `resume` continues an interrupted transfer after
   * its cursor (`stored`: the rows it had stored, for the progress shown).
   */
  constructor(
    owner: string,
    keys: HandoverKeys,
    events: ReceiveEvents,
    resume?: { after: HandoverCursor; stored: number },
  ) {
    this.#owner = owner;
    this.#keys = keys;
    this.#events = events;
    this.#after = resume?.after;
    this.#last = resume?.after;
    this.#base = resume?.stored ?? 0;
    this.outcome = new Promise((resolve) => this.#settle = resolve);
  }

  /**
   * Rows stored so far and the transfer's total (null before the first batch), counting those
   * an interrupted transfer it resumes had stored.
   */
  get progress(): { done: number; total: number | null } {
    return {
      done: this.#base + this.#stored,
      total: this.#total === null ? null : this.#base + this.#total,
    };
  }

  /** Where to resume if this transfer is interrupted: the oldest row stored, and the count. */
  get resumePoint(): { after: HandoverCursor; stored: number } | undefined {
    return this.#last ? { after: this.#last, stored: this.#base + this.#stored } : undefined;
  }

  /** Whether the transfer ended. */
  get isSettled(): boolean {
    return this.#settled;
  }

  /** Opens or resumes the transfer: call whenever a channel opens. */
  start(): void {
    if (this.#settled) return;
    this.#events.send(
      message({
        v: PEER_PROTOCOL_VERSION,
        type: "handover_hello",
        nonce: this.#nonce,
        ...(this.#after ? { after: this.#after } : {}),
      }),
    );
  }

  /** Feeds one message from the sender. */
  receive(text: string): void {
    this.#queue = this.#queue.then(() => this.#receive(text)).catch((err) => {
      const reason = (err as Error).message;
      if (!this.#settled) {
        this.#events.send(
          message({
            v: PEER_PROTOCOL_VERSION,
            type: "handover_rejected",
            reason: reason.slice(0, 500),
          }),
        );
      }
      this.#finish({ ok: false, reason });
    });
  }

  /** Ends the job from outside (the sender went away for good, logout). */
  abort(reason: string): void {
    this.#finish({ ok: false, reason });
  }

  async #receive(text: string): Promise<void> {
    if (this.#settled) return;
    const msg = parseHandoverMessage(text);
    if (msg.type !== "handover_batch") {
      throw new ProtocolError("bad_frame", "type", `Unexpected "${msg.type}" from the sender`);
    }
    const batch = parseSealedBatch(msg.batch);
    if (batch.owner !== this.#owner) {
      throw new ProtocolError("bad_frame", "batch.owner", `A batch for ${batch.owner}`);
    }
    if (batch.nonce !== this.#nonce) {
      throw new ProtocolError("bad_frame", "batch.nonce", "A batch of another transfer");
    }
    if (this.#total !== null && batch.total !== this.#total) {
      throw new ProtocolError("bad_frame", "batch.total", "A batch of another size of transfer");
    }
    if (batch.seq < this.#seq) {
      // Sent again after a new channel: opened already, its acknowledgement was lost. It is
      // acknowledged again once the rows are stored (the store stage keeps the order).
      this.#store(() => Promise.resolve(this.#acknowledge(batch.seq)));
      return;
    }
    if (batch.seq !== this.#seq) {
      throw new ProtocolError("bad_frame", "batch.seq", "A batch out of order");
    }
    const payload = await openBatch(batch, this.#keys.decrypt, this.#keys.verify);
    const { rows, trust, contacts, file: piece } = parseHandoverPayload(payload, this.#owner);
    for (const row of rows) if (row.attachment) this.#attachments.set(row.id, row);
    const file = piece ? await this.#takePiece(piece) : null;
    if (batch.final && this.#file) {
      throw new ProtocolError("bad_frame", "batch.final", "The last batch cut a file short");
    }
    if (this.#opened + rows.length > batch.total) {
      throw new ProtocolError("bad_frame", "batch.total", "More rows than announced");
    }
    if (batch.final && this.#opened + rows.length !== batch.total) {
      throw new ProtocolError("bad_frame", "batch.total", "Fewer rows than announced");
    }
    this.#total = batch.total;
    this.#opened += rows.length;
    this.#seq++;
    // Two stages: while these rows are written, the next batch is already verified and opened.
    this.#store(async () => {
      if (file) await this.#events.importFile?.(file);
      if (trust) await this.#events.importTrust?.(trust);
      if (contacts) await this.#events.importContacts?.(contacts);
      await this.#events.importRows(rows);
      if (this.#settled) return;
      this.#stored += rows.length;
      const oldest = rows.at(-1);
      if (oldest) this.#last = { sentAt: oldest.sentAt, id: oldest.id };
      this.#events.onProgress?.(this.#base + this.#stored, this.#base + batch.total);
      this.#acknowledge(batch.seq);
      if (!batch.final) return;
      const signature = await signHandoverAck(
        this.#owner,
        handoverAckNonce(this.#nonce, this.#after),
        this.#stored,
        this.#keys.signing,
      );
      this.#events.send(
        message({ v: PEER_PROTOCOL_VERSION, type: "handover_done", rows: this.#stored, signature }),
      );
      this.#finish({ ok: true, rows: this.#base + this.#stored });
    });
  }

  /**
   * Checks one piece of a file (in order, of a message of this history, of its announced size)
   * and resolves the file once its last piece came and its SHA-256 is the message's; throws a
   * ProtocolError (the whole transfer is refused, and nothing of that file is kept) otherwise.
   */
  async #takePiece(piece: HandoverFilePiece): Promise<ImportedFile | null> {
    const bad = (field: string, why: string) =>
      new ProtocolError("bad_frame", `file.${field}`, why);
    if (piece.part === 0) {
      if (this.#file) throw bad("part", `The file ${this.#file.id} was cut short`);
      if (this.#filesDone.has(piece.id)) throw bad("id", `The file ${piece.id} came twice`);
      const row = this.#attachments.get(piece.id) ?? this.#events.findRow?.(piece.id) ?? null;
      if (!row?.attachment) throw bad("id", `A file (${piece.id}) of no message of this history`);
      const meta = validateFileMeta(JSON.parse(row.attachment));
      if (piece.size !== meta.size || piece.parts !== filePieceCount(meta.size)) {
        throw bad("size", `The file "${meta.name}" is not the size its message says`);
      }
      if (this.#fileBytes + meta.size > MAX_HANDOVER_FILE_BYTES) {
        throw bad("size", "More bytes of files than a hand-over carries");
      }
      if (piece.status === "sending" && row.sender !== this.#owner) {
        throw bad("status", `The file "${meta.name}" was not sent by ${this.#owner}`);
      }
      this.#file = {
        id: piece.id,
        status: piece.status,
        sha256: meta.sha256,
        size: meta.size,
        parts: piece.parts,
        pieces: [],
      };
    }
    const f = this.#file;
    if (!f || f.id !== piece.id || piece.part !== f.pieces.length || piece.size !== f.size) {
      throw bad("part", "A piece of a file out of order");
    }
    let data: Uint8Array<ArrayBuffer>;
    try {
      data = fromBase64Url(piece.data);
    } catch {
      throw bad("data", "A piece of a file is not base64url");
    }
    const start = piece.part * HANDOVER_FILE_PIECE;
    if (data.length !== Math.min(HANDOVER_FILE_PIECE, f.size - start)) {
      throw bad("data", "A piece of a file is not the size it should be");
    }
    f.pieces.push(data);
    if (f.pieces.length < f.parts) return null;
    this.#file = null;
    const bytes = new Uint8Array(f.size);
    f.pieces.forEach((p, i) => bytes.set(p, i * HANDOVER_FILE_PIECE));
    if (toBase64Url(await crypto.subtle.digest("SHA-256", bytes)) !== f.sha256) {
      throw bad("data", `The file ${f.id} is not the content its message says (SHA-256)`);
    }
    this.#filesDone.add(f.id);
    this.#fileBytes += f.size;
    return { id: f.id, status: f.status, bytes };
  }

  /** Runs `step` after the previous store steps, in order; a failure ends the transfer. */
  #store(step: () => Promise<void>): void {
    this.#storing = this.#storing.then(() => this.#settled ? undefined : step()).catch((err) =>
      this.#finish({ ok: false, reason: (err as Error).message })
    );
  }

  #acknowledge(seq: number): void {
    this.#events.send(message({ v: PEER_PROTOCOL_VERSION, type: "handover_received", seq }));
  }

  #finish(outcome: HandoverOutcome): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#settle(outcome);
  }
}

/** Collaborators of the two link drivers. */
export interface HandoverLinkDeps {
  /** This user's name (the remote side of the channel is the same user). */
  me: string;
  keys: HandoverKeys;
  createLink: PeerLinkFactory;
  /** Sends a signal to this user's other session, through the servers. */
  sendSignal(data: SignalData): void;
  /** Progress of the transfer, in rows. */
  onProgress?(done: number, total: number, files?: FileProgressCount): void;
}

function newLinkId(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(8)));
}

/**
 * The old device's side: opens a data channel to its own username (as initiator), hands `rows`
 * (newest first) over, and resolves {@link run}'s promise when the new device acknowledges, or
 * when `deadlineMs` passes (then nothing was lost: the history stays here, and the new device
 * gets its mail from the servers). A channel that closes early is opened again while time
 * remains, and the transfer goes on where it stopped.
 */
export class HistorySender {
  #deps: HandoverLinkDeps;
  #job: HandoverSendJob;
  #link: { link: PeerLink; lid: string; waiting: string[] | null } | null = null;
  #done = false;
  #finish: (o: HandoverOutcome) => void = () => {};
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs: number;
  #onAcked: () => void = () => {};

  /**
   * Prepares the hand-over of `rows` (the whole history, newest first) and `options.trust` (the
   * pinned keys, serialized by `handoverTrust`).
   */
  constructor(
    deps: HandoverLinkDeps,
    rows: RowSource,
    options: { retryMs?: number; trust?: string; contacts?: string; files?: HandoverFiles } = {},
  ) {
    this.#deps = deps;
    this.#retryMs = options.retryMs ?? 1_000;
    this.#job = new HandoverSendJob(
      deps.me,
      deps.keys,
      rows,
      {
        send: (text) => this.#send(text),
        onProgress: (done, total, files) => {
          this.#onAcked();
          deps.onProgress?.(done, total, files);
        },
      },
      options.trust,
      options.contacts,
      options.files,
    );
  }

  /** Rows the new device acknowledged so far, and the total. */
  get progress(): { done: number; total: number } {
    return this.#job.progress;
  }

  /**
   * Runs the hand-over until it ends, giving up when `idleMs` pass without the new device
   * acknowledging more rows (the servers end the grace at their own bound in any case).
   */
  run(idleMs: number): Promise<HandoverOutcome> {
    const outcome = new Promise<HandoverOutcome>((resolve) => this.#finish = resolve);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => this.stop("Your new device did not take the whole history in time"),
        idleMs,
      );
    };
    this.#onAcked = arm;
    arm();
    void this.#job.outcome.then((o) => this.#end(o));
    this.#open();
    return outcome.finally(() => clearTimeout(timer));
  }

  /** Handles a signal from this user's other session. */
  handleSignal(data: SignalData): void {
    const entry = this.#link;
    if (!entry || data.lid !== entry.lid) return;
    const { lid: _lid, ...inner } = data;
    entry.link.signal(inner);
  }

  /** Ends the hand-over (the server closed the connection, or the page is leaving). */
  stop(reason: string): void {
    this.#job.abort(reason);
  }

  #send(text: string): void {
    const entry = this.#link;
    if (!entry) return;
    // The receiver's hello can arrive before this side reports the channel open (simple-peer
    // reports `connect` only once its own checks pass): answers wait for the open.
    if (entry.waiting) {
      entry.waiting.push(text);
      return;
    }
    try {
      entry.link.send(text);
    } catch {
      // The channel is failing: its close follows, and the transfer resumes on a new one.
    }
  }

  #open(): void {
    if (this.#done) return;
    const lid = newLinkId();
    const isCurrent = () => this.#link === entry;
    const entry: { link: PeerLink; lid: string; waiting: string[] | null } = {
      lid,
      waiting: [],
      link: this.#deps.createLink({ remote: this.#deps.me, initiator: true }, {
        onSignal: (data) => {
          if (isCurrent()) this.#deps.sendSignal({ ...data, lid });
        },
        onOpen: () => {
          const queued = entry.waiting ?? [];
          entry.waiting = null;
          if (!isCurrent()) return;
          for (const text of queued) this.#send(text);
        },
        onMessage: (text) => {
          if (isCurrent()) this.#job.receive(text);
        },
        onClose: () => {
          if (!isCurrent() || this.#done) return;
          // The receiver went away mid-transfer (a reload, say): offer a new channel, and go on
          // from the last acknowledged batch once it says hello again.
          this.#link = null;
          this.#job.pause();
          this.#retry = setTimeout(() => this.#open(), this.#retryMs);
        },
      }),
    };
    this.#link = entry;
  }

  #end(outcome: HandoverOutcome): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#retry);
    const entry = this.#link;
    this.#link = null;
    // Let the last message (the ack's answer) leave before closing the channel.
    if (entry) setTimeout(() => entry.link.destroy(), 200);
    this.#finish(outcome);
  }
}

/** Options of a {@link HistoryReceiver}. */
export interface HistoryReceiverOptions {
  /**
   * How long a started transfer may go without a batch (its channel lost and no new one) before
   * it counts as failed, ms. @default 20000
   */
  stallMs?: number;
}

/**
 * The new device's side: accepts hand-over channels from its own username only. One transfer
 * outlives its channels: a new offer from the old device resumes it where it stopped.
 */
export class HistoryReceiver {
  #deps:
    & HandoverLinkDeps
    & Pick<
      ReceiveEvents,
      "importRows" | "importTrust" | "importContacts" | "importFile" | "findRow"
    >;
  #stallMs: number;
  #link: { link: PeerLink; lid: string } | null = null;
  #job: HandoverReceiveJob | null = null;
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** Where to resume the next transfer when no earlier one ran in this page. */
  #resume: { after: HandoverCursor; stored: number } | undefined;
  /** Reports the end of each transfer, with the rows stored and the total announced. */
  onOutcome?: (outcome: HandoverOutcome, progress: { done: number; total: number | null }) => void;

  /** Waits for a hand-over offer from this user's superseded device. */
  constructor(
    deps:
      & HandoverLinkDeps
      & Pick<
        ReceiveEvents,
        "importRows" | "importTrust" | "importContacts" | "importFile" | "findRow"
      >,
    options: HistoryReceiverOptions = {},
  ) {
    this.#deps = deps;
    this.#stallMs = options.stallMs ?? 20_000;
  }

  /**
   * Where the last transfer stopped, to keep across a reload: undefined if none stored a row,
   * or if it completed.
   */
  get resumePoint(): { after: HandoverCursor; stored: number } | undefined {
    const job = this.#job;
    if (!job) return this.#resume;
    return job.isSettled && job.progress.done === job.progress.total ? undefined : job.resumePoint;
  }

  /** Resumes the next transfer after `point` (kept from an interrupted one before a reload). */
  resumeFrom(point: { after: HandoverCursor; stored: number } | undefined): void {
    this.#resume = point;
  }

  /** Handles a signal from this user's other (superseded) device. */
  handleSignal(data: SignalData): void {
    if (this.#closed) return;
    const lid = typeof data.lid === "string" ? data.lid : "";
    const { lid: _lid, ...inner } = data;
    if (isOffer(data) && lid) {
      this.#accept(lid).signal(inner);
      return;
    }
    const entry = this.#link;
    if (entry && entry.lid === lid) entry.link.signal(inner);
  }

  /** Closes any hand-over channel (logout). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#watchdog);
    const entry = this.#link;
    this.#link = null;
    this.#job?.abort("closed");
    entry?.link.destroy();
  }

  #accept(lid: string): PeerLink {
    const old = this.#link;
    this.#link = null;
    old?.link.destroy();
    const job = this.#job && !this.#job.isSettled ? this.#job : this.#newJob();
    const isCurrent = () => this.#link === entry;
    const entry = {
      lid,
      link: this.#deps.createLink({ remote: this.#deps.me, initiator: false }, {
        onSignal: (data) => {
          if (isCurrent()) this.#deps.sendSignal({ ...data, lid });
        },
        onOpen: () => {
          if (!isCurrent()) return;
          this.#arm(job);
          job.start();
        },
        onMessage: (text) => {
          if (!isCurrent()) return;
          this.#arm(job);
          job.receive(text);
        },
        onClose: () => {
          // The watchdog decides when the sender is gone for good.
          if (isCurrent()) this.#link = null;
        },
      }),
    };
    this.#link = entry;
    this.#arm(job);
    return entry.link;
  }

  #newJob(): HandoverReceiveJob {
    // A transfer that failed midway resumes after the oldest row it stored (the old device
    // came back, within its grace or later through a deferred claim).
    const resume = this.resumePoint;
    const job: HandoverReceiveJob = new HandoverReceiveJob(this.#deps.me, this.#deps.keys, {
      send: (text) => {
        try {
          if (this.#job === job) this.#link?.link.send(text);
        } catch {
          // The channel is failing: the sender opens a new one and resends.
        }
      },
      onProgress: this.#deps.onProgress,
      importRows: (rows) => this.#deps.importRows(rows),
      importTrust: (pins) => this.#deps.importTrust?.(pins) ?? Promise.resolve(),
      importContacts: (book) => this.#deps.importContacts?.(book) ?? Promise.resolve(),
      importFile: (file) => this.#deps.importFile?.(file) ?? Promise.resolve(),
      findRow: (id) => this.#deps.findRow?.(id) ?? null,
    }, resume);
    this.#job = job;
    void job.outcome.then((o) => {
      if (this.#job !== job) return;
      clearTimeout(this.#watchdog);
      if (!this.#closed) this.onOutcome?.(o, job.progress);
      if (!o.ok) {
        const entry = this.#link;
        this.#link = null;
        if (entry) setTimeout(() => entry.link.destroy(), 200);
      }
    });
    return job;
  }

  #arm(job: HandoverReceiveJob): void {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(
      () => job.abort("Your other device stopped sending"),
      this.#stallMs,
    );
  }
}
