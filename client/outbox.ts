/**
 * The delivery engine of one logged-in session: takes this user's messages from `sending` to
 * `sent` to `delivered`.
 *
 * A message goes over the data channel when it is open; while the channel to an online contact is
 * still opening, or cannot open, it goes through the servers at once as a `relay` frame (and the
 * channel is asked to open, so later messages take it); when the contact is offline it is stored in the contact's mailbox on the servers (`mail_send`, status
 * `sent`). The row's `via` records which path was used. The receiver's `ack` (on the same path),
 * or the servers' `delivered` notice for mailbox messages, marks it `delivered`. While the
 * WebSocket is down, messages that cannot go over an open data channel stay `sending` and go out
 * when the session is back. A refused mailbox send is marked `failed` and retried after
 * `mailRetryMs`. Messages to one contact go out one flush at a time, in send order. Every message
 * goes out sealed for the contact's pinned keys, on every path; while those cannot be used (a key
 * change not yet accepted, a contact without keys) the messages wait as `sending`.
 */
import {
  type ChatMessage,
  MAX_MAIL_BATCH,
  PEER_PROTOCOL_VERSION,
  sealedFrameText,
  validateFileMeta,
} from "../shared/mod.ts";
import type { History, MessageRow } from "./history.ts";
import type { Keyring } from "./keyring.ts";
import { ServerError, type SessionApi, type TimerId, type Timers } from "./session.ts";

/** The direct links an {@link Outbox} sends over (a `Peers`). */
export interface DirectLinks {
  isOpen(remote: string): boolean;
  /** Starts opening a link to `remote` unless one is open or being negotiated; never waits. */
  ensure(remote: string): void;
  /** Sends over the open channel; false (sending nothing) when it is not open. */
  send(remote: string, text: string): boolean;
}

/** Collaborators of an {@link Outbox}. */
export interface OutboxDeps {
  /** The logged-in user. */
  me: string;
  history: History;
  keyring: Keyring;
  links: DirectLinks;
  /** The servers: relay and mailbox. */
  session: Pick<SessionApi, "status" | "relay" | "mailSend">;
  /** Whether `user` is online, as presence last said. */
  isOnline(user: string): boolean;
  /** Rows of the conversation with `peer` changed. */
  onChanged(peer: string): void;
  /** Something went wrong that the user should see. */
  onError(err: unknown): void;
  /** Timers for retries and rechecks. @default the global ones */
  timers?: Pick<Timers, "setTimeout" | "clearTimeout">;
}

/** Configuration of an {@link Outbox}. */
export interface OutboxOptions {
  /** Delay before retrying a mailbox send the servers could not take, ms. @default 5000 */
  mailRetryMs?: number;
  /**
   * How long after a contact is seen online our mailbox messages to them that are still not
   * known as delivered are offered again over a data channel (the servers' `delivered` notice may
   * have been lost), ms. @default 10000
   */
  mailboxRecheckMs?: number;
}

/** The peer-protocol chat message of a stored row. */
function chatMessageOf(row: MessageRow): ChatMessage {
  return {
    v: PEER_PROTOCOL_VERSION,
    type: "chat",
    id: row.id,
    from: row.sender,
    to: row.recipient,
    sentAt: row.sentAt,
    text: row.text,
    ...(row.attachment ? { file: validateFileMeta(JSON.parse(row.attachment)) } : {}),
  };
}

const isInMailbox = (r: MessageRow) => r.status === "sent" && r.via === "mailbox";

/** Sends this user's messages and tracks them until they are delivered. */
export class Outbox {
  #deps: OutboxDeps;
  #opts: Required<OutboxOptions>;
  #signal: AbortSignal;
  #timers: Pick<Timers, "setTimeout" | "clearTimeout">;
  /** The latest queued flush per contact: flushes to one contact run one after another. */
  #flushes = new Map<string, Promise<void>>();
  /** Pending mailbox retries per contact. */
  #retryTimers = new Map<string, TimerId>();
  #recheckTimers = new Map<string, TimerId>();
  /** Acks and delivered notices being recorded. */
  #recording = 0;

