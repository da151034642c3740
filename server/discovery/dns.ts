/**
 * Discovery where multicast does not reach (Kubernetes, clouds): a DNS name whose A and AAAA
 * records are the servers, as a headless service gives. The name is resolved periodically and
 * every address becomes a peer URL with the configured scheme and port.
 */
import {
  type Discovery,
  type DiscoveryMetrics,
  ERRORS_METRIC,
  type Log,
  type PeerFound,
} from "./deps.ts";

/** Resolves one record type of a name to addresses (Deno.resolveDns by default). */
export type Resolve = (name: string, type: "A" | "AAAA") => Promise<string[]>;

/** Collaborators of a {@link DnsDiscovery}. */
export interface DnsDiscoveryDeps {
  metrics: DiscoveryMetrics;
  log: Log;
  /** Told the URL of every server the name resolves to (on every round; must be idempotent). */
  onPeer: PeerFound;
  /** @default Deno.resolveDns */
  resolve?: Resolve;
}

/** Configuration of a {@link DnsDiscovery}. */
export interface DnsDiscoveryOptions {
  /** The DNS name listing the servers. */
  name: string;
  /** The port servers listen on. */
  port: number;
  /** Scheme of the peer URLs. @default "http" */
  scheme?: "http" | "https";
  /** Period of lookups, in ms. @default 10000 */
  intervalMs?: number;
  /** This server's base URL, never reported as a peer. @default undefined */
  self?: string;
}

/** The base URL of a server at `ip` (IPv6 in brackets). */
export function peerUrl(scheme: "http" | "https", ip: string, port: number): string {
  return `${scheme}://${ip.includes(":") ? `[${ip}]` : ip}:${port}`;
}

/** Finds servers by resolving a DNS name periodically. */
export class DnsDiscovery implements Discovery {
  #deps: DnsDiscoveryDeps;
  #options: Required<Omit<DnsDiscoveryOptions, "self">> & { self?: string };
  #timer: ReturnType<typeof setInterval> | undefined;
  #round: Promise<unknown> | undefined;

  /** Creates the discovery; {@link start} begins the lookups. */
  constructor(deps: DnsDiscoveryDeps, options: DnsDiscoveryOptions) {
    this.#deps = deps;
    this.#options = { scheme: "http", intervalMs: 10_000, ...options };
  }

  /** Resolves at once, then every `intervalMs`. */
  start(): Promise<void> {
    const { name, port, scheme, intervalMs } = this.#options;
    this.#deps.log("discovery_started", { mode: "dns", name, port, scheme });
    const round = () => {
      this.#round ??= this.resolveNow().finally(() => this.#round = undefined);
    };
    round();
    this.#timer = setInterval(round, intervalMs);
    return Promise.resolve();
  }

  /** Stops the lookups and waits for the one in flight. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#round;
  }

  /**
   * Resolves the name once and reports every peer URL found; returns them. A name with only A
   * or only AAAA records is fine; a failure of both is logged and counted, never thrown.
   */
  async resolveNow(): Promise<string[]> {
    const { name, port, scheme, self } = this.#options;
    const { metrics, log, onPeer } = this.#deps;
    const resolve: Resolve = this.#deps.resolve ??
      ((n, type) => Deno.resolveDns(n, type) as Promise<string[]>);
    const results = await Promise.allSettled([resolve(name, "A"), resolve(name, "AAAA")]);
    const ips = results.flatMap((r) => r.status === "fulfilled" ? r.value : []);
    if (results.every((r) => r.status === "rejected")) {
      metrics.inc(ERRORS_METRIC, { mode: "dns" });
      log("discovery_dns_failed", {
        name,
        error: String((results[0] as PromiseRejectedResult).reason),
      });
      return [];
    }
    const urls = [...new Set(ips.map((ip) => peerUrl(scheme, ip, port)))].sort();
    for (const url of urls) if (url !== self) onPeer(url);
    return urls;
  }
}
