/**
 * One {@link PeerLink} per contact. A link is opened when a chat is opened or a message must be
 * sent ({@link Peers.ensure}), or when the remote side asks; it is dropped when it closes or the
 * contact goes offline.
 *
 * Who initiates follows the glare rule ({@link isInitiator}): the smaller username makes the offer;
 * the larger one sends a `{type: "connect"}` signal asking for it. Every signal of a link carries
 * the link's id (`lid`, chosen by the initiator), so signals of an older, replaced negotiation (for
 * example after a reload on either side) are recognised and dropped instead of corrupting the new
 * one.
 *
 * Every open channel carries keep-alives: a side that has sent nothing for `keepaliveMs` sends
 * {@link KEEPALIVE_TEXT}, and a link that has heard nothing for `deadAfterMs` is dropped as dead
 * (its messages then go through the servers) instead of waiting for WebRTC to notice, which can
 * take half a minute. Links are given the session's ICE servers (`iceServers`).
 */
import type { IceServer, SignalData } from "../shared/mod.ts";
import {
  CONNECT_REQUEST,
  isConnectRequest,
  isInitiator,
  isOffer,
  KEEPALIVE_TEXT,
  type PeerLink,
  type PeerLinkFactory,
  type SelectedCandidates,
} from "./peer_link.ts";

/** Collaborators of {@link Peers}. */
export interface PeersDeps {
  /** This user's name. */
  me: string;
  /** Creates one link. */
  createLink: PeerLinkFactory;
  /** Sends a signal to `to` through the servers. */
  sendSignal(to: string, data: SignalData): void;
  /** Monotonic clock in ms. @default performance.now */
  now?(): number;
  /** The ICE servers new links use now (the session's STUN/TURN). @default none */
  iceServers?(): IceServer[];
}

/** What {@link Peers} reports. */
export interface PeersEvents {
  onOpen?(remote: string): void;
  onMessage?(remote: string, text: string): void;
  onClose?(remote: string): void;
}

/** Configuration of {@link Peers}. */
export interface PeersOptions {
  /** A link not open after this long is dropped so a later attempt starts afresh. @default 15000 */
  connectTimeoutMs?: number;
  /** Least time between two connect requests to one user, in ms. @default 2000 */
  connectRequestIntervalMs?: number;
  /** An open channel that sent nothing for this long sends a keep-alive, ms. @default 1000 */
  keepaliveMs?: number;
  /** An open channel that heard nothing for this long is dropped as dead, ms. @default 4000 */
  deadAfterMs?: number;
}

interface Entry {
  link: PeerLink;
  lid: string;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The keep-alive check of an open channel. */
  beat: ReturnType<typeof setInterval> | undefined;
  lastSent: number;
  lastHeard: number;
}

/** Manages the direct links of one logged-in user. */
export class Peers {
  /** Event handlers; assign fields to subscribe. */
  events: PeersEvents = {};
  /** `now()` when the data channel to each user last opened (for benchmarks). */
  readonly dcOpenedAt: Record<string, number> = {};
  #deps: PeersDeps;
  #now: () => number;
  #opts: Required<PeersOptions>;
  #links = new Map<string, Entry>();
  #lastRequest = new Map<string, number>();
  #waiters = new Map<string, Set<() => void>>();

