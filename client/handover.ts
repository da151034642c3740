/**
 * History hand-over (DESIGN §4): when a newer login supersedes this device, the server keeps its
 * connection open for a short grace in which it may only signal the user's new session. The old
 * device ({@link HistorySender}) opens a data channel to its own username and hands its whole
 * history over in batches; the new device ({@link HistoryReceiver}) accepts such a channel only
 * from its own username and imports the rows idempotently by message id.
 *
 * Each batch is sealed and signed to the user himself (`shared/crypto/handover_batch.ts`): both
 * devices hold the same keys after login, so a server in the signaling path that tampers with the
 * WebRTC negotiation still learns nothing and cannot inject rows. Batches go one at a time, each
 * below 64 KiB and acknowledged before the next, so the sender's `bufferedAmount` stays within
 * `MAX_BUFFERED_AMOUNT` (`peer_link.ts`). The receiver binds the transfer to its own nonce, and
 * its final acknowledgement is signed, so only the new device can make the old one stop early.
 *
 * The pure parts ({@link batchRows}, {@link parseHandoverRows}, {@link HandoverSendJob},
 * {@link HandoverReceiveJob}) take no links or timers; the two link drivers take a
 * {@link PeerLinkFactory} and a signaling function, like `Peers`.
 */
import {
  type HandoverMessage,
  isValidUsername,
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
} from "../shared/mod.ts";
import {
  importPublicKey,
  MAX_BATCH_PAYLOAD_BYTES,
  openBatch,
  parseSealedBatch,
  sealBatch,
  signHandoverAck,
  toBase64Url,
  verifyHandoverAck,
} from "../shared/crypto/mod.ts";
import type { MessageRow, MessageStatus, MessageVia } from "./history.ts";
import type { OwnKeys } from "./keyring.ts";
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
export const MAX_BATCH_ROWS = 2_000;

const encoder = new TextEncoder();

/**
 * Splits `rows` (in order) into batches whose JSON array takes at most `maxBytes` bytes of UTF-8
 * and `maxRows` rows. Always at least one batch, empty when there are no rows, so the transfer
 * still ends with a final batch.
 */
export function batchRows(
  rows: readonly MessageRow[],
  maxBytes = MAX_BATCH_PAYLOAD_BYTES,
  maxRows = MAX_BATCH_ROWS,
): MessageRow[][] {
  const batches: MessageRow[][] = [];
  let current: MessageRow[] = [];
  let size = 2; // "[" and "]"
  for (const row of rows) {
    const bytes = encoder.encode(JSON.stringify(row)).length + 1; // and a comma
    if (current.length > 0 && (size + bytes > maxBytes || current.length >= maxRows)) {
      batches.push(current);
      current = [];
      size = 2;
    }
    current.push(row);
    size += bytes;
  }
  if (current.length > 0 || batches.length === 0) batches.push(current);
  return batches;
}

const VIA: readonly MessageVia[] = ["p2p", "relay", "mailbox"];
const STATUS: readonly MessageStatus[] = ["sending", "sent", "delivered", "failed"];

function readRow(value: unknown, path: string, owner: string): MessageRow {
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
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    throw new ProtocolError("bad_json", "rows", "History batch is not valid JSON");
  }
  return readArray({ rows: value }, "rows", "", MAX_BATCH_ROWS, (v, p) => readRow(v, p, owner));
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
  onProgress?(done: number, total: number): void;
}

function message(m: HandoverMessage): string {
  return JSON.stringify(m);
}

/**
 * The sender's side of one hand-over channel, without the channel: it answers the receiver's
 * hello with sealed batches, one at a time, and resolves {@link outcome} once the receiver's
 * signed acknowledgement verifies.
 */
export class HandoverSendJob {
  /** Settles when the transfer ends (never rejects). */
  readonly outcome: Promise<HandoverOutcome>;
  #owner: string;
  #keys: HandoverKeys;
  #rows: MessageRow[];
  #batches: MessageRow[][];
  #events: JobEvents;
  #nonce: string | null = null;
  #seq = 0;
  #sent = 0;
  #settle!: (o: HandoverOutcome) => void;
  #settled = false;
  #queue: Promise<void> = Promise.resolve();

  /** Prepares the transfer of `rows` (a snapshot of the history, in order). */
  constructor(owner: string, keys: HandoverKeys, rows: MessageRow[], events: JobEvents) {
    this.#owner = owner;
    this.#keys = keys;
    this.#rows = rows;
    this.#batches = batchRows(rows);
    this.#events = events;
    this.outcome = new Promise((resolve) => this.#settle = resolve);
  }

  /** Feeds one message from the receiver. */
  receive(text: string): void {
    this.#queue = this.#queue.then(() => this.#receive(text)).catch((err) =>
      this.#finish({ ok: false, reason: (err as Error).message })
    );
  }

  /** Ends the job from outside (channel gone for good, grace over). */
  abort(reason: string): void {
    this.#finish({ ok: false, reason });
  }

