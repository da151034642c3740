/**
 * The browser-facing side of offline mailboxes: a logged-in user sends messages for an offline
 * recipient (acknowledged once W copies are durable), fetches their own mailbox, and acknowledges
 * what they received (the senders are told, if online). A user can only ever read and
 * acknowledge their own mailbox: the recipient is the session's user, never a frame field.
 */
import type { ClientFrame, ServerFrame } from "../../shared/mod.ts";
import type { Cluster, Log } from "../cluster/mod.ts";
import { MailboxFullError, type Replicator, StorageUnavailableError } from "../replication/mod.ts";
import type { Metrics } from "./metrics.ts";

type Frame<T extends ClientFrame["type"]> = Extract<ClientFrame, { type: T }>;

/** Collaborators of {@link MailboxFrames}. */
export interface MailboxFramesDeps {
  replicator: Replicator;
  cluster: Cluster;
  metrics: Metrics;
  log: Log;
}

/** Answers `mail_send`, `mail_fetch` and `mail_ack` frames of authenticated users. */
export class MailboxFrames {
  #deps: MailboxFramesDeps;

  /** Creates the handler. */
  constructor(deps: MailboxFramesDeps) {
    this.#deps = deps;
    deps.metrics.describe(
      "p2pchat_mail_frames_total",
      "counter",
      "Mailbox frames by kind and result",
    );
  }

  /** Handles one mailbox frame from `me`; returns the reply frame. */
  async handle(
    me: string,
    frame: Frame<"mail_send" | "mail_fetch" | "mail_ack">,
  ): Promise<ServerFrame> {
    const result = await this.#handle(me, frame);
    this.#deps.metrics.inc("p2pchat_mail_frames_total", {
      kind: frame.type,
      result: result.type === "error" ? result.code : "ok",
    });
    return result;
  }

  async #handle(
    me: string,
    frame: Frame<"mail_send" | "mail_fetch" | "mail_ack">,
  ): Promise<ServerFrame> {
    const { replicator } = this.#deps;
    const fail = (
      code: "unknown_user" | "mailbox_full" | "unavailable",
      message: string,
    ): ServerFrame => ({
      v: 1,
      type: "error",
      reqId: frame.reqId,
      code,
      message,
    });
    try {
      switch (frame.type) {
        case "mail_send": {
          if (!(await this.#deps.cluster.account(frame.to))) {
            return fail("unknown_user", `No user named "${frame.to}": check the name`);
          }
          await replicator.storeMessages(frame.messages.map((m) => ({
            recipient: frame.to,
            messageId: m.id,
            sender: me,
            sentAt: m.sentAt,
            envelope: m.envelope,
          })));
          // The sender believed the recipient offline; if a session of theirs runs after all
          // (the sender's view was stale), it is told to fetch now rather than at its next login.
          void this.#deps.cluster.deliver(frame.to, { v: 1, type: "mail_waiting" });
          return { v: 1, type: "ok", reqId: frame.reqId };
        }
        case "mail_fetch": {
          const entries = await replicator.fetchPending(me);
          return {
            v: 1,
            type: "mail",
            reqId: frame.reqId,
            messages: entries.map((e) => ({
              id: e.messageId,
              from: e.sender,
              sentAt: e.sentAt,
              envelope: e.envelope,
            })),
          };
        }
        case "mail_ack": {
          await replicator.acknowledge(me, frame.messages.map((m) => m.id));
          // Tell each sender (if online anywhere) that their messages were delivered.
          const bySender = new Map<string, string[]>();
          for (const m of frame.messages) {
            bySender.set(m.from, [...(bySender.get(m.from) ?? []), m.id]);
          }
          for (const [sender, ids] of bySender) {
            // Best effort: a sender who misses it confirms over p2p when both are online.
            void this.#deps.cluster.deliver(sender, { v: 1, type: "delivered", by: me, ids })
              .then((ok) => ok || this.#deps.log("receipt_undelivered", { to: sender, by: me }));
          }
          return { v: 1, type: "ok", reqId: frame.reqId };
        }
      }
    } catch (err) {
      if (err instanceof MailboxFullError) return fail("mailbox_full", err.message);
      if (err instanceof StorageUnavailableError) {
        return fail(
          "unavailable",
          "The message could not be stored safely right now: try again in a few seconds",
        );
      }
      throw err;
    }
  }
}
