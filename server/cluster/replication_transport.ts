/**
 * Replication RPC between server processes: a signed POST to `<node>/replication/rpc`, bodies
 * validated by the replication parsers on both ends, unauthenticated callers refused first.
 */
import {
  parseReplicationRequest,
  parseReplicationResponse,
  type PeerCall,
  type Replicator,
} from "../replication/mod.ts";
import type { ClusterKey } from "./cluster_key.ts";
import { serveSigned, type ServeSignedDeps, signedPost } from "./rpc.ts";

/** Path of the replication RPC endpoint on every server. */
export const REPLICATION_RPC_PATH = "/replication/rpc";
const MAX_BODY = 64 * 1024 * 1024;

/** A {@link PeerCall} over signed HTTP. */
export function replicationCall(key: ClusterKey, timeoutMs: number): PeerCall {
  return async (address, request) => {
    const { status, text } = await signedPost(
      key,
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
export function handleReplicationHttp(
  req: Request,
  deps: ServeSignedDeps & { replicator: Replicator },
): Promise<Response> {
  return serveSigned(req, {
    name: "replication",
    maxBodyBytes: MAX_BODY,
    parse: (text) => parseReplicationRequest(JSON.parse(text)),
    handle: (request) => deps.replicator.handle(request),
  }, deps);
}
