/**
 * Replication RPC between server processes: a signed POST to `<node>/replication/rpc`, bodies
 * validated by the replication parsers on both ends, unauthenticated callers refused first.
 */
import {
  parseReplicationRequest,
  parseReplicationResponse,
  type PeerCall,
  type ReplicationResponse,
  type Replicator,
} from "../replication/mod.ts";
import type { Hmac } from "./hmac.ts";
import { isAuthentic, signedPost } from "./rpc.ts";

/** Path of the replication RPC endpoint on every server. */
export const REPLICATION_RPC_PATH = "/replication/rpc";
const MAX_BODY = 64 * 1024 * 1024;

/** A {@link PeerCall} over signed HTTP. */
export function replicationCall(hmac: Hmac, timeoutMs: number): PeerCall {
  return async (address, request) => {
    const { status, text } = await signedPost(
      hmac,
      address + REPLICATION_RPC_PATH,
      JSON.stringify(request),
      timeoutMs,
    );
    if (status !== 200) {
      throw new Error(`Replication RPC to ${address}: HTTP ${status} ${text.slice(0, 200)}`);
    }
    return parseReplicationResponse(JSON.parse(text));
  };
}

/** Serves `POST /replication/rpc` for `replicator`. */
export async function handleReplicationHttp(
  req: Request,
  deps: {
    hmac: Hmac;
    replicator: Replicator;
    counters: { inc(name: string, labels?: Record<string, string>): void };
    log: (event: string, fields?: Record<string, unknown>) => void;
  },
): Promise<Response> {
  if (Number(req.headers.get("content-length") ?? "0") > MAX_BODY) {
    return Response.json({ error: "Request body too large" }, { status: 413 });
  }
  const body = await req.text();
  if (!(await isAuthentic(deps.hmac, req.headers, body))) {
    deps.counters.inc("p2pchat_cluster_rejected_total", { reason: "auth" });
    deps.log("replication_rpc_rejected", { reason: "bad or missing signature" });
    return Response.json({ error: "Cluster secret mismatch" }, { status: 401 });
  }
  let response: ReplicationResponse;
  try {
    response = await deps.replicator.handle(parseReplicationRequest(JSON.parse(body)));
  } catch (err) {
    deps.counters.inc("p2pchat_invalid_frames_total", { source: "replication" });
    return Response.json({ error: (err as Error).message }, { status: 400 });
  }
  return Response.json(response);
}
