/**
 * Zero-configuration discovery on a LAN: every server periodically announces its base URL to a
 * multicast group, signed with the cluster secret, and feeds the addresses in verified
 * announcements from other servers to its peer callback. Forged, unsigned, replayed, stale and
 * malformed announcements are dropped and counted.
 */
import { createAnnouncement, encodeAnnouncement } from "./announcement.ts";
import {
  ACCEPTED_METRIC,
  type Discovery,
  type DiscoveryMetrics,
  DROPPED_METRIC,
  ERRORS_METRIC,
  type Log,
  type PeerFound,
  SENT_METRIC,
  type Signer,
} from "./deps.ts";
import {
  type MulticastSocket,
  type MulticastSocketOptions,
  openMulticastSocket,
} from "./multicast_socket.ts";
import { AnnouncementVerifier } from "./verifier.ts";

/** Default multicast group (organisation-local scope, RFC 2365). */
export const DEFAULT_MULTICAST_GROUP = "239.77.77.77";
/** Default UDP port of the group. */
export const DEFAULT_MULTICAST_PORT = 47777;

/** Collaborators of a {@link MulticastDiscovery}. */
export interface MulticastDiscoveryDeps {
  signer: Signer;
  metrics: DiscoveryMetrics;
  log: Log;
  /** Told the address of every server heard from (repeatedly; it must be idempotent). */
  onPeer: PeerFound;
  /** Opens the socket. @default openMulticastSocket (node:dgram) */
  openSocket?: (options: MulticastSocketOptions) => Promise<MulticastSocket>;
  /** Current time in ms since the epoch. @default Date.now */
  now?: () => number;
}

/** Configuration of a {@link MulticastDiscovery}. */
export interface MulticastDiscoveryOptions {
  /** This server's base URL: what it announces, and whose echoes it ignores. */
  self: string;
  /** This server's ring id, once it has one. @default undefined */
  nodeId?: string;
  /** IPv4 multicast group. @default "239.77.77.77" */
  group?: string;
  /** UDP port of the group. @default 47777 */
  port?: number;
  /** IPv4 address of the interface to announce and listen on (required: never guessed). */
  interfaceAddress: string;
  /** Period of announcements, in ms. @default 2000 */
  intervalMs?: number;
  /** Largest accepted clock difference to a sender, in ms. @default 30000 */
  maxSkewMs?: number;
  /** Most announcements being verified at once; more are dropped as "overload". @default 64 */
  maxPending?: number;
}

/** Announces this server on a multicast group and listens for the others. */
export class MulticastDiscovery implements Discovery {
  #deps: MulticastDiscoveryDeps;
  #options: Required<Omit<MulticastDiscoveryOptions, "nodeId">> & { nodeId?: string };
  #verifier: AnnouncementVerifier;
  #socket: MulticastSocket | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #pending = new Set<Promise<void>>();

  /** Creates the discovery; {@link start} opens the socket. */
  constructor(deps: MulticastDiscoveryDeps, options: MulticastDiscoveryOptions) {
    this.#deps = deps;
    this.#options = {
      group: DEFAULT_MULTICAST_GROUP,
      port: DEFAULT_MULTICAST_PORT,
      intervalMs: 2000,
      maxSkewMs: 30_000,
      maxPending: 64,
      ...options,
    };
    this.#verifier = new AnnouncementVerifier(
      { signer: deps.signer, now: deps.now },
      { maxSkewMs: this.#options.maxSkewMs },
    );
  }

  /** Opens the socket, announces at once, then every `intervalMs`. */
  async start(): Promise<void> {
    const { group, port, interfaceAddress, intervalMs } = this.#options;
    const open = this.#deps.openSocket ?? openMulticastSocket;
    this.#socket = await open({
      group,
      port,
      interfaceAddress,
      onError: (err) => {
        this.#deps.metrics.inc(ERRORS_METRIC, { mode: "multicast" });
        this.#deps.log("discovery_socket_error", { error: String(err) });
      },
    });
    this.#socket.onMessage((data, from) => this.#receive(data, from));
    this.#deps.log("discovery_started", { mode: "multicast", group, port, interfaceAddress });
    this.#track(this.announceNow());
    this.#timer = setInterval(() => this.#track(this.announceNow()), intervalMs);
  }

  /** Stops announcing, waits for datagrams being verified, closes the socket. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    this.#socket = undefined;
    await Promise.allSettled([...this.#pending]);
    await socket?.close();
  }

  /** Sends one announcement now; a failure is logged and counted, never thrown. */
  async announceNow(): Promise<void> {
    const socket = this.#socket;
    if (!socket) return;
    const { self, nodeId } = this.#options;
    const { metrics, log, signer } = this.#deps;
    try {
      const now = (this.#deps.now ?? Date.now)();
      await socket.send(await encodeAnnouncement(signer, createAnnouncement(self, now, nodeId)));
      metrics.inc(SENT_METRIC);
    } catch (err) {
      metrics.inc(ERRORS_METRIC, { mode: "multicast" });
      log("discovery_announce_failed", { error: String(err) });
    }
  }

  #track(work: Promise<void>): void {
    this.#pending.add(work);
    work.finally(() => this.#pending.delete(work));
  }

  #receive(data: Uint8Array, from: string): void {
    if (!this.#socket) return;
    if (this.#pending.size >= this.#options.maxPending) {
      this.#deps.metrics.inc(DROPPED_METRIC, { reason: "overload" });
      return;
    }
    // The datagram's buffer may be reused by the socket: verify a copy.
    this.#track(this.#handle(data.slice(), from));
  }

  async #handle(data: Uint8Array, from: string): Promise<void> {
    const { metrics, log, onPeer } = this.#deps;
    try {
      const verdict = await this.#verifier.verify(data);
      if (!verdict.ok) {
        metrics.inc(DROPPED_METRIC, { reason: verdict.reason });
        log("discovery_dropped", { reason: verdict.reason, from, detail: verdict.detail });
        return;
      }
      const { address } = verdict.announcement;
      if (address === this.#options.self) return; // our own announcement, looped back
      metrics.inc(ACCEPTED_METRIC);
      onPeer(address);
    } catch (err) {
      metrics.inc(ERRORS_METRIC, { mode: "multicast" });
      log("discovery_receive_failed", { from, error: String(err) });
    }
  }
}
