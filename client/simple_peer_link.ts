/**
 * {@link PeerLink} over simple-peer. The simple-peer constructor is passed in (the browser bundle
 * uses its prebuilt `simplepeer.min.js`, which needs no Node polyfills), so this file imports no
 * package and can be exercised with any compatible constructor.
 *
 * Back-pressure: a message is handed to the data channel only while the channel's
 * `bufferedAmount` stays at or below {@link MAX_BUFFERED_AMOUNT}; the rest waits in a local queue
 * that drains on `bufferedamountlow`.
 *
 * Order: a message is reported only after the link reported open (the other end can open first
 * and send at once; what arrives before waits), so whatever answers it can be sent back.
 *
 * ICE: the link uses the ICE servers its factory is given (STUN, TURN with the session's
 * credentials). When the connection's ICE state turns `disconnected`, or {@link PeerLink.restartIce}
 * is called (the network changed), it restarts ICE: the initiator makes a new offer with fresh
 * ICE credentials (`RTCPeerConnection.restartIce`); the other side asks it to with simple-peer's
 * `renegotiate` signal. The data channel stays open meanwhile.
 */
import type { SignalData } from "../shared/mod.ts";
import {
  MAX_BUFFERED_AMOUNT,
  type PeerLink,
  type PeerLinkFactory,
  type PeerLinkHandlers,
  type SelectedCandidates,
} from "./peer_link.ts";

/** The part of a simple-peer instance this link uses. */
export interface SimplePeerInstance {
  readonly bufferedAmount: number;
  readonly connected: boolean;
  readonly destroyed: boolean;
  /** simple-peer's underlying RTCDataChannel (private API, used only for `bufferedamountlow`). */
  readonly _channel?: {
    addEventListener(type: string, fn: () => void): void;
    bufferedAmountLowThreshold: number;
  } | null;
  /** simple-peer's RTCPeerConnection (private API: ICE restarts and candidate statistics). */
  readonly _pc?: {
    restartIce?(): void;
    getStats(): Promise<Map<string, Record<string, unknown>>>;
  } | null;
  signal(data: unknown): void;
  send(data: string): void;
  negotiate?(): void;
  destroy(): void;
  on(event: string, fn: (arg: unknown) => void): void;
}

/** simple-peer's constructor. */
export type SimplePeerConstructor = new (opts: Record<string, unknown>) => SimplePeerInstance;

/** Options for {@link createSimplePeerLinkFactory}. */
export interface SimplePeerLinkOptions {
  /**
   * ICE servers handed to RTCPeerConnection when the link is not given its own (the session's,
   * from the servers). @default [] (host candidates only: one LAN)
   */
  iceServers?: RTCIceServer[];
  /** Least time between two ICE restarts of one link, ms. @default 3000 */
  iceRestartIntervalMs?: number;
  /** Messages allowed to wait for buffer space before send() throws. @default 10000 */
  maxQueuedMessages?: number;
}

