/**
 * Routes HTTP requests: the browser WebSocket, the four signed server endpoints (cluster, ring,
 * replication and limits RPC, each through `serveSigned`), health, metrics, the ring's state and
 * the PWA's static files.
 */
import {
  type ClusterRequest,
  type ClusterResponse,
  parseClusterRequest,
} from "../../shared/mod.ts";
import {
  CLUSTER_RPC_PATH,
  LIMITS_RPC_PATH,
  LINK_MAX_ANSWER_BYTES,
  LINK_MAX_FRAME_BYTES,
  LINK_PATH,
  LINKED_PATHS,
  type Membership,
  REPLICATION_RPC_PATH,
  RING_RPC_PATH,
  type RingService,
  serveLink,
  serveSigned,
  type ServeSignedDeps,
} from "../cluster/mod.ts";
import { hasOperatorToken, type Metrics } from "../telemetry/mod.ts";
import type { LocalSessions, Presence, Sessions } from "../users/mod.ts";
import type { ClientHub, ClientSocket } from "./client_hub.ts";
import { ISOLATION_HEADERS, pageHeaders, serveStatic } from "./static_files.ts";

/** Largest cluster RPC body, in bytes. */
const MAX_CLUSTER_BODY = 8 * 1024 * 1024;
/** Most links from other servers open at once; past it a server's peers use plain HTTP. */
const MAX_LINKS = 64;

/** Collaborators of the HTTP handler. */
export interface HttpDeps {
  hub: ClientHub;
  membership: Membership;
  sessions: Sessions;
  local: LocalSessions;
  presence: Presence;
  ring: RingService;
  /** Serves `POST /replication/rpc`. */
  replication: (req: Request) => Promise<Response>;
  /** Serves `POST /limits/rpc`: the ring-shared login and registration counters held here. */
  limits: (req: Request) => Promise<Response>;
  metrics: Metrics;
  /** Signs and logs the signed endpoints. */
  signed: ServeSignedDeps;
  /**
   * The ring visualizer (`/ring/view`, its stream, the signed `/ring/report`): answers its own
   * paths and resolves `undefined` for any other request.
   */
  visualizer?: (req: Request) => Promise<Response | undefined>;
  /**
   * Takes over the connection of an admitted `/ws` request as a capped WebSocket (the front's
   * `upgrade`, `ws_front.ts`); `undefined` for a request that did not come through the front.
   */
  upgrade?: (
    req: Request,
    options?: { maxMessageBytes?: number; maxBufferedBytes?: number },
  ) => { socket: ClientSocket; response: Response } | undefined;
}

/** Where the built client lives, and who may use it. */
export interface HttpOptions {
  /** Directory with the built PWA (index.html, app.js, …). */
  distDir: string;
  /**
   * Page origins, besides this server's and the ring's servers', whose pages may open `/ws`
   * (for example one DNS name in front of the servers). @default []
   */
  allowedOrigins?: readonly string[];
  /** Whether browsers reach this server over HTTPS (adds HSTS). @default false */
  isTls?: boolean;
  /** When set, `/metrics` and `/ring` require this token (see `hasOperatorToken`). */
  operatorToken?: string;
}

