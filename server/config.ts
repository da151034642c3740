/**
 * Server configuration from command-line flags and environment variables (flags win). Invalid
 * configuration is reported as a {@link ConfigError} naming the flag and what to do.
 */
import { parseArgs } from "node:util";

/** Everything a server process needs to start. */
export interface ServerConfig {
  port: number;
  hostname: string;
  /** Base URL other servers and browsers use; derived from hostname and port when absent. */
  publicUrl: string | undefined;
  /**
   * Base URL browsers reach this server at, when it differs from `publicUrl` (a host-mapped port,
   * one DNS name in front of the ring); the browsers' fail-over list is made of these.
   */
  browserUrl: string | undefined;
  /** Page origins besides the ring's servers whose pages may use `/ws` (`--allowed-origins`). */
  allowedOrigins: string[];
  peers: string[];
  clusterSecret: string;
  /** Directory of the SQLite database; derived from the port when absent. */
  dataDir: string | undefined;
  distDir: string;
  bcryptCost: number;
  sessionTtlMs: number;
  /** How long a superseded device may hand its history to the new one, in ms (0: none). */
  handoverGraceMs: number;
  /** Longest a hand-over that keeps progressing may extend its grace to, in ms (undefined: 4 × grace). */
  handoverMaxMs: number | undefined;
  /** Frames one browser connection may send per second (bursts of twice as many). */
  frameRate: number;
  /** Most open browser connections on this server. */
  maxConnections: number;
  /** Most open browser connections from one client address (IPv6 by /64). */
  maxConnectionsPerAddress: number;
  /** Largest WebSocket message a browser may send, in bytes (refused from its frame header). */
  maxWsMessageBytes: number;
  /** New accounts per minute from one client address (IPv6 by /64); bursts of the same size. */
  registrationsPerMinute: number;
  /**
   * Longest wait for the server holding a login or registration counter before this one counts
   * on its own share (see RingLimits), in ms.
   */
  limitHolderTimeoutMs: number;
  /** Failed logins per minute for one username, counted across the ring; bursts of the same size. */
  loginFailuresPerMinute: number;
  /** Failed logins per minute from one client address (IPv6 by /64), across the ring. */
  loginFailuresPerAddressPerMinute: number;
  /** Key lookups (`get_keys`) one user may make at once, then per minute. */
  keyLookupBurst: number;
  keyLookupsPerMinute: number;
  /** Lookups of unknown names one user may make at once, then per minute (stricter). */
  keyMissBurst: number;
  keyMissesPerMinute: number;
  /** Offline mailbox placement and limits. */
  storage: {
    /** Copies beyond the primary (K). */
    k: number;
    /** Durable copies before a write is acknowledged (W). */
    w: number;
    quotaPerRecipient: number;
    quotaPerSender?: number;
    /** Most envelope characters one sender may leave pending in one mailbox (files). */
    senderBytes: number;
    maxAgeMs: number;
    /** Period of the replica repair round (anti-entropy, hand-off), in ms. */
    repairIntervalMs: number;
    /**
     * Longest wait, after a start, for down servers of the cluster before this one trusts its
     * own disk (see Replicator.catchingUp), in ms; absent: the replicator's default.
     */
    catchUpMaxWaitMs?: number;
    /**
     * Least time between two collections of old tombstones, in ms; absent: the replicator's
     * default. Set only by tests (see {@link TEST_TIMINGS}).
     */
    tombstoneGcEveryMs?: number;
    /**
     * How long after the retention a tombstone is collected, in ms; absent: the replicator's
     * default. Set only by tests (see {@link TEST_TIMINGS}).
     */
    tombstoneMarginMs?: number;
  };
  /** Certificate and key (PEM files) to serve HTTPS/WSS; plain HTTP when absent. */
  tls: { certFile: string; keyFile: string } | undefined;
  /** How this server finds others besides `peers`. */
  discovery: DiscoveryConfig;
  /** Required by the ring page `/ring/view` and its stream when set; open when absent. */
  operatorToken: string | undefined;
  /** STUN/TURN servers handed to browsers for their data channels. */
  ice: IceConfig;
}

