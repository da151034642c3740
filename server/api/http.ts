/** Routes HTTP requests: the browser WebSocket, cluster RPC, health, metrics and the PWA. */
import type { Cluster, RingService } from "../cluster/mod.ts";
import { CLUSTER_RPC_PATH, REPLICATION_RPC_PATH, RING_RPC_PATH } from "../cluster/mod.ts";
import type { ClientHub } from "./client_hub.ts";
import type { Metrics } from "./metrics.ts";
import { ISOLATION_HEADERS, serveStatic } from "./static_files.ts";

/** Collaborators of the HTTP handler. */
export interface HttpDeps {
  hub: ClientHub;
  cluster: Cluster;
  ring: RingService;
  /** Serves `POST /replication/rpc`. */
  replication: (req: Request) => Promise<Response>;
  metrics: Metrics;
}

/** Where the built client lives. */
export interface HttpOptions {
  /** Directory with the built PWA (index.html, app.js, …). */
  distDir: string;
}

/** Creates the request handler passed to `Deno.serve`. */
export function createHandler(deps: HttpDeps, options: HttpOptions) {
  return async (req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("Expected a WebSocket upgrade", { status: 426 });
      }
      // The TCP peer's address, read before the upgrade consumes the request (a reverse proxy in
      // front would make every client one address for the login limits).
      const remote = info?.remoteAddr;
      const address = remote && "hostname" in remote ? remote.hostname : undefined;
      const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 60 });
      deps.hub.accept(socket, address);
      return response;
    }
    if (url.pathname === CLUSTER_RPC_PATH && req.method === "POST") {
      return await deps.cluster.handleRpc(req);
    }
    if (url.pathname === RING_RPC_PATH && req.method === "POST") {
      return await deps.ring.handleHttp(req);
    }
    if (url.pathname === REPLICATION_RPC_PATH && req.method === "POST") {
      return await deps.replication(req);
    }
    if (url.pathname === "/ring") return Response.json(deps.ring.view());
    if (url.pathname === "/healthz") {
      return Response.json({
        status: "ok",
        self: deps.cluster.self,
        servers: deps.cluster.liveServers(),
        sessions: deps.hub.onlineUsernames().length,
      });
    }
    if (url.pathname === "/metrics") {
      deps.ring.exportMetrics();
      return new Response(deps.metrics.render(), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    if (req.method === "GET" || req.method === "HEAD") {
      const res = await serveStatic(options.distDir, url.pathname);
      if (res) return res;
      if (url.pathname === "/" || url.pathname === "/index.html") {
        return new Response(
          "The client is not built: run `deno task build` (startup.sh does this for you).",
          { status: 503, headers: ISOLATION_HEADERS },
        );
      }
    }
    return new Response("Not found", { status: 404, headers: ISOLATION_HEADERS });
  };
}
