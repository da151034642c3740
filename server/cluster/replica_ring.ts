/**
 * Replication's view of the ring ({@link RingAccess}) over this server's live CHORD node:
 * primary range, successors, the predecessor chain (asked hop by hop) and replica sets (a ring
 * lookup, then the owner's successor list).
 */
import type { RingAccess, RingMember } from "../replication/mod.ts";
import { userRingKey } from "../store/mod.ts";
import type { RingService } from "./ring_service.ts";

/** Builds the {@link RingAccess} of `ring`. */
export function ringAccessOf(ring: RingService): RingAccess {
  const { node, transport } = ring;
  const space = node.space;
  const self = transport.localAddress;
  const member = (n: { id: bigint; address: string }): RingMember => ({
    address: n.address,
    id: space.toHex(n.id),
  });
  const successors = () =>
    [...new Set(node.successorList.map((n) => n.address))].filter((a) => a !== self);
  return {
    self,
    ringKeyOf: userRingKey,
    isPrimaryFor: (ringKey) => node.isResponsibleFor(space.fromHex(ringKey, "ringKey")),
    primaryRange() {
      if (!node.isMember) return undefined;
      const pred = node.predecessor;
      const selfHex = space.toHex(node.self.id);
      if (pred === undefined || pred.address === self) {
        const isAlone = node.successorList.every((n) => n.address === self);
        return isAlone ? { start: selfHex, end: selfHex } : undefined;
      }
      return { start: space.toHex(pred.id), end: selfHex };
    },
    successors,
    async predecessorChain(n) {
      const first = node.predecessor;
      if (!first) return undefined;
      const chain: RingMember[] = [member(first)];
      while (chain.length < n) {
        const res = await transport.call(chain.at(-1)!.address, { v: 1, type: "get_predecessor" });
        if (res.type !== "predecessor" || !res.predecessor) return undefined;
        chain.push({ address: res.predecessor.address, id: res.predecessor.id });
      }
      return chain;
    },
    async replicaSet(ringKey, k) {
      const { owner } = await node.lookup(space.fromHex(ringKey, "ringKey"));
      let list: string[];
      if (owner.address === self) list = [self, ...successors()];
      else {
        const res = await transport.call(owner.address, { v: 1, type: "get_successor_list" });
        list = res.type === "successor_list"
          ? [owner.address, ...res.successors.map((s) => s.address)]
          : [owner.address];
      }
      return [...new Set(list)].slice(0, k + 1);
    },
    expectedHolders(ringKey, k, known) {
      const key = space.fromHex(ringKey, "ringKey");
      const byId = [...new Set(known)].map((address) => ({ address, id: space.idFromKey(address) }))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const first = byId.findIndex((n) => n.id >= key);
      const start = first === -1 ? 0 : first;
      const ordered = [...byId.slice(start), ...byId.slice(0, start)];
      return ordered.slice(0, k + 1).map((n) => n.address);
    },
  };
}
