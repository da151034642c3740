/**
 * Decides whether a received datagram is a genuine, fresh announcement: well-formed, signed with
 * the cluster secret, sent within the allowed clock skew, and not seen before. Checks run in that
 * order so only authenticated datagrams can take room in the replay window.
 */
import {
  type Announcement,
  AnnouncementError,
  parseAnnouncement,
  signingText,
} from "./announcement.ts";
import type { Signer } from "./deps.ts";
import { ReplayWindow } from "./replay_window.ts";

/** Why an announcement was dropped (the `reason` label of `p2pchat_discovery_dropped_total`). */
export type DropReason = "malformed" | "unsigned" | "forged" | "stale" | "replayed";

/** The outcome of {@link AnnouncementVerifier.verify}. */
export type Verdict =
  | { ok: true; announcement: Announcement }
  | { ok: false; reason: DropReason; detail: string };

/** Collaborators of an {@link AnnouncementVerifier}. */
export interface AnnouncementVerifierDeps {
  signer: Signer;
  /** Current time in ms since the epoch. @default Date.now */
  now?: () => number;
}

/** Configuration of an {@link AnnouncementVerifier}. */
export interface AnnouncementVerifierOptions {
  /** Largest accepted difference between the sender's and our clock, in ms. @default 30000 */
  maxSkewMs?: number;
  /** Most nonces remembered. @default 10000 */
  maxNonces?: number;
}

/** Verifies announcements and remembers their nonces. */
export class AnnouncementVerifier {
  #signer: Signer;
  #now: () => number;
  #maxSkewMs: number;
  #window: ReplayWindow;

  /** Creates a verifier with an empty replay window. */
  constructor(deps: AnnouncementVerifierDeps, options: AnnouncementVerifierOptions = {}) {
    this.#signer = deps.signer;
    this.#now = deps.now ?? Date.now;
    this.#maxSkewMs = options.maxSkewMs ?? 30_000;
    this.#window = new ReplayWindow({ maxEntries: options.maxNonces });
  }

  /** Checks one datagram; never throws. */
  async verify(data: Uint8Array): Promise<Verdict> {
    let parsed;
    try {
      parsed = parseAnnouncement(data);
    } catch (err) {
      if (!(err instanceof AnnouncementError)) throw err;
      return { ok: false, reason: "malformed", detail: err.message };
    }
    const { announcement, sig } = parsed;
    if (sig === undefined) {
      return {
        ok: false,
        reason: "unsigned",
        detail: `no signature (from ${announcement.address})`,
      };
    }
    if (!(await this.#signer.verify(signingText(announcement), sig))) {
      return {
        ok: false,
        reason: "forged",
        detail: `signature does not match the cluster secret (from ${announcement.address})`,
      };
    }
    const now = this.#now();
    const skew = now - announcement.time;
    if (Math.abs(skew) > this.#maxSkewMs) {
      return {
        ok: false,
        reason: "stale",
        detail:
          `sent ${skew} ms from our clock, more than ${this.#maxSkewMs} (from ${announcement.address})`,
      };
    }
    // Past time + maxSkew the staleness check refuses the copy anyway, so forget the nonce then.
    if (!this.#window.admit(announcement.nonce, announcement.time + this.#maxSkewMs, now)) {
      return {
        ok: false,
        reason: "replayed",
        detail: `nonce ${announcement.nonce} already seen (from ${announcement.address})`,
      };
    }
    return { ok: true, announcement };
  }
}
