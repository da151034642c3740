/**
 * What discovery needs from the server around it, as small interfaces the server's own classes
 * satisfy: a signer (the cluster's `Hmac`), a metrics sink (the API's `Metrics`) and a log.
 * Discovery imports none of them, so its arrows keep pointing downwards.
 */

/** Signs and verifies text with the cluster secret (the cluster's `Hmac` satisfies it). */
export interface Signer {
  /** The signature of `text`. */
  sign(text: string): Promise<string>;
  /** Whether `signature` is the signature of `text`. */
  verify(text: string, signature: string): Promise<boolean>;
}

/** The counters discovery reports (the API's `Metrics` satisfies it). */
export interface DiscoveryMetrics {
  /** Declares a metric so it is rendered before its first use. */
  describe(name: string, kind: "counter" | "gauge", help: string): void;
  /** Adds `by` (default 1) to a counter. */
  inc(name: string, labels?: Record<string, string>, by?: number): void;
}

export type { Log } from "../telemetry/mod.ts";

/** Told the base URL of every server a discovery mode finds (the server wires `Cluster.addPeer`). */
export type PeerFound = (address: string) => void;

/** A running discovery mode: multicast announcements or DNS lookups. */
export interface Discovery {
  /** Begins finding peers (the first round runs at once). */
  start(): Promise<void>;
  /** Stops every timer and socket and waits for work in flight. */
  stop(): Promise<void>;
}

/** Announcements dropped, by reason. */
export const DROPPED_METRIC = "p2pchat_discovery_dropped_total";
/** Announcements accepted from other servers. */
export const ACCEPTED_METRIC = "p2pchat_discovery_accepted_total";
/** Announcements sent by this server. */
export const SENT_METRIC = "p2pchat_discovery_announcements_sent_total";
/** Failures of a background discovery round (send or DNS lookup), by mode. */
export const ERRORS_METRIC = "p2pchat_discovery_errors_total";

/** Declares every discovery metric on `metrics` so `/metrics` shows them from the start. */
export function describeDiscoveryMetrics(metrics: DiscoveryMetrics): void {
  metrics.describe(
    DROPPED_METRIC,
    "counter",
    "Discovery announcements dropped (malformed, unsigned, forged, stale, replayed, overload)",
  );
  metrics.describe(
    ACCEPTED_METRIC,
    "counter",
    "Discovery announcements accepted from other servers",
  );
  metrics.describe(SENT_METRIC, "counter", "Discovery announcements sent");
  metrics.describe(ERRORS_METRIC, "counter", "Failed discovery rounds (send or DNS lookup)");
}
