/**
 * The HTTP transport of server ↔ server RPC: a POST to `<peer>/cluster/rpc` whose body is signed
 * with the cluster secret (headers `x-p2p-time` and `x-p2p-signature` over time + body). Requests
 * older than the allowed skew, unsigned or wrongly signed are rejected before parsing.
 */
import {
  type ClusterRequest,
  type ClusterResponse,
  parseClusterResponse,
} from "../../shared/mod.ts";
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

/** Sends one signed request to `address` and returns its validated response. */
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
export async function isAuthentic(hmac: Hmac, headers: Headers, body: string): Promise<boolean> {
  const time = headers.get("x-p2p-time");
  const signature = headers.get("x-p2p-signature");
  if (!time || !signature || !/^\d{1,16}$/.test(time)) return false;
  if (Math.abs(Date.now() - Number(time)) > MAX_CLOCK_SKEW_MS) return false;
  return await hmac.verify(`${time}\n${body}`, signature);
}
