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
  handleReplicationHttp,
  Hmac,
  Membership,
  replicationCall,
  ringAccessOf,
  RingService,
} from "./cluster/mod.ts";
import { Replicator } from "./replication/mod.ts";
import {
  Accounts,
  LocalSessions,
  Mailboxes,
  Presence,
  Routing,
  Sessions,
  Tokens,
} from "./users/mod.ts";
import { ClientHub, createHandler } from "./api/mod.ts";
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
export async function startServer(config: ServerConfig, log: Log): Promise<RunningServer> {
  const clock = systemClock;
  const metrics = new Metrics();
  const hmac = new Hmac(config.clusterSecret);
  let resolveListening: (addr: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => resolveListening = r);
  // The handler needs the services, which need the listening address: wire them through `app`.
  const app: { handle?: (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response> } = {};
  const tls = config.tls
    ? {
      cert: await readPem("--tls-cert", config.tls.certFile),
      key: await readPem("--tls-key", config.tls.keyFile),
    }
    : {};
  const server = Deno.serve({
    port: config.port,
    hostname: config.hostname,
    ...tls,
    onListen: (addr) => resolveListening(addr as Deno.NetAddr),
  }, (req, info) => app.handle ? app.handle(req, info) : new Response("Starting", { status: 503 }));
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const scheme = config.tls ? "https" : "http";
  const self = config.publicUrl ?? `${scheme}://${host}:${addr.port}`;
  const dataDir = config.dataDir ?? `data/node-${addr.port}`;
  await Deno.mkdir(dataDir, { recursive: true });
  const store = new NodeStore(`${dataDir}/node.sqlite`);

  // The cluster: membership, the CHORD ring, replicated records.
  const call = (address: string, request: Parameters<typeof callPeer>[2]) =>
    callPeer(hmac, address, request, CLUSTER_RPC_TIMEOUT_MS);
  const membership = new Membership({ call, metrics, log, clock }, { self, seeds: config.peers });
  const ring = new RingService({
    hmac,
    metrics,
    log,
    liveServers: () => membership.liveServers(),
    knownServers: () => membership.knownServers(),
  }, { self });
  const replicator = new Replicator({
    store,
    ring: ringAccessOf(ring),
    call: replicationCall(hmac, REPLICATION_RPC_TIMEOUT_MS),
    metrics,
    log,
    isLive: (address) => membership.isLive(address),
    liveServers: () => membership.liveServers(),
    knownServers: () => membership.knownServers(),
  }, config.storage);

  // Users: sessions on this server, presence, routing, accounts, mailboxes.
  const local = new LocalSessions({ metrics });
  const presence = new Presence({
    records: replicator,
    membership,
    call,
    local,
    metrics,
    log,
    clock,
  });
  const routing = new Routing({ local, presence, membership, call, log });
  const accounts = new Accounts({ records: replicator, metrics, clock }, {
    bcryptCost: config.bcryptCost,
  });
  const sessions = new Sessions({
    accounts,
    tokens: new Tokens(hmac, config.sessionTtlMs),
    local,
    presence,
    routing,
    membership,
    metrics,
    log,
    clock,
  }, { handoverGraceMs: config.handoverGraceMs });
  const mailboxes = new Mailboxes({ records: replicator, accounts, routing, metrics, log });

  // The edge.
  const hub = new ClientHub({
    accounts,
    sessions,
    presence,
    routing,
    mailboxes,
    metrics,
    log,
    clock,
  }, {
    limits: {
      framesPerConnection: { capacity: 2 * config.frameRate, perSecond: config.frameRate },
    },
  });
  const signed = { hmac, metrics, log };
  app.handle = createHandler({
    hub,
    membership,
    sessions,
    local,
    presence,
    ring,
    replication: (req) => handleReplicationHttp(req, { ...signed, replicator }),
    metrics,
    signed,
  }, { distDir: config.distDir });

  membership.start();
  presence.start();
  sessions.start();
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
    // Sessions end first, so their presence records are written offline while the ring runs.
    sessions.stop();
    await presence.stop();
    await membership.stop();
    await replicator.stop();
  };
  try {
    await discovery?.start();
  } catch (err) {
    await stopAll();
    await ring.stop();
    await server.shutdown();
    store.close();
    throw err;
  }
  log("started", { url: self, dataDir, peers: config.peers, discovery: config.discovery.mode });
  return {
    url: self,
    async shutdown() {
      await discovery?.stop();
      await stopAll();
      // Graceful leave: hand what this node holds to its successor before leaving the ring.
      await replicator.handOffAll();
      await ring.stop();
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
