/**
 * Server-to-server plumbing: cluster membership (seeds, discovery, gossip in signed hellos,
 * liveness), the signed HTTP transports (`signedPost`, `callPeer`, and `serveSigned` for every
 * signed endpoint: cluster, ring, replication and limits RPC, the last carrying the ring-shared
 * rate limit counters), the ring lifecycle of this server's CHORD node ({@link RingService}), and
 * replication's view of that ring. It promises that only holders
 * of the cluster secret are heard. It knows nothing of users, sessions or frames for browsers:
 * that is `server/users`.
 */
export {
  Membership,
  type MembershipDeps,
  type MembershipOptions,
  type PeerCaller,
  type PeerChangeListener,
} from "./membership.ts";
export { Hmac } from "./hmac.ts";
export { ClusterKey, type ClusterKeyOptions, MAX_CLOCK_SKEW_MS } from "./cluster_key.ts";
export {
  callPeer,
  CLUSTER_RPC_PATH,
  PeerUnreachableError,
  serveSigned,
  type ServeSignedDeps,
  type SignedEndpoint,
  type SignedErrorBody,
  signedPost,
} from "./rpc.ts";
export { HttpChordTransport, RING_RPC_PATH } from "./chord_transport.ts";
export {
  LINK_MAX_ANSWER_BYTES,
  LINK_MAX_BODY_CHARS,
  LINK_MAX_FRAME_BYTES,
  LINK_PATH,
  LinkPool,
  serveLink,
} from "./link.ts";
export { LINKED_PATHS } from "./linked_paths.ts";
export {
  RingService,
  type RingServiceDeps,
  type RingServiceOptions,
  type RingView,
} from "./ring_service.ts";
export { ringAccessOf } from "./replica_ring.ts";
export {
  answerLimitRequest,
  handleLimitsHttp,
  LIMIT_KINDS,
  type LimitCall,
  type LimitHolder,
  limitHolderOf,
  type LimitKind,
  type LimitRequest,
  type LimitResponse,
  LIMITS_RPC_PATH,
  limitsCall,
  parseLimitRequest,
  parseLimitResponse,
} from "./limits_transport.ts";
export {
  handleReplicationHttp,
  REPLICATION_RPC_PATH,
  replicationCall,
} from "./replication_transport.ts";