  /** Creates the outbox; when `signal` aborts, its timers stop and it sends nothing more. */
  constructor(deps: OutboxDeps, options: OutboxOptions, signal: AbortSignal) {
    this.#deps = deps;
    this.#opts = {
      mailRetryMs: 5_000,
      mailboxRecheckMs: 10_000,
      ...options,
    };
    this.#signal = signal;
    this.#timers = deps.timers ?? {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    };
    signal.addEventListener("abort", () => {
      for (const t of this.#retryTimers.values()) this.#timers.clearTimeout(t);
      this.#retryTimers.clear();
      for (const t of this.#recheckTimers.values()) this.#timers.clearTimeout(t);
      this.#recheckTimers.clear();
    }, { once: true });
  }

  /** Whether a flush, ack or delivered notice is being processed (tests wait for quiet). */
  get isBusy(): boolean {
    return this.#flushes.size > 0 || this.#recording > 0;
  }

  /** Stores `row` (a new own message, status `sending`) and sends it. */
  async send(row: MessageRow): Promise<void> {
    await this.#deps.history.insert(row);
    if (this.#signal.aborted) return;
    this.#deps.onChanged(row.peer);
    await this.flush(row.peer);
  }

  /**
   * Sends this user's undelivered messages to `peer`, after any flush to them already queued.
   * Always takes messages never handed to a path (`sending`, `failed`); with `unacked`, also
   * those sent directly (p2p or relay) but not acknowledged, and — only over a data channel that
   * is open, or that it opens with `openForMailbox` — those waiting in the peer's mailbox, so that
   * the peer's ack marks them delivered even when the servers' `delivered` notice never comes
   * (for example because this user was offline when the peer fetched them). Mailbox messages are
   * never relayed or stored again: the servers hold them until the peer fetches them.
   */
  flush(peer: string, unacked = false, openForMailbox = false): Promise<void> {
    const next = (this.#flushes.get(peer) ?? Promise.resolve())
      .then(() => this.#flushNow(peer, unacked, openForMailbox))
      .catch((err) => this.#deps.onError(err));
    this.#flushes.set(peer, next);
    void next.then(() => {
      if (this.#flushes.get(peer) === next) this.#flushes.delete(peer);
    });
    return next;
  }

  /**
   * On every session start (login, reload, failover): sends what waited for a session, and what
   * the last session sent to online contacts but never saw acknowledged (the receiver ignores a
   * message id it already has, and acknowledges it).
   */
  resume(online: string[]): void {
    for (const peer of this.#deps.history.peersWithUnsent(this.#deps.me)) void this.flush(peer);
    for (const peer of online) {
      void this.flush(peer, true);
      this.recheckLater(peer);
    }
  }

  /** Later, if `peer` is still online, offers our undelivered mailbox messages over p2p. */
  recheckLater(peer: string): void {
    if (this.#signal.aborted) return;
    const old = this.#recheckTimers.get(peer);
    if (old !== undefined) this.#timers.clearTimeout(old);
    this.#recheckTimers.set(
      peer,
      this.#timers.setTimeout(() => {
        this.#recheckTimers.delete(peer);
        if (this.#deps.isOnline(peer)) void this.flush(peer, true, true);
      }, this.#opts.mailboxRecheckMs),
    );
  }

  /**
   * `remote` acknowledged our message `id`: it is delivered. Resolves false (changing nothing)
   * unless it is our message to `remote`: only its recipient may acknowledge it.
   */
  acknowledge(remote: string, id: string): Promise<boolean> {
    return this.#record(() => this.#acknowledge(remote, id));
  }

  async #acknowledge(remote: string, id: string): Promise<boolean> {
    const row = this.#deps.history.get(id);
    if (!row || row.sender !== this.#deps.me || row.recipient !== remote) return false;
    await this.#deps.history.update(id, { status: "delivered" });
    if (!this.#signal.aborted) this.#deps.onChanged(remote);
    return true;
  }

  /** The servers say `by` received our messages `ids` from their mailbox. */
  markDelivered(by: string, ids: string[]): Promise<void> {
    return this.#record(() => this.#markDelivered(by, ids));
  }

  async #markDelivered(by: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      const row = this.#deps.history.get(id);
      // Only the recipient of our message can have received it.
      if (!row || row.sender !== this.#deps.me || row.recipient !== by) continue;
      await this.#deps.history.update(id, { status: "delivered" });
      if (this.#signal.aborted) return;
    }
    this.#deps.onChanged(by);
  }

  async #record<T>(fn: () => Promise<T>): Promise<T> {
    this.#recording++;
    try {
      return await fn();
    } finally {
      this.#recording--;
    }
  }

  async #flushNow(peer: string, unacked: boolean, openForMailbox: boolean): Promise<void> {
    if (this.#signal.aborted) return;
    const { me, history: h, links } = this.#deps;
    const wanted = () =>
      h.pending(me, peer).filter((r) =>
        r.status === "sending" || r.status === "failed" ||
        (unacked && r.status === "sent" && r.via !== "mailbox")
      );
    const recheck = () => unacked ? h.pending(me, peer).filter(isInMailbox) : [];
    // Mailbox messages not yet known as delivered are offered again over a data channel (opened
    // for them only when asked): their ack marks them delivered if the servers' notice was lost.
    const waiting = () =>
      wanted().length > 0 || (recheck().length > 0 && (openForMailbox || links.isOpen(peer)));
    if (!waiting()) return;
    // Nothing goes out that cannot be sealed for the peer's pinned, unchanged keys: the rows
    // wait (`sending`) until the user accepts a changed key, or the keys can be looked up.
    const canSeal = await this.#deps.keyring.canSeal(peer).catch(() => false);
    // Logged out meanwhile: no link may be opened for a session that ended.
    if (this.#signal.aborted) return;
    if (!canSeal) {
      this.#deps.onChanged(peer);
      return;
    }
    const done = new Set<string>();
    // No waiting for a channel that is still opening (or never will, behind a strict NAT): the
    // servers carry these now, and the channel, once open, carries what comes after.
    if (!links.isOpen(peer) && this.#deps.isOnline(peer)) links.ensure(peer);
    if (links.isOpen(peer)) {
      if (this.#signal.aborted) return;
      const rows = h.pending(me, peer).filter((r) =>
        r.status === "sending" || r.status === "failed" || (unacked && r.status === "sent")
      );
      for (const row of rows) {
        const text = await this.#liveTextOf(row);
        if (this.#signal.aborted || !links.send(peer, text)) break;
        done.add(row.id);
        if (!isInMailbox(row)) await h.update(row.id, { status: "sent", via: "p2p" });
      }
    }
    if (this.#signal.aborted) return;
    const rest = wanted().filter((r) => !done.has(r.id));
    if (rest.length > 0 && this.#deps.session.status === "online") {
      if (this.#deps.isOnline(peer)) {
        for (const row of rest) {
          const text = await this.#liveTextOf(row);
          if (this.#signal.aborted) return;
          this.#deps.session.relay(peer, text);
          await h.update(row.id, { status: "sent", via: "relay" });
        }
      } else {
        await this.#sendToMailbox(peer, rest);
      }
    }
    // Otherwise the WebSocket is down: the rows stay `sending` until the session is back.
    if (!this.#signal.aborted) this.#deps.onChanged(peer);
  }

  /** The text sent over the data channel or relay: the sealed frame. */
  async #liveTextOf(row: MessageRow): Promise<string> {
    return sealedFrameText(await this.#deps.keyring.seal(chatMessageOf(row)));
  }

  /** Stores `rows` in `peer`'s mailbox, in batches; on refusal shows the servers' reason. */
  async #sendToMailbox(peer: string, rows: MessageRow[]): Promise<void> {
    const h = this.#deps.history;
    for (let i = 0; i < rows.length; i += MAX_MAIL_BATCH) {
      const chunk = rows.slice(i, i + MAX_MAIL_BATCH);
      try {
        const mail = [];
        for (const r of chunk) {
          // The envelope JSON itself.
          const envelope = await this.#deps.keyring.seal(chatMessageOf(r));
          mail.push({ id: r.id, sentAt: r.sentAt, envelope: JSON.stringify(envelope) });
        }
        if (this.#signal.aborted) return;
        await this.#deps.session.mailSend(peer, mail);
      } catch (err) {
        if (this.#signal.aborted) return;
        const code = err instanceof ServerError ? err.code : "internal";
        if (code === "disconnected") return; // stays `sending`; sent again on reconnect
        if (code !== "timeout") {
          // Refused (full mailbox, storage unavailable, unknown user): say why, retry later.
          for (const r of rows.slice(i)) await h.update(r.id, { status: "failed" });
          this.#deps.onError(err);
        }
        if (code !== "unknown_user") this.#retryLater(peer);
        return;
      }
      if (this.#signal.aborted) return;
      for (const r of chunk) await h.update(r.id, { status: "sent", via: "mailbox" });
    }
  }

  #retryLater(peer: string): void {
    if (this.#signal.aborted || this.#retryTimers.has(peer)) return;
    this.#retryTimers.set(
      peer,
      this.#timers.setTimeout(() => {
        this.#retryTimers.delete(peer);
        void this.flush(peer);
      }, this.#opts.mailRetryMs),
    );
  }
}
