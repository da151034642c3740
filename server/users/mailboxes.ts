/**
 * Offline mailboxes as users see them: a logged-in user sends messages for an offline recipient
 * (acknowledged once W copies are durable), fetches their own mailbox, and acknowledges what
 * they received (the senders are told, if online). A user can only ever read and acknowledge
 * their own mailbox: the recipient is the session's user, never a frame field.
 */
import { type IncomingMail, MAX_MAIL_PAGE_CHARS, type OutgoingMail } from "../../shared/mod.ts";
import {
  MailboxFullError,
  QuotaExceededError,
  TooOldError,
  UnavailableError,
} from "../replication/mod.ts";
import type { Clock } from "../../shared/clock.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import type { Accounts } from "./accounts.ts";
import { UserError } from "./errors.ts";
import type { MailboxRecords } from "./ports.ts";
import type { Routing } from "./routing.ts";

/** Collaborators of {@link Mailboxes}. */
export interface MailboxesDeps {
  records: MailboxRecords;
  accounts: Accounts;
  routing: Routing;
  metrics: Metrics;
  log: Log;
  clock: Clock;
}

/** Most message ids in one `delivered` notice. */
const MAX_RECEIPT_IDS = 5_000;

/** Least time between the starts of two `mail_waiting` notices to one recipient, ms. */
const NOTICE_GAP_MS = 250;

/** Sends to, reads and acknowledges offline mailboxes. */
export class Mailboxes {
  #deps: MailboxesDeps;
  /** Recipients with a `mail_waiting` notice under way: true when another must follow it. */
  #notices = new Map<string, boolean>();
  /** Receipts waiting for a notice under way, by recipient and sender (see #tellDelivered). */
  #receipts = new Map<string, string[]>();

  /** Creates the service. */
  constructor(deps: MailboxesDeps) {
    this.#deps = deps;
    deps.metrics.describe(
      "p2pchat_mail_frames_total",
      "counter",
      "Mailbox frames by kind and result",
    );
  }

