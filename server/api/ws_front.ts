/**
 * The public listener. `Deno.upgradeWebSocket` has no size limit (it buffers a frame of up to
 * 64 MiB before the hub sees it, denoland/deno#15809), so the server speaks WebSocket itself:
 * the front owns the public port (TCP, or TLS), reads each connection's first request head with
 * a cap, answers `GET /ws` + `Upgrade: websocket` with its own handshake and frame decoder (see
 * `ws_socket.ts`), and pipes every other connection, bytes unchanged, to the ordinary
 * `Deno.serve` handler listening on a loopback port. That inner server learns the client's real
 * address from the front (a map by the loopback connection's source port, so nothing a client
 * sends can forge it), answers only connections the front made, and never upgrades: a later
 * request on a piped keep-alive connection cannot open an uncapped WebSocket.
 */
import type { ClientSocket } from "./client_hub.ts";
import { acceptKey, isValidKey } from "../../shared/ws_frames.ts";
import { ServerWebSocket } from "./ws_socket.ts";

/**
 * Default largest WebSocket message from a client, in bytes: the hub's limit is 65,536
 * characters of JSON (`MAX_FRAME_BYTES`), which UTF-8 encodes in at most 3 bytes each.
 */
export const DEFAULT_MAX_WS_MESSAGE_BYTES = 3 * 64 * 1024;
/**
 * Paths upgraded by the front itself: browsers' `/ws`, and `/cluster/link`, the persistent links
 * between servers (server/cluster/link.ts; the route checks and caps it).
 */
const UPGRADE_PATHS = ["/ws", "/cluster/link"];
/** Largest request head (request line and headers) the front reads, in bytes. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** How long a new connection may take to send its request head, in ms. */
const HEAD_TIMEOUT_MS = 30_000;
const PIPE_CHUNK = 16 * 1024;

