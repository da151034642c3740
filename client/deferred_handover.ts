/**
 * The deferred hand-over, old device's side (DESIGN §4): this device's session was replaced by a
 * login elsewhere while it was offline (closed, killed, asleep), or its hand-over was cut short.
 * Its history and the user's unlocked keys are still here (IndexedDB). When the app opens again,
 * {@link DeferredHandover.run} claims the hand-over from the servers: it signs their fresh
 * challenge with the user's private key and presents the old session's token
 * (`handover_claim`); once admitted, the connection is in a hand-over grace like a superseded
 * one, and the {@link HandoverController} hands the history over exactly as live (resuming after
 * what the new device already stored). While the new device is not online it says so and tries
 * again, with backoff and a bounded number of times; the next opening of the app tries again.
 */
import type { Signal } from "@preact/signals";
import { signHandoverClaim } from "../shared/crypto/mod.ts";
import type { HandoverController, HandoverState } from "./handover_controller.ts";
import type { History } from "./history.ts";
import type { KeyStore, OwnKeys } from "./keyring.ts";
import { ServerError, type SessionApi } from "./session.ts";

/** Collaborators of a {@link DeferredHandover}. */
export interface DeferredHandoverDeps {
  session: Pick<SessionApi, "claimHandover">;
  keyStore: Pick<KeyStore, "listOwn">;
  openHistory(owner: string): Promise<History>;
  handovers: Pick<HandoverController, "startSending">;
  /** Where the state is shown. */
  state: Signal<HandoverState | null>;
}

/** Configuration of a {@link DeferredHandover}. */
export interface DeferredHandoverOptions {
  /** First wait before trying again, ms; doubles each time. @default 2000 */
  firstRetryMs?: number;
  /** Longest wait between two tries, ms. @default 60000 */
  maxRetryMs?: number;
  /** Tries before giving up until the app is opened again. @default 40 (about half an hour) */
  maxAttempts?: number;
  /** Margin kept from the servers' grace (as for a live hand-over), ms. @default 2000 */
  marginMs?: number;
}

/** How {@link DeferredHandover.run} ended. */
export type DeferredResult =
  /** A hand-over was admitted and started (the controller reports how it ends). */
  | "started"
  /** Nothing to hand over from here (no keys of a replaced session). */
  | "none"
  /** The new device stayed offline for every try: the next opening tries again. */
  | "gave_up";

/** Codes after which trying again later may succeed. */
const RETRY_CODES = new Set([
  "peer_offline",
  "disconnected",
  "timeout",
  "unavailable",
  "rate_limited",
]);

/** Claims and starts the hand-overs this device still owes; see the module comment. */
export class DeferredHandover {
  #deps: DeferredHandoverDeps;
  #opts: Required<DeferredHandoverOptions>;

  /** Creates the claimer; {@link run} does the work. */
  constructor(deps: DeferredHandoverDeps, options: DeferredHandoverOptions = {}) {
    this.#deps = deps;
    this.#opts = {
      firstRetryMs: 2_000,
      maxRetryMs: 60_000,
      maxAttempts: 40,
      marginMs: 2_000,
      ...options,
    };
  }

  /**
   * Claims the hand-over of every replaced session whose keys this device holds, one after
   * the other, until one starts. Stops quietly when `signal` aborts (a login on this page).
   */
  async run(signal: AbortSignal): Promise<DeferredResult> {
    let entries: Array<{ user: string; token: string; keys: OwnKeys }>;
    try {
      entries = await this.#deps.keyStore.listOwn();
    } catch {
      return "none";
    }
    let result: DeferredResult = "none";
    for (const entry of entries) {
      if (signal.aborted) return result;
      const one = await this.#claim(entry, signal);
      if (one === "started") return one;
      if (one === "gave_up") result = one;
    }
    return result;
  }

  async #claim(
    entry: { user: string; token: string; keys: OwnKeys },
    signal: AbortSignal,
  ): Promise<DeferredResult> {
    const { session, state } = this.#deps;
    const { user, token, keys } = entry;
    let delay = this.#opts.firstRetryMs;
    for (let attempt = 1;; attempt++) {
      if (signal.aborted) return "none";
      try {
        const graceMs = await session.claimHandover(
          token,
          (challenge) => signHandoverClaim(user, token, challenge, keys.signing),
        );
        const history = await this.#deps.openHistory(user);
        this.#deps.handovers.startSending(
          { info: { username: user, token, expiresAt: 0, servers: [] }, history, own: keys },
          graceMs,
          Math.min(this.#opts.marginMs, graceMs / 2),
        );
        return "started";
      } catch (err) {
        if (signal.aborted) return "none";
        const code = err instanceof ServerError ? err.code : "";
        if (!RETRY_CODES.has(code)) {
          // Still the current session (another tab, or a tab closed without logging out), or
          // a token the servers no longer accept: nothing this device can hand over with it.
          if (code !== "not_superseded") {
            console.warn(`No deferred hand-over for ${user}: ${(err as Error).message}`);
          }
          if (state.value?.role === "sending" && state.value.phase === "waiting") {
            state.value = null;
          }
          return "none";
        }
        if (attempt >= this.#opts.maxAttempts) {
          state.value = {
            role: "sending",
            phase: "failed",
            done: 0,
            total: null,
            text: `The history of ${user} is still on this device: your new device was not ` +
              "online while this app was open here. It moves there the next time this app is " +
              "open here while your new device is online",
          };
          return "gave_up";
        }
        state.value = {
          role: "sending",
          phase: "waiting",
          done: 0,
          total: null,
          text: `Signed in elsewhere: the history of ${user} is on this device, waiting to move ` +
            `to your new device as soon as that device is online (next try in ` +
            `${Math.round(delay / 1000)} s)`,
        };
        await wait(delay, signal);
        delay = Math.min(this.#opts.maxRetryMs, delay * 2);
      }
    }
  }
}

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
