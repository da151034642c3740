/**
 * Incoming messages of one logged-in session, whichever path they took: the data channel, the
 * servers' relay, or the mailbox. Every one goes through the same validation
 * ({@link Inbox.openChat}): the frame is parsed (`shared/sealed_frame.ts`), and a sealed envelope
 * is verified with the sender's pinned key and decrypted by the {@link Keyring} (which also checks
 * that it claims the sender the path reports and this user as recipient). There is no plaintext
 * path: a chat message in clear is refused like a forged one. A chat message is stored
 * idempotently by id before it is acknowledged, so one arriving on two paths is stored and shown
 * once. Whatever claims to be a message and is refused — in clear, malformed, not verifying with
 * the pinned key, misaddressed — is discarded and shown as refused (never silently); a mailbox
 * entry is acknowledged all the same, so it does not come back.
 */
import {
  type ChatMessage,
  type FileFrame,
  type IncomingMail,
  MAX_MAIL_BATCH,
  parseLiveFrame,
  parseMailboxContent,
  PEER_PROTOCOL_VERSION,
  type PeerMessage,
  type SealedFrame,
} from "../shared/mod.ts";
import { NotForMeError, TamperedEnvelopeError } from "../shared/crypto/mod.ts";
import type { History, MessageRow, MessageVia } from "./history.ts";
import { type Keyring, RefusedMessageError } from "./keyring.ts";
import { isOpText, parseReceivedBody } from "./message_ops.ts";
import type { SessionApi } from "./session.ts";

/** A received message that was refused and discarded, as shown to the user. */
export interface DiscardedMessage {
  id: string;
  from: string;
  /** The sender's claimed time, ms since the epoch. */
  sentAt: number;
  /** What to show. */
  text: string;
}

/** Collaborators of an {@link Inbox}. */
export interface InboxDeps {
  /** The logged-in user. */
  me: string;
  history: History;
  keyring: Keyring;
  /** The servers: mailbox fetch and ack. */
  session: Pick<SessionApi, "mailFetch" | "mailAck">;
  /** Sends a peer message back on the path `via` (acks, pongs); false if it could not. */
  reply(remote: string, message: PeerMessage, via: MessageVia): boolean;
  /** `remote` acknowledged our message `id`; resolves false if it is not theirs to acknowledge. */
  acknowledge(remote: string, id: string): Promise<boolean>;
  /** A pong arrived. */
  onPong(remote: string, seq: number, via: MessageVia): void;
  /** `remote` started or stopped typing (data channel only). */
  onTyping?(remote: string, active: boolean): void;
  /** `remote` has read our messages sent up to `upTo`. */
  onRead?(remote: string, upTo: number): void;
  /** New messages from `from` were stored. */
  onStored(from: string, count: number): void;
  /**
   * Whether the user blocked `from`: their messages are acknowledged (so they are not sent
   * again) and dropped unseen, everything else from them ignored. @default nobody
   */
  isBlocked?(from: string): boolean;
  /**
   * A new row was stored (a message or an operation: message_ops.ts), before it is
   * acknowledged: applies what it changes. Operations are not counted in {@link onStored}; they
   * are reported to {@link onOps}.
   */
  afterStore?(row: MessageRow): Promise<void>;
  /** Reactions, edits or deletes from `from` were stored. */
  onOps?(from: string): void;
  /** A message was refused and discarded. */
  onDiscarded(message: DiscardedMessage): void;
  /** A malformed, misaddressed or forged message was rejected (counted for tests). */
  onRejected(): void;
  /** Wall clock, ms since the epoch. */
  now(): number;
  /** Files (issue 15): a file frame arrived (chunks and `file_have` only over the channel). */
  onFileFrame?(remote: string, frame: FileFrame, via: MessageVia): Promise<void>;
  /** Files: a message announcing a file was stored (new). */
  onFileOffer?(from: string, id: string): void;
  /** Files: takes a mailbox entry that is a file chunk (true once kept), before it is opened. */
  takeMail?(mail: IncomingMail): Promise<boolean>;
}

/** Validates, stores and acknowledges what arrives for one logged-in session. */
export class Inbox {
  #deps: InboxDeps;
  #signal: AbortSignal;
  #fetching: Promise<void> | null = null;
  #fetchAgain = false;
  #receiving = 0;

  /** Creates the inbox; after `signal` aborts it stores and reports nothing more. */
  constructor(deps: InboxDeps, signal: AbortSignal) {
    this.#deps = deps;
    this.#signal = signal;
  }

