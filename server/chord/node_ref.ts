/**
 * How the ring names a node: its id and the address its transport reaches it at.
 */

import type { ChordId, IdSpace } from "./id.ts";

/** Where a transport reaches a node: `"sim:17"` in simulation, an `https://` URL for real. */
export type NodeAddress = string;

/** A node as the ring knows it. */
export interface NodeRef {
  /** Position on the ring. */
  readonly id: ChordId;
  /** Transport address. */
  readonly address: NodeAddress;
}

/** A node as it travels on the wire: the id in fixed-width lowercase hex. */
export interface NodeRefWire {
  /** Id in hex (see {@link IdSpace.toHex}). */
  readonly id: string;
  /** Transport address. */
  readonly address: NodeAddress;
}

/** Encodes a node for the wire. */
export function encodeNodeRef(space: IdSpace, node: NodeRef): NodeRefWire {
  return { id: space.toHex(node.id), address: node.address };
}

/** Decodes a node from a parsed wire message (its id is already validated). */
export function decodeNodeRef(space: IdSpace, node: NodeRefWire): NodeRef {
  return { id: space.fromHex(node.id, "id"), address: node.address };
}

/** Reports whether two refs name the same node. */
export function sameNode(a: NodeRef | undefined, b: NodeRef | undefined): boolean {
  return a !== undefined && b !== undefined && a.id === b.id && a.address === b.address;
}

/** Short human form `address#hexid` for logs and error messages. */
export function formatNodeRef(node: NodeRef): string {
  return `${node.address}#${node.id.toString(16)}`;
}