/** Builds a {@link PeerLinkFactory} creating simple-peer links. */
export function createSimplePeerLinkFactory(
  SimplePeer: SimplePeerConstructor,
  options: SimplePeerLinkOptions = {},
): PeerLinkFactory {
  return ({ remote, initiator, iceServers }, handlers) =>
    new SimplePeerLink(SimplePeer, remote, initiator, handlers, {
      ...options,
      iceServers: iceServers ?? options.iceServers,
    });
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

class SimplePeerLink implements PeerLink {
  #peer: SimplePeerInstance;
  #queue: string[] = [];
  #maxQueued: number;
  #open = false;
  #closed = false;
  #drainTimer: ReturnType<typeof setTimeout> | null = null;
  #lastRestart = -Infinity;
  #queuedBytes = 0;
  #drainWaiters: Array<() => void> = [];
  /** Messages that arrived before this end reported open (delivered right after it does). */
  #early: string[] = [];
  #restartIntervalMs: number;

  constructor(
    SimplePeer: SimplePeerConstructor,
    readonly remote: string,
    readonly isInitiator: boolean,
    handlers: PeerLinkHandlers,
    options: SimplePeerLinkOptions,
  ) {
    this.#maxQueued = options.maxQueuedMessages ?? 10_000;
    this.#restartIntervalMs = options.iceRestartIntervalMs ?? 3_000;
    this.#peer = new SimplePeer({
      initiator: isInitiator,
      trickle: true,
      objectMode: true,
      config: { iceServers: (options.iceServers ?? []) as RTCIceServer[] },
    });
    const peer = this.#peer;
    peer.on("signal", (data) => {
      if (!this.#closed) handlers.onSignal(data as SignalData);
    });
    peer.on("connect", () => {
      if (this.#closed) return;
      this.#open = true;
      const channel = peer._channel;
      if (channel) {
        channel.bufferedAmountLowThreshold = MAX_BUFFERED_AMOUNT / 2;
        channel.addEventListener("bufferedamountlow", () => {
          this.#drain();
          for (const wake of this.#drainWaiters.splice(0)) wake();
        });
      }
      handlers.onOpen();
      for (const text of this.#early.splice(0)) {
        if (!this.#closed) handlers.onMessage(text);
      }
    });
    peer.on("data", (data) => {
      if (this.#closed) return;
      const text = typeof data === "string" ? data : decoder.decode(data as Uint8Array);
      // The other end can open first and send at once (simple-peer reports `connect` only after
      // reading the connection's statistics): its messages wait until this end is open, so an
      // answer to them can go back.
      if (!this.#open) this.#early.push(text);
      else handlers.onMessage(text);
    });
    const close = (reason: string) => {
      if (this.#closed) return;
      this.#closed = true;
      this.#open = false;
      if (this.#drainTimer !== null) clearTimeout(this.#drainTimer);
      handlers.onClose(reason);
    };
    peer.on("iceStateChange", (state) => {
      // A quiet path (the network changed, a NAT binding expired): look for a new one at once.
      if (state === "disconnected" && this.#open) this.restartIce();
    });
    peer.on("close", () => close("closed"));
    peer.on("error", (err) => close(err instanceof Error ? err.message : String(err)));
  }

  get isOpen(): boolean {
    return this.#open && !this.#closed && this.#peer.connected;
  }

  send(text: string): void {
    if (!this.isOpen) throw new Error(`Cannot send to "${this.remote}": data channel not open`);
    if (this.#queue.length >= this.#maxQueued) {
      throw new Error(`Cannot send to "${this.remote}": send queue full`);
    }
    this.#queue.push(text);
    this.#queuedBytes += text.length;
    this.#drain();
  }

  get bufferedAmount(): number {
    return this.#peer.bufferedAmount + this.#queuedBytes;
  }

  drained(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, 50);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#drainWaiters.push(done);
    });
  }

  signal(data: SignalData): void {
    if (this.#closed || this.#peer.destroyed) return;
    // The other side asks for an ICE restart: the new offer must carry fresh ICE credentials.
    if (data.renegotiate === true && this.isInitiator) this.#peer._pc?.restartIce?.();
    this.#peer.signal(data);
  }

  restartIce(): void {
    if (this.#closed || this.#peer.destroyed || !this.#peer.negotiate) return;
    const now = performance.now();
    if (now - this.#lastRestart < this.#restartIntervalMs) return;
    this.#lastRestart = now;
    if (this.isInitiator) this.#peer._pc?.restartIce?.();
    // The initiator makes the new offer; the other side sends simple-peer's `renegotiate`.
    this.#peer.negotiate();
  }

  async selectedCandidates(): Promise<SelectedCandidates | null> {
    const pc = this.#peer._pc;
    if (!pc || this.#closed) return null;
    const stats = await pc.getStats();
    const byId = new Map<string, Record<string, unknown>>();
    stats.forEach((report, id) => byId.set(String(report.id ?? id), report));
    let pair: Record<string, unknown> | undefined;
    for (const r of byId.values()) {
      // Chromium names the pair on the transport; Firefox marks the pair itself `selected`.
      if (r.type === "transport" && typeof r.selectedCandidatePairId === "string") {
        pair = byId.get(r.selectedCandidatePairId);
      }
    }
    pair ??= [...byId.values()].find((r) => r.type === "candidate-pair" && r.selected === true) ??
      [...byId.values()].find((r) =>
        r.type === "candidate-pair" && r.nominated === true && r.state === "succeeded"
      );
    if (!pair) return null;
    const local = byId.get(String(pair.localCandidateId))?.candidateType;
    const remote = byId.get(String(pair.remoteCandidateId))?.candidateType;
    return typeof local === "string" && typeof remote === "string" ? { local, remote } : null;
  }

  destroy(): void {
    this.#closed = true;
    this.#open = false;
    if (this.#drainTimer !== null) clearTimeout(this.#drainTimer);
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#early = [];
    for (const wake of this.#drainWaiters.splice(0)) wake();
    this.#peer.destroy();
  }

  #drain(): void {
    while (this.#queue.length > 0 && this.isOpen) {
      const next = this.#queue[0]!;
      const buffered = this.#peer.bufferedAmount;
      if (buffered > 0 && buffered + encoder.encode(next).length > MAX_BUFFERED_AMOUNT) {
        // Fallback in case `bufferedamountlow` is not delivered (no channel handle).
        if (this.#drainTimer === null) {
          this.#drainTimer = setTimeout(() => {
            this.#drainTimer = null;
            this.#drain();
          }, 20);
        }
        return;
      }
      this.#queue.shift();
      this.#queuedBytes -= next.length;
      this.#peer.send(next);
    }
  }
}
