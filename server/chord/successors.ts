/**
 * The successor list (Zave 2017, §4): a node's next `r` live nodes in ring order, nearest first.
 * It is what keeps the ring connected when up to `r - 1` consecutive nodes fail at once.
 */

import { type NodeRef, sameNode } from "./node_ref.ts";

/**
 * Builds a node's successor list from a successor it has just contacted (`head`) and that
 * successor's own list (`tail`), as stabilize and join do (Zave 2017: `succList := [s] ++
 * init(s.succList)`).
 *
 * The list holds at most `length` distinct nodes. In a ring with at most `length` members it ends
 * at the node itself (the ring has closed), so a one-node ring's list is `[self]`.
 *
 * @example
 * ```ts
 * // self = 3; successor 5 reports [9, 12, 3]; r = 8:
 * buildSuccessorList(n3, n5, [n9, n12, n3], 8); // [n5, n9, n12, n3]
 * ```
 */
export function buildSuccessorList(
  self: NodeRef,
  head: NodeRef,
  tail: readonly NodeRef[],
  length: number,
): NodeRef[] {
  const list: NodeRef[] = [];
  const seen = new Set<string>();
  for (const node of [head, ...tail]) {
    if (list.length >= length || seen.has(node.address)) break;
    seen.add(node.address);
    list.push(node);
    // The ring closes at ourselves; what follows would repeat our own successors.
    if (sameNode(node, self)) break;
  }
  return list;
}

/** Returns `list` without the node at `address`. */
export function withoutNode(list: readonly NodeRef[], address: string): NodeRef[] {
  return list.filter((node) => node.address !== address);
}
