/**
 * The transport the CHORD core owns: asynchronous request/response between ring nodes. The core
 * only ever sees this interface; the in-memory {@link SimNetwork} and the real HTTP transport
 * (HMAC over a cluster secret, in `server/cluster`) implement it. Requests and responses are plain
 * JSON objects (see `messages.ts`), so any byte-carrying transport can serve them.
 */

import type { ChordRequest, ChordResponse } from "./messages.ts";
import type { NodeAddress } from "./node_ref.ts";

/** Serves a request from another node; `from` is the caller's transport address. */
export type ChordRequestHandler = (
  request: ChordRequest,
  from: NodeAddress,
) => Promise<ChordResponse>;

/**
 * Carries ring RPCs for one local node.
 *
 * Contract for implementations (checked by the transport conformance suite):
 * - `call` resolves with a response already validated by `parseChordResponse`, or rejects with
 *   a `ChordTransportError` (unreachable, timeout, remote failure) or, for a request that is
 *   itself malformed, a `ChordProtocolError`. It never resolves with garbage and never hangs past
 *   its timeout. A response that fails validation arrives as an `error` response.
 * - Requests handed to the handler have been validated by `parseChordRequest`.
 * - Calling one's own address goes through the same path (the core avoids doing so).
 */
export interface Transport {
  /** The address other nodes reach this node at. */
  readonly localAddress: NodeAddress;
  /** Sends `request` to the node at `to` and resolves with its response. */
  call(to: NodeAddress, request: ChordRequest): Promise<ChordResponse>;
  /** Installs the handler for requests addressed to this node (replacing any previous one). */
  listen(handler: ChordRequestHandler): void;
  /** Stops serving requests; later calls to this address fail as unreachable. */
  close(): void;
}