/** The request handler, as `Deno.serve` calls it. */
export type FrontHandler = (req: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;

/** Options of {@link serveWithWsFront}. */
export interface WsFrontOptions {
  port: number;
  hostname: string;
  /** PEM certificate and key: serve TLS (HTTP/1.1 over TLS, `wss:`). */
  tls?: { cert: string; key: string };
  /** Largest message a client may send on `/ws`, in bytes. @default DEFAULT_MAX_WS_MESSAGE_BYTES */
  maxMessageBytes?: number;
  /** Idle time after which the server pings a WebSocket client, in ms. @default 60000 */
  idleTimeoutMs?: number;
  /** Most bytes queued towards one WebSocket client that does not read. @default 16 MiB */
  maxBufferedBytes?: number;
  /** Called when a WebSocket is closed because its client broke the protocol or the cap. */
  onProtocolClose?: (address: string, code: number, reason: string) => void;
}

/** A running front and the inner HTTP server behind it. */
export interface WsFront {
  /** The public address. */
  addr: Deno.NetAddr;
  /**
   * For the `/ws` route: takes over the connection `req` came on as a WebSocket, once the route
   * has admitted it. `undefined` when `req` did not come through the front's own parser (a
   * request piped to the inner server): such a request must be refused, never upgraded. The
   * returned response is a placeholder: the front writes the handshake's 101 itself.
   */
  upgrade(
    req: Request,
    options?: { maxMessageBytes?: number; maxBufferedBytes?: number },
  ): { socket: ClientSocket; response: Response } | undefined;
  shutdown(): Promise<void>;
}

interface Head {
  method: string;
  target: string;
  headers: Headers;
}

/** Starts the inner server on loopback and the front on the public port. */
export async function serveWithWsFront(
  options: WsFrontOptions,
  handler: FrontHandler,
): Promise<WsFront> {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_WS_MESSAGE_BYTES;
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const maxBufferedBytes = options.maxBufferedBytes ?? 16 * 1024 * 1024;
  /** Real client address of each piped connection, by its loopback source port. */
  const peers = new Map<number, Deno.NetAddr>();
  const pending = new WeakMap<Request, { conn: Deno.Conn; socket?: ServerWebSocket }>();
  const conns = new Set<Deno.Conn>();
  const sockets = new Set<ServerWebSocket>();

  let innerReady: (addr: Deno.NetAddr) => void;
  const innerAddr = new Promise<Deno.NetAddr>((r) => innerReady = r);
  const inner = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: (addr) => innerReady(addr as Deno.NetAddr),
  }, (req, info) => {
    const remote = info.remoteAddr;
    const peer = peers.get(remote.port);
    if (!peer) {
      return Promise.resolve(
        new Response("Connect through the server's public address", { status: 403 }),
      );
    }
    return handler(req, { ...info, remoteAddr: peer });
  });
  const innerPort = (await innerAddr).port;

  let listener: Deno.Listener;
  try {
    listener = options.tls
      ? Deno.listenTls({
        port: options.port,
        hostname: options.hostname,
        cert: options.tls.cert,
        key: options.tls.key,
        // The front reads HTTP/1.1 request heads: no HTTP/2.
        alpnProtocols: ["http/1.1"],
      })
      : Deno.listen({ port: options.port, hostname: options.hostname });
  } catch (err) {
    await inner.shutdown();
    throw err;
  }
  const scheme = options.tls ? "https" : "http";
  const addr = listener.addr as Deno.NetAddr;

  const pipe = async (client: Deno.Conn, first: Uint8Array, peer: Deno.NetAddr) => {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: innerPort });
    } catch {
      return await respond(client, 503, "Server busy: try again");
    }
    const port = server.localAddr.port;
    peers.set(port, peer);
    conns.add(server);
    const closeBoth = () => {
      for (const c of [client, server]) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
    };
    try {
      await writeAll(server, first);
      await Promise.all([
        // The client finished sending: let the server finish answering.
        copy(client, server).then(() => server.closeWrite()),
        // The server is done with the connection: so is the client.
        copy(server, client).then(closeBoth),
      ]);
    } catch {
      // A reset on either side.
    } finally {
      closeBoth();
      peers.delete(port);
      conns.delete(server);
    }
  };

  const upgradeConnection = async (
    conn: Deno.Conn,
    head: Head,
    rest: Uint8Array,
    peer: Deno.NetAddr,
  ): Promise<boolean> => {
    const { headers } = head;
    if (headers.get("sec-websocket-version") !== "13") {
      await respond(conn, 426, "WebSocket version 13 required", {
        "sec-websocket-version": "13",
      });
      return false;
    }
    const key = headers.get("sec-websocket-key") ?? "";
    if (!isValidKey(key) || !hasToken(headers.get("connection"), "upgrade")) {
      await respond(conn, 400, "Not a valid WebSocket handshake");
      return false;
    }
    let req: Request;
    try {
      const self = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
      const host = headers.get("host") ?? `${self}:${addr.port}`;
      req = new Request(`${scheme}://${host}${head.target}`, { method: "GET", headers });
    } catch {
      await respond(conn, 400, "Bad request target or Host");
      return false;
    }
    const entry: { conn: Deno.Conn; socket?: ServerWebSocket } = { conn };
    pending.set(req, entry);
    let res: Response;
    try {
      res = await handler(req, { remoteAddr: peer, completed: Promise.resolve() });
    } catch (err) {
      entry.socket?.destroy();
      throw err;
    } finally {
      pending.delete(req);
    }
    const socket = entry.socket;
    if (!socket) {
      await respond(conn, res.status, await res.text(), res.headers);
      return false;
    }
    const accept = await acceptKey(key);
    socket.start(
      new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
      ),
      rest,
    );
    return true;
  };

  const serveConnection = async (conn: Deno.Conn) => {
    conns.add(conn);
    // Small answers go out at once (Nagle's algorithm would hold one back while an earlier one
    // is unacknowledged: 40 ms stalls for requests pipelined on one connection).
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    let upgraded = false;
    try {
      const peer = conn.remoteAddr as Deno.NetAddr;
      const read = await readHead(conn);
      if (read === "too_large") {
        return await respond(conn, 431, `Request head over ${MAX_HEAD_BYTES} bytes`);
      }
      if (!read) return;
      const head = parseHead(read.head);
      if (head && isWebSocketRequest(head)) {
        upgraded = await upgradeConnection(conn, head, read.rest, peer);
        return;
      }
      // Everything else, well formed or not, is the inner server's to answer.
      await pipe(conn, concat(read.head, read.rest), peer);
    } catch {
      // A reset, a TLS failure: nothing to answer.
    } finally {
      if (!upgraded) {
        conns.delete(conn);
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    }
  };

  let stopping = false;
  const acceptLoop = (async () => {
    while (!stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (stopping || err instanceof Deno.errors.BadResource) return;
        // Out of file descriptors, say: keep serving those already connected, retry soon.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      serveConnection(conn);
    }
  })();

  return {
    addr,
    upgrade(req, upgradeOptions) {
      const entry = pending.get(req);
      if (!entry || entry.socket) return undefined;
      const socket = new ServerWebSocket(entry.conn, {
        maxMessageBytes: upgradeOptions?.maxMessageBytes ?? maxMessageBytes,
        idleTimeoutMs,
        maxBufferedBytes: upgradeOptions?.maxBufferedBytes ?? maxBufferedBytes,
        onEnd: () => {
          sockets.delete(socket);
          conns.delete(entry.conn);
        },
        onProtocolClose: (code, reason) =>
          options.onProtocolClose?.(
            (entry.conn.remoteAddr as Deno.NetAddr).hostname,
            code,
            reason,
          ),
      });
      entry.socket = socket;
      sockets.add(socket);
      return { socket, response: new Response(null, { status: 204 }) };
    },
    async shutdown() {
      stopping = true;
      try {
        listener.close();
      } catch { /* already closed */ }
      await acceptLoop;
      for (const socket of sockets) socket.close(1001, "Server shutting down");
      await inner.shutdown();
      for (const socket of sockets) socket.destroy();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

/**
 * Reads up to the end of the request head: `undefined` when the connection ends (or stalls)
 * before it, `"too_large"` past {@link MAX_HEAD_BYTES}.
 */
async function readHead(
  conn: Deno.Conn,
): Promise<{ head: Uint8Array; rest: Uint8Array } | "too_large" | undefined> {
  const buffer = new Uint8Array(MAX_HEAD_BYTES);
  let length = 0;
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* already closed */ }
  }, HEAD_TIMEOUT_MS);
  try {
    while (length < buffer.length) {
      const n = await conn.read(buffer.subarray(length));
      if (n === null) return undefined;
      const from = Math.max(0, length - 3);
      length += n;
      const end = indexOfHeadEnd(buffer, from, length);
      if (end >= 0) {
        return { head: buffer.slice(0, end), rest: buffer.slice(end, length) };
      }
    }
    return "too_large";
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Index just past the first CRLFCRLF in `buffer[from, to)`, or -1. */
function indexOfHeadEnd(buffer: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (
      buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10
    ) return i + 4;
  }
  return -1;
}

/** Parses a request head; `undefined` when it is not one the front can read. */
export function parseHead(bytes: Uint8Array): Head | undefined {
  const lines = new TextDecoder().decode(bytes).split("\r\n");
  const request = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? "");
  if (!request) return undefined;
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) return undefined;
    try {
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    } catch {
      return undefined;
    }
  }
  return { method: request[1]!, target: request[2]!, headers };
}

