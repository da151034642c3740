/**
 * The CHORD ring core. It owns the identifier space (SHA-1 ids, interval arithmetic), one ring
 * node's state (predecessor, successor list of length `r`, finger table), the ring's wire
 * messages and their parsers, and the protocol that maintains the ring: create, join, stabilize,
 * rectify (notify), check-predecessor, fix-fingers and graceful leave, following Pamela Zave's
 * corrected CHORD (IEEE TSE 2017), plus iterative lookup returning a key's owner and the hop
 * count. It promises that, after any sequence of joins, leaves and crashes in which no node loses
 * all `r` successors at once, repeated maintenance rounds converge to one correctly ordered ring,
 * and {@link checkRing} judges any set of node states against that promise.
 *
 * It does not run those rounds, keep timers or do I/O: the caller passes a {@link Transport}, a
 * {@link Clock} and a {@link Random} in and calls the maintenance operations (the server's
 * `RingService` in `server/cluster` does, on a timer, over HTTP). It does not decide when to
 * create a ring or whom to join, and does not merge the separate rings a partition that outlasts
 * failure detection leaves behind (neither does CHORD nor Zave's model): `RingService` does both
 * from the cluster membership. It does not store or move data (`server/replication` does). The
 * simulated network, virtual clock, simulated ring and transport conformance suite that tests
 * and benchmarks use live in `testing.ts`, not here.
 *
 * @example
 * ```ts
 * const node = new ChordNode({ transport, clock: systemClock, random: systemRandom }, {});
 * await node.join("https://10.0.0.2:8443"); // or node.create() for the first node
 * await node.stabilize(); // every round, with checkPredecessor() and fixFingers()
 * const { owner, hops } = await node.lookup(node.space.idFromKey("user:alice"));
 * ```
 */

export { type Clock, systemClock, type TimerId, type Timers } from "./clock.ts";
export {
  ChordJoinError,
  ChordLookupError,
  ChordProtocolError,
  ChordTransportError,
  type ChordTransportFailure,
  NoLiveSuccessorError,
  NotAMemberError,
} from "./errors.ts";
export { FingerTable } from "./fingers.ts";
export { between, type ChordId, IdSpace, type IntervalBounds, MAX_ID_BITS } from "./id.ts";
export { checkRing, type RingCheckOptions, type RingViolation } from "./invariants.ts";
export { type LookupResult } from "./lookup.ts";
export {
  CHORD_PROTOCOL_VERSION,
  type ChordRequest,
  type ChordResponse,
  parseChordRequest,
  parseChordResponse,
} from "./messages.ts";
export {
  ChordNode,
  type ChordNodeDeps,
  type ChordNodeOptions,
  type ChordNodeState,
  type ChordNodeStats,
} from "./node.ts";
export {
  decodeNodeRef,
  encodeNodeRef,
  formatNodeRef,
  type NodeAddress,
  type NodeRef,
  type NodeRefWire,
  sameNode,
} from "./node_ref.ts";
export {
  pick,
  type Random,
  randomBigInt,
  randomInt,
  seededRandom,
  shuffle,
  systemRandom,
} from "./random.ts";
export { buildSuccessorList } from "./successors.ts";
export { type ChordRequestHandler, type Transport } from "./transport.ts";
