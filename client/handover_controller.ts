/**
 * The history hand-over between this user's devices (DESIGN §4) as the chat model runs it, on top
 * of the link drivers of `handover.ts`: on the new device a {@link HistoryReceiver} per logged-in
 * session imports what the superseded device sends; on the superseded device the controller
 * takes over the session's history and keys, hands the history over within the servers' grace,
 * and only then closes the history and deletes the unlocked keys. Progress and outcome are shown
 * through one {@link HandoverState} signal.
 */
import type { Signal } from "@preact/signals";
import type { SignalData } from "../shared/mod.ts";
import {
  handoverKeysOf,
  type HandoverOutcome,
  HistoryReceiver,
  HistorySender,
  MAX_HANDOVER_FILE_BYTES,
} from "./handover.ts";
import type { History, MessageRow } from "./history.ts";
import type { KeyStore, OwnKeys } from "./keyring.ts";
import type { PeerLinkFactory } from "./peer_link.ts";
import { type FileStore, lazyFileStore } from "./file_store.ts";
import { exportableFiles } from "./file_transfer.ts";
import type { ImportedFile } from "./history_export.ts";
import type { SessionApi, SessionInfo } from "./session.ts";
import { handoverTrust, mergePins, type PinRecord } from "./trust.ts";
import { type ContactBook, EMPTY_BOOK, handoverContacts, mergeBooks } from "./contacts.ts";

/** `type` of the self-signal reporting progress to the servers (`server/users/sessions.ts`). */
const HANDOVER_PROGRESS_SIGNAL = "handover_progress";

/** Least time between two progress reports to the servers, ms. */
const PROGRESS_REPORT_MS = 1_000;

/**
 * The history hand-over between this user's devices, as shown to the user: this device
 * `sending` (it was superseded) or `receiving` (it is the new one).
 */
export interface HandoverState {
  role: "sending" | "receiving";
  /**
   * `connecting` until rows move, then `transferring`; `done` or `failed` at the end.
   * `deferred` (receiving): the old device is offline and hands over when it is next online;
   * `waiting` (sending): this device came back, and waits for the new one to be online.
   */
  phase: "connecting" | "transferring" | "done" | "failed" | "deferred" | "waiting";
  /** Rows handed over (sender) or stored (receiver) so far. */
  done: number;
  /** Rows in the whole transfer (null on the receiver before the first batch). */
  total: number | null;
  /** What to show: a sentence. */
  text: string;
}

/** Collaborators of a {@link HandoverController}. */
export interface HandoverControllerDeps {
  session: Pick<SessionApi, "signal" | "stop">;
  createLink: PeerLinkFactory;
  keyStore: KeyStore;
  /** Where the state is shown. */
  state: Signal<HandoverState | null>;
  /**
   * Whether this device keeps a read-only copy of the history after a confirmed hand-over
   * (the user's setting); by default the history is deleted.
   */
  keepCopy?(): boolean;
  /** A confirmed hand-over left `user`'s history here as a read-only copy. */
  onKeptCopy?(user: string): void;
  /** Opens `user`'s files on this device (a hand-over carries them after the rows). */
  openFileStore?(user: string): Promise<FileStore>;
}

/** What a superseded session hands to the controller: it no longer touches any of it. */
export interface HandoverSource {
  info: SessionInfo;
  history: History;
  own: OwnKeys;
}

/** Runs this page's history hand-overs, sending and receiving. */
export class HandoverController {
  #deps: HandoverControllerDeps;
  #sender: { me: string; run: HistorySender } | null = null;

  /** Creates the controller; nothing runs until a session needs it. */
  constructor(deps: HandoverControllerDeps) {
    this.#deps = deps;
  }

  /** Whether this device is handing its history over (superseded, in the servers' grace). */
  get isSending(): boolean {
    return this.#sender !== null;
  }

