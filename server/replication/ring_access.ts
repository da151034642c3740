/**
 * What replication needs to know about the ring, as an interface replication owns: the ring
 * service implements it over a live CHORD node; tests implement it over a fixed ring.
 */
import type { KeyRange } from "../store/mod.ts";

/** A node of the ring as replication sees it. */
export interface RingMember {
  address: string;
  /** Ring id in fixed-width hex. */
  id: string;
}

/** The ring from one node's point of view. */
export interface RingAccess {
  /** This node's address. */
  readonly self: string;
  /** Ring key (fixed-width hex) under which `username`'s records live. */
  ringKeyOf(username: string): string;
  /** Whether this node is the primary for `ringKey` right now. */
  isPrimaryFor(ringKey: string): boolean;
  /** `(predecessor, self]`, or undefined while the predecessor is unknown. */
  primaryRange(): KeyRange | undefined;
  /** This node's successors, nearest first, without itself. */
  successors(): string[];
  /** The predecessors p1..pn (nearest first), or undefined when the chain cannot be read. */
  predecessorChain(n: number): Promise<RingMember[] | undefined>;
  /** The current replica set of `ringKey`: its primary, then the primary's next `k` successors. */
  replicaSet(ringKey: string, k: number): Promise<string[]>;
  /**
   * The replica set `ringKey` would have on a ring of every server in `known`, alive or not: the
   * servers that should hold its records. Absent: replication cannot tell (tests' fixed rings).
   */
  expectedHolders?(ringKey: string, k: number, known: readonly string[]): string[];
}
