/**
 * Persistent links between servers. A signed POST (see rpc.ts) costs, over HTTP, a request through
 * `fetch`, the peer's front piping the bytes to its inner HTTP server, and the answer back the
 * same way: under bench:store that machinery was a fifth of each server's time. A link is one
 * WebSocket per peer (`GET /cluster/link`), opened on the first call and kept, that carries the
 * same signed requests and answers, many at once, matched by id: the headers that HTTP would
 * carry, the body, the status and the response signature — signed and checked exactly as over
 * HTTP (the link itself proves nothing: anyone may open one, and each request still needs the
 * cluster secret). Whatever a link cannot carry goes by `fetch` as before: a body over
 * {@link LINK_MAX_BODY_CHARS}, a path not linked, a peer that refuses links (an older version,
 * too many links) or cannot be reached at all (then `fetch` tells the real reason).
 *
 * Frames (text): a JSON header line, `\n`, then the body as is. Request header
 * `{"id", "path", "headers"}`; answer header `{"id", "status", "signature"}`.
 *
 * The link's client side is its own small WebSocket client over a TCP (or TLS) connection with
 * Nagle's algorithm off: `WebSocket` of the runtime leaves it on, and requests pipelined on one
 * connection then wait for the acknowledgement of the one before (measured: 5 ms answers took
 * 13 ms with 20 requests in flight, 6.6 ms without Nagle).
 */
import {
  acceptKey,
  CLOSE,
  closePayload,
  encodeFrame,
  FrameDecoder,
  OP,
} from "../../shared/ws_frames.ts";
import { takeJoined } from "../../shared/bytes.ts";

/** The server side of an accepted link, as the front's WebSocket gives it. */
export interface LinkServerSocket {
  readonly isOpen: boolean;
  send(text: string): void;
  close(code: number, reason: string): void;
  onmessage: ((event: { data: string | Uint8Array }) => void) | null;
}

/** Path of the link endpoint. */
export const LINK_PATH = "/cluster/link";
/** Longest body a link carries, in characters; a longer one goes by `fetch`. */
export const LINK_MAX_BODY_CHARS = 1024 * 1024;
/** Largest link frame a server accepts, in bytes (a body of UTF-8, plus its header). */
export const LINK_MAX_FRAME_BYTES = 3 * LINK_MAX_BODY_CHARS + 16 * 1024;
/**
 * Largest answer a link takes, in bytes. Answers are not bounded by the request's size (a fetch of
 * a flooded mailbox answers megabytes, as it did over HTTP), so a server may queue this much on a
 * link, and a caller reads up to this.
 */
export const LINK_MAX_ANSWER_BYTES = 256 * 1024 * 1024;
/** How long a peer that refused a link (or could not open one) is sent `fetch` instead, in ms. */
const NO_LINK_MS = 30_000;
/** A link unused this long is closed, in ms. */
const IDLE_MS = 5 * 60_000;
/** Past this many bytes waiting to be sent on a link (a peer that does not read), use `fetch`. */
const MAX_BUFFERED = 8 * 1024 * 1024;
/** Headers a link request carries (the signed request's). */
const HEADER_NAMES = ["x-p2p-from", "x-p2p-to", "x-p2p-time", "x-p2p-nonce", "x-p2p-signature"];

/** A call on a link got no answer in time. */
export class LinkTimeoutError extends Error {
  override name = "LinkTimeoutError";
}

/** The link closed (or could not be used) before the answer came. */
export class LinkClosedError extends Error {
  override name = "LinkClosedError";
}

/** A signed answer as it came over a link. */
export interface LinkAnswer {
  status: number;
  /** The `x-p2p-response-signature` it carried ("" when none). */
  signature: string;
  text: string;
}

interface Waiting {
  resolve: (answer: LinkAnswer) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type OpenResult = "open" | "refused" | "unreachable";

/** Longest handshake answer head read, in bytes. */
const MAX_HANDSHAKE_HEAD = 16 * 1024;
/** Most bytes of queued frames joined into one write. */
const WRITE_CHUNK = 64 * 1024;
const encoder = new TextEncoder();

/**
 * The client end of one link: TCP (or TLS) with Nagle off, the RFC 6455 handshake, masked text
 * frames out, the server's frames in. Calls `onText` for each text message and `onEnd` once.
 */
class LinkConnection {
  #conn: Deno.Conn | undefined;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #closed = false;
  onText: (text: string) => void = () => {};
  onEnd: () => void = () => {};
  /** When the peer last sent anything (performance.now()). */
  lastHeard = performance.now();