  /** Creates the manager; no link is opened until needed. */
  constructor(deps: PeersDeps, options: PeersOptions = {}) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => performance.now());
    this.#opts = {
      connectTimeoutMs: 15_000,
      connectRequestIntervalMs: 2_000,
      keepaliveMs: 1_000,
      deadAfterMs: 4_000,
      ...options,
    };
  }

  /** Whether the data channel to `remote` is open. */
  isOpen(remote: string): boolean {
    return this.#links.get(remote)?.link.isOpen ?? false;
  }

  /** Starts opening a link to `remote` unless one exists or is being negotiated. */
  ensure(remote: string): void {
    if (remote === this.#deps.me || this.#links.has(remote)) return;
    if (isInitiator(this.#deps.me, remote)) {
      this.#create(remote, true, newLinkId());
      return;
    }
    const last = this.#lastRequest.get(remote);
    const now = this.#now();
    if (last !== undefined && now - last < this.#opts.connectRequestIntervalMs) return;
    this.#lastRequest.set(remote, now);
    this.#deps.sendSignal(remote, CONNECT_REQUEST);
  }

  /** Ensures a link and waits up to `timeoutMs` for it to open; resolves whether it is open. */
  waitOpen(remote: string, timeoutMs: number): Promise<boolean> {
    this.ensure(remote);
    if (this.isOpen(remote)) return Promise.resolve(true);
    return new Promise((resolve) => {
      let set = this.#waiters.get(remote);
      if (!set) this.#waiters.set(remote, set = new Set());
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        resolve(this.isOpen(remote));
      };
      const timer = setTimeout(done, timeoutMs);
      set.add(done);
    });
  }

  /** Sends over the open channel; returns false (sending nothing) when it is not open. */
  send(remote: string, text: string): boolean {
    const entry = this.#links.get(remote);
    if (!entry?.link.isOpen) return false;
    try {
      entry.link.send(text);
      entry.lastSent = this.#now();
      return true;
    } catch {
      return false;
    }
  }

  /** Bytes waiting in the channel to `remote` (0 without one). */
  bufferedAmount(remote: string): number {
    return this.#links.get(remote)?.link.bufferedAmount ?? 0;
  }

  /** Resolves when the channel to `remote` drained (or after a short while). */
  drained(remote: string): Promise<void> {
    const link = this.#links.get(remote)?.link;
    return link?.drained?.() ?? new Promise((resolve) => setTimeout(resolve, 20));
  }

  /** Handles a signal from `from` relayed by the servers. */
  handleSignal(from: string, data: SignalData): void {
    if (from === this.#deps.me) return;
    const amInitiator = isInitiator(this.#deps.me, from);
    if (isConnectRequest(data)) {
      // The remote side has no link to us (it asked), so whatever we hold is stale.
      if (amInitiator) this.#create(from, true, newLinkId());
      return;
    }
    const lid = typeof data.lid === "string" ? data.lid : "";
    const { lid: _drop, ...inner } = data;
    if (isOffer(data)) {
      if (amInitiator || !lid) return; // the glare rule forbids offers from the larger name
      const current = this.#links.get(from);
      // An offer of the current negotiation renegotiates it (an ICE restart); a new id, a new link.
      if (current?.lid === lid) current.link.signal(inner);
      else this.#create(from, false, lid).link.signal(inner);
      return;
    }
    const entry = this.#links.get(from);
    if (entry && entry.lid === lid) entry.link.signal(inner);
  }

  /** Drops the link to `remote` (contact went offline, or the link failed). */
  drop(remote: string): void {
    if (!this.#remove(remote)) return;
    this.#wake(remote);
    this.events.onClose?.(remote);
  }

  /** Restarts ICE on every open link (the device's network changed). */
  restartIce(): void {
    for (const entry of this.#links.values()) {
      if (entry.link.isOpen) entry.link.restartIce?.();
    }
  }

  /** The candidate types of the connection to `remote`, when a channel is open. */
  async selectedCandidates(remote: string): Promise<SelectedCandidates | null> {
    const entry = this.#links.get(remote);
    if (!entry?.link.isOpen || !entry.link.selectedCandidates) return null;
    return await entry.link.selectedCandidates();
  }

  /** Closes every link (logout). */
  destroyAll(): void {
    for (const remote of [...this.#links.keys()]) this.drop(remote);
  }

  #remove(remote: string): boolean {
    const entry = this.#links.get(remote);
    if (!entry) return false;
    this.#links.delete(remote);
    clearTimeout(entry.timer);
    clearInterval(entry.beat);
    entry.link.destroy();
    return true;
  }

  #create(remote: string, initiator: boolean, lid: string): Entry {
    // A replaced link is removed silently: callers waiting for a channel keep waiting for the new.
    const hadOpen = this.isOpen(remote);
    this.#remove(remote);
    if (hadOpen) this.events.onClose?.(remote);
    const entry: Entry = {
      lid,
      timer: undefined,
      beat: undefined,
      lastSent: 0,
      lastHeard: 0,
      link: undefined as unknown as PeerLink,
    };
    const isCurrent = () => this.#links.get(remote) === entry;
    const iceServers = this.#deps.iceServers?.() ?? [];
    entry.link = this.#deps.createLink({ remote, initiator, iceServers }, {
      onSignal: (data) => {
        if (isCurrent()) this.#deps.sendSignal(remote, { ...data, lid });
      },
      onOpen: () => {
        if (!isCurrent()) return;
        clearTimeout(entry.timer);
        this.dcOpenedAt[remote] = entry.lastHeard = entry.lastSent = this.#now();
        entry.beat = setInterval(() => this.#beat(remote, entry), this.#opts.keepaliveMs / 2);
        this.#wake(remote);
        this.events.onOpen?.(remote);
      },
      onMessage: (text) => {
        if (!isCurrent()) return;
        entry.lastHeard = this.#now();
        if (text !== KEEPALIVE_TEXT) this.events.onMessage?.(remote, text);
      },
      onClose: () => {
        if (isCurrent()) this.drop(remote);
      },
    });
    entry.timer = setTimeout(() => {
      if (isCurrent() && !entry.link.isOpen) this.drop(remote);
    }, this.#opts.connectTimeoutMs);
    this.#links.set(remote, entry);
    return entry;
  }

  /** Sends a keep-alive when due; drops the link when the other side fell silent. */
  #beat(remote: string, entry: Entry): void {
    if (this.#links.get(remote) !== entry) return;
    const now = this.#now();
    if (now - entry.lastHeard >= this.#opts.deadAfterMs || !entry.link.isOpen) {
      this.drop(remote);
      return;
    }
    if (now - entry.lastSent < this.#opts.keepaliveMs) return;
    try {
      entry.link.send(KEEPALIVE_TEXT);
      entry.lastSent = now;
    } catch {
      this.drop(remote);
    }
  }

  #wake(remote: string): void {
    const set = this.#waiters.get(remote);
    if (!set) return;
    for (const w of [...set]) w();
  }
}

function newLinkId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
