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

/** Sends one signed request to `address` and returns its validated response. */
export async function callPeer(
  hmac: Hmac,
  address: string,
  request: ClusterRequest,
  timeoutMs: number,
): Promise<ClusterResponse> {
  const body = JSON.stringify(request);
  const time = String(Date.now());
  const signature = await hmac.sign(`${time}\n${body}`);
  let text: string;
  try {
    const res = await fetch(address + CLUSTER_RPC_PATH, {
      method: "POST",
      body,
      headers: {
        "content-type": "application/json",
        "x-p2p-time": time,
        "x-p2p-signature": signature,
      },
      signal: AbortSignal.timeout(timeoutMs),
    });
    text = await res.text();
    if (res.status === 401) throw new PeerUnreachableError(address, "cluster secret rejected");
  } catch (err) {
    if (err instanceof PeerUnreachableError) throw err;
    throw new PeerUnreachableError(address, err instanceof Error ? err.message : String(err));
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
