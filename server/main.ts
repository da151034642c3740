/**
 * Entry point of a P2P-Chat server node: reads configuration, opens the store, joins the
 * cluster, serves browsers, and shuts down cleanly on SIGINT/SIGTERM.
 */
import {
  ConfigError,
  type DiscoveryConfig,
  HELP,
  parseConfig,
  type ServerConfig,
} from "./config.ts";
import { systemClock } from "../shared/clock.ts";
import { NodeStore } from "./store/mod.ts";
import {
  callPeer,
  ClusterKey,
  handleLimitsHttp,
  handleReplicationHttp,
  Hmac,
  limitHolderOf,
  limitsCall,
  LINKED_PATHS,
  LinkPool,
  Membership,
  replicationCall,
  ringAccessOf,
  RingService,
} from "./cluster/mod.ts";
import { Replicator } from "./replication/mod.ts";
import { createUserServices, IceServers, LocalLimits, RingLimits, Tokens } from "./users/mod.ts";
import { ClientHub, createHandler, serveWithWsFront, startIoLagProbe } from "./api/mod.ts";
import { createClusterVisualizer, NodeEvents } from "./visualizer/mod.ts";
import { jsonLog, type Log, Metrics } from "./telemetry/mod.ts";
import {
  describeDiscoveryMetrics,
  type Discovery,
  DnsDiscovery,
  MulticastDiscovery,
  type PeerFound,
} from "./discovery/mod.ts";

/** Timeout of one cluster RPC (hello, presence notice, deliver), in ms. */
const CLUSTER_RPC_TIMEOUT_MS = 2000;
/** Timeout of one replication RPC, in ms. */
const REPLICATION_RPC_TIMEOUT_MS = 10_000;
/**
 * Timeout of one limits RPC (a charge on a login or registration counter's holder), in ms; a
 * charge that cannot find and ask its holder within 1.5 s is made on this server instead.
 */

/** A running server node. */
export interface RunningServer {
  url: string;
  shutdown(): Promise<void>;
}

/**
 * Starts a server node with `config`; resolves once it listens. Components are built in
 * dependency order (DESIGN §2), each given its collaborators: store → cluster membership and
 * ring → replication → users services → the browser edge.
 */
