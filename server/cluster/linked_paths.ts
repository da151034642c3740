/** The signed endpoints whose requests may travel over a server-to-server link (see link.ts). */
import { CLUSTER_RPC_PATH } from "./rpc.ts";
import { RING_RPC_PATH } from "./chord_transport.ts";
import { REPLICATION_RPC_PATH } from "./replication_transport.ts";
import { LIMITS_RPC_PATH } from "./limits_transport.ts";

/** Paths of the RPC endpoints a link carries (the ring visualizer's reports go by HTTP). */
export const LINKED_PATHS: readonly string[] = [
  CLUSTER_RPC_PATH,
  RING_RPC_PATH,
  REPLICATION_RPC_PATH,
  LIMITS_RPC_PATH,
];
