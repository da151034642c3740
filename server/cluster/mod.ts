/**
 * Server-to-server coordination of the walking skeleton: signed HTTP RPC, membership (static
 * seeds + gossip), presence, the account directory and delivery to a user's home server. It
 * promises that any live server can route a frame to any online user and that accounts reach
 * every live server. It does not place data on a ring; server/chord and server/replication will.
 */
export {
  Cluster,
  type ClusterDeps,
  type ClusterOptions,
  type LocalSessions,
  type Log,
  UnavailableError,
} from "./cluster.ts";
export { fromBase64Url, Hmac, toBase64Url } from "./hmac.ts";
export { callPeer, CLUSTER_RPC_PATH, PeerUnreachableError } from "./rpc.ts";
export { HttpChordTransport, RING_RPC_PATH } from "./chord_transport.ts";
export {
  RingService,
  type RingServiceDeps,
  type RingServiceOptions,
  type RingView,
} from "./ring_service.ts";
export { ringAccessOf } from "./ring_access.ts";
export {
  handleReplicationHttp,
  REPLICATION_RPC_PATH,
  replicationCall,
} from "./replication_transport.ts";
