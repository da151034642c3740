/**
 * Files between two users of one logged-in session (issue 15; the wire format is
 * `shared/file_protocol.ts`).
 *
 * Sending: {@link FileTransfers.prepare} checks the size against the user's limit, hashes the
 * content, makes a fresh AES-256-GCM key (and a thumbnail for images) and keeps the content on
 * this device; the caller sends the announcing message through the outbox like any text (its
 * sealed body carries the {@link FileMeta}). The chunks then go
 * - over the data channel when the receiver asks for them (`file_have`): from the first chunk it
 *   misses, one at a time while the channel's buffer holds at most {@link MAX_BUFFERED_AMOUNT}
 *   (waiting for `bufferedamountlow`). A dropped channel stops the stream; when one opens again
 *   the receiver asks from its first missing chunk and the stream goes on from there;
 * - to the recipient's mailbox, a few chunks per `mail_send`, when the announcing message went
 *   there (the contact was offline). A refusal (the per-sender quota) is shown; what was stored
 *   stays, and the rest goes over the data channel once the contact is online and asks.
 *
 * Receiving: every chunk is checked against the announced size (index in range, exact length),
 * decrypted (its AES-GCM tag binds it to the file and the index) and kept in the
 * {@link FileStore}; once all are there the content is hashed, and stored as the file only if its
 * SHA-256 is the announced one (otherwise it shows as damaged). So a hostile sender cannot make
 * this browser keep more than the announced size, write outside the file, or show other content
 * than it announced.
 */
import { signal } from "@preact/signals";
import {
  checkChunk,
  chunkCount,
  decryptChunk,
  encryptChunk,
  FILE_CHUNK_BYTES,
  type FileFrame,
  type FileMeta,
  importFileKey,
  type IncomingMail,
  INLINE_IMAGE_TYPES,
  MAX_FILE_NAME,
  type OutgoingMail,
  PEER_PROTOCOL_VERSION,
  ProtocolError,
  readEnvelope,
  validateFileFrame,
  validateFileMeta,
} from "../shared/mod.ts";
import { fromBase64Url, toBase64Url } from "../shared/crypto/mod.ts";
import type { FileStatus, FileStore, StoredFileState } from "./file_store.ts";
import type { MessageRow, MessageVia } from "./history.ts";
import { MAX_BUFFERED_AMOUNT } from "./peer_link.ts";
import type { ExportFile } from "./history_export.ts";

/** Device setting: the largest file this user sends or accepts, in MB. */
export const MAX_FILE_MB_KEY = "p2pchat.maxFileMb";
/** {@link MAX_FILE_MB_KEY} when unset. */
export const DEFAULT_MAX_FILE_MB = 25;
/** The receiver reports how far it is every this many chunks. */
export const HAVE_EVERY = 16;
/**
 * A receiver that got no chunk of a file for this long asks again (ms): over the open channel
 * (its earlier request may have been lost with a channel, or never answered), or for a channel
 * when none is open (the last attempt to open one may have failed).
 */
export const STALL_MS = 5_000;
/** Chunks per `mail_send` (one client frame is at most 64 KiB). */
export const MAIL_CHUNK_BATCH = 3;
/** Wait before sending the next mailbox batch after `rate_limited`, ms. */
const MAIL_RATE_RETRY_MS = 1_000;

/** The user's size limit, from the device setting. */
export function maxFileBytes(storage?: { getItem(key: string): string | null }): number {
  const mb = Number(storage?.getItem(MAX_FILE_MB_KEY) ?? DEFAULT_MAX_FILE_MB);
  const ok = Number.isFinite(mb) && mb > 0 ? mb : DEFAULT_MAX_FILE_MB;
  return Math.floor(ok * 1024 * 1024);
}

/** A file bigger than the user's limit: nothing was stored or sent. */
export class FileTooLargeError extends Error {
  override name = "FileTooLargeError";
  constructor(readonly size: number, readonly limit: number) {
    super(
      `This file is ${mb(size)}; files up to ${mb(limit)} can be sent ` +
        `(change the limit under "Largest file")`,
    );
  }
}