export async function startServer(config: ServerConfig, baseLog: Log): Promise<RunningServer> {
  const clock = systemClock;
  // The ring page's timeline: this server's ring events, read from its own log.
  const ringEvents = new NodeEvents();
  const log = ringEvents.tee(baseLog);
  const metrics = new Metrics();
  const hmac = new Hmac(config.clusterSecret);
  // The handler needs the services, which need the listening address: wire them through `app`.
  const app: { handle?: (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response> } = {};
  const tls = config.tls
    ? {
      cert: await readPem("--tls-cert", config.tls.certFile),
      key: await readPem("--tls-key", config.tls.keyFile),
    }
    : undefined;
  // The front owns the port and speaks WebSocket itself, frames capped before buffering.
  const server = await serveWithWsFront({
    port: config.port,
    hostname: config.hostname,
    tls,
    maxMessageBytes: config.maxWsMessageBytes,
    onProtocolClose: (address, code, reason) =>
      log("ws_closed_by_server", { address, code, reason }),
  }, async (req, info) => {
    if (!app.handle) return new Response("Starting", { status: 503 });
    try {
      return await app.handle(req, info);
    } catch (err) {
      // Never a stack trace on stderr (the log is JSON lines) and never an untyped answer.
      log("http_handler_failed", {
        method: req.method,
        path: new URL(req.url).pathname,
        error: String(err),
      });
      return Response.json({ v: 1, type: "error", code: "internal", message: "Internal error" }, {
        status: 500,
      });
    }
  });
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const scheme = config.tls ? "https" : "http";
  const self = config.publicUrl ?? `${scheme}://${host}:${addr.port}`;
  const dataDir = config.dataDir ?? `data/node-${addr.port}`;
  let store: NodeStore;
  try {
    await Deno.mkdir(dataDir, { recursive: true });
    store = new NodeStore(`${dataDir}/node.sqlite`);
  } catch (err) {
    await server.shutdown();
    const denied = err instanceof Deno.errors.PermissionDenied ||
      err instanceof Deno.errors.NotCapable;
    throw new ConfigError(
      denied
        ? `--data-dir ${dataDir} cannot be written: this process may not write there ` +
          `(\`deno task server\` allows data/ only; run deno run --allow-write=${dataDir} … ` +
          `server/main.ts, or choose a folder under data/)`
        : `--data-dir ${dataDir} cannot hold the database: ${(err as Error).message}`,
    );
  }

  // The cluster: membership, the CHORD ring, replicated records.
  // Server-to-server traffic is signed with the cluster secret and bound to this address.
  const key = new ClusterKey(hmac, self);
  // Requests to peers travel over one persistent link per peer where they can (cluster/link.ts).
  key.links = new LinkPool({ paths: LINKED_PATHS, metrics });
  const call = (
    address: string,
    request: Parameters<typeof callPeer>[2],
    timeoutMs = CLUSTER_RPC_TIMEOUT_MS,
  ) => callPeer(key, address, request, timeoutMs);
  const membership = new Membership({ call, metrics, log, clock }, {
    self,
    seeds: config.peers,
    ...(config.browserUrl ? { browserUrl: config.browserUrl } : {}),
  });
  // Any authenticated request from a peer, or signed answer of one, is a sign of life.
  key.onPeerHeard((address) => membership.heardFrom(address));
  const ring = new RingService({
    key,
    metrics,
    log,
    liveServers: () => membership.liveServers(),
    knownServers: () => membership.knownServers(),
    isSuspect: (address) => membership.shouldRouteAround(address),
  }, { self });
  const replicator = new Replicator({
    store,
    ring: ringAccessOf(ring),
    call: replicationCall(key, REPLICATION_RPC_TIMEOUT_MS),
    metrics,
    log,
    isLive: (address) => membership.isLive(address),
    isSuspect: (address) => membership.isSuspect(address),
    liveServers: () => membership.liveServers(),
    knownServers: () => membership.knownServers(),
  }, config.storage);

  // Login and registration limits, held on the primary of each counter's ring key.
  const perMinute = (n: number) => ({ capacity: n, perSecond: n / 60 });
  const heldLimits = new LocalLimits({
    loginFailuresPerUser: perMinute(config.loginFailuresPerMinute),
    loginFailuresPerAddress: perMinute(config.loginFailuresPerAddressPerMinute),
    registrationsPerAddress: perMinute(config.registrationsPerMinute),
  }, clock);
  const limits = new RingLimits({
    self,
    local: heldLimits,
    holderOf: limitHolderOf(ring),
    isLive: (address) => membership.isLive(address),
    liveServerCount: () => membership.liveServers().length,
    // The call's own bound leaves a third of the wait to finding the holder.
    call: limitsCall(key, Math.round(config.limitHolderTimeoutMs * 2 / 3)),
    metrics,
    log,
    clock,
  }, { holderTimeoutMs: config.limitHolderTimeoutMs });

  // Users: sessions on this server, presence, routing, accounts, mailboxes.
  const ioLag = await startIoLagProbe();
  const users = createUserServices({
    records: replicator,
    membership,
    call,
    tokens: new Tokens(hmac, config.sessionTtlMs),
    metrics,
    log,
    clock,
    limits,
    ioLag: ioLag.lag,
  }, {
    accounts: { bcryptCost: config.bcryptCost },
    sessions: { handoverGraceMs: config.handoverGraceMs, handoverMaxMs: config.handoverMaxMs },
  });
  const { accounts, sessions, presence, routing, mailboxes, local } = users;

  // The edge.
  const hub = new ClientHub({
    accounts,
    sessions,
    local,
    presence,
    routing,
    mailboxes,
    metrics,
    log,
    clock,
    ice: new IceServers({ clock }, config.ice),
  }, {
    keyLookups: {
      lookups: { capacity: config.keyLookupBurst, perSecond: config.keyLookupsPerMinute / 60 },
      misses: { capacity: config.keyMissBurst, perSecond: config.keyMissesPerMinute / 60 },
    },
    limits: {
      framesPerConnection: { capacity: 2 * config.frameRate, perSecond: config.frameRate },
    },
    maxConnections: config.maxConnections,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
  });
  const signed = { key, metrics, log };
  const visualizer = createClusterVisualizer({
    ring,
    key,
    metrics,
    log,
    liveServers: () => membership.liveServers(),
    counts: () => store.recordCounts(),
    events: ringEvents,
  }, { replicas: config.storage.k, operatorToken: config.operatorToken });
  app.handle = createHandler({
    hub,
    membership,
    sessions,
    local,
    presence,
    ring,
    replication: (req) => handleReplicationHttp(req, { ...signed, replicator }),
    limits: (req) => handleLimitsHttp(req, { ...signed, holder: heldLimits }),
    metrics,
    signed,
    visualizer: visualizer.handle,
    upgrade: server.upgrade,
  }, {
    distDir: config.distDir,
    allowedOrigins: config.allowedOrigins,
    isTls: !!config.tls,
    operatorToken: config.operatorToken,
  });

  membership.start();
  users.start();
  ring.start();
  replicator.start();
  // Discovery only proposes addresses; the membership admits them through its signed hellos.
  const discovery = createDiscovery(config.discovery, {
    hmac,
    metrics,
    log,
    self,
    onPeer: (address) => membership.addPeer(address),
  });
  const stopAll = async () => {
    await users.stop();
    ioLag.stop();
    await membership.stop();
    await replicator.stop();
  };
  try {
    await discovery?.start();
  } catch (err) {
    await stopAll();
    await visualizer.close();
    await ring.stop();
    key.links?.close();
    await server.shutdown();
    store.close();
    // A bad interface or port is a configuration problem: say which option, not a stack trace.
    throw new ConfigError(
      config.discovery.mode === "multicast"
        ? `Multicast discovery cannot start on interface ${config.discovery.interfaceAddress}, group ${config.discovery.group} port ${config.discovery.port}: ${
          (err as Error).message
        }: check --multicast-interface (an IPv4 address of one of this machine's interfaces)`
        : `Discovery cannot start: ${(err as Error).message}`,
    );
  }
  log("started", { url: self, dataDir, peers: config.peers, discovery: config.discovery.mode });
  return {
    url: self,
    async shutdown() {
      await visualizer.announceLeave();
      await discovery?.stop();
      await stopAll();
      // Graceful leave: hand what this node holds to its successor before leaving the ring.
      await replicator.handOffAll();
      await visualizer.close();
      await ring.stop();
      key.links?.close();
      await server.shutdown();
      store.close();
    },
  };
}

async function readPem(flag: string, file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    throw new ConfigError(`${flag} ${file} cannot be read: ${(err as Error).message}`);
  }
}