/** The ICE servers browsers get (`--stun-urls`, `--turn-urls`, `--turn-secret`). */
export interface IceConfig {
  stunUrls: string[];
  turnUrls: string[];
  /** Shared with the TURN server (coturn `static-auth-secret`); required with TURN URLs. */
  turnSecret: string | undefined;
  /** Lifetime of the TURN credentials a session gets, in ms. */
  turnTtlMs: number;
}

/** The discovery mode and its settings (`--discovery`). */
export type DiscoveryConfig =
  | { mode: "none" }
  | {
    mode: "multicast";
    group: string;
    port: number;
    /** IPv4 address of the one interface announcements go out of and are heard on. */
    interfaceAddress: string;
    intervalMs: number;
  }
  | {
    mode: "dns";
    /** DNS name whose A/AAAA records are the servers. */
    name: string;
    /** Port of the servers behind the name. */
    port: number;
    scheme: "http" | "https";
    intervalMs: number;
  };

/** A configuration value is missing or malformed. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** The `--help` text. */
export const HELP = `P2P-Chat server: one node of the ring; serves the PWA and browser WebSockets.

Usage: deno task server [options]

Options (environment variable in brackets; flags win):
  --port N             TCP port, 0 for any free port             [P2P_PORT]          default 8000
  --hostname H         address to listen on                      [P2P_HOSTNAME]      default 127.0.0.1
  --public-url URL     base URL others reach this server at      [P2P_PUBLIC_URL]    default http://H:PORT
  --browser-url URL    base URL browsers reach this server at, if not the public URL (a
                       host-mapped port, or one name in front of every server); browsers get
                       the ring's browser URLs as their fail-over list
                                                                 [P2P_BROWSER_URL]   default the public URL
  --allowed-origins L  comma-separated page origins that may use /ws besides the ring's servers
                       (e.g. https://chat.example.org)           [P2P_ALLOWED_ORIGINS] default none
  --peers URL,URL      servers to contact at start (seed list)   [P2P_PEERS]         default none
  --cluster-secret S   shared secret of the cluster, ≥16 chars   [P2P_CLUSTER_SECRET] required
  --data-dir DIR       where the SQLite database lives           [P2P_DATA_DIR]      default data/node-PORT
                       (\`deno task server\` may write under data/ only: for another folder run
                       deno run --allow-net --allow-env --allow-read --allow-write=DIR server/main.ts)
  --dist DIR           the built client to serve                 [P2P_DIST_DIR]      default dist
  --bcrypt-cost N      bcrypt cost factor, 10–15                 [P2P_BCRYPT_COST]   default 10
  --session-ttl-hours N  lifetime of a login session             [P2P_SESSION_TTL_HOURS] default 168
  --frame-rate N       frames/s one browser connection may send (bursts of 2N), 1–100000
                                                           [P2P_FRAME_RATE]    default 50
  --max-connections N  open browser connections on this server   [P2P_MAX_CONNECTIONS] default 10000
  --max-connections-per-address N  from one address (IPv6: per /64)
                                          [P2P_MAX_CONNECTIONS_PER_ADDRESS] default 200
  --max-ws-message-bytes N  largest WebSocket message from a browser, refused (close 1009)
                       from its frame header, 65536–67108864 [P2P_MAX_WS_MESSAGE_BYTES] default 196608
  --registrations-per-minute N  new accounts per minute from one address (IPv6: per /64), 1–100000
                                                 [P2P_REGISTRATIONS_PER_MINUTE]    default 30
  --login-failures-per-minute N  failed logins per minute for one username, 1–10000
                                                 [P2P_LOGIN_FAILURES_PER_MINUTE]   default 5
  --login-failures-per-address-per-minute N  failed logins per minute from one address
                       (IPv6: per /64), 1–100000 [P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE] default 20
                       These three limits are counted across the ring, on the server that is
                       primary for the name or address (on each server alone, against a share,
                       while it is down or does not answer in time).
  --limit-holder-timeout-ms N  how long a login waits for that server before counting on its
                       own share, 200–30000       [P2P_LIMIT_HOLDER_TIMEOUT_MS]     default 1500
  --key-lookup-burst N  contact lookups (get_keys) one user may make at once, 1–100000
                                                 [P2P_KEY_LOOKUP_BURST]            default 200
  --key-lookups-per-minute N  then per minute, 1–100000 [P2P_KEY_LOOKUPS_PER_MINUTE] default 60
  --key-miss-burst N   lookups of names without an account one user may make at once, 1–100000
                                                 [P2P_KEY_MISS_BURST]              default 20
  --key-misses-per-minute N  then per minute, 1–100000 [P2P_KEY_MISSES_PER_MINUTE] default 10
                       A user over either budget gets rate_limited with the wait, whatever
                       name he asks for.
  --handover-grace-seconds N  how long a signed-out device may hand its history to the new
                       one, 0–600 (0: close it at once)    [P2P_HANDOVER_GRACE_SECONDS] default 30
  --handover-max-seconds N  while the hand-over progresses its grace is extended, at most to N s
                       in all, 0–3600                      [P2P_HANDOVER_MAX_SECONDS] default 4 × grace
  --tls-cert FILE      PEM certificate (chain): serve HTTPS/WSS  [P2P_TLS_CERT]      default none (HTTP)
  --tls-key FILE       PEM private key of that certificate       [P2P_TLS_KEY]       needed with --tls-cert
  --operator-token T   required by /metrics, /ring and /ring/view (?token=T), ≥16 chars
                                                          [P2P_OPERATOR_TOKEN] default none (open)
  With TLS the default public URL is https://H:PORT and servers call each other over HTTPS: each
  server must trust the others' certificate. For a self-signed or private CA, start every server
  with DENO_CERT=/path/to/ca.pem (Deno's own setting; \`deno task start --https\` does this).

Offline mailboxes (replicated on the ring):
  --replicas K         copies beyond the primary, 0–8            [P2P_REPLICAS]      default 2
  --write-quorum W     durable copies before a send is acknowledged, 1–K+1
                                                                 [P2P_WRITE_QUORUM]  default 2
  --mailbox-quota N    most pending messages per recipient       [P2P_MAILBOX_QUOTA] default 10000
  --mailbox-quota-per-sender N  most pending messages one sender may leave in one mailbox
                                        [P2P_MAILBOX_QUOTA_PER_SENDER] default quota / 10
  --mailbox-sender-mb N  most MB (of files) one sender may leave in one mailbox, 1–100000
                                        [P2P_MAILBOX_SENDER_MB] default 64
  --mailbox-max-age-days N  undelivered messages expire after    [P2P_MAILBOX_MAX_AGE_DAYS] default 30
  --repair-interval-ms N  period of the replica repair round, 100–600000
                                                     [P2P_REPAIR_INTERVAL_MS] default 1000
  --catch-up-max-wait-ms N  after a start, how long to wait for servers that are down before
                       this server's own disk answers "no such account" or vouches for its
                       pending messages, 0–3600000       [P2P_CATCH_UP_MAX_WAIT_MS] default 30000

NAT traversal (ICE servers handed to browsers for their data channels):
  --stun-urls L        comma-separated stun: URLs, e.g. stun:turn.example.org:3478
                                                                 [P2P_STUN_URLS]     default none
  --turn-urls L        comma-separated turn:/turns: URLs, e.g. turn:turn.example.org:3478?transport=udp
                                                                 [P2P_TURN_URLS]     default none
  --turn-secret S      secret shared with the TURN server (coturn static-auth-secret), ≥16
                       chars; required with --turn-urls          [P2P_TURN_SECRET]
  --turn-ttl-seconds N lifetime of a session's TURN credentials, 60–604800; browsers ask for new
                       ones before they expire         [P2P_TURN_TTL_SECONDS] default 86400
  Without them browsers connect directly only where host candidates reach (one LAN); messages
  then go through the servers.

Discovery (how servers find one another besides --peers):
  --discovery MODE     multicast, dns or none                    [P2P_DISCOVERY]     default none, or dns with --discovery-dns
  --multicast-group G  IPv4 multicast group                      [P2P_MULTICAST_GROUP] default 239.77.77.77
  --multicast-port N   UDP port of the group                     [P2P_MULTICAST_PORT] default 47777
  --multicast-interface A  IPv4 address of the interface to announce and listen on;
                       required with multicast                   [P2P_MULTICAST_INTERFACE]
  --announce-interval-ms N  period of announcements / DNS lookups [P2P_ANNOUNCE_INTERVAL_MS] default 2000
  --discovery-dns NAME DNS name whose A/AAAA records are the servers [P2P_DISCOVERY_DNS]
  --discovery-dns-port N  port of the servers behind that name   [P2P_DISCOVERY_DNS_PORT] default --port
  --discovery-dns-scheme S  http or https                        [P2P_DISCOVERY_DNS_SCHEME] default http
  Multicast announcements are signed with the cluster secret and sent with TTL 1 on the given
  interface only; servers that hear each other still admit each other by signed hellos.

  -h, --help           show this text

Development only:
  --session-ttl-seconds N  session lifetime in seconds, overrides --session-ttl-hours (for
                       tests of expiry)                          [P2P_SESSION_TTL_SECONDS]
  --benchmark-bcrypt-cost N  bcrypt cost 4–15 overriding --bcrypt-cost, for benchmarks that
                       create thousands of accounts on a small machine; cheap hashes are cheap
                       to crack, never use it for real accounts   [P2P_BENCHMARK_BCRYPT_COST]
  Mailbox time scales for tests of expiry and tombstone collection (environment only, each
  refused unless P2P_TEST_TIMINGS=1 is set too; never on a real ring: a message would expire
  unread within seconds):
    P2P_TEST_MAILBOX_MAX_AGE_MS N     retention in ms, 1000–86400000, overriding
                                      --mailbox-max-age-days
    P2P_TEST_TOMBSTONE_GC_EVERY_MS N  least time between two tombstone collections, 10–600000
                                      (default 600000)
    P2P_TEST_TOMBSTONE_MARGIN_MS N    tombstones are collected this long past the retention,
                                      0–86400000 (default 86400000)

On start the server prints one line "ready <url>" on stdout; logs are JSON lines on stderr.`;