  /** Whether a message or a mailbox fetch is being processed (tests wait for quiet). */
  get isBusy(): boolean {
    return this.#receiving > 0 || this.#fetching !== null;
  }

  /**
   * Opens a chat message that the path says came from `from`: verifies it with `from`'s pinned
   * key and decrypts it. Throws `TamperedEnvelopeError` when the signature or content does not
   * verify, and {@link RefusedMessageError} for a message in clear or one that claims another
   * sender or recipient.
   */
  async openChat(frame: SealedFrame | ChatMessage, from: string): Promise<ChatMessage> {
    if (frame.type !== "sealed") throw new RefusedMessageError("it was not encrypted");
    const chat = await this.#deps.keyring.open(frame.envelope, from);
    try {
      // A reply, reaction, edit or delete must be well-formed (message_ops.ts).
      parseReceivedBody(chat.text);
    } catch (err) {
      throw new RefusedMessageError(`it is malformed: ${(err as Error).message}`);
    }
    return chat;
  }

  /** Handles a text from `remote` on the data channel or the relay. */
  async receiveLive(remote: string, text: string, via: MessageVia): Promise<void> {
    this.#receiving++;
    try {
      await this.#receiveLive(remote, text, via);
    } finally {
      this.#receiving--;
    }
  }

  async #receiveLive(remote: string, text: string, via: MessageVia): Promise<void> {
    if (this.#deps.isBlocked?.(remote)) return this.#dropBlocked(remote, text, via);
    let frame;
    let chat: ChatMessage | null = null;
    try {
      frame = parseLiveFrame(text);
      if (frame.type === "sealed" || frame.type === "chat") {
        chat = await this.openChat(frame, remote);
      }
    } catch (err) {
      if (frame || !isControlText(text)) this.#reject(remote, via, err, claimOf(frame));
      else this.#reject(remote, via, err, null, false);
      return;
    }
    if (this.#signal.aborted) return;
    if (chat) {
      const isNew = await this.#store(chat, via);
      if (this.#signal.aborted) return;
      // Acknowledge only once the message is durable; a duplicate is acknowledged again.
      this.#deps.reply(remote, { v: PEER_PROTOCOL_VERSION, type: "ack", id: chat.id }, via);
      if (isNew && isOpText(chat.text)) this.#deps.onOps?.(remote);
      else if (isNew) this.#deps.onStored(remote, 1);
      if (isNew && chat.file) this.#deps.onFileOffer?.(remote, chat.id);
      return;
    }
    switch (frame.type) {
      case "ack":
        if (!(await this.#deps.acknowledge(remote, frame.id))) this.#deps.onRejected();
        return;
      case "ping":
        this.#deps.reply(remote, { v: PEER_PROTOCOL_VERSION, type: "pong", seq: frame.seq }, via);
        return;
      case "pong":
        this.#deps.onPong(remote, frame.seq, via);
        return;
      case "typing":
        // Only over the data channel: servers relaying "typing" would learn who writes to whom.
        if (via === "p2p") this.#deps.onTyping?.(remote, frame.active);
        else this.#deps.onRejected();
        return;
      case "read":
        this.#deps.onRead?.(remote, frame.upTo);
        return;
      case "file_chunk":
      case "file_have":
      case "file_cancel":
        // Chunks go over the data channel only (or the mailbox, see `takeMail`).
        if (via === "p2p" || frame.type === "file_cancel") {
          await this.#deps.onFileFrame?.(remote, frame, via);
        } else this.#deps.onRejected();
        return;
    }
  }

  /** A blocked sender's text: a chat message is acknowledged unopened, the rest ignored. */
  #dropBlocked(remote: string, text: string, via: MessageVia): void {
    let id: string | undefined;
    try {
      id = claimOf(parseLiveFrame(text))?.id;
    } catch {
      return;
    }
    if (id !== undefined) {
      this.#deps.reply(remote, { v: PEER_PROTOCOL_VERSION, type: "ack", id }, via);
    }
  }

  /** Fetches this user's mailbox (again if asked while a fetch runs). */
  fetchMail(): Promise<void> {
    if (this.#fetching) {
      this.#fetchAgain = true;
      return this.#fetching;
    }
    this.#fetching = (async () => {
      try {
        do {
          this.#fetchAgain = false;
          await this.#fetchMailOnce();
        } while (this.#fetchAgain && !this.#signal.aborted);
      } finally {
        this.#fetching = null;
      }
    })();
    return this.#fetching;
  }

  async #fetchMailOnce(): Promise<void> {
    const mail = await this.#deps.session.mailFetch();
    if (this.#signal.aborted) return;
    const fresh = new Map<string, number>();
    const opsFrom = new Set<string>();
    const offers: ChatMessage[] = [];
    for (const m of mail) {
      // A blocked sender's mail is acknowledged below with the rest, never opened or stored.
      if (this.#deps.isBlocked?.(m.from)) continue;
      if (await this.#deps.takeMail?.(m)) continue;
      const chat = await this.#openMail(m);
      if (this.#signal.aborted) return;
      if (chat && await this.#store(chat, "mailbox")) {
        if (isOpText(chat.text)) opsFrom.add(chat.from);
        else fresh.set(chat.from, (fresh.get(chat.from) ?? 0) + 1);
        if (chat.file) offers.push(chat);
      }
    }
    if (this.#signal.aborted) return;
    for (const [from, n] of fresh) this.#deps.onStored(from, n);
    for (const from of opsFrom) this.#deps.onOps?.(from);
    for (const chat of offers) this.#deps.onFileOffer?.(chat.from, chat.id);
    // Everything is durable now: acknowledge all of it, rejected entries included (they would
    // otherwise come back on every login). The frames go at once, not one after the other: the
    // recipient's primary stores acks that arrive together in one commit.
    const acks: Promise<void>[] = [];
    for (let i = 0; i < mail.length; i += MAX_MAIL_BATCH) {
      acks.push(this.#deps.session.mailAck(
        mail.slice(i, i + MAX_MAIL_BATCH).map((m) => ({ id: m.id, from: m.from })),
      ));
    }
    await Promise.all(acks);
  }

  /** The chat message of a mailbox entry, or null if it was rejected. */
  async #openMail(m: IncomingMail): Promise<ChatMessage | null> {
    let frame;
    try {
      frame = parseMailboxContent(m.envelope);
      const chat = await this.openChat(frame, m.from);
      if (chat.id !== m.id) throw new Error(`mailbox entry ${m.id} carries message ${chat.id}`);
      return chat;
    } catch (err) {
      this.#reject(m.from, "mailbox", err, m);
      return null;
    }
  }

  async #store(msg: ChatMessage, via: MessageVia): Promise<boolean> {
    const row: MessageRow = {
      id: msg.id,
      peer: msg.from,
      sender: msg.from,
      recipient: this.#deps.me,
      sentAt: msg.sentAt,
      receivedAt: this.#deps.now(),
      text: msg.text,
      via,
      status: "delivered",
      ...(msg.file ? { attachment: JSON.stringify(msg.file) } : {}),
    };
    const isNew = await this.#deps.history.insert(row);
    if (isNew) await this.#deps.afterStore?.(row);
    return isNew;
  }

  /**
   * Counts a rejected message and, unless it was only a malformed acknowledgement or ping
   * (`isShown` false), shows it as refused: under its claimed id and time when it has them.
   */
  #reject(
    from: string,
    via: MessageVia,
    err: unknown,
    claimed: { id: string; sentAt: number } | null,
    isShown = true,
  ): void {
    if (this.#signal.aborted) return;
    this.#deps.onRejected();
    const reason = err instanceof Error ? err.message : String(err);
    console.warn(`Refused a message from "${from}" via ${via}: ${reason}`);
    if (!isShown) return;
    this.#deps.onDiscarded({
      id: claimed?.id ?? `refused-${crypto.randomUUID()}`,
      from,
      sentAt: claimed?.sentAt ?? this.#deps.now(),
      text: `Message refused: a message from ${from} ${describeRefusal(err)}, so it was discarded`,
    });
  }
}

/** Why a message was refused, as people read it. */
function describeRefusal(err: unknown): string {
  if (err instanceof RefusedMessageError) return `was refused (${err.message})`;
  if (err instanceof TamperedEnvelopeError) {
    return "does not verify with the key you trust for them";
  }
  if (err instanceof NotForMeError) return "was not encrypted for you";
  return "is not a valid encrypted message";
}

/** The id and time a refused frame claims, if it claims any. */
function claimOf(
  frame: SealedFrame | PeerMessage | undefined,
): { id: string; sentAt: number } | null {
  if (frame?.type === "sealed") return frame.envelope;
  if (frame?.type === "chat") return frame;
  return null;
}

/** Whether `text` is (meant as) an acknowledgement or ping, not a message. */
function isControlText(text: string): boolean {
  try {
    const type = (JSON.parse(text) as { type?: unknown })?.type;
    return type === "ack" || type === "ping" || type === "pong" ||
      (typeof type === "string" && type.startsWith("file_"));
  } catch {
    return false;
  }
}
