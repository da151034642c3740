/**
 * The client's own small interface to a direct browser-to-browser channel (DESIGN house style:
 * "wrap what you do not control"). simple-peer is one implementation ({@link createSimplePeerLink}
 * in `simple_peer_link.ts`); unit tests use in-memory fakes.
 */
import type { IceServer, SignalData } from "../shared/mod.ts";

/** Most bytes a sender lets queue inside the data channel before holding messages back. */
export const MAX_BUFFERED_AMOUNT = 64 * 1024;

/** Callbacks a {@link PeerLink} reports to. */
export interface PeerLinkHandlers {
  /** A signaling object to deliver to the remote side (through the servers). */
  onSignal(data: SignalData): void;
  /** The data channel is open and {@link PeerLink.send} may be used. */
  onOpen(): void;
  /** A text message arrived on the data channel. */
  onMessage(text: string): void;
  /** The channel closed or failed; the link is dead and should be dropped. */
  onClose(reason?: string): void;
}

/** One direct channel to one remote user. */
export interface PeerLink {
  /** The remote user's name. */
  readonly remote: string;
  /** Whether this side creates the offer (see {@link isInitiator}). */
  readonly isInitiator: boolean;
  /** Whether the data channel is open. */
  readonly isOpen: boolean;
  /** Sends a text message; throws if the channel is not open. */
  send(text: string): void;
  /** Feeds a signaling object received from the remote side. */
  signal(data: SignalData): void;
  /** Closes the channel and releases its resources. */
  destroy(): void;
  /**
   * Restarts ICE on a live connection (the network changed or the path went quiet): new
   * candidates are gathered and checked while the data channel stays open.
   */
  restartIce?(): void;
  /** Bytes waiting to go out: the channel's `bufferedAmount` plus any local queue (files). */
  readonly bufferedAmount?: number;
  /** Resolves when the channel's buffer went low, or after a short while (files). */
  drained?(): Promise<void>;
  /** The candidate types (`host`, `srflx`, `prflx`, `relay`) of the selected pair, if any. */
  selectedCandidates?(): Promise<SelectedCandidates | null>;
}

/** Which kinds of candidates carry a connection (from `RTCPeerConnection.getStats`). */
export interface SelectedCandidates {
  local: string;
  remote: string;
}

/** Creates a link; `initiator` decides who makes the WebRTC offer. */
export type PeerLinkFactory = (
  options: { remote: string; initiator: boolean; iceServers?: IceServer[] },
  handlers: PeerLinkHandlers,
) => PeerLink;

/**
 * The glare rule: of two users, the lexicographically smaller username always initiates, so two
 * browsers never both send an offer. The larger one asks with a `{type: "connect"}` signal.
 */
export function isInitiator(me: string, remote: string): boolean {
  return me < remote;
}

/**
 * What each side sends over an open data channel when it has sent nothing else for a while; the
 * link layer consumes it (it never reaches the peer protocol). A side that hears nothing at all
 * for a few keep-alive periods takes the channel for dead.
 */
export const KEEPALIVE_TEXT = '{"v":1,"type":"keepalive"}';

/** The signal the non-initiating side sends to ask the initiator to start a connection. */
export const CONNECT_REQUEST: SignalData = { type: "connect" };

/** Whether a received signal is the glare rule's connect request. */
export function isConnectRequest(data: SignalData): boolean {
  return data.type === "connect";
}

/** Whether a received signal starts a fresh negotiation (an SDP offer). */
export function isOffer(data: SignalData): boolean {
  return data.type === "offer";
}