  async #receive(text: string): Promise<void> {
    if (this.#settled) return;
    const msg = parseHandoverMessage(text);
    switch (msg.type) {
      case "handover_hello":
        // A fresh hello (say, the receiver's page reloaded) starts the transfer over.
        this.#nonce = msg.nonce;
        this.#seq = 0;
        this.#sent = 0;
        await this.#sendBatch();
        return;
      case "handover_received": {
        if (msg.seq !== this.#seq || this.#nonce === null) return;
        this.#sent += this.#batches[this.#seq]!.length;
        this.#events.onProgress?.(this.#sent, this.#rows.length);
        if (this.#seq + 1 < this.#batches.length) {
          this.#seq++;
          await this.#sendBatch();
        }
        return;
      }
      case "handover_done": {
        const nonce = this.#nonce;
        const valid = nonce !== null && msg.rows === this.#rows.length &&
          await verifyHandoverAck(this.#owner, nonce, msg.rows, msg.signature, this.#keys.verify);
        this.#finish(
          valid
            ? { ok: true, rows: msg.rows }
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

  async #sendBatch(): Promise<void> {
    const rows = this.#batches[this.#seq]!;
    const batch = await sealBatch(
      {
        owner: this.#owner,
        nonce: this.#nonce!,
        seq: this.#seq,
        total: this.#rows.length,
        final: this.#seq === this.#batches.length - 1,
      },
      JSON.stringify(rows),
      this.#keys.signing,
      this.#keys.encrypt,
    );
    if (this.#settled) return;
    this.#events.send(message({ v: PEER_PROTOCOL_VERSION, type: "handover_batch", batch }));
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
}

/**
 * The receiver's side of one hand-over channel, without the channel: {@link start} says hello
 * with a fresh nonce; every batch must verify as the owner's, carry that nonce and come in
 * order, or the whole transfer is refused; rows are stored before each batch is acknowledged.
 */
export class HandoverReceiveJob {
  /** Settles when the transfer ends (never rejects). */
  readonly outcome: Promise<HandoverOutcome>;
  #owner: string;
  #keys: HandoverKeys;
  #events: ReceiveEvents;
  #nonce = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
  #seq = 0;
  #stored = 0;
  #total: number | null = null;
  #settle!: (o: HandoverOutcome) => void;
  #settled = false;
  #queue: Promise<void> = Promise.resolve();

  /** Prepares to receive `owner`'s history. */
  constructor(owner: string, keys: HandoverKeys, events: ReceiveEvents) {
    this.#owner = owner;
    this.#keys = keys;
    this.#events = events;
    this.outcome = new Promise((resolve) => this.#settle = resolve);
  }

  /** Rows stored so far and the transfer's total (null before the first batch). */
  get progress(): { done: number; total: number | null } {
    return { done: this.#stored, total: this.#total };
  }

  /** Opens the transfer: call once the channel is open. */
  start(): void {
    this.#events.send(
      message({ v: PEER_PROTOCOL_VERSION, type: "handover_hello", nonce: this.#nonce }),
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

  /** Ends the job from outside (channel gone). */
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
    if (batch.seq !== this.#seq || (this.#total !== null && batch.total !== this.#total)) {
      throw new ProtocolError("bad_frame", "batch.seq", "A batch out of order");
    }
    const payload = await openBatch(batch, this.#keys.decrypt, this.#keys.verify);
    const rows = parseHandoverRows(payload, this.#owner);
    if (this.#stored + rows.length > batch.total) {
      throw new ProtocolError("bad_frame", "batch.total", "More rows than announced");
    }
    this.#total = batch.total;
    await this.#events.importRows(rows);
    if (this.#settled) return;
    this.#stored += rows.length;
    this.#seq++;
    this.#events.onProgress?.(this.#stored, batch.total);
    this.#events.send(
      message({ v: PEER_PROTOCOL_VERSION, type: "handover_received", seq: batch.seq }),
    );
    if (!batch.final) return;
    if (this.#stored !== batch.total) {
      throw new ProtocolError("bad_frame", "batch.total", "Fewer rows than announced");
    }
    const signature = await signHandoverAck(
      this.#owner,
      this.#nonce,
      this.#stored,
      this.#keys.signing,
    );
    this.#events.send(
      message({ v: PEER_PROTOCOL_VERSION, type: "handover_done", rows: this.#stored, signature }),
    );
    this.#finish({ ok: true, rows: this.#stored });
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
  onProgress?(done: number, total: number): void;
}

function newLinkId(): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(8)));
}

/**
 * The old device's side: opens a data channel to its own username (as initiator), hands
 * `rows` over, and resolves {@link run}'s promise when the new device acknowledges, or when
 * `deadlineMs` passes (then nothing was lost: the new device gets its mail from the servers). A
 * channel that closes early is opened again while time remains.
 */
export class HistorySender {
  #deps: HandoverLinkDeps;
  #rows: MessageRow[];
  #link: { link: PeerLink; lid: string; job: HandoverSendJob } | null = null;
  #done = false;
  #finish: (o: HandoverOutcome) => void = () => {};
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs: number;

  /** Prepares the hand-over of `rows` (the whole history, in order). */
  constructor(deps: HandoverLinkDeps, rows: MessageRow[], options: { retryMs?: number } = {}) {
    this.#deps = deps;
    this.#rows = rows;
    this.#retryMs = options.retryMs ?? 1_000;
  }

  /** Runs the hand-over for at most `deadlineMs`. */
  run(deadlineMs: number): Promise<HandoverOutcome> {
    const outcome = new Promise<HandoverOutcome>((resolve) => this.#finish = resolve);
    const timer = setTimeout(
      () => this.stop("Your new device did not take the history in time"),
      deadlineMs,
    );
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
    this.#end({ ok: false, reason });
  }

  #open(): void {
    if (this.#done) return;
    const lid = newLinkId();
    // The receiver's hello can arrive before this side reports the channel open (simple-peer
    // reports `connect` only once its own checks pass): answers wait for the open.
    let waiting: string[] | null = [];
    const job = new HandoverSendJob(this.#deps.me, this.#deps.keys, this.#rows, {
      send: (text) => waiting ? waiting.push(text) : entry.link.send(text),
      onProgress: this.#deps.onProgress,
    });
    const isCurrent = () => this.#link === entry;
    const entry = {
      lid,
      job,
      link: this.#deps.createLink({ remote: this.#deps.me, initiator: true }, {
        onSignal: (data) => {
          if (isCurrent()) this.#deps.sendSignal({ ...data, lid });
        },
        onOpen: () => {
          const queued = waiting ?? [];
          waiting = null;
          if (!isCurrent()) return;
          try {
            for (const text of queued) entry.link.send(text);
          } catch (err) {
            job.abort((err as Error).message);
          }
        },
        onMessage: (text) => {
          if (isCurrent()) job.receive(text);
        },
        onClose: () => {
          if (!isCurrent() || this.#done) return;
          // The receiver went away mid-transfer (a reload, say): offer a new channel.
          this.#link = null;
          job.abort("channel closed");
          this.#retry = setTimeout(() => this.#open(), this.#retryMs);
        },
      }),
    };
    this.#link = entry;
    void job.outcome.then((o) => {
      if (isCurrent() && (o.ok || !/channel closed/.test(o.reason))) this.#end(o);
    });
  }

  #end(outcome: HandoverOutcome): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#retry);
    const entry = this.#link;
    this.#link = null;
    entry?.job.abort(outcome.ok ? "done" : outcome.reason);
    // Let the last message (the ack's answer) leave before closing the channel.
    if (entry) setTimeout(() => entry.link.destroy(), 200);
    this.#finish(outcome);
  }
}

/** The new device's side: accepts hand-over channels from its own username only. */
export class HistoryReceiver {
  #deps: HandoverLinkDeps & { importRows(rows: MessageRow[]): Promise<number> };
  #link: { link: PeerLink; lid: string; job: HandoverReceiveJob } | null = null;
  #closed = false;
  /** Reports the end of each transfer. */
  onOutcome?: (outcome: HandoverOutcome) => void;

  /** Waits for a hand-over offer from this user's superseded device. */
  constructor(deps: HandoverLinkDeps & { importRows(rows: MessageRow[]): Promise<number> }) {
    this.#deps = deps;
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
    const entry = this.#link;
    this.#link = null;
    entry?.job.abort("closed");
    entry?.link.destroy();
  }

  #accept(lid: string): PeerLink {
    const old = this.#link;
    this.#link = null;
    old?.job.abort("replaced by a new offer");
    old?.link.destroy();
    const job = new HandoverReceiveJob(this.#deps.me, this.#deps.keys, {
      send: (text) => entry.link.send(text),
      onProgress: this.#deps.onProgress,
      importRows: (rows) => this.#deps.importRows(rows),
    });
    const isCurrent = () => this.#link === entry;
    const entry = {
      lid,
      job,
      link: this.#deps.createLink({ remote: this.#deps.me, initiator: false }, {
        onSignal: (data) => {
          if (isCurrent()) this.#deps.sendSignal({ ...data, lid });
        },
        onOpen: () => {
          if (isCurrent()) job.start();
        },
        onMessage: (text) => {
          if (isCurrent()) job.receive(text);
        },
        onClose: () => {
          if (isCurrent()) job.abort("channel closed");
        },
      }),
    };
    this.#link = entry;
    void job.outcome.then((o) => {
      if (!isCurrent()) return;
      if (o.ok || !/channel closed|replaced/.test(o.reason)) this.onOutcome?.(o);
      if (!o.ok) {
        this.#link = null;
        setTimeout(() => entry.link.destroy(), 200);
      }
    });
    return entry.link;
  }
}
