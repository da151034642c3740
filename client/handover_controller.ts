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
} from "./handover.ts";
import type { History, MessageRow } from "./history.ts";
import type { KeyStore, OwnKeys } from "./keyring.ts";
import type { PeerLinkFactory } from "./peer_link.ts";
import type { SessionApi, SessionInfo } from "./session.ts";

/**
 * The history hand-over between this user's devices, as shown to the user: this device
 * `sending` (it was superseded) or `receiving` (it is the new one).
 */
export interface HandoverState {
  role: "sending" | "receiving";
  /** `connecting` until rows move, then `transferring`; `done` or `failed` at the end. */
  phase: "connecting" | "transferring" | "done" | "failed";
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
    report: { afterImport(undelivered: Set<string>): void; onFailed(text: string): void },
  ): Promise<HistoryReceiver> {
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
          text: `Receiving history from your other device… ${done}/${total}`,
        };
      },
      async importRows(rows: MessageRow[]) {
        signal.throwIfAborted();
        let fresh = 0;
        const undelivered = new Set<string>();
        for (const row of rows) {
          if (await history.importRow(row)) fresh++;
          if (row.sender === self && row.status !== "delivered") undelivered.add(row.peer);
        }
        if (!signal.aborted) report.afterImport(undelivered);
        return fresh;
      },
    });
    r.onOutcome = (outcome) => {
      if (signal.aborted) return;
      state.value = receivedState(outcome, state.value);
      if (!outcome.ok) report.onFailed(state.value.text);
    };
    return r;
  }

  /**
   * This device was superseded and the servers keep its connection open `graceMs` for the
   * hand-over: hands the whole history of `source` to the new device within `graceMs -
   * marginMs`, then closes the history, deletes the unlocked keys and stops the connection.
   */
  startSending(source: HandoverSource, graceMs: number, marginMs: number): void {
    const { info, history, own } = source;
    const self = info.username;
    const state = this.#deps.state;
    const rows = history.all();
    const total = rows.length;
    const sending = (done: number, phase: HandoverState["phase"], text: string) => {
      state.value = { role: "sending", phase, done, total, text };
    };
    sending(0, "connecting", "Signed in elsewhere — handing your history to your new device…");
    const finish = (outcome: HandoverOutcome) => {
      this.#sender = null;
      history.close();
      void this.#deps.keyStore.deleteOwn(info.username, info.token).catch(() => {});
      this.#deps.session.stop();
      if (outcome.ok) {
        sending(total, "done", `Your history (${total} messages) is now on your new device.`);
      } else {
        console.warn(`History hand-over ended: ${outcome.reason}`);
        sending(
          state.value?.done ?? 0,
          "failed",
          `Your history was not handed over: ${outcome.reason}. It stays on this device; ` +
            "messages waiting on the servers reach your new device anyway",
        );
      }
    };
    void handoverKeysOf(own).then((keys) => {
      const run = new HistorySender({
        me: self,
        keys,
        createLink: this.#deps.createLink,
        sendSignal: (data) => this.#deps.session.signal(self, data),
        onProgress(done) {
          sending(
            done,
            "transferring",
            `Signed in elsewhere — handing your history to your new device… ${done}/${total}`,
          );
        },
      }, rows);
      this.#sender = { me: self, run };
      return run.run(graceMs - marginMs);
    }).then(finish, (err) => finish({ ok: false, reason: (err as Error).message }));
  }
}

function receivedState(outcome: HandoverOutcome, last: HandoverState | null): HandoverState {
  return outcome.ok
    ? {
      role: "receiving",
      phase: "done",
      done: outcome.rows,
      total: outcome.rows,
      text: `History received from your other device: ${outcome.rows} messages`,
    }
    : {
      role: "receiving",
      phase: "failed",
      done: last?.done ?? 0,
      total: last?.total ?? null,
      text: `History from your other device was refused (${outcome.reason}): what arrived before ` +
        "stays, nothing else was imported. Log in on the other device again to retry",
    };
}
