/**
 * The JSON form of a node's ring state, served by `/ring` and drawn by the visualizer. Ids are
 * fixed-width hex, as on the wire.
 */

import type { IdSpace } from "./id.ts";
import { encodeNodeRef, type NodeRefWire } from "./node_ref.ts";
import type { ChordNodeState } from "./node.ts";

/** One distinct finger: the first slot pointing at `node`, and the id that slot starts at. */
export interface FingerJson {
  /** Lowest slot index `i` pointing at this node. */
  readonly index: number;
  /** `self + 2^index`, in hex. */
  readonly start: string;
  /** The node. */
  readonly node: NodeRefWire;
}

/** A node's ring state as plain JSON. */
export interface NodeStateJson {
  /** Id width `m`. */
  readonly bits: number;
  /** The node itself. */
  readonly self: NodeRefWire;
  /** Whether the node is a ring member. */
  readonly isMember: boolean;
  /** The predecessor, `null` when unknown. */
  readonly predecessor: NodeRefWire | null;
  /** The successor list, nearest first. */
  readonly successorList: readonly NodeRefWire[];
  /** Distinct fingers (consecutive slots usually share a node), lowest slot first. */
  readonly fingers: readonly FingerJson[];
}

/** Converts a state snapshot to JSON. */
export function nodeStateToJson(space: IdSpace, state: ChordNodeState): NodeStateJson {
  const fingers: FingerJson[] = [];
  const seen = new Set<string>();
  state.fingers.forEach((node, index) => {
    if (node === undefined || seen.has(node.address)) return;
    seen.add(node.address);
    fingers.push({
      index,
      start: space.toHex(space.fingerStart(state.self.id, index)),
      node: encodeNodeRef(space, node),
    });
  });
  return {
    bits: space.bits,
    self: encodeNodeRef(space, state.self),
    isMember: state.isMember,
    predecessor: state.predecessor === undefined ? null : encodeNodeRef(space, state.predecessor),
    successorList: state.successorList.map((n) => encodeNodeRef(space, n)),
    fingers,
  };
}
