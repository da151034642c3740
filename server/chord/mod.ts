/**
 * The CHORD ring core. It owns the identifier space, the state of one ring node (predecessor,
 * successor list, finger table) and the protocol that maintains it: join, stabilize, rectify,
 * fix-fingers, check-predecessor, graceful leave and recovery from crashes, following Pamela
 * Zave's corrected CHORD (IEEE TSE 2017), plus iterative lookup returning the owner of a key and
 * the hop count. It promises that, after any sequence of joins, leaves and crashes in which no
 * node loses all `r` successors at once, repeated maintenance rounds converge to one correctly
 * ordered ring, which {@link checkRing} verifies. A network partition that outlasts failure
 * detection can split the ring into rings that never merge again (as in CHORD and in Zave's
 * model); the core does not merge them itself: the server's `RingService` (server/cluster)
 * detects a foreign ring and rejoins through the smallest live server. It does no I/O and keeps no timers: a
 * {@link Transport}, a {@link Clock} and a {@link Random} are passed in, and the caller runs the
 * maintenance rounds. It does not store or move data (that is `server/replication`), nor carry
 * bytes between processes (the HTTP transport lives with the server); {@link SimNetwork} and
 * {@link SimRing} run 1,000+ nodes in one process on virtual time for tests and benchmarks.
 *
 * @example
 * ```ts
 * const ring = new SimRing({ bits: 32, seed: 7 });
 * ring.bootstrap();
 * for (let i = 1; i < 64; i++) await ring.join();
 * await ring.converge(100);
 * const node = ring.members()[0]!;
 * const { owner, hops } = await ring.network.run(node.lookup(ring.space.idFromKey("user:alice")));
 * ```
 */

export { type Clock, SimClock, systemClock } from "./clock.ts";
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
export {
  SimDeadlockError,
  SimNetwork,
  type SimNetworkOptions,
  type SimNetworkStats,
} from "./sim_network.ts";
export { OwnerIndex, type RoundReport, SimRing, type SimRingOptions } from "./sim_ring.ts";
export { type FingerJson, type NodeStateJson, nodeStateToJson } from "./ring_json.ts";
export { buildSuccessorList } from "./successors.ts";
export { type ChordRequestHandler, type Transport } from "./transport.ts";
export {
  registerTransportConformanceTests,
  type TransportFixture,
} from "./transport_conformance.ts";