function mb(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

/** What the views show of one transfer. */
export interface FileProgress {
  id: string;
  peer: string;
  outgoing: boolean;
  status: FileStatus;
  /** Chunks the receiver holds (as it last said, for the sender). */
  done: number;
  total: number;
  /** Sender: chunk frames sent over data channels in all. */
  sentChunks: number;
  /** Sender: chunk frames sent by the latest stream. */
  lastRunChunks: number;
  /** Sender: the chunk the latest resumed stream started from (0: never resumed). */
  resumedFrom: number;
  /** Why it failed, as the user reads it. */
  error?: string;
}

/** The data channels a {@link FileTransfers} streams over (a `Peers`). */
export interface FileLinks {
  isOpen(remote: string): boolean;
  ensure(remote: string): void;
  send(remote: string, text: string): boolean;
  /** Bytes waiting in the channel to `remote` (its `bufferedAmount` and any local queue). */
  bufferedAmount(remote: string): number;
  /** Resolves when the channel's buffer went low (or after a short while). */
  drained(remote: string): Promise<void>;
}

/** Collaborators of {@link FileTransfers}. */
export interface FileTransferDeps {
  me: string;
  history: { get(id: string): MessageRow | null };
  store: FileStore;
  links: FileLinks;
  /** Stores chunk entries in `peer`'s mailbox. */
  mailSend(peer: string, mail: OutgoingMail[]): Promise<void>;
  /** Sends a small control frame (`file_cancel`) over the channel, or the relay. */
  control(peer: string, frame: FileFrame): void;
  isOnline(peer: string): boolean;
  /** The user's size limit, bytes. */
  maxBytes(): number;
  onError(err: unknown): void;
  /** A malformed or out-of-place frame was dropped. */
  onRejected(): void;
  /** A small preview of an image (≤ 6 KB), or null. */
  thumbnail?(bytes: Uint8Array<ArrayBuffer>, mime: string): Promise<ThumbnailData | null>;
  /** Timers (tests). */
  setTimeout?(fn: () => void, ms: number): unknown;
  /** Monotonic clock, ms (tests). @default performance.now */
  now?(): number;
  /** See {@link STALL_MS} (tests). */
  stallMs?: number;
}

/** A thumbnail's bytes and type. */
export interface ThumbnailData {
  bytes: Uint8Array;
  mime: "image/jpeg" | "image/png" | "image/webp";
}

interface Transfer {
  id: string;
  peer: string;
  meta: FileMeta;
  key: CryptoKey;
  count: number;
  sentAt: number;
  state: StoredFileState;
  done: number;
  error?: string;
}

interface Outgoing extends Transfer {
  bytes: Uint8Array<ArrayBuffer>;
  /** Bumped when a channel drops: the stream of an older run stops. */
  run: number;
  /** The run of the stream in progress (-1: none); a stream of an older run is stopping. */
  streamingRun: number;
  /**
   * The run that sent every chunk to the end: on that channel (ordered, reliable) they are on
   * their way, and a progress report asks for nothing again until the channel drops.
   */
  finishedRun: number;
  isMailing: boolean;
  sentChunks: number;
  lastRunChunks: number;
  resumedFrom: number;
  /** The chunks in the recipient's mailbox were skipped once (they come from there). */
  isMailboxSkipped: boolean;
  /**
   * The chunk the receiver asked from over a channel whose end here could not send yet (WebRTC
   * opens the two ends one after the other: the request can arrive before this end reports
   * open); streamed when it opens. Null: none waiting.
   */
  asked: number | null;
}

interface Incoming extends Transfer {
  have: ReceiveProgress;
  parts: Array<Uint8Array<ArrayBuffer> | undefined>;
  isFinishing: boolean;
  sinceReport: number;
  /** Chunks being checked and stored now, and who waits for them to be done. */
  busy: number;
  idle: Array<() => void>;
  /** `now()` when a chunk last arrived or this side last asked. */
  lastActive: number;
}

/**
 * Which chunks of a file a receiver holds: a bitmap, the count, and the first missing index (the
 * `next` of `file_have`).
 */
export class ReceiveProgress {
  #bits: Uint8Array;
  #received = 0;
  #next = 0;

  constructor(readonly count: number, have: Iterable<number> = []) {
    this.#bits = new Uint8Array(Math.ceil(count / 8));
    for (const i of have) this.add(i);
  }

  has(index: number): boolean {
    return (this.#bits[index >> 3]! & (1 << (index & 7))) !== 0;
  }

  /** Records chunk `index`; false if it was held already. Throws for an index out of range. */
  add(index: number): boolean {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) {
      throw new ProtocolError("bad_frame", "index", `Chunk ${index} out of range`);
    }
    if (this.has(index)) return false;
    this.#bits[index >> 3]! |= 1 << (index & 7);
    this.#received++;
    while (this.#next < this.count && this.has(this.#next)) this.#next++;
    return true;
  }

  get received(): number {
    return this.#received;
  }

  /** The first chunk not held (the count when all are). */
  get next(): number {
    return this.#next;
  }

  get isComplete(): boolean {
    return this.#received === this.count;
  }
}

/** The mailbox entry id of chunk `index` of file `id`. */
export function chunkMailId(id: string, index: number): string {
  return `${id}_f${index}`;
}

/** A file name safe to announce: no control characters or separators, at most 255 characters. */
export function safeFileName(name: string): string {
  // deno-lint-ignore no-control-regex
  const clean = name.replace(/[\u0000-\u001f\u007f/\\]/g, "_").slice(0, MAX_FILE_NAME);
  return clean || "file";
}

const MIME = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$/;

/** Sends and receives the files of one session; see the module comment. */
export class FileTransfers {
  /** Every transfer this session knows, by file id. */
  readonly progress = signal<Record<string, FileProgress>>({});
  #deps: FileTransferDeps;
  #signal: AbortSignal;
  #outgoing = new Map<string, Promise<Outgoing | null>>();
  /** The outgoing transfers loaded so far. */
  #outgoingLoaded = new Map<string, Outgoing>();
  #incoming = new Map<string, Promise<Incoming | null>>();
  /** The incoming transfers loaded so far. */
  #incomingLoaded = new Map<string, Incoming>();
  /** The check for stalled incoming transfers, while any is receiving. */
  #watchTimer: unknown = null;
  #publishTimer: unknown = null;
  #dirty = new Set<Transfer>();
  /** Received files whose last `file_have` (all held) could not be sent: again on a channel. */
  #unreported = new Map<string, Incoming>();
  /** Outgoing files whose chunks may still have to go to a mailbox (null: not read yet). */
  #unmailed: Set<string> | null = null;

  constructor(deps: FileTransferDeps, signal: AbortSignal) {
    this.#deps = deps;
    this.#signal = signal;
    signal.addEventListener("abort", () => {
      if (this.#publishTimer !== null) clearTimeout(this.#publishTimer as number);
      this.#publishTimer = null;
      if (this.#watchTimer !== null && !deps.setTimeout) clearTimeout(this.#watchTimer as number);
    }, { once: true });
  }

  /**
   * Checks and prepares a file to send (nothing is sent): its {@link FileMeta}, and its content
   * kept on this device under `id`. Throws {@link FileTooLargeError} over the user's limit.
   */
  async prepare(
    id: string,
    peer: string,
    file: { name: string; type: string; bytes: Uint8Array<ArrayBuffer> },
  ): Promise<FileMeta> {
    const limit = this.#deps.maxBytes();
    if (file.bytes.length > limit) throw new FileTooLargeError(file.bytes.length, limit);
    const rawKey = crypto.getRandomValues(new Uint8Array(32));
    const mime = MIME.test(file.type) ? file.type.toLowerCase() : "application/octet-stream";
    const meta: FileMeta = {
      name: safeFileName(file.name),
      size: file.bytes.length,
      mime,
      sha256: toBase64Url(await crypto.subtle.digest("SHA-256", file.bytes)),
      key: toBase64Url(rawKey),
    };
    if ((INLINE_IMAGE_TYPES as readonly string[]).includes(mime) && this.#deps.thumbnail) {
      const thumb = await this.#deps.thumbnail(file.bytes, mime).catch(() => null);
      if (thumb) {
        meta.thumb = toBase64Url(thumb.bytes);
        meta.thumbMime = thumb.mime;
      }
    }
    validateFileMeta(meta);
    await this.#deps.store.putBlob(id, file.bytes);
    const state: StoredFileState = { id, peer, outgoing: true, status: "sending" };
    await this.#deps.store.putState(state);
    (await this.#unmailedSet()).add(id);
    return meta;
  }

  /**
   * The announcing message `id` was handed to a path (or its path changed): when it went to the
   * mailbox, the chunks follow it there.
   */
  async announced(id: string): Promise<void> {
    const row = this.#deps.history.get(id);
    if (!row || row.via !== "mailbox" || row.status === "sending" || row.status === "failed") {
      return;
    }
    const t = await this.#loadOutgoing(id, row.recipient);
    if (!t || t.state.status !== "sending" || t.state.mailed || t.isMailing) return;
    await this.#mail(t);
  }

  /** Every file this user sent whose message went to the mailbox gets its chunks there. */
  async checkMailbox(): Promise<void> {
    const unmailed = await this.#unmailedSet();
    for (const id of [...unmailed]) {
      const s = await this.#deps.store.getState(id);
      if (!s || s.status !== "sending" || s.mailed) unmailed.delete(id);
      else await this.announced(id);
    }
  }

  async #unmailedSet(): Promise<Set<string>> {
    if (this.#unmailed) return this.#unmailed;
    const found = (await this.#deps.store.unfinished())
      .filter((s) => s.outgoing && s.status === "sending" && !s.mailed)
      .map((s) => s.id);
    return this.#unmailed ??= new Set(found);
  }

  /** A message announcing a file from `from` was stored: start asking for its chunks. */
  async offered(from: string, id: string): Promise<void> {
    const t = await this.#loadIncoming(id, from);
    if (!t || t.state.status !== "receiving") return;
    if (t.have.isComplete) return await this.#finish(t);
    if (this.#deps.links.isOpen(from)) this.#sendHave(t);
    else if (this.#deps.isOnline(from)) this.#deps.links.ensure(from);
  }

  /**
   * A data channel to `remote` opened: answer what they asked before this end was open, and ask
   * for the rest of every file it was sending us.
   */
  async channelOpened(remote: string): Promise<void> {
    for (const t of this.#outgoingLoaded.values()) {
      if (t.peer !== remote || t.asked === null || t.state.status !== "sending") continue;
      if (t.streamingRun !== -1 && t.streamingRun === t.run) continue;
      void this.#stream(t, t.asked);
    }
    for (const t of [...this.#unreported.values()]) if (t.peer === remote) this.#sendHave(t);
    for (const s of await this.#deps.store.unfinished()) {
      if (s.outgoing || s.peer !== remote || s.status !== "receiving") continue;
      const t = await this.#loadIncoming(s.id, remote);
      if (!t || t.state.status !== "receiving") continue;
      // Chunks of the old channel still being stored count: ask only for what is really missing.
      if (t.busy > 0) await new Promise<void>((resolve) => t.idle.push(resolve));
      if (t.state.status === "receiving") this.#sendHave(t);
    }
  }

  /**
   * The channel to `remote` closed: streams to them stop; if they were sending us a file and are
   * still online, a new channel is asked for (the transfer resumes when it opens).
   */
  async channelClosed(remote: string): Promise<void> {
    // At once (before any new channel can open): the streams on the old one stop, and what was
    // asked on it is asked again on the next.
    for (const t of this.#outgoingLoaded.values()) {
      if (t.peer !== remote) continue;
      t.run++;
      t.asked = null;
    }
    let waiting = false;
    for (const s of await this.#deps.store.unfinished()) {
      if (!s.outgoing && s.peer === remote && s.status === "receiving") waiting = true;
    }
    if (!waiting || this.#signal.aborted) return;
    const later = this.#deps.setTimeout ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
    later(() => {
      if (!this.#signal.aborted && this.#deps.isOnline(remote)) this.#deps.links.ensure(remote);
    }, 500);
  }

  /** A file frame from `remote` on path `via`. */
  async receive(remote: string, frame: FileFrame, via: MessageVia): Promise<void> {
    try {
      switch (frame.type) {
        case "file_chunk":
          return await this.#onChunk(remote, frame, via);
        case "file_have":
          return await this.#onHave(remote, frame.id, frame.next, via);
        case "file_cancel":
          return await this.#onCancel(remote, frame.id);
      }
    } catch (err) {
      this.#drop(remote, err);
    }
  }

  /**
   * Takes a mailbox entry if it is a file chunk (resolves true once it is kept, so it may be
   * acknowledged); false for anything else.
   */
  async takeMail(m: IncomingMail): Promise<boolean> {
    if (!m.envelope.includes('"file_chunk"')) return false;
    let value: unknown;
    try {
      value = JSON.parse(m.envelope);
    } catch {
      return false;
    }
    if ((value as { type?: unknown } | null)?.type !== "file_chunk") return false;
    try {
      const { obj, type } = readEnvelope(value, PEER_PROTOCOL_VERSION, ["file_chunk"]);
      const frame = validateFileFrame(obj, type);
      if (frame.type === "file_chunk" && m.id !== chunkMailId(frame.id, frame.index)) {
        throw new ProtocolError("bad_frame", "id", "A chunk's mailbox id does not match it");
      }
      await this.#onChunk(m.from, frame as Extract<FileFrame, { type: "file_chunk" }>, "mailbox");
    } catch (err) {
      this.#drop(m.from, err);
    }
    return true;
  }

  /** The user cancels the transfer of `id` (either side). */
  async cancel(id: string): Promise<void> {
    const t = (await this.#outgoing.get(id)) ?? (await this.#incoming.get(id)) ??
      await this.#loadAny(id);
    if (!t || (t.state.status !== "sending" && t.state.status !== "receiving")) return;
    await this.#setStatus(t, "cancelled");
    if (!t.state.outgoing) await this.#deps.store.deleteParts(id);
    this.#deps.control(t.peer, { v: 1, type: "file_cancel", id });
  }

  /** The content of file `id` if this device holds it (sent, or received and verified). */
  async content(id: string): Promise<Uint8Array<ArrayBuffer> | null> {
    const s = await this.#deps.store.getState(id);
    if (s && !s.outgoing && s.status !== "complete") return null;
    return await this.#deps.store.getBlob(id);
  }

  /** See {@link exportableFiles}. */
  exportable(
    rows: readonly MessageRow[],
    maxBytes: number,
  ): Promise<{ files: ExportFile[]; leftOut: number; leftOutBytes: number }> {
    return exportableFiles(this.#deps.store, rows, maxBytes);
  }

  /**
   * Takes the files of imported or handed-over `rows`: each attachment this device knows nothing
   * of (or knows as missing) is stored from `carried` (already checked against its message) or
   * marked `missing`. A file this device holds or is transferring is left as it is. Resolves the
   * counts of files stored and marked missing.
   */
  async adopt(
    rows: readonly MessageRow[],
    carried: ReadonlyMap<
      string,
      { status: "complete" | "sending"; bytes: Uint8Array<ArrayBuffer> }
    >,
  ): Promise<{ stored: number; missing: number }> {
    let stored = 0;
    let missing = 0;
    for (const row of rows) {
      if (!row.attachment) continue;
      const have = await this.#deps.store.getState(row.id);
      if (have && have.status !== "missing") continue;
      const outgoing = row.sender === this.#deps.me;
      const file = carried.get(row.id);
      let state: StoredFileState;
      if (file) {
        await this.#deps.store.putBlob(row.id, file.bytes);
        // An own file still on its way goes on from here when the recipient asks (its mailbox
        // copy, if any, was sent from the other device).
        state = outgoing && file.status === "sending"
          ? { id: row.id, peer: row.peer, outgoing, status: "sending", mailed: true }
          : { id: row.id, peer: row.peer, outgoing, status: "complete" };
        stored++;
      } else {
        if (have) continue;
        state = { id: row.id, peer: row.peer, outgoing, status: "missing" };
        missing++;
      }
      await this.#deps.store.putState(state);
      // Shown from the new record (a transfer this session loaded for it is dropped).
      this.#outgoing.delete(row.id);
      this.#outgoingLoaded.delete(row.id);
      this.#incoming.delete(row.id);
      this.#incomingLoaded.delete(row.id);
      if (this.progress.value[row.id] && !this.#signal.aborted) {
        const { [row.id]: _gone, ...rest } = this.progress.value;
        this.progress.value = rest;
      }
    }
    return { stored, missing };
  }

  /** What this device knows of file `id` (from storage when this session has not seen it). */
  async load(id: string): Promise<void> {
    if (this.progress.value[id]) return;
    const s = await this.#deps.store.getState(id);
    const row = this.#deps.history.get(id);
    if (s && row?.attachment && s.status !== "sending" && s.status !== "receiving") {
      // Finished: shown from its record alone (its content is read only when opened).
      const total = chunkCount(validateFileMeta(JSON.parse(row.attachment)).size);
      const shown: FileProgress = {
        id,
        peer: s.peer,
        outgoing: s.outgoing,
        status: s.status,
        done: s.status === "complete" ? total : 0,
        total,
        sentChunks: 0,
        lastRunChunks: 0,
        resumedFrom: 0,
      };
      if (!this.#signal.aborted && !this.progress.value[id]) {
        this.progress.value = { ...this.progress.value, [id]: shown };
      }
      return;
    }
    await this.#loadAny(id);
  }

  // --- Sending ----------------------------------------------------------------------------------

  async #onHave(remote: string, id: string, next: number, via: MessageVia): Promise<void> {
    const t = await this.#loadOutgoing(id, remote);
    if (!t) throw new ProtocolError("bad_frame", "id", `No file ${id} was sent to ${remote}`);
    if (next > t.count) throw new ProtocolError("bad_frame", "next", "Beyond the file's end");
    t.done = Math.max(t.done, next);
    if (next === t.count) {
      await this.#setStatus(t, "complete");
      return;
    }
    if (t.state.status === "failed") await this.#setStatus(t, "sending");
    if (t.state.status !== "sending") {
      // Cancelled here: tell the receiver again.
      if (t.state.status === "cancelled") {
        this.#deps.control(remote, { v: 1, type: "file_cancel", id });
      }
      return;
    }
    this.#changed(t);
    const isStreaming = t.streamingRun !== -1 && t.streamingRun === t.run;
    if (via !== "p2p" || isStreaming || t.finishedRun === t.run) return;
    // What the recipient's mailbox holds comes from there: the first time, the stream starts
    // after it (if it never arrives, the recipient's next report asks for it).
    const mailed = t.state.mailedUpTo ?? 0;
    let from = next;
    if (next < mailed && !t.isMailboxSkipped) {
      t.isMailboxSkipped = true;
      from = mailed;
    }
    // The request came over a channel this end does not see open yet: answered when it opens
    // (streaming now would send nothing, and the receiver would wait for chunks forever).
    if (!this.#deps.links.isOpen(remote)) t.asked = from;
    else void this.#stream(t, from);
  }

  async #stream(t: Outgoing, from: number): Promise<void> {
    const { links } = this.#deps;
    const run = ++t.run;
    t.streamingRun = run;
    t.asked = null;
    t.lastRunChunks = 0;
    if (from > 0) t.resumedFrom = from;
    try {
      for (let i = from; i < t.count; i++) {
        if (t.run !== run || t.state.status !== "sending" || this.#signal.aborted) return;
        const start = i * FILE_CHUNK_BYTES;
        const data = await encryptChunk(
          t.key,
          t.id,
          i,
          t.bytes.slice(start, start + FILE_CHUNK_BYTES),
        );
        const text = JSON.stringify({
          v: PEER_PROTOCOL_VERSION,
          type: "file_chunk",
          id: t.id,
          index: i,
          data: toBase64Url(data),
        });
        // Never more than MAX_BUFFERED_AMOUNT waiting in the channel.
        while (
          t.run === run && links.isOpen(t.peer) &&
          links.bufferedAmount(t.peer) + text.length > MAX_BUFFERED_AMOUNT
        ) await links.drained(t.peer);
        if (t.run !== run) return;
        if (!links.send(t.peer, text)) {
          // Not sent, and no channel closed meanwhile (that would have stopped this run): this
          // end is not open yet, or closing (then its close clears this). Go on when it opens.
          t.asked = i;
          return;
        }
        t.sentChunks++;
        t.lastRunChunks++;
        this.#changed(t);
      }
      if (t.run === run) t.finishedRun = run;
    } finally {
      if (t.streamingRun === run) t.streamingRun = -1;
      this.#changed(t);
    }
  }

  async #mail(t: Outgoing): Promise<void> {
    t.isMailing = true;
    try {
      for (let i = 0; i < t.count;) {
        const mail: OutgoingMail[] = [];
        for (let j = i; j < Math.min(t.count, i + MAIL_CHUNK_BATCH); j++) {
          const start = j * FILE_CHUNK_BYTES;
          const data = await encryptChunk(
            t.key,
            t.id,
            j,
            t.bytes.slice(start, start + FILE_CHUNK_BYTES),
          );
          mail.push({
            id: chunkMailId(t.id, j),
            sentAt: t.sentAt,
            envelope: JSON.stringify({
              v: PEER_PROTOCOL_VERSION,
              type: "file_chunk",
              id: t.id,
              index: j,
              data: toBase64Url(data),
            }),
          });
        }
        if (this.#signal.aborted || t.state.status !== "sending") return;
        try {
          await this.#deps.mailSend(t.peer, mail);
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code === "rate_limited" && !this.#signal.aborted) {
            await new Promise((r) => setTimeout(r, MAIL_RATE_RETRY_MS));
            continue;
          }
          throw err;
        }
        i += mail.length;
        t.done = i;
        t.state.mailedUpTo = i;
        this.#changed(t);
      }
      t.state.mailed = true;
      this.#unmailed?.delete(t.id);
      await this.#deps.store.putState(t.state);
    } catch (err) {
      if (this.#signal.aborted) return;
      const code = (err as { code?: string }).code;
      if (code === "disconnected" || code === "timeout") return; // tried again on the next send
      t.error = err instanceof Error ? err.message : String(err);
      await this.#setStatus(t, "failed");
      this.#deps.onError(
        `"${t.meta.name}" is not all stored for ${t.peer}: ${t.error}. ` +
          `The rest goes directly when ${t.peer} is online.`,
      );
    } finally {
      t.isMailing = false;
    }
  }

  #loadOutgoing(id: string, peer: string): Promise<Outgoing | null> {
    let p = this.#outgoing.get(id);
    if (!p) {
      p = this.#makeOutgoing(id, peer);
      this.#outgoing.set(id, p);
      void p.then((t) => t || this.#outgoing.delete(id));
    }
    return p.then((t) => (t?.peer === peer ? t : null));
  }

  async #makeOutgoing(id: string, peer: string): Promise<Outgoing | null> {
    const row = this.#deps.history.get(id);
    if (!row || row.sender !== this.#deps.me || row.recipient !== peer || !row.attachment) {
      return null;
    }
    const meta = validateFileMeta(JSON.parse(row.attachment));
    const [bytes, stored] = await Promise.all([
      this.#deps.store.getBlob(id),
      this.#deps.store.getState(id),
    ]);
    if (!bytes) return null;
    const t: Outgoing = {
      id,
      peer,
      meta,
      key: await importFileKey(fromBase64Url(meta.key)),
      count: chunkCount(meta.size),
      sentAt: row.sentAt,
      state: stored ?? { id, peer, outgoing: true, status: "sending" },
      done: 0,
      bytes,
      run: 0,
      streamingRun: -1,
      finishedRun: -1,
      isMailing: false,
      sentChunks: 0,
      lastRunChunks: 0,
      resumedFrom: 0,
      isMailboxSkipped: false,
      asked: null,
    };
    this.#outgoingLoaded.set(id, t);
    this.#changed(t);
    return t;
  }

  // --- Receiving --------------------------------------------------------------------------------

  async #onChunk(
    remote: string,
    f: Extract<FileFrame, { type: "file_chunk" }>,
    via: MessageVia,
  ): Promise<void> {
    const t = await this.#loadIncoming(f.id, remote);
    if (!t) throw new ProtocolError("bad_frame", "id", `${remote} announced no file ${f.id}`);
    if (t.state.status !== "receiving") return; // cancelled, refused or done: dropped
    t.busy++;
    try {
      await this.#takeChunk(t, f, via);
    } finally {
      if (--t.busy === 0) { for (const wake of t.idle.splice(0)) wake(); }
    }
  }

  async #takeChunk(
    t: Incoming,
    f: Extract<FileFrame, { type: "file_chunk" }>,
    via: MessageVia,
  ): Promise<void> {
    let data: Uint8Array<ArrayBuffer>;
    try {
      data = fromBase64Url(f.data);
    } catch {
      throw new ProtocolError("bad_frame", "data", "A chunk's data is not base64url");
    }
    checkChunk(t.meta, f.index, data);
    if (t.have.has(f.index)) return;
    const plain = await decryptChunk(t.key, t.id, f.index, data);
    if (t.have.has(f.index) || t.state.status !== "receiving" || this.#signal.aborted) return;
    await this.#deps.store.putPart(t.id, f.index, plain);
    if (t.have.has(f.index) || t.state.status !== "receiving") return;
    t.parts[f.index] = plain;
    t.have.add(f.index);
    t.lastActive = this.#now();
    t.done = t.have.received;
    t.sinceReport++;
    this.#changed(t);
    if (t.have.isComplete) return await this.#finish(t);
    if (via === "p2p" && (t.sinceReport >= HAVE_EVERY || f.index === t.count - 1)) {
      this.#sendHave(t);
    }
  }

  async #finish(t: Incoming): Promise<void> {
    if (t.isFinishing) return;
    t.isFinishing = true;
    const all = new Uint8Array(t.meta.size);
    let missing = false;
    for (let i = 0; i < t.count; i++) {
      let part = t.parts[i];
      if (!part) {
        const stored = await this.#deps.store.parts(t.id);
        for (const [k, v] of stored) t.parts[k] ??= v;
        part = t.parts[i];
      }
      if (!part) {
        missing = true;
        break;
      }
      all.set(part, i * FILE_CHUNK_BYTES);
    }
    if (missing) {
      t.isFinishing = false;
      return;
    }
    const sha = toBase64Url(await crypto.subtle.digest("SHA-256", all));
    if (this.#signal.aborted) return;
    if (sha === t.meta.sha256) {
      await this.#deps.store.putBlob(t.id, all);
      await this.#setStatus(t, "complete");
      this.#sendHave(t);
    } else {
      t.error = "file damaged: its content does not match what was announced";
      await this.#setStatus(t, "damaged");
      this.#deps.control(t.peer, { v: 1, type: "file_cancel", id: t.id });
    }
    t.parts = [];
    await this.#deps.store.deleteParts(t.id);
  }

  #sendHave(t: Incoming): void {
    t.sinceReport = 0;
    t.lastActive = this.#now();
    // Only over the data channel: chunks never go through the servers' relay.
    const sent = this.#deps.links.send(
      t.peer,
      JSON.stringify({ v: PEER_PROTOCOL_VERSION, type: "file_have", id: t.id, next: t.have.next }),
    );
    // The sender learns that the file arrived from the last report: it must get through.
    if (t.have.isComplete && !sent) this.#unreported.set(t.id, t);
    else if (t.have.isComplete) this.#unreported.delete(t.id);
  }

  async #onCancel(remote: string, id: string): Promise<void> {
    const t = (await this.#loadIncoming(id, remote)) ?? (await this.#loadOutgoing(id, remote));
    if (!t) throw new ProtocolError("bad_frame", "id", `No file ${id} with ${remote}`);
    if (t.state.status !== "sending" && t.state.status !== "receiving") return;
    await this.#setStatus(t, "cancelled");
    if (!t.state.outgoing) await this.#deps.store.deleteParts(id);
  }

  #loadIncoming(id: string, from: string): Promise<Incoming | null> {
    let p = this.#incoming.get(id);
    if (!p) {
      p = this.#makeIncoming(id, from);
      this.#incoming.set(id, p);
      void p.then((t) => t || this.#incoming.delete(id));
    }
    return p.then((t) => (t?.peer === from ? t : null));
  }

  async #makeIncoming(id: string, from: string): Promise<Incoming | null> {
    const row = this.#deps.history.get(id);
    if (!row || row.sender !== from || row.recipient !== this.#deps.me || !row.attachment) {
      return null;
    }
    const meta = validateFileMeta(JSON.parse(row.attachment));
    const count = chunkCount(meta.size);
    let state = await this.#deps.store.getState(id);
    const parts: Array<Uint8Array<ArrayBuffer> | undefined> = [];
    if (!state) {
      state = {
        id,
        peer: from,
        outgoing: false,
        status: meta.size > this.#deps.maxBytes() ? "refused" : "receiving",
      };
      await this.#deps.store.putState(state);
    } else if (state.status === "receiving") {
      for (const [i, part] of await this.#deps.store.parts(id)) {
        // Kept by this code, but checked again: never more than the announced chunks.
        if (i < count && part.length === chunkPlainLengthOf(meta.size, i)) parts[i] = part;
      }
    }
    const have = new ReceiveProgress(count, parts.flatMap((p, i) => (p ? [i] : [])));
    const t: Incoming = {
      id,
      peer: from,
      meta,
      key: await importFileKey(fromBase64Url(meta.key)),
      count,
      sentAt: row.sentAt,
      state,
      done: state.status === "complete" ? count : have.received,
      have,
      parts,
      isFinishing: false,
      busy: 0,
      idle: [],
      sinceReport: 0,
      lastActive: this.#now(),
      ...(state.status === "refused"
        ? { error: `larger than your limit of ${mb(this.#deps.maxBytes())}: not downloaded` }
        : {}),
    };
    this.#incomingLoaded.set(id, t);
    if (state.status === "receiving") this.#watch();
    this.#changed(t);
    return t;
  }

  /** Checks the incoming transfers every half {@link STALL_MS} while any is receiving. */
  #watch(): void {
    if (this.#watchTimer !== null || this.#signal.aborted) return;
    const later = this.#deps.setTimeout ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
    this.#watchTimer = later(() => {
      this.#watchTimer = null;
      this.#checkStalled();
    }, (this.#deps.stallMs ?? STALL_MS) / 2);
  }

  /**
   * A transfer that got nothing for {@link STALL_MS} asks again: the sender may never have
   * heard the last request (sent over a channel that was closing, or before its end was open),
   * or the last attempt to open a channel failed. Nothing here depends on why.
   */
  #checkStalled(): void {
    if (this.#signal.aborted) return;
    const now = this.#now();
    let isReceiving = false;
    for (const t of this.#incomingLoaded.values()) {
      if (t.state.status !== "receiving" || t.isFinishing) continue;
      isReceiving = true;
      if (t.busy > 0 || now - t.lastActive < (this.#deps.stallMs ?? STALL_MS)) continue;
      if (this.#deps.links.isOpen(t.peer)) this.#sendHave(t);
      else {
        t.lastActive = now;
        if (this.#deps.isOnline(t.peer)) this.#deps.links.ensure(t.peer);
      }
    }
    if (isReceiving) this.#watch();
  }

  #now(): number {
    return this.#deps.now?.() ?? performance.now();
  }

  async #loadAny(id: string): Promise<Transfer | null> {
    const row = this.#deps.history.get(id);
    if (!row?.attachment) return null;
    return row.sender === this.#deps.me
      ? await this.#loadOutgoing(id, row.recipient)
      : await this.#loadIncoming(id, row.sender);
  }

  // --- Shared -----------------------------------------------------------------------------------

  async #setStatus(t: Transfer, status: FileStatus): Promise<void> {
    t.state.status = status;
    if (status === "complete") t.done = t.count;
    this.#changed(t);
    await this.#deps.store.putState(t.state);
  }

  #drop(remote: string, err: unknown): void {
    if (this.#signal.aborted) return;
    this.#deps.onRejected();
    console.warn(
      `Dropped a file frame from "${remote}":`,
      err instanceof Error ? err.message : err,
    );
  }

  /** Publishes the progress of `t` (batched: at most one redraw per animation-ish tick). */
  #changed(t: Transfer): void {
    this.#dirty.add(t);
    if (this.#publishTimer !== null) return;
    this.#publishTimer = setTimeout(() => {
      this.#publishTimer = null;
      if (this.#signal.aborted) return;
      const next = { ...this.progress.value };
      for (const d of this.#dirty) next[d.id] = progressOf(d);
      this.#dirty.clear();
      this.progress.value = next;
    }, 50);
  }
}

/**
 * The files an export or a hand-over carries: of `rows` (newest first), every attachment `store`
 * holds (own files, and received ones complete), as long as their sizes add up to at most
 * `maxBytes`; `leftOut` counts the files held but past that cap.
 */
export async function exportableFiles(
  store: FileStore,
  rows: readonly MessageRow[],
  maxBytes: number,
): Promise<{ files: ExportFile[]; leftOut: number; leftOutBytes: number }> {
  const files: ExportFile[] = [];
  let total = 0;
  let leftOut = 0;
  let leftOutBytes = 0;
  for (const row of rows) {
    if (!row.attachment) continue;
    const s = await store.getState(row.id);
    if (!s || s.status === "missing") continue;
    if (!s.outgoing && s.status !== "complete") continue;
    const size = validateFileMeta(JSON.parse(row.attachment)).size;
    if (total + size > maxBytes) {
      leftOut++;
      leftOutBytes += size;
      continue;
    }
    total += size;
    files.push({
      id: row.id,
      size,
      status: s.outgoing && s.status === "sending" ? "sending" : "complete",
      read: async () => {
        const state = await store.getState(row.id);
        if (state && !state.outgoing && state.status !== "complete") return null;
        return await store.getBlob(row.id);
      },
    });
  }
  return { files, leftOut, leftOutBytes };
}

function chunkPlainLengthOf(size: number, index: number): number {
  const count = chunkCount(size);
  return index === count - 1 ? size - index * FILE_CHUNK_BYTES : FILE_CHUNK_BYTES;
}

function progressOf(t: Transfer): FileProgress {
  const o = t as Partial<Outgoing>;
  return {
    id: t.id,
    peer: t.peer,
    outgoing: t.state.outgoing,
    status: t.state.status,
    done: t.done,
    total: t.count,
    sentChunks: o.sentChunks ?? 0,
    lastRunChunks: o.lastRunChunks ?? 0,
    resumedFrom: o.resumedFrom ?? 0,
    ...(t.error ? { error: t.error } : {}),
  };
}