/** The discovery mode `config` asks for, wired to feed found servers to `onPeer`. */
function createDiscovery(
  config: DiscoveryConfig,
  deps: { hmac: Hmac; metrics: Metrics; log: Log; self: string; onPeer: PeerFound },
): Discovery | undefined {
  const { hmac, metrics, log, self, onPeer } = deps;
  if (config.mode === "none") return undefined;
  describeDiscoveryMetrics(metrics);
  if (config.mode === "multicast") {
    return new MulticastDiscovery({ signer: hmac, metrics, log, onPeer }, {
      self,
      group: config.group,
      port: config.port,
      interfaceAddress: config.interfaceAddress,
      intervalMs: config.intervalMs,
    });
  }
  return new DnsDiscovery({ metrics, log, onPeer }, {
    self,
    name: config.name,
    port: config.port,
    scheme: config.scheme,
    intervalMs: config.intervalMs,
  });
}

if (import.meta.main) {
  let config: ServerConfig | "help";
  try {
    config = parseConfig(Deno.args, Deno.env.toObject());
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`Error: ${err.message}\nRun with --help to see every option.`);
    Deno.exit(2);
  }
  if (config === "help") {
    console.log(HELP);
    Deno.exit(0);
  }
  let running: RunningServer;
  try {
    running = await startServer(config, jsonLog);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`Error: ${err.message}`);
    Deno.exit(2);
  }
  console.log(`ready ${running.url}`);
  const stop = async () => {
    jsonLog("stopping", {});
    await running.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
