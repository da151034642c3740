/**
 * How a server finds the other servers of its cluster without being told: signed UDP multicast
 * announcements on one explicitly configured interface (LANs, one Docker bridge), or a DNS name
 * whose A/AAAA records are the servers (Kubernetes headless services, clouds); the static seed
 * list (`--peers`) needs no code here. It promises that only announcements signed with the
 * cluster secret, fresh and never seen before reach the peer callback, and that every dropped
 * one is counted by reason. It does not decide membership: it only hands candidate addresses to
 * the cluster, which admits them through its own signed hellos.
 */
export {
  type Announcement,
  AnnouncementError,
  createAnnouncement,
  encodeAnnouncement,
  MAX_ANNOUNCEMENT_BYTES,
  parseAnnouncement,
  type SignedAnnouncement,
  signingText,
} from "./announcement.ts";
export {
  ACCEPTED_METRIC,
  describeDiscoveryMetrics,
  type Discovery,
  type DiscoveryMetrics,
  DROPPED_METRIC,
  ERRORS_METRIC,
  type Log,
  type PeerFound,
  SENT_METRIC,
  type Signer,
} from "./deps.ts";
export {
  DnsDiscovery,
  type DnsDiscoveryDeps,
  type DnsDiscoveryOptions,
  peerUrl,
  type Resolve,
} from "./dns.ts";
export {
  DEFAULT_MULTICAST_GROUP,
  DEFAULT_MULTICAST_PORT,
  MulticastDiscovery,
  type MulticastDiscoveryDeps,
  type MulticastDiscoveryOptions,
} from "./multicast.ts";
export {
  type MulticastSocket,
  type MulticastSocketOptions,
  openMulticastSocket,
} from "./multicast_socket.ts";
export { ReplayWindow, type ReplayWindowOptions } from "./replay_window.ts";
export {
  AnnouncementVerifier,
  type AnnouncementVerifierDeps,
  type AnnouncementVerifierOptions,
  type DropReason,
  type Verdict,
} from "./verifier.ts";
