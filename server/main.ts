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
import { NodeStore } from "./store/mod.ts";
import {
  Cluster,
  handleReplicationHttp,
  Hmac,
  type Log,
  replicationCall,
  ringAccessOf,
  RingService,
} from "./cluster/mod.ts";
import { ClientHub, createHandler, MailboxFrames, Metrics, Tokens } from "./api/mod.ts";
import { Replicator } from "./replication/mod.ts";
import {
  describeDiscoveryMetrics,
  type Discovery,
  DnsDiscovery,
  MulticastDiscovery,
  type PeerFound,
} from "./discovery/mod.ts";

/** A running server node. */
export interface RunningServer {
  url: string;
  shutdown(): Promise<void>;
}

/** Starts a server node with `config`; resolves once it listens. */
export async function startServer(config: ServerConfig, log: Log): Promise<RunningServer> {
  const metrics = new Metrics();
  const hmac = new Hmac(config.clusterSecret);
  const tokens = new Tokens(hmac, config.sessionTtlMs);
  let resolveListening: (addr: Deno.NetAddr) => void;
  const listening = new Promise<Deno.NetAddr>((r) => resolveListening = r);
  // The handler needs hub and cluster, which need the listening port: wire them through `app`.
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
  const hub = new ClientHub({ metrics, tokens, log, hmac }, {
    bcryptCost: config.bcryptCost,
    handoverGraceMs: config.handoverGraceMs,
    limits: {
      framesPerConnection: { capacity: 2 * config.frameRate, perSecond: config.frameRate },
    },
  });
  const cluster = new Cluster({ metrics, hmac, local: hub, log }, {
    self,
    seeds: config.peers,
  });
  hub.bind(cluster);
  const ring = new RingService({
    hmac,
    metrics,
    log,
    liveServers: () => cluster.liveServers(),
    knownServers: () => cluster.knownServers(),
  }, {
    self,
  });
  const replicator = new Replicator({
    store,
    ring: ringAccessOf(ring),
    call: replicationCall(hmac, 10_000),
    metrics,
    log,
    onPresenceChange: (record, online) => cluster.presenceNotice(record, online),
    isLive: (address) => cluster.isLive(address),
  }, config.storage);
  cluster.attachStorage(replicator);
  hub.attachMailbox(new MailboxFrames({ replicator, cluster, metrics, log }));
  const replication = (req: Request) =>
    handleReplicationHttp(req, { hmac, replicator, counters: metrics, log });
  app.handle = createHandler({ hub, cluster, ring, replication, metrics }, {
    distDir: config.distDir,
  });
  cluster.start();
  ring.start();
  replicator.start();
  // Discovery only proposes addresses; the cluster admits them through its signed hellos.
  const discovery = createDiscovery(config.discovery, {
    hmac,
    metrics,
    log,
    self,
    onPeer: (address) => cluster.addPeer(address),
  });
  try {
    await discovery?.start();
  } catch (err) {
    await replicator.stop();
    await ring.stop();
    hub.close();
    await cluster.stop();
    await server.shutdown();
    store.close();
    throw err;
  }
  log("started", { url: self, dataDir, peers: config.peers, discovery: config.discovery.mode });
  return {
    url: self,
    async shutdown() {
      await discovery?.stop();
      // Sessions end first, so their presence records are written offline while the ring runs.
      hub.close();
      await cluster.stop();
      await replicator.stop();
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

function jsonLog(event: string, fields: Record<string, unknown> = {}): void {
  console.error(JSON.stringify({ time: new Date().toISOString(), event, ...fields }));
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