const URL_PATTERN = /^https?:\/\/[^\s/]+$/;

function integer(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    throw new ConfigError(`--${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return n;
}

/** Reads an option: its flag if given, else its environment variable. */
type Pick = (flag: string, envName: string) => string | undefined;

/** A whole-number option from its flag, else its environment variable, else `fallback`. */
function intOption(
  pick: Pick,
  flag: string,
  envName: string,
  fallback: string,
  min: number,
  max: number,
): number {
  return integer(flag, pick(flag, envName) ?? fallback, min, max);
}

/** The variable that must be `1` for any of {@link TEST_TIMINGS} to be accepted. */
export const TEST_TIMINGS_GATE = "P2P_TEST_TIMINGS";

/**
 * Test-only mailbox time scales (environment variables), with their bounds. The operator's
 * retention is whole days; these let a test of expiry and tombstone collection run on real
 * servers in seconds. Each is refused unless {@link TEST_TIMINGS_GATE} is `1` too, so none can
 * shorten a real ring's retention by a stray variable.
 */
export const TEST_TIMINGS = {
  maxAgeMs: { env: "P2P_TEST_MAILBOX_MAX_AGE_MS", min: 1000, max: 86_400_000 },
  tombstoneGcEveryMs: { env: "P2P_TEST_TOMBSTONE_GC_EVERY_MS", min: 10, max: 600_000 },
  tombstoneMarginMs: { env: "P2P_TEST_TOMBSTONE_MARGIN_MS", min: 0, max: 86_400_000 },
} as const;

/** The test timings set in `env` (see {@link TEST_TIMINGS}); throws if set without the gate. */
function testTimings(
  env: Record<string, string | undefined>,
): Partial<Record<keyof typeof TEST_TIMINGS, number>> {
  const gate = env[TEST_TIMINGS_GATE];
  if (gate !== undefined && gate !== "1") {
    throw new ConfigError(
      `${TEST_TIMINGS_GATE} must be 1 (tests that shorten the mailbox time scales) or unset, got "${gate}"`,
    );
  }
  const out: Partial<Record<keyof typeof TEST_TIMINGS, number>> = {};
  for (const [key, { env: name, min, max }] of Object.entries(TEST_TIMINGS)) {
    const raw = env[name];
    if (raw === undefined) continue;
    if (gate !== "1") {
      throw new ConfigError(
        `${name} is for tests only (it shortens the mailbox time scales to seconds, so messages would expire unread): unset it, or set ${TEST_TIMINGS_GATE}=1 as well in a test; operators set --mailbox-max-age-days`,
      );
    }
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n < min || n > max) {
      throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
    }
    out[key as keyof typeof TEST_TIMINGS] = n;
  }
  return out;
}

function url(name: string, raw: string): string {
  const value = raw.trim().replace(/\/$/, "");
  if (!URL_PATTERN.test(value)) {
    throw new ConfigError(`--${name} must be a base URL like http://10.0.0.2:8000, got "${raw}"`);
  }
  return value;
}