  /** Bytes waiting to be written. */
  get buffered(): number {
    return this.#queued;
  }

  get isOpen(): boolean {
    return this.#conn !== undefined && !this.#closed;
  }

  /**
   * Connects and shakes hands: "open", "refused" (it answered, but not with a link: an older
   * server, too many links) or "unreachable" (no connection, or it ended during the handshake).
   */
  async open(url: URL): Promise<OpenResult> {
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
    let conn: Deno.Conn;
    try {
      conn = url.protocol === "https:"
        ? await Deno.connectTls({ hostname, port })
        : await Deno.connect({ hostname, port });
    } catch {
      this.#end();
      return "unreachable";
    }
    if (this.#closed) {
      conn.close();
      return "unreachable";
    }
    this.#conn = conn;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    try {
      const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
      await this.#writeAll(encoder.encode(
        `GET ${LINK_PATH} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ));
      const { head, rest } = await this.#readHead();
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
      if (!/^HTTP\/1\.1 101 /.test(head) || accept !== await acceptKey(key)) {
        this.close();
        return "refused";
      }
      void this.#readLoop(rest);
      return "open";
    } catch {
      this.close();
      return "unreachable";
    }
  }

  send(text: string): void {
    if (!this.isOpen) throw new Error("the link is closed");
    this.#write(encodeFrame(OP.text, encoder.encode(text), mask()));
  }

  close(): void {
    if (this.#closed) return;
    if (this.#conn) {
      try {
        // A close frame if it can go at once; the connection ends either way.
        this.#conn.write(encodeFrame(OP.close, closePayload(CLOSE.normal, ""), mask()))
          .catch(() => {});
      } catch { /* closed */ }
    }
    this.#end();
  }

  async #readHead(): Promise<{ head: string; rest: Uint8Array }> {
    const buffer = new Uint8Array(MAX_HANDSHAKE_HEAD);
    let length = 0;
    while (length < buffer.length) {
      const n = await this.#conn!.read(buffer.subarray(length));
      if (n === null) throw new Error("closed during the handshake");
      length += n;
      for (let i = Math.max(0, length - n - 3); i + 3 < length; i++) {
        if (
          buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10
        ) {
          return {
            head: new TextDecoder().decode(buffer.subarray(0, i + 4)),
            rest: buffer.slice(i + 4, length),
          };
        }
      }
    }
    throw new Error("handshake answer too long");
  }

  async #readLoop(rest: Uint8Array): Promise<void> {
    const decoder = new FrameDecoder({
      maxMessageBytes: LINK_MAX_ANSWER_BYTES,
      requireMask: false,
    });
    const buffer = new Uint8Array(64 * 1024);
    try {
      let chunk: Uint8Array | null = rest;
      while (!this.#closed) {
        if (chunk.length) {
          for (const frame of decoder.push(chunk)) {
            if (frame.type === "message") {
              if (typeof frame.data === "string") this.onText(frame.data);
            } else if (frame.type === "ping") {
              this.#write(encodeFrame(OP.pong, frame.payload, mask()));
            } else if (frame.type === "close") {
              return this.#end();
            }
          }
        }
        const n = await this.#conn!.read(buffer);
        if (n === null) break;
        this.lastHeard = performance.now();
        chunk = buffer.subarray(0, n);
      }
    } catch {
      // A broken frame (WsCloseError) or a reset: the link is over, its calls fail.
    }
    this.#end();
  }

  #write(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queued += frame.length;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#writing) return;
    this.#writing = true;
    try {
      while (this.#queue.length && !this.#closed) {
        const chunk = takeJoined(this.#queue, WRITE_CHUNK);
        this.#queued -= chunk.length;
        await this.#writeAll(chunk);
      }
    } catch {
      this.#end();
    } finally {
      this.#writing = false;
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.#conn!.write(bytes.subarray(at));
  }

  #end(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#queued = 0;
    try {
      this.#conn?.close();
    } catch { /* closed */ }
    this.onEnd();
  }
}

/** A fresh frame mask (a client masks every frame, RFC 6455 §5.3). */
function mask(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(4));
}

/** One open (or opening) link to one peer: calls matched to answers by id. */
class Link {
  readonly opened: Promise<OpenResult>;
  lastUsed: number;
  #connection = new LinkConnection();
  #waiting = new Map<number, Waiting>();
  #nextId = 1;
  #closed = false;
  #retired = false;
  #onRetire: () => void;

  /** `onRetire`: the pool must stop handing out this link (it ended, or went silent). */
  constructor(url: URL, now: number, onRetire: () => void) {
    this.lastUsed = now;
    this.#onRetire = onRetire;
    this.#connection.onText = (text) => this.#answer(text);
    this.#connection.onEnd = () => this.#end();
    this.opened = this.#connection.open(url);
  }

  get isOpen(): boolean {
    return !this.#closed && this.#connection.isOpen;
  }

  get buffered(): number {
    return this.#connection.buffered;
  }

  call(path: string, headers: Record<string, string>, body: string, timeoutMs: number) {
    const id = this.#nextId++;
    return new Promise<LinkAnswer>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new LinkTimeoutError(`no answer within ${timeoutMs} ms`));
        // Nothing at all came back while this call waited: the peer may be gone without a word
        // (a partition, a machine that died). New calls get a new link; this one ends once the
        // calls still on it are done.
        if (performance.now() - this.#connection.lastHeard >= timeoutMs) this.#retire();
        this.#closeIfRetiredAndIdle();
      }, timeoutMs);
      this.#waiting.set(id, { resolve, reject, timer });
      try {
        this.#connection.send(`${JSON.stringify({ id, path, headers })}\n${body}`);
      } catch (err) {
        this.#waiting.delete(id);
        clearTimeout(timer);
        reject(new LinkClosedError(`link closed: ${(err as Error).message}`));
      }
    });
  }

  close(): void {
    this.#connection.close();
  }

  #retire(): void {
    if (this.#retired) return;
    this.#retired = true;
    this.#onRetire();
  }

  #closeIfRetiredAndIdle(): void {
    if (this.#retired && this.#waiting.size === 0) this.close();
  }

  #answer(data: string): void {
    const cut = data.indexOf("\n");
    let head: { id?: unknown; status?: unknown; signature?: unknown };
    try {
      head = JSON.parse(cut < 0 ? data : data.slice(0, cut));
    } catch {
      return this.close(); // not a server of ours: its waiting calls fail as closed
    }
    const waiting = typeof head.id === "number" ? this.#waiting.get(head.id) : undefined;
    if (!waiting || cut < 0) return; // a late answer, after its call timed out
    this.#waiting.delete(head.id as number);
    clearTimeout(waiting.timer);
    this.#closeIfRetiredAndIdle();
    waiting.resolve({
      status: typeof head.status === "number" ? head.status : 0,
      signature: typeof head.signature === "string" ? head.signature : "",
      text: data.slice(cut + 1),
    });
  }

  #end(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new LinkClosedError("the link closed before the answer came"));
    }
    this.#waiting.clear();
    this.#retire();
  }
}

/** Options of a {@link LinkPool}. */
export interface LinkPoolOptions {
  /** Paths whose signed POSTs may travel over links. */
  paths: readonly string[];
  /** The clock, in ms. @default Date.now */
  now?: () => number;
  /** Where calls over links and calls sent by `fetch` instead are counted. */
  metrics?: { inc(name: string, labels?: Record<string, string>, by?: number): void };
}

/** This server's links to its peers, one per peer origin, opened on first use. */
export class LinkPool {
  #paths: Set<string>;
  #now: () => number;
  #links = new Map<string, Link>();
  #noLinkUntil = new Map<string, number>();
  #metrics: LinkPoolOptions["metrics"];

  /** Creates an empty pool. */
  constructor(options: LinkPoolOptions) {
    this.#paths = new Set(options.paths);
    this.#now = options.now ?? Date.now;
    this.#metrics = options.metrics;
  }

  #byFetch(reason: string): undefined {
    this.#metrics?.inc("p2pchat_cluster_link_fallbacks_total", { reason });
    return undefined;
  }

  /**
   * Sends a signed POST (its `x-p2p-*` headers and body) to `url` over the peer's link, opening
   * one if needed. Resolves `undefined` when no link can carry it (send it by `fetch`); rejects
   * with {@link LinkTimeoutError} or {@link LinkClosedError} when a link took it and failed.
   */
  async post(
    url: string,
    headers: Record<string, string>,
    body: string,
    timeoutMs: number,
  ): Promise<LinkAnswer | undefined> {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      return undefined;
    }
    if (!this.#paths.has(target.pathname)) return undefined;
    if (body.length > LINK_MAX_BODY_CHARS) return this.#byFetch("size");
    const origin = target.origin;
    const now = this.#now();
    if ((this.#noLinkUntil.get(origin) ?? 0) > now) return this.#byFetch("refused");
    this.#closeIdle(now);
    let link = this.#links.get(origin);
    if (!link) {
      const opening: Link = new Link(target, now, () => {
        if (this.#links.get(origin) === opening) this.#links.delete(origin);
      });
      link = opening;
      this.#links.set(origin, link);
    }
    link.lastUsed = now;
    if (!link.isOpen) {
      const started = this.#now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), timeoutMs));
      const opened = await Promise.race([link.opened, late]);
      clearTimeout(timer);
      if (opened === "late") {
        // A peer that does not finish a handshake in time would not answer `fetch` either; the
        // next call tries a new link.
        if (this.#links.get(origin) === link) this.#links.delete(origin);
        link.close();
        throw new LinkTimeoutError(`no answer within ${timeoutMs} ms`);
      }
      if (opened === "refused") this.#noLinkUntil.set(origin, this.#now() + NO_LINK_MS);
      // Refused (an older server, too many links) or unreachable: `fetch` says which.
      if (opened !== "open" || !link.isOpen) {
        return this.#byFetch(opened === "open" ? "unreachable" : opened);
      }
      timeoutMs = Math.max(1, timeoutMs - (this.#now() - started));
    }
    if (link.buffered > MAX_BUFFERED) return this.#byFetch("backlog");
    const sent: Record<string, string> = {};
    for (const name of HEADER_NAMES) {
      const value = headers[name];
      if (value !== undefined) sent[name] = value;
    }
    this.#metrics?.inc("p2pchat_cluster_link_calls_total");
    return await link.call(target.pathname, sent, body, timeoutMs);
  }

  /** Closes every link. */
  close(): void {
    for (const link of this.#links.values()) link.close();
    this.#links.clear();
  }

  #closeIdle(now: number): void {
    for (const [origin, link] of this.#links) {
      if (now - link.lastUsed > IDLE_MS) {
        this.#links.delete(origin);
        link.close();
      }
    }
  }
}

/** Options of {@link serveLink}. */
export interface ServeLinkOptions {
  /** Paths a link request may name (the signed endpoints). */
  paths: readonly string[];
  /** Answers one request as the HTTP server would (routing, `serveSigned`). */
  handle: (req: Request) => Promise<Response>;
  /** Told when the peer broke the link protocol (the link is then closed). */
  onInvalid?: (reason: string) => void;
}

/**
 * Serves one accepted link: each frame is turned into the POST it stands for and answered by
 * `handle`, answers in any order. A frame that is not a well-formed link request closes the
 * link (1008): a server of the cluster never sends one.
 */
export function serveLink(socket: LinkServerSocket, options: ServeLinkOptions): void {
  const paths = new Set(options.paths);
  const invalid = (reason: string) => {
    options.onInvalid?.(reason);
    socket.close(1008, reason);
  };
  socket.onmessage = ({ data }) => {
    // Nothing a peer sends may escape as an unhandled rejection (that would end the process).
    answer(data).catch((err) => invalid(`unreadable request: ${String(err).slice(0, 100)}`));
  };
  const answer = async (data: string | Uint8Array) => {
    if (typeof data !== "string") return invalid("link frames are text");
    const cut = data.indexOf("\n");
    if (cut < 0) return invalid("a link frame is a header line and a body");
    let head: { id?: unknown; path?: unknown; headers?: unknown };
    try {
      head = JSON.parse(data.slice(0, cut));
    } catch {
      return invalid("the header line is not JSON");
    }
    const { id, path } = head;
    const given = head.headers;
    if (!Number.isSafeInteger(id) || (id as number) < 0) return invalid("bad request id");
    if (typeof path !== "string" || !paths.has(path)) return invalid("not a linked path");
    if (typeof given !== "object" || given === null || Array.isArray(given)) {
      return invalid("bad headers");
    }
    const headers = new Headers({ "content-type": "application/json" });
    for (const [name, value] of Object.entries(given)) {
      if (
        !HEADER_NAMES.includes(name) || typeof value !== "string" || value.length > 1024 ||
        !/^[\x20-\x7e]*$/.test(value)
      ) {
        return invalid(`bad header ${name.slice(0, 40)}`);
      }
      headers.set(name, value);
    }
    const body = data.slice(cut + 1);
    let res: Response;
    try {
      res = await options.handle(
        new Request(`http://link${path}`, { method: "POST", headers, body }),
      );
    } catch {
      res = new Response("Internal error", { status: 500 });
    }
    const text = await res.text();
    if (!socket.isOpen) return;
    const signature = res.headers.get("x-p2p-response-signature") ?? "";
    socket.send(`${JSON.stringify({ id, status: res.status, signature })}\n${text}`);
  };
}