/** Whether the front answers this request itself: a WebSocket upgrade of `/ws`. */
export function isWebSocketRequest(head: Head): boolean {
  const path = head.target.split("?")[0];
  return head.method === "GET" && UPGRADE_PATHS.includes(path ?? "") &&
    hasToken(head.headers.get("upgrade"), "websocket");
}

/** Whether a comma-separated header value holds `token` (case-insensitive). */
function hasToken(value: string | null, token: string): boolean {
  return (value ?? "").split(",").some((t) => t.trim().toLowerCase() === token);
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

/** Writes a whole response with `Connection: close` (the caller then closes). */
async function respond(
  conn: Deno.Conn,
  status: number,
  body: string,
  headers: HeadersInit = {},
): Promise<void> {
  const bytes = new TextEncoder().encode(body);
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n`;
  for (const [name, value] of new Headers(headers)) {
    if (["content-length", "transfer-encoding", "connection"].includes(name)) continue;
    head += `${name}: ${value}\r\n`;
  }
  if (!new Headers(headers).has("content-type")) head += "content-type: text/plain\r\n";
  head += `content-length: ${bytes.length}\r\nconnection: close\r\n\r\n`;
  try {
    await writeAll(conn, concat(new TextEncoder().encode(head), bytes));
  } catch { /* the client left */ }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

/** Copies `from` to `to` until `from` ends. */
async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(PIPE_CHUNK);
  while (true) {
    const n = await from.read(buffer);
    if (n === null) return;
    await writeAll(to, buffer.subarray(0, n));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