/** Parses flags and environment; returns "help" when help was asked for. */
export function parseConfig(
  args: string[],
  env: Record<string, string | undefined>,
): ServerConfig | "help" {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        hostname: { type: "string" },
        "public-url": { type: "string" },
        "browser-url": { type: "string" },
        "allowed-origins": { type: "string" },
        peers: { type: "string" },
        "cluster-secret": { type: "string" },
        "data-dir": { type: "string" },
        dist: { type: "string" },
        "bcrypt-cost": { type: "string" },
        "session-ttl-hours": { type: "string" },
        "handover-grace-seconds": { type: "string" },
        "handover-max-seconds": { type: "string" },
        "frame-rate": { type: "string" },
        "registrations-per-minute": { type: "string" },
        "limit-holder-timeout-ms": { type: "string" },
        "login-failures-per-minute": { type: "string" },
        "login-failures-per-address-per-minute": { type: "string" },
        "key-lookup-burst": { type: "string" },
        "key-lookups-per-minute": { type: "string" },
        "key-miss-burst": { type: "string" },
        "key-misses-per-minute": { type: "string" },
        "max-connections": { type: "string" },
        "max-connections-per-address": { type: "string" },
        "max-ws-message-bytes": { type: "string" },
        replicas: { type: "string" },
        "write-quorum": { type: "string" },
        "mailbox-quota": { type: "string" },
        "mailbox-quota-per-sender": { type: "string" },
        "mailbox-sender-mb": { type: "string" },
        "mailbox-max-age-days": { type: "string" },
        "repair-interval-ms": { type: "string" },
        "catch-up-max-wait-ms": { type: "string" },
        "session-ttl-seconds": { type: "string" },
        "benchmark-bcrypt-cost": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        discovery: { type: "string" },
        "multicast-group": { type: "string" },
        "multicast-port": { type: "string" },
        "multicast-interface": { type: "string" },
        "announce-interval-ms": { type: "string" },
        "discovery-dns": { type: "string" },
        "discovery-dns-port": { type: "string" },
        "discovery-dns-scheme": { type: "string" },
        "operator-token": { type: "string" },
        "stun-urls": { type: "string" },
        "turn-urls": { type: "string" },
        "turn-secret": { type: "string" },
        "turn-ttl-seconds": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  if (values.help) return "help";
  const pick = (flag: string, envName: string): string | undefined => {
    const v = values[flag];
    return typeof v === "string" ? v : env[envName];
  };
  const secret = pick("cluster-secret", "P2P_CLUSTER_SECRET");
  if (!secret || secret.length < 16) {
    throw new ConfigError(
      "--cluster-secret is required and must be at least 16 characters: every server of one cluster uses the same secret",
    );
  }
  const peersRaw = pick("peers", "P2P_PEERS") ?? "";
  const publicUrl = pick("public-url", "P2P_PUBLIC_URL");
  const browserUrl = pick("browser-url", "P2P_BROWSER_URL");
  const handoverMax = pick("handover-max-seconds", "P2P_HANDOVER_MAX_SECONDS");
  const port = intOption(pick, "port", "P2P_PORT", "8000", 0, 65535);
  const ttlSeconds = pick("session-ttl-seconds", "P2P_SESSION_TTL_SECONDS");
  const benchmarkCost = pick("benchmark-bcrypt-cost", "P2P_BENCHMARK_BCRYPT_COST");
  const certFile = pick("tls-cert", "P2P_TLS_CERT");
  const keyFile = pick("tls-key", "P2P_TLS_KEY");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError(
      "--tls-cert and --tls-key go together: give both PEM files to serve HTTPS, or neither for HTTP",
    );
  }
  const operatorToken = pick("operator-token", "P2P_OPERATOR_TOKEN");
  if (operatorToken !== undefined && operatorToken.length < 16) {
    throw new ConfigError(
      "--operator-token must be at least 16 characters: it guards the ring page, so make it hard to guess",
    );
  }
  return {
    port,
    operatorToken,
    hostname: pick("hostname", "P2P_HOSTNAME") ?? "127.0.0.1",
    publicUrl: publicUrl === undefined ? undefined : url("public-url", publicUrl),
    browserUrl: browserUrl === undefined ? undefined : url("browser-url", browserUrl),
    allowedOrigins: (pick("allowed-origins", "P2P_ALLOWED_ORIGINS") ?? "").split(",")
      .map((o) => o.trim()).filter((o) => o !== "").map((o) => url("allowed-origins", o)),
    peers: peersRaw.split(",").map((p) => p.trim()).filter((p) => p).map((p) => url("peers", p)),
    clusterSecret: secret,
    dataDir: pick("data-dir", "P2P_DATA_DIR"),
    distDir: pick("dist", "P2P_DIST_DIR") ?? "dist",
    bcryptCost: benchmarkCost === undefined
      ? intOption(pick, "bcrypt-cost", "P2P_BCRYPT_COST", "10", 10, 15)
      : integer("benchmark-bcrypt-cost", benchmarkCost, 4, 15),
    sessionTtlMs: ttlSeconds !== undefined
      ? integer("session-ttl-seconds", ttlSeconds, 1, 365 * 24 * 3600) * 1000
      : intOption(pick, "session-ttl-hours", "P2P_SESSION_TTL_HOURS", "168", 1, 24 * 365) *
        3_600_000,
    handoverGraceMs:
      intOption(pick, "handover-grace-seconds", "P2P_HANDOVER_GRACE_SECONDS", "30", 0, 600) * 1000,
    handoverMaxMs: handoverMax === undefined
      ? undefined
      : integer("handover-max-seconds", handoverMax, 0, 3600) * 1000,
    frameRate: intOption(pick, "frame-rate", "P2P_FRAME_RATE", "50", 1, 100_000),
    maxConnections: intOption(
      pick,
      "max-connections",
      "P2P_MAX_CONNECTIONS",
      "10000",
      1,
      1_000_000,
    ),
    maxConnectionsPerAddress: intOption(
      pick,
      "max-connections-per-address",
      "P2P_MAX_CONNECTIONS_PER_ADDRESS",
      "200",
      1,
      1_000_000,
    ),
    maxWsMessageBytes: intOption(
      pick,
      "max-ws-message-bytes",
      "P2P_MAX_WS_MESSAGE_BYTES",
      "196608",
      65_536,
      64 * 1024 * 1024,
    ),
    registrationsPerMinute: intOption(
      pick,
      "registrations-per-minute",
      "P2P_REGISTRATIONS_PER_MINUTE",
      "30",
      1,
      100_000,
    ),
    limitHolderTimeoutMs: intOption(
      pick,
      "limit-holder-timeout-ms",
      "P2P_LIMIT_HOLDER_TIMEOUT_MS",
      "1500",
      200,
      30_000,
    ),
    loginFailuresPerMinute: intOption(
      pick,
      "login-failures-per-minute",
      "P2P_LOGIN_FAILURES_PER_MINUTE",
      "5",
      1,
      10_000,
    ),
    loginFailuresPerAddressPerMinute: intOption(
      pick,
      "login-failures-per-address-per-minute",
      "P2P_LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE",
      "20",
      1,
      100_000,
    ),
    keyLookupBurst: intOption(pick, "key-lookup-burst", "P2P_KEY_LOOKUP_BURST", "200", 1, 100_000),
    keyLookupsPerMinute: intOption(
      pick,
      "key-lookups-per-minute",
      "P2P_KEY_LOOKUPS_PER_MINUTE",
      "60",
      1,
      100_000,
    ),
    keyMissBurst: intOption(pick, "key-miss-burst", "P2P_KEY_MISS_BURST", "20", 1, 100_000),
    keyMissesPerMinute: intOption(
      pick,
      "key-misses-per-minute",
      "P2P_KEY_MISSES_PER_MINUTE",
      "10",
      1,
      100_000,
    ),
    tls: certFile !== undefined && keyFile !== undefined ? { certFile, keyFile } : undefined,
    discovery: parseDiscovery(pick, port),
    storage: parseStorage(pick, testTimings(env)),
    ice: parseIce(pick),
  };
}

