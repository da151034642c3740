/**
 * The HTTP transport of server ↔ server RPC: a POST whose body is signed with the cluster secret
 * (headers `x-p2p-time` and `x-p2p-signature` over time + body). {@link signedPost} sends one;
 * {@link serveSigned} serves every signed endpoint (cluster, ring, replication) the same way:
 * the body is read up to a size limit, requests older than the allowed skew, unsigned or wrongly
 * signed are rejected before parsing, and every refusal is a typed error body.
 */
import {
  type ClusterRequest,
  type ClusterResponse,
  type ErrorCode,
  parseClusterResponse,
  ProtocolError,
} from "../../shared/mod.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import type { Hmac } from "./hmac.ts";

/** Path of the cluster RPC endpoint on every server. */
export const CLUSTER_RPC_PATH = "/cluster/rpc";
/** Largest accepted clock difference between two servers, in milliseconds. */
export const MAX_CLOCK_SKEW_MS = 60_000;

/** A peer could not be reached or answered with something other than a valid response. */
export class PeerUnreachableError extends Error {
  override name = "PeerUnreachableError";
  /** Creates the error for `address`. */
  constructor(readonly address: string, reason: string) {
    super(`Cannot reach server ${address}: ${reason}`);
  }
}

/** Why a signed POST failed: no answer in time, no connection, or an answer we refuse. */
export type SignedPostFailure = "timeout" | "unreachable" | "rejected";

/** A signed POST did not produce a usable answer. */
export class SignedPostError extends Error {
  override name = "SignedPostError";
  /** Creates the error. */
  constructor(readonly failure: SignedPostFailure, message: string) {
    super(message);
  }
}

/**
 * POSTs `body` to `url`, signed with the cluster secret, and returns the response text. Throws
 * {@link SignedPostError}: "rejected" when the peer refuses our signature (HTTP 401).
 */
export async function signedPost(
  hmac: Hmac,
  url: string,
  body: string,
  timeoutMs: number,
): Promise<{ status: number; text: string }> {
  const time = String(Date.now());
  const signature = await hmac.sign(`${time}\n${body}`);
  try {
    const res = await fetch(url, {
      method: "POST",
      body,
      headers: {
        "content-type": "application/json",
        "x-p2p-time": time,
        "x-p2p-signature": signature,
      },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (res.status === 401) throw new SignedPostError("rejected", "cluster secret rejected");
    return { status: res.status, text };
  } catch (err) {
    if (err instanceof SignedPostError) throw err;
    const isTimeout = err instanceof DOMException && err.name === "TimeoutError";
    throw new SignedPostError(
      isTimeout ? "timeout" : "unreachable",
      isTimeout ? `no answer within ${timeoutMs} ms` : (err as Error).message,
    );
  }
}

/** Sends one signed cluster request to `address` and returns its validated response. */
export async function callPeer(
  hmac: Hmac,
  address: string,
  request: ClusterRequest,
  timeoutMs: number,
): Promise<ClusterResponse> {
  let text: string;
  try {
    ({ text } = await signedPost(
      hmac,
      address + CLUSTER_RPC_PATH,
      JSON.stringify(request),
      timeoutMs,
    ));
  } catch (err) {
    throw new PeerUnreachableError(address, (err as Error).message);
  }
  try {
    return parseClusterResponse(text);
  } catch (err) {
    throw new PeerUnreachableError(address, `invalid response: ${(err as Error).message}`);
  }
}

/** Checks the signature headers of an incoming request against its body. */
async function isAuthentic(hmac: Hmac, headers: Headers, body: string): Promise<boolean> {
  const time = headers.get("x-p2p-time");
  const signature = headers.get("x-p2p-signature");
  if (!time || !signature || !/^\d{1,16}$/.test(time)) return false;
  if (Math.abs(Date.now() - Number(time)) > MAX_CLOCK_SKEW_MS) return false;
  return await hmac.verify(`${time}\n${body}`, signature);
}

/** The body of every refusal of a signed endpoint. */
export interface SignedErrorBody {
  v: 1;
  type: "error";
  code: ErrorCode;
  message: string;
}

/** How one signed endpoint is served by {@link serveSigned}. */
export interface SignedEndpoint<Req, Res> {
  /** Names the endpoint in logs and metrics ("cluster", "ring", "replication"). */
  name: string;
  /** Largest accepted body, in bytes. */
  maxBodyBytes: number;
  /** Validates the body text; throws (a `ProtocolError` ideally) on anything invalid. */
  parse(text: string): Req;
  /** Answers a valid, authenticated request. */
  handle(request: Req): Res | Promise<Res>;
}

/** Collaborators of {@link serveSigned}. */
export interface ServeSignedDeps {
  hmac: Hmac;
  /** Where refusals are counted (the server's `Metrics` satisfies it). */
  metrics: Pick<Metrics, "inc">;
  log: Log;
}

/**
 * Serves a signed POST: reads at most `maxBodyBytes` (413 past it, without buffering the rest),
 * checks the signature (401), parses (400), then answers with `handle`'s result as JSON. Every
 * refusal is a {@link SignedErrorBody} and is counted in `p2pchat_cluster_rejected_total`.
 */
export async function serveSigned<Req, Res>(
  req: Request,
  endpoint: SignedEndpoint<Req, Res>,
  deps: ServeSignedDeps,
): Promise<Response> {
  const refuse = (status: number, code: ErrorCode, message: string, reason: string) => {
    deps.metrics.inc("p2pchat_cluster_rejected_total", { reason, endpoint: endpoint.name });
    const body: SignedErrorBody = { v: 1, type: "error", code, message };
    return Response.json(body, { status });
  };
  const body = await readBounded(req, endpoint.maxBodyBytes);
  if (body === undefined) {
    return refuse(
      413,
      "frame_too_large",
      `Request body larger than ${endpoint.maxBodyBytes} bytes`,
      "size",
    );
  }
  if (!(await isAuthentic(deps.hmac, req.headers, body))) {
    deps.log(`${endpoint.name}_rpc_rejected`, { reason: "bad or missing signature" });
    return refuse(401, "not_authenticated", "Cluster secret mismatch", "auth");
  }
  let request: Req;
  try {
    request = endpoint.parse(body);
  } catch (err) {
    deps.metrics.inc("p2pchat_invalid_frames_total", { source: endpoint.name });
    const message = err instanceof ProtocolError || err instanceof SyntaxError
      ? err.message
      : "Invalid request";
    return refuse(400, "bad_frame", message, "invalid");
  }
  return Response.json(await endpoint.handle(request));
}

/** The body as text, or undefined once it exceeds `maxBytes` (the rest is not read). */
async function readBounded(req: Request, maxBytes: number): Promise<string | undefined> {
  if (Number(req.headers.get("content-length") ?? "0") > maxBytes) {
    await req.body?.cancel();
    return undefined;
  }
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
}