  /** Routes a signal from `from` to the hand-over it belongs to; false if it belongs to none. */
  handleSignal(from: string, data: SignalData): boolean {
    if (!this.#sender || from !== this.#sender.me) return false;
    this.#sender.run.handleSignal(data);
    return true;
  }

  /** The servers closed the connection kept open for the hand-over. */
  onConnectionClosed(): void {
    this.#sender?.run.stop("The servers closed the connection before the hand-over ended");
  }

  /**
   * Accepts hand-over channels from `self`'s superseded device for a new session, importing into
   * `history`; `afterImport` is told of the rows' contacts to whom this user's messages were not
   * yet delivered, `onFailed` what to show when a transfer is refused. Once `signal` aborts (the
   * session ended) it reports nothing more; the caller closes the receiver with its session.
   */
  async receiverFor(
    self: string,
    own: OwnKeys,
    history: History,
    signal: AbortSignal,
    report: {
      afterImport(undelivered: Set<string>): void;
      /**
       * Takes the files of `rows`: stores those in `carried`, marks the others missing (see
       * `FileTransfers.adopt`).
       */
      adoptFiles?(
        rows: readonly MessageRow[],
        carried: ReadonlyMap<string, ImportedFile>,
      ): Promise<unknown>;
      /** The old device's pinned keys, or its contact book, were merged into the key store. */
      afterTrust?(): void;
      onFailed(text: string): void;
    },
  ): Promise<HistoryReceiver> {
    const keyStore = this.#deps.keyStore;
    const state = this.#deps.state;
    const r = new HistoryReceiver({
      me: self,
      keys: await handoverKeysOf(own),
      createLink: this.#deps.createLink,
      sendSignal: (data) => this.#deps.session.signal(self, data),
      onProgress(done, total) {
        if (signal.aborted) return;
        state.value = {
          role: "receiving",
          phase: done < total ? "transferring" : "done",
          done,
          total,
          text: `Receiving history from your other device (newest first)… ${done}/${total}`,
        };
      },
      async importRows(rows: MessageRow[]) {
        signal.throwIfAborted();
        // Files first (missing until their batch comes): a message shown before would start
        // asking its sender for its file.
        await report.adoptFiles?.(rows, new Map());
        const fresh = await history.importRows(rows);
        const undelivered = new Set<string>();
        for (const row of rows) {
          if (row.sender === self && row.status !== "delivered") undelivered.add(row.peer);
        }
        if (!signal.aborted) report.afterImport(undelivered);
        return fresh;
      },
      async importTrust(pins: PinRecord[]) {
        signal.throwIfAborted();
        for (const pin of pins) {
          await keyStore.savePin(self, mergePins(await keyStore.loadPin(self, pin.contact), pin));
        }
        if (!signal.aborted) report.afterTrust?.();
      },
      async importFile(file: ImportedFile) {
        signal.throwIfAborted();
        const row = history.get(file.id);
        if (row) await report.adoptFiles?.([row], new Map([[file.id, file]]));
      },
      findRow: (id) => history.get(id),
      async importContacts(book: ContactBook) {
        signal.throwIfAborted();
        await keyStore.saveBook(self, mergeBooks(await keyStore.loadBook(self), book));
        if (!signal.aborted) report.afterTrust?.();
      },
    });
    r.onOutcome = (outcome, progress) => {
      if (signal.aborted) return;
      state.value = receivedState(outcome, progress);
      if (!outcome.ok) report.onFailed(state.value.text);
    };
    return r;
  }

  /**
   * This device was superseded and the servers keep its connection open `graceMs` for the
   * hand-over, longer while it reports progress: hands the whole history of `source` to the new
   * device, giving up after `graceMs - marginMs` without progress (or when the servers close the
   * connection), then deletes the history (after a confirmed hand-over) or closes it, deletes the
   * unlocked keys and stops the connection.
   */
  startSending(source: HandoverSource, graceMs: number, marginMs: number): void {
    const { info, history, own } = source;
    const self = info.username;
    const state = this.#deps.state;
    const rows = history.newestFirstSource();
    const total = rows.length;
    const sending = (done: number, phase: HandoverState["phase"], text: string) => {
      state.value = { role: "sending", phase, done, total, text };
    };
    sending(0, "connecting", "Signed in elsewhere — handing your history to your new device…");
    const open = this.#deps.openFileStore;
    const fileStore = open ? lazyFileStore(() => open(self)) : null;
    const finish = async (outcome: HandoverOutcome) => {
      this.#sender = null;
      fileStore?.close();
      // After a confirmed hand-over the keys go; after a failed one they stay with the history,
      // so that this device can claim the rest of the hand-over when it is next open (deferred).
      if (outcome.ok) {
        void this.#deps.keyStore.deleteOwn(info.username, info.token).catch(() => {});
      }
      this.#deps.session.stop();
      if (outcome.ok && this.#deps.keepCopy?.()) {
        // The user asked to keep a copy: read-only, since this device has no session any more.
        history.close();
        this.#deps.onKeptCopy?.(self);
        sending(
          total,
          "done",
          `Your history (${total} messages) is now on your new device; this device keeps a ` +
            "read-only copy (it cannot send).",
        );
      } else if (outcome.ok) {
        // Moved, not copied: the new device confirmed (signed) that it stored every row.
        try {
          await history.destroy();
        } catch (err) {
          console.warn(`Could not delete the handed-over history: ${(err as Error).message}`);
        }
        sending(
          total,
          "done",
          `Your history (${total} messages) is now on your new device and was deleted from ` +
            "this one.",
        );
      } else {
        history.close();
        const done = state.value?.done ?? 0;
        console.warn(`History hand-over ended: ${outcome.reason}`);
        sending(
          done,
          "failed",
          `Your history was not handed over (${outcome.reason}): ${done} of ${total} messages, ` +
            "the newest, reached your new device. All of it stays on this device and the rest " +
            "moves on its own the next time this app is open here while your new device is " +
            "online; messages waiting on the servers reach your new device anyway",
        );
      }
    };
    let reportedAt = -Infinity;
    const session = this.#deps.session;
    const pins = this.#deps.keyStore.listPins(self).catch((err) => {
      console.warn(`The pinned keys stay here: ${(err as Error).message}`);
      return [];
    });
    const contacts = this.#deps.keyStore.loadBook(self).catch(() => EMPTY_BOOK);
    void Promise.all([handoverKeysOf(own), pins, contacts]).then(([keys, pinned, book]) => {
      const run = new HistorySender(
        {
          me: self,
          keys,
          createLink: this.#deps.createLink,
          sendSignal: (data) => session.signal(self, data),
          onProgress(done, _total, files) {
            // Progress keeps the servers' grace open (up to their bound); once a second is enough.
            // The servers count steps: rows, then the batches of files after them.
            const steps = done + (files?.done ?? 0);
            const now = performance.now();
            if (now - reportedAt >= PROGRESS_REPORT_MS || steps === total) {
              reportedAt = now;
              session.signal(self, { type: HANDOVER_PROGRESS_SIGNAL, done: steps, total });
            }
            const ofFiles = files && files.total > 0 && done === total
              ? `, files ${Math.floor((files.done / files.total) * 100)}%`
              : "";
            sending(
              done,
              "transferring",
              `Signed in elsewhere — handing your history to your new device… ${done}/${total}` +
                ofFiles,
            );
          },
        },
        rows,
        {
          trust: handoverTrust(pinned),
          contacts: handoverContacts(book),
          ...(fileStore
            ? {
              files: async (withFiles: readonly MessageRow[]) =>
                (await exportableFiles(fileStore, withFiles, MAX_HANDOVER_FILE_BYTES)).files,
            }
            : {}),
        },
      );
      this.#sender = { me: self, run };
      return run.run(graceMs - marginMs);
    }).then(finish, (err) => finish({ ok: false, reason: (err as Error).message }));
  }
}

function receivedState(
  outcome: HandoverOutcome,
  progress: { done: number; total: number | null },
): HandoverState {
  if (outcome.ok) {
    return {
      role: "receiving",
      phase: "done",
      done: outcome.rows,
      total: outcome.rows,
      text: `History received from your other device: ${outcome.rows} messages`,
    };
  }
  const { done, total } = progress;
  const arrived = total === null
    ? "no message arrived"
    : `${done} of ${total} messages arrived (the newest first)`;
  return {
    role: "receiving",
    phase: "failed",
    done,
    total,
    text: `The history transfer from your other device failed (${outcome.reason}): ${arrived} ` +
      "and stay here. The rest is still on your other device: it moves here automatically, " +
      "from where it stopped, when that device is next online (open the app there)",
  };
}