/** Creates the request handler passed to `Deno.serve`. */
export function createHandler(deps: HttpDeps, options: HttpOptions) {
  const cluster = (request: ClusterRequest): ClusterResponse => {
    switch (request.type) {
      case "hello":
        return deps.membership.receiveHello(request);
      case "presence":
        deps.presence.receiveNotice(request);
        return { v: 1, type: "ok" };
      case "presence_batch":
        for (const notice of request.notices) deps.presence.receiveNotice(notice);
        return { v: 1, type: "ok" };
      case "deliver":
        return deps.sessions.receive(request.to, request.frame)
          ? { v: 1, type: "ok" }
          : { v: 1, type: "error", code: "peer_offline", message: `${request.to} is offline` };
      case "deliver_batch":
        return {
          v: 1,
          type: "deliver_results",
          delivered: request.items.map((item) => deps.sessions.receive(item.to, item.frame)),
        };
    }
  };
  const extraOrigins = (options.allowedOrigins ?? []).map((u) => new URL(u).origin);
  /**
   * The ring's servers' origins (their addresses and browser URLs) and the configured ones: who
   * may load the PWA and use it.
   */
  const knownOrigins = () => [
    ...new Set([
      ...deps.membership.knownServers().map((u) => new URL(u).origin),
      ...deps.membership.knownBrowserUrls().map((u) => new URL(u).origin),
      ...extraOrigins,
    ]),
  ];
  let links = 0;
  const handler = async (req: Request, info?: Deno.ServeHandlerInfo): Promise<Response> => {
    const url = new URL(req.url);
    if (url.pathname === LINK_PATH) {
      // Another server's persistent link (see link.ts); each request on it is signed as over
      // HTTP. A browser page never needs one: a request with an Origin is refused.
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket" || req.headers.has("origin")) {
        return new Response("Links are for servers of the cluster", { status: 403 });
      }
      if (links >= MAX_LINKS) {
        return new Response("Too many links: use plain requests", { status: 503 });
      }
      const upgraded = deps.upgrade?.(req, {
        maxMessageBytes: LINK_MAX_FRAME_BYTES,
        maxBufferedBytes: LINK_MAX_ANSWER_BYTES,
      });
      if (!upgraded) return new Response("Open the link on a new connection", { status: 426 });
      links++;
      deps.metrics.inc("p2pchat_cluster_links_accepted_total");
      upgraded.socket.onclose = () => links--;
      serveLink(upgraded.socket, {
        paths: LINKED_PATHS,
        handle: (r) => handler(r),
        onInvalid: (reason) => {
          deps.metrics.inc("p2pchat_cluster_rejected_total", { reason: "link", endpoint: "link" });
          deps.signed.log("cluster_link_invalid", { reason });
        },
      });
      return upgraded.response;
    }
    if (url.pathname === "/ws") {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("Expected a WebSocket upgrade", { status: 426 });
      }
      const origin = req.headers.get("origin");
      if (!isAllowedOrigin(origin, req.headers.get("host"), knownOrigins())) {
        deps.metrics.inc("p2pchat_ws_refused_total", { reason: "origin" });
        return new Response(
          `WebSocket from a page at ${origin} refused: only pages of this ring's servers may ` +
            "connect (an operator can add an origin with --allowed-origins)",
          { status: 403, headers: ISOLATION_HEADERS },
        );
      }
      // The TCP peer's address, read before the upgrade consumes the request (a reverse proxy in
      // front would make every client one address for the login limits).
      const remote = info?.remoteAddr;
      const address = remote && "hostname" in remote ? remote.hostname : undefined;
      const full = deps.hub.refusal(address);
      if (full) return new Response(full, { status: 503, headers: ISOLATION_HEADERS });
      // Never `Deno.upgradeWebSocket`: it buffers frames of up to 64 MiB before any check.
      const upgraded = deps.upgrade?.(req);
      if (!upgraded) {
        return new Response("Open the WebSocket on a new connection", {
          status: 426,
          headers: ISOLATION_HEADERS,
        });
      }
      deps.hub.accept(upgraded.socket, address);
      return upgraded.response;
    }
    if (url.pathname === CLUSTER_RPC_PATH && req.method === "POST") {
      return await serveSigned(req, {
        name: "cluster",
        maxBodyBytes: MAX_CLUSTER_BODY,
        parse: parseClusterRequest,
        handle: cluster,
      }, deps.signed);
    }
    if (url.pathname === RING_RPC_PATH && req.method === "POST") {
      return await deps.ring.handleHttp(req);
    }
    if (url.pathname === REPLICATION_RPC_PATH && req.method === "POST") {
      return await deps.replication(req);
    }
    if (url.pathname === LIMITS_RPC_PATH && req.method === "POST") {
      return await deps.limits(req);
    }
    if ((url.pathname === "/ring" || url.pathname === "/metrics") && options.operatorToken) {
      if (!hasOperatorToken(req, options.operatorToken)) {
        return new Response(
          `${url.pathname} is for operators: add ?token=<P2P_OPERATOR_TOKEN> or the header ` +
            "x-operator-token",
          { status: 401, headers: ISOLATION_HEADERS },
        );
      }
    }
    if (url.pathname === "/ring") return Response.json(deps.ring.view());
    if (url.pathname.startsWith("/ring/") && deps.visualizer) {
      const res = await deps.visualizer(req);
      if (res) return res;
    }
    if (url.pathname === "/healthz") {
      return Response.json({
        status: "ok",
        self: deps.membership.self,
        servers: deps.membership.liveServers(),
        suspect: deps.membership.suspectServers(),
        sessions: deps.local.onlineUsernames().length,
      });
    }
    if (url.pathname === "/metrics") {
      deps.ring.exportMetrics();
      return new Response(deps.metrics.render(), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    if (req.method === "GET" || req.method === "HEAD") {
      const headers = pageHeaders({
        connectOrigins: knownOrigins(),
        isTls: options.isTls ?? false,
      });
      const res = await serveStatic(options.distDir, url.pathname, headers);
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
  return handler;
}

/**
 * Whether a WebSocket from a page at `origin` may connect: a page served by this server (under
 * whatever name the browser used: the `Host` it asked for), by another server of the ring, or
 * from a configured origin. No `Origin` means no browser page (a script or a test client), which
 * any client could forge anyway: the check protects users' browsers from other sites' pages.
 */
export function isAllowedOrigin(
  origin: string | null,
  host: string | null,
  allowed: readonly string[],
): boolean {
  if (origin === null) return true;
  let page: URL;
  try {
    page = new URL(origin);
  } catch {
    return false;
  }
  if (host !== null && page.host === host) return true;
  return allowed.includes(page.origin);
}
