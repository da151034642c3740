/**
 * The finger table (Stoica et al. 2001, §4.3): entry `i` points at the first node at or after
 * `self + 2^i`. Fingers are routing hints only; ring correctness rests on successor lists
 * (Zave 2017), so a stale or dead finger costs hops, never a wrong answer.
 */

import { between, type ChordId, type IdSpace } from "./id.ts";
import type { NodeRef } from "./node_ref.ts";

/** A node's fingers, one slot per id bit. */
export class FingerTable {
  readonly #space: IdSpace;
  readonly #self: NodeRef;
  readonly #entries: (NodeRef | undefined)[];

  /** Creates an empty table for `self`. */
  constructor(space: IdSpace, self: NodeRef) {
    this.#space = space;
    this.#self = self;
    this.#entries = new Array(space.bits).fill(undefined);
  }

  /** Number of slots (the id width `m`). */
  get size(): number {
    return this.#entries.length;
  }

  /** The id finger `i` should point at the successor of. */
  start(i: number): ChordId {
    return this.#space.fingerStart(this.#self.id, i);
  }

  /** The node in slot `i`, if known. */
  get(i: number): NodeRef | undefined {
    return this.#entries[i];
  }

  /** Sets slot `i`. */
  set(i: number, node: NodeRef | undefined): void {
    this.#entries[i] = node;
  }

  /** Forgets every slot pointing at `address` (the node was found dead). */
  forget(address: string): void {
    for (let i = 0; i < this.#entries.length; i++) {
      if (this.#entries[i]?.address === address) this.#entries[i] = undefined;
    }
  }

  /** Empties the table. */
  clear(): void {
    this.#entries.fill(undefined);
  }

  /** A copy of all slots, for state snapshots. */
  entries(): (NodeRef | undefined)[] {
    return [...this.#entries];
  }

  /**
   * The known nodes strictly between `self` and `key`, closest to `key` first, at most `limit`
   * (Stoica et al. 2001, `closest_preceding_finger`, extended with `extra` nodes such as the
   * successor list, and returning alternatives so a lookup can route around a dead hop).
   */
  closestPreceding(key: ChordId, extra: readonly NodeRef[], limit: number): NodeRef[] {
    const selfId = this.#self.id;
    const found = new Map<string, NodeRef>();
    const consider = (node: NodeRef | undefined) => {
      if (node !== undefined && between(selfId, node.id, key, "()")) {
        found.set(node.address, node);
      }
    };
    for (const node of this.#entries) consider(node);
    for (const node of extra) consider(node);
    const space = this.#space;
    return [...found.values()]
      .sort((a, b) => {
        const da = space.distance(a.id, key);
        const db = space.distance(b.id, key);
        return da < db ? -1 : da > db ? 1 : 0;
      })
      .slice(0, limit);
  }
}