const STUN_URL = /^stuns?:[A-Za-z0-9.\-\[\]:]+$/;
const TURN_URL = /^turns?:[A-Za-z0-9.\-\[\]:]+(\?transport=(udp|tcp))?$/;

function iceUrls(pick: Pick, flag: string, envName: string, pattern: RegExp, example: string) {
  const list = (pick(flag, envName) ?? "").split(",").map((u) => u.trim()).filter((u) => u);
  for (const u of list) {
    if (!pattern.test(u)) {
      throw new ConfigError(`--${flag} must list URLs like ${example}, got "${u}"`);
    }
  }
  if (list.length > 8) throw new ConfigError(`--${flag} takes at most 8 URLs, got ${list.length}`);
  return list;
}

function parseIce(pick: Pick): IceConfig {
  const stunUrls = iceUrls(
    pick,
    "stun-urls",
    "P2P_STUN_URLS",
    STUN_URL,
    "stun:turn.example.org:3478",
  );
  const turnUrls = iceUrls(
    pick,
    "turn-urls",
    "P2P_TURN_URLS",
    TURN_URL,
    "turn:turn.example.org:3478?transport=udp",
  );
  const turnSecret = pick("turn-secret", "P2P_TURN_SECRET");
  if (turnUrls.length > 0 && (turnSecret === undefined || turnSecret.length < 16)) {
    throw new ConfigError(
      "--turn-urls needs --turn-secret of at least 16 characters: the TURN server's static-auth-secret",
    );
  }
  return {
    stunUrls,
    turnUrls,
    turnSecret,
    turnTtlMs: intOption(pick, "turn-ttl-seconds", "P2P_TURN_TTL_SECONDS", "86400", 60, 604_800) *
      1000,
  };
}

