/**
 * The HTTP transport of server ↔ server RPC. {@link signedPost} sends a POST signed with the
 * cluster secret over method, destination URL, sender, time, a nonce and the body (headers
 * `x-p2p-from`, `x-p2p-to`, `x-p2p-time`, `x-p2p-nonce`, `x-p2p-signature`), and believes the
 * answer only when its `x-p2p-response-signature` (over the request's signature, the status and
 * the body) verifies. {@link serveSigned} serves every signed endpoint (cluster, ring,
 * replication) the same way: the body is read up to a size limit; a request for another server,
 * outside the allowed clock skew, unsigned, wrongly signed or replayed (a nonce seen before) is
 * refused before parsing; every answer is signed; every refusal is a typed error body.
 */
import {
  type ClusterRequest,
  type ClusterResponse,
  type ErrorCode,
  parseClusterResponse,
  ProtocolError,
} from "../../shared/mod.ts";
import { readAtMost } from "../../shared/streams.ts";
import { type LinkAnswer, LinkTimeoutError } from "./link.ts";
import type { Log, Metrics } from "../telemetry/mod.ts";
import {
  type ClusterKey,
  MAX_CLOCK_SKEW_MS,
  requestSigned,
  responseSigned,
} from "./cluster_key.ts";

/** Path of the cluster RPC endpoint on every server. */
export const CLUSTER_RPC_PATH = "/cluster/rpc";

