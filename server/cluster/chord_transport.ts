/**
 * The real transport of the CHORD ring between server processes: each ring RPC is a signed HTTP
 * POST to `<node>/ring/rpc` (HMAC over the cluster secret, as for cluster RPC), validated on both
 * ends by the ring's own parsers. A node without the cluster secret can neither call nor answer.
 */
import {
  type ChordRequest,
  type ChordRequestHandler,
  type ChordResponse,
  ChordTransportError,
  type IdSpace,
  type NodeAddress,
  parseChordRequest,
  parseChordResponse,
  type Transport,
} from "../chord/mod.ts";
import type { ClusterKey } from "./cluster_key.ts";
import { serveSigned, signedPost, SignedPostError } from "./rpc.ts";

/** Path of the ring RPC endpoint on every server. */
export const RING_RPC_PATH = "/ring/rpc";
const MAX_BODY = 256 * 1024;

/** Configuration of an {@link HttpChordTransport}. */
export interface HttpChordTransportOptions {
  /** This server's base URL. */
  self: string;
  /** Timeout of one attempt, in ms. @default 1500 */
  timeoutMs?: number;
  /** Further attempts after a timeout or connection failure. @default 1 */
  retries?: number;
}

/** Counts what the transport sees, for `/metrics`. */
export interface TransportCounters {
  inc(name: string, labels?: Record<string, string>): void;
}

/** Where the transport reports refused requests. */
export type TransportLog = (event: string, fields?: Record<string, unknown>) => void;

/** Ring RPC over signed HTTP between server processes. */
export class HttpChordTransport implements Transport {
  readonly localAddress: NodeAddress;
  #key: ClusterKey;
  #space: IdSpace;
  #counters: TransportCounters;
  #log: TransportLog;
  #timeoutMs: number;
  #retries: number;
  #isSuspect: (address: string) => boolean;
  #handler: ChordRequestHandler | undefined;

  /** Creates the transport; requests are served through {@link handleHttp}. */
  constructor(
    deps: {
      key: ClusterKey;
      space: IdSpace;
      counters: TransportCounters;
      log?: TransportLog;
      /**
       * Whether a peer missed its last membership hello: ring RPC to it then fails at once
       * (reason "suspect"), so the ring routes around a frozen server as soon as it is
       * suspected instead of after RPC timeouts. @default never
       */
      isSuspect?: (address: string) => boolean;
    },
    options: HttpChordTransportOptions,
  ) {
    this.localAddress = options.self;
    this.#key = deps.key;
    this.#space = deps.space;
    this.#counters = deps.counters;
    this.#log = deps.log ?? (() => {});
    this.#timeoutMs = options.timeoutMs ?? 1500;
    this.#retries = options.retries ?? 1;
    this.#isSuspect = deps.isSuspect ?? (() => false);
  }

  async call(to: NodeAddress, request: ChordRequest): Promise<ChordResponse> {
    const body = JSON.stringify({ from: this.localAddress, request });
    let lastError: ChordTransportError | undefined;
    if (this.#isSuspect(to)) {
      this.#counters.inc("p2pchat_ring_rpc_failures_total", { reason: "suspect" });
      throw new ChordTransportError(
        "unreachable",
        to,
        `Ring RPC ${request.type} to ${to} not sent: it missed its last hello`,
      );
    }
    for (let attempt = 0; attempt <= this.#retries; attempt++) {
      let status: number;
      let text: string;
      try {
        ({ status, text } = await signedPost(
          this.#key,
          to + RING_RPC_PATH,
          body,
          this.#timeoutMs,
        ));
      } catch (err) {
        const failure = err instanceof SignedPostError ? err.failure : "unreachable";
        this.#counters.inc("p2pchat_ring_rpc_failures_total", { reason: failure });
        lastError = new ChordTransportError(
          failure === "timeout"
            ? "timeout"
            : failure === "rejected"
            ? "remote_error"
            : "unreachable",
          to,
          `Ring RPC ${request.type} to ${to} failed: ${(err as Error).message}`,
        );
        // Not retried when rejected, nor once the peer is suspect (a frozen server).
        if (failure === "rejected" || this.#isSuspect(to)) break;
        continue;
      }
      if (status !== 200) {
        this.#counters.inc("p2pchat_ring_rpc_failures_total", { reason: "remote_error" });
        throw new ChordTransportError(
          "remote_error",
          to,
          `Ring RPC ${request.type} to ${to}: HTTP ${status} ${text.slice(0, 200)}`,
        );
      }
      try {
        return parseChordResponse(JSON.parse(text), this.#space);
      } catch (err) {
        this.#counters.inc("p2pchat_ring_rpc_failures_total", { reason: "invalid_response" });
        throw new ChordTransportError(
          "remote_error",
          to,
          `Invalid ring response from ${to}: ${(err as Error).message}`,
        );
      }
    }
    throw lastError!;
  }

  listen(handler: ChordRequestHandler): void {
    this.#handler = handler;
  }

  close(): void {
    this.#handler = undefined;
  }

  /** Serves `POST /ring/rpc`: authenticates, validates, hands the request to the ring node. */
  handleHttp(req: Request): Promise<Response> {
    const handler = this.#handler;
    if (!handler) {
      return Promise.resolve(
        Response.json({
          v: 1,
          type: "error",
          code: "unavailable",
          message: "Ring node not running",
        }, {
          status: 503,
        }),
      );
    }
    return serveSigned(req, {
      name: "ring",
      maxBodyBytes: MAX_BODY,
      parse: (text) => {
        const envelope = JSON.parse(text) as { from?: unknown; request?: unknown };
        if (typeof envelope.from !== "string" || envelope.from.length > 300) {
          throw new SyntaxError('Invalid field "from": expected the caller\'s base URL');
        }
        return { from: envelope.from, request: parseChordRequest(envelope.request, this.#space) };
      },
      handle: async ({ from, request }): Promise<ChordResponse> => {
        try {
          // Our own node's answer is validated too: a peer never receives garbage from us.
          return parseChordResponse(await handler(request, from), this.#space);
        } catch (err) {
          return { v: 1, type: "error", code: "bad_response", message: (err as Error).message };
        }
      },
    }, { key: this.#key, metrics: this.#counters, log: this.#log });
  }
}