function parseStorage(
  pick: Pick,
  test: ReturnType<typeof testTimings>,
): ServerConfig["storage"] {
  const k = intOption(pick, "replicas", "P2P_REPLICAS", "2", 0, 8);
  const w = intOption(pick, "write-quorum", "P2P_WRITE_QUORUM", "2", 1, 9);
  if (w > k + 1) {
    throw new ConfigError(
      `--write-quorum ${w} cannot exceed the ${
        k + 1
      } copies that --replicas ${k} keeps: lower W or raise K`,
    );
  }
  const perSender = pick("mailbox-quota-per-sender", "P2P_MAILBOX_QUOTA_PER_SENDER");
  const catchUp = pick("catch-up-max-wait-ms", "P2P_CATCH_UP_MAX_WAIT_MS");
  // Checked even when a test's P2P_TEST_MAILBOX_MAX_AGE_MS overrides it.
  const maxAgeDays = intOption(
    pick,
    "mailbox-max-age-days",
    "P2P_MAILBOX_MAX_AGE_DAYS",
    "30",
    1,
    3650,
  );
  return {
    k,
    w,
    quotaPerRecipient: intOption(
      pick,
      "mailbox-quota",
      "P2P_MAILBOX_QUOTA",
      "10000",
      1,
      10_000_000,
    ),
    ...(perSender === undefined
      ? {}
      : { quotaPerSender: integer("mailbox-quota-per-sender", perSender, 1, 10_000_000) }),
    senderBytes: intOption(pick, "mailbox-sender-mb", "P2P_MAILBOX_SENDER_MB", "64", 1, 100_000) *
      1024 * 1024,
    maxAgeMs: test.maxAgeMs ?? maxAgeDays * 86_400_000,
    repairIntervalMs: intOption(
      pick,
      "repair-interval-ms",
      "P2P_REPAIR_INTERVAL_MS",
      "1000",
      100,
      600_000,
    ),
    ...(catchUp === undefined
      ? {}
      : { catchUpMaxWaitMs: integer("catch-up-max-wait-ms", catchUp, 0, 3_600_000) }),
    ...(test.tombstoneGcEveryMs === undefined
      ? {}
      : { tombstoneGcEveryMs: test.tombstoneGcEveryMs }),
    ...(test.tombstoneMarginMs === undefined ? {} : { tombstoneMarginMs: test.tombstoneMarginMs }),
  };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/;

function parseDiscovery(
  pick: Pick,
  serverPort: number,
): DiscoveryConfig {
  const dnsName = pick("discovery-dns", "P2P_DISCOVERY_DNS");
  const mode = pick("discovery", "P2P_DISCOVERY") ?? (dnsName ? "dns" : "none");
  const intervalMs = () =>
    intOption(pick, "announce-interval-ms", "P2P_ANNOUNCE_INTERVAL_MS", "2000", 100, 600_000);
  switch (mode) {
    case "none":
      return { mode };
    case "multicast": {
      const group = pick("multicast-group", "P2P_MULTICAST_GROUP") ?? "239.77.77.77";
      const firstOctet = Number(group.split(".")[0]);
      if (!IPV4.test(group) || firstOctet < 224 || firstOctet > 239) {
        throw new ConfigError(
          `--multicast-group must be an IPv4 multicast address (224.0.0.0–239.255.255.255) like 239.77.77.77, got "${group}"`,
        );
      }
      const interfaceAddress = pick("multicast-interface", "P2P_MULTICAST_INTERFACE");
      if (interfaceAddress === undefined) {
        throw new ConfigError(
          "--multicast-interface is required with --discovery multicast: give the IPv4 address of the interface on the servers' shared network (e.g. 10.0.0.2); it is never guessed",
        );
      }
      if (!IPV4.test(interfaceAddress)) {
        throw new ConfigError(
          `--multicast-interface must be the IPv4 address of a local interface like 10.0.0.2, got "${interfaceAddress}"`,
        );
      }
      return {
        mode,
        group,
        port: intOption(pick, "multicast-port", "P2P_MULTICAST_PORT", "47777", 1, 65535),
        interfaceAddress,
        intervalMs: intervalMs(),
      };
    }
    case "dns": {
      if (!dnsName || !DNS_NAME.test(dnsName)) {
        throw new ConfigError(
          `--discovery-dns must be a DNS name like p2pchat.default.svc.cluster.local with --discovery dns, got "${
            dnsName ?? ""
          }"`,
        );
      }
      const rawPort = pick("discovery-dns-port", "P2P_DISCOVERY_DNS_PORT");
      if (rawPort === undefined && serverPort === 0) {
        throw new ConfigError(
          "--discovery-dns-port is required when --port is 0: the port the servers behind the DNS name listen on",
        );
      }
      const scheme = pick("discovery-dns-scheme", "P2P_DISCOVERY_DNS_SCHEME") ?? "http";
      if (scheme !== "http" && scheme !== "https") {
        throw new ConfigError(`--discovery-dns-scheme must be http or https, got "${scheme}"`);
      }
      return {
        mode,
        name: dnsName,
        port: rawPort === undefined ? serverPort : integer("discovery-dns-port", rawPort, 1, 65535),
        scheme,
        intervalMs: intervalMs(),
      };
    }
    default:
      throw new ConfigError(`--discovery must be multicast, dns or none, got "${mode}"`);
  }
}