  /**
   * Stores `messages` from `me` in `to`'s mailbox. Throws a {@link UserError}: `unknown_user`,
   * `mailbox_full`, `quota_exceeded`, `bad_frame` (a message sent longer ago than the mailbox
   * retention; storing none of them) or `unavailable`. The quotas (of the
   * mailbox, and of one sender's messages and file bytes in it) are checked by the recipient's
   * primary as it stores the batch.
   */
  async send(me: string, to: string, messages: readonly OutgoingMail[]): Promise<void> {
    await this.#count("mail_send", async () => {
      if (!(await this.#deps.accounts.get(to))) {
        throw new UserError("unknown_user", `No user named "${to}": check the name`);
      }
      await this.#deps.records.storeMessages(messages.map((m) => ({
        recipient: to,
        messageId: m.id,
        sender: me,
        sentAt: m.sentAt,
        envelope: m.envelope,
      })));
      // The sender believed the recipient offline; if a session of theirs runs after all (the
      // sender's view was stale), it is told to fetch now rather than at its next login.
      this.#tellWaiting(to);
    });
  }

  /**
   * One page of `me`'s pending messages, in delivery order: those after the message `after`
   * (from the start when absent or no longer pending), at most `MAX_MAIL_PAGE_CHARS` of
   * envelopes; `more` when others follow.
   */
  async fetch(me: string, after?: string): Promise<{ messages: IncomingMail[]; more: boolean }> {
    return await this.#count("mail_fetch", async () => {
      const entries = await this.#deps.records.fetchPending(me);
      const start = after === undefined ? 0 : entries.findIndex((e) => e.messageId === after) + 1;
      const messages: IncomingMail[] = [];
      let chars = 0;
      let i = start;
      for (; i < entries.length; i++) {
        const e = entries[i]!;
        // Always at least one message, so a page makes progress.
        if (messages.length > 0 && chars + e.envelope.length > MAX_MAIL_PAGE_CHARS) break;
        chars += e.envelope.length;
        messages.push({ id: e.messageId, from: e.sender, sentAt: e.sentAt, envelope: e.envelope });
      }
      return { messages, more: i < entries.length };
    });
  }

  /** Deletes what `me` received from the mailbox and tells each stored sender (if online). */
  async acknowledge(me: string, messages: readonly { id: string; from: string }[]): Promise<void> {
    await this.#count("mail_ack", async () => {
      // The receipts name the senders the ring stored, never the `from` the client claims: a
      // recipient cannot make anyone believe another user's message was delivered.
      const receipts = await this.#deps.records.acknowledge(me, messages.map((m) => m.id));
      for (const r of receipts) this.#tellDelivered(r.sender, me, r.messageId);
    });
  }

  /**
   * Tells `sender` (best effort: a sender who misses it confirms over p2p when both are online)
   * that `by` received `messageId`. Receipts from one recipient to one sender are coalesced:
   * while one notice is under way (finding an offline sender's home costs a ring read), the ids
   * acknowledged meanwhile wait and follow in one notice after it — a mailbox drained in many
   * acks costs a few ring reads per sender, not one per ack.
   */
  #tellDelivered(sender: string, by: string, messageId: string): void {
    // Usernames hold no "/".
    const key = `${by}/${sender}`;
    const waiting = this.#receipts.get(key);
    if (waiting) {
      waiting.push(messageId);
      return;
    }
    const ids = [messageId];
    this.#receipts.set(key, ids);
    // Started after the current task, so the receipts of the rest of this ack go with it.
    queueMicrotask(() => this.#sendReceipts(key, sender, by, ids));
  }

  #sendReceipts(key: string, sender: string, by: string, ids: string[]): void {
    const batch = ids.splice(0, MAX_RECEIPT_IDS);
    void this.#deps.routing.deliver(sender, { v: 1, type: "delivered", by, ids: batch })
      .catch(() => false)
      .then((ok) => ok || this.#deps.log("receipt_undelivered", { to: sender, by }))
      .finally(() => {
        if (ids.length) this.#sendReceipts(key, sender, by, ids);
        else this.#receipts.delete(key);
      });
  }

  /**
   * Tells `to`'s sessions that mail waits. Notices to one recipient are coalesced: while one is
   * under way (finding an offline user's home costs a ring read) or started less than
   * {@link NOTICE_GAP_MS} ago, further sends only ask for one more after it, so
   * every stored message is still followed by a notice that started after it — and a burst of
   * sends to an offline user costs a few ring reads a second, not one per round trip.
   */
  #tellWaiting(to: string): void {
    if (this.#notices.has(to)) {
      this.#notices.set(to, true);
      return;
    }
    const { clock } = this.#deps;
    const run = (): void => {
      // Sends before this point are covered by this notice.
      this.#notices.set(to, false);
      const started = clock.now();
      void this.#deps.routing.deliver(to, { v: 1, type: "mail_waiting" })
        .catch(() => false)
        .finally(() => {
          const next = () => {
            if (this.#notices.get(to)) run();
            else this.#notices.delete(to);
          };
          const wait = started + NOTICE_GAP_MS - clock.now();
          if (wait > 0) clock.setTimeout(next, wait);
          else next();
        });
    };
    run();
  }

  /** Runs `work`, turning storage failures into user errors and counting the result. */
  async #count<T>(kind: string, work: () => Promise<T>): Promise<T> {
    let code = "ok";
    try {
      return await work();
    } catch (err) {
      const refusal = err instanceof MailboxFullError
        ? new UserError("mailbox_full", err.message)
        : err instanceof QuotaExceededError
        ? new UserError("quota_exceeded", err.message)
        : err instanceof TooOldError
        ? new UserError("bad_frame", err.message)
        : err instanceof UnavailableError
        ? new UserError(
          "unavailable",
          "The message could not be stored safely right now: try again in a few seconds",
        )
        : err;
      code = refusal instanceof UserError ? refusal.code : "internal";
      throw refusal;
    } finally {
      this.#deps.metrics.inc("p2pchat_mail_frames_total", { kind, result: code });
    }
  }
}