/** A peer could not be reached or answered with something other than a valid response. */
export class PeerUnreachableError extends Error {
  override name = "PeerUnreachableError";
  /** Creates the error for `address`; `failure` says why, when a signed POST failed. */
  constructor(readonly address: string, reason: string, readonly failure?: SignedPostFailure) {
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
 * POSTs `body` to `url`, signed with the cluster key, and returns the answer once its signature
 * verifies. Throws {@link SignedPostError}: "rejected" when the peer refuses our signature (HTTP
 * 401) or its answer is not signed with the cluster secret (a server without it, or a forgery).
 */
export async function signedPost(
  key: ClusterKey,
  url: string,
  body: string,
  timeoutMs: number,
): Promise<{ status: number; text: string }> {
  const time = String(key.now());
  const nonce = key.nonce();
  const signature = await key.hmac.sign(requestSigned("POST", url, key.self, time, nonce, body));
  const headers = {
    "content-type": "application/json",
    "x-p2p-from": key.self,
    "x-p2p-to": url,
    "x-p2p-time": time,
    "x-p2p-nonce": nonce,
    "x-p2p-signature": signature,
  };
  let answer: LinkAnswer | undefined;
  try {
    // Over the peer's link when one can carry it (see link.ts), else by fetch.
    answer = await key.links?.post(url, headers, body, timeoutMs);
    if (!answer) {
      const res = await fetch(url, {
        method: "POST",
        body,
        headers,
        signal: AbortSignal.timeout(timeoutMs),
      });
      answer = {
        status: res.status,
        text: await res.text(),
        signature: res.headers.get("x-p2p-response-signature") ?? "",
      };
    }
  } catch (err) {
    const isTimeout = err instanceof LinkTimeoutError ||
      (err instanceof DOMException && err.name === "TimeoutError");
    throw new SignedPostError(
      isTimeout ? "timeout" : "unreachable",
      isTimeout ? `no answer within ${timeoutMs} ms` : (err as Error).message,
    );
  }
  const { status, text } = answer;
  const answerSignature = answer.signature || null;
  const isAuthentic = answerSignature !== null &&
    await key.hmac.verify(responseSigned(signature, status, text), answerSignature);
  if (!isAuthentic) {
    throw new SignedPostError(
      "rejected",
      `its answer (HTTP ${status}) is not signed with this cluster's secret: ` +
        "it is not a server of this cluster, or its P2P_CLUSTER_SECRET differs",
    );
  }
  // A signed answer shows the peer is running (unless it says it is another server: 421).
  if (status !== 421) key.heard(peerOf(url));
  if (status === 401) {
    throw new SignedPostError("rejected", `it refused our request: ${text.slice(0, 200)}`);
  }
  return { status, text };
}

/**
 * The server a signed endpoint URL belongs to: every signed endpoint is `<address>/<area>/<name>`
 * (`/cluster/rpc`, `/ring/rpc`, `/replication/rpc`, `/limits/rpc`, `/ring/report`).
 */
function peerOf(url: string): string {
  return url.replace(/\/[^/]+\/[^/]+$/, "");
}

/** Sends one signed cluster request to `address` and returns its validated response. */
export async function callPeer(
  key: ClusterKey,
  address: string,
  request: ClusterRequest,
  timeoutMs: number,
): Promise<ClusterResponse> {
  let text: string;
  try {
    ({ text } = await signedPost(
      key,
      address + CLUSTER_RPC_PATH,
      JSON.stringify(request),
      timeoutMs,
    ));
  } catch (err) {
    const failure = err instanceof SignedPostError ? err.failure : undefined;
    throw new PeerUnreachableError(address, (err as Error).message, failure);
  }
  try {
    return parseClusterResponse(text);
  } catch (err) {
    throw new PeerUnreachableError(address, `invalid response: ${(err as Error).message}`);
  }
}

/** Why an incoming request's signature headers are refused; undefined when they verify. */
async function refusal(
  key: ClusterKey,
  req: Request,
  body: string,
): Promise<{ status: number; message: string; reason: string } | undefined> {
  const h = req.headers;
  const from = h.get("x-p2p-from");
  const to = h.get("x-p2p-to");
  const time = h.get("x-p2p-time");
  const nonce = h.get("x-p2p-nonce");
  const signature = h.get("x-p2p-signature");
  if (!from || !to || !time || !nonce || !signature || !/^\d{1,16}$/.test(time)) {
    return { status: 401, message: "Unsigned request: cluster headers missing", reason: "auth" };
  }
  if (from.length > 300 || to.length > 400 || nonce.length > 64) {
    return { status: 401, message: "Malformed cluster headers", reason: "auth" };
  }
  const path = new URL(req.url).pathname;
  const meant = key.self + path;
  if (to !== meant) {
    return {
      status: 421,
      message: `Request meant for ${to}, but this server is ${meant}: use its own address`,
      reason: "misdirected",
    };
  }
  if (Math.abs(key.now() - Number(time)) > MAX_CLOCK_SKEW_MS) {
    return {
      status: 401,
      message: `Request time is more than ${MAX_CLOCK_SKEW_MS / 1000} s off this server's clock`,
      reason: "clock",
    };
  }
  if (!(await key.hmac.verify(requestSigned(req.method, to, from, time, nonce, body), signature))) {
    return { status: 401, message: "Cluster secret mismatch", reason: "auth" };
  }
  if (!key.remember(nonce)) {
    return {
      status: 401,
      message: "Replayed request: this nonce was already used",
      reason: "replay",
    };
  }
  return undefined;
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
  key: ClusterKey;
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
  const requestSignature = req.headers.get("x-p2p-signature") ?? "";
  const answer = async (status: number, value: unknown) => {
    const text = JSON.stringify(value);
    const signature = await deps.key.hmac.sign(responseSigned(requestSignature, status, text));
    return new Response(text, {
      status,
      headers: { "content-type": "application/json", "x-p2p-response-signature": signature },
    });
  };
  const refuse = (status: number, code: ErrorCode, message: string, reason: string) => {
    deps.metrics.inc("p2pchat_cluster_rejected_total", { reason, endpoint: endpoint.name });
    const body: SignedErrorBody = { v: 1, type: "error", code, message };
    return answer(status, body);
  };
  let body: string | undefined;
  try {
    body = await readBounded(req, endpoint.maxBodyBytes);
  } catch (err) {
    // The caller went away mid-body (a timeout, a frozen peer resumed): nothing to answer.
    deps.log(`${endpoint.name}_rpc_body_unreadable`, { error: String(err) });
    return refuse(400, "bad_frame", "Request body could not be read", "unreadable");
  }
  if (body === undefined) {
    return refuse(
      413,
      "frame_too_large",
      `Request body larger than ${endpoint.maxBodyBytes} bytes`,
      "size",
    );
  }
  const refused = await refusal(deps.key, req, body);
  if (refused) {
    deps.log(`${endpoint.name}_rpc_rejected`, {
      reason: refused.reason,
      from: req.headers.get("x-p2p-from")?.slice(0, 300) ?? null,
      message: refused.message,
    });
    return refuse(refused.status, "not_authenticated", refused.message, refused.reason);
  }
  // An authenticated request: its sender is running (a sign of life for the membership).
  deps.key.heard(req.headers.get("x-p2p-from")!);
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
  return answer(200, await endpoint.handle(request));
}

/** The body as text, or undefined once it exceeds `maxBytes` (the rest is not read). */
async function readBounded(req: Request, maxBytes: number): Promise<string | undefined> {
  if (Number(req.headers.get("content-length") ?? "0") > maxBytes) {
    await req.body?.cancel();
    return undefined;
  }
  if (!req.body) return "";
  const bytes = await readAtMost(req.body, maxBytes);
  return bytes && new TextDecoder().decode(bytes);
}
