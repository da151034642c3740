/**
 * The error classes of the CHORD core: one per situation a caller handles differently.
 */

import type { ChordId } from "./id.ts";

/** A message from another node (or for it) does not follow the ring protocol. */
export class ChordProtocolError extends Error {
  override name = "ChordProtocolError";
  /** Stable machine-readable code. */
  readonly code = "bad_chord_message";
  /** Creates the error; `path` is the dotted path of the bad field ("" for the whole message). */
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

/** Why an RPC to another node failed, as a transport reports it. */
export type ChordTransportFailure = "unreachable" | "timeout" | "remote_error";

/** An RPC did not produce a response: the peer is dead, unreachable, too slow, or failed. */
export class ChordTransportError extends Error {
  override name = "ChordTransportError";
  /** Creates the error for a call to `address`. */
  constructor(readonly code: ChordTransportFailure, readonly address: string, message: string) {
    super(message);
  }
}

/**
 * A node has no live successor left (every entry of its successor list and every fallback is
 * dead): it is cut off from the ring and must join again through a known node.
 */
export class NoLiveSuccessorError extends Error {
  override name = "NoLiveSuccessorError";
  /** Stable machine-readable code. */
  readonly code = "no_live_successor";
  /** Creates the error for the node at `address`. */
  constructor(readonly address: string) {
    super(`Cannot reach the ring from ${address}: no live successor is known`);
  }
}

/** A lookup could not find the owner of a key (every route failed or it exceeded its hop limit). */
export class ChordLookupError extends Error {
  override name = "ChordLookupError";
  /** Stable machine-readable code. */
  readonly code = "lookup_failed";
  /** Creates the error for `key`, with the reason after a colon. */
  constructor(readonly key: ChordId, readonly hops: number, reason: string) {
    super(`Cannot find the owner of key ${key.toString(16)}: ${reason}`);
  }
}

/** A node could not join the ring through the node it was given. */
export class ChordJoinError extends Error {
  override name = "ChordJoinError";
  /** Stable machine-readable code. */
  readonly code = "join_failed";
  /** Creates the error with the reason a person can act on. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** An operation needs a ring member, but this node has not joined (or has left). */
export class NotAMemberError extends Error {
  override name = "NotAMemberError";
  /** Stable machine-readable code. */
  readonly code = "not_a_member";
  /** Creates the error for the node at `address` attempting `operation`. */
  constructor(readonly address: string, operation: string) {
    super(`Cannot ${operation} on ${address}: the node is not a ring member`);
  }
}
