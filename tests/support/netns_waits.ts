/**
 * Conditions the namespace tests wait for: every server of a group sees exactly that group alive,
 * and a group forms one ring that passes the CHORD invariant checker.
 */
import { checkRing, type RingViolation } from "../../server/chord/mod.ts";
import type { NetnsCluster, NetnsNode } from "./netns_cluster.ts";
import { SUCCESSOR_LIST_LENGTH, toState } from "./ring.ts";
import { waitFor } from "./wait.ts";

/**
 * How long a change of membership may take to show everywhere (hello timeout 3.5 s + rounds),
 * with room for a busy machine.
 */
export const CONVERGE_MS = 50_000;

/** Waits until every node in `nodes` sees exactly the servers of `nodes` alive; returns the ms. */
export async function waitForGroup(
  lan: NetnsCluster,
  nodes: NetnsNode[],
  what: string,
): Promise<number> {
  const started = Date.now();
  const expected = nodes.map((n) => n.server!.url).sort();
  let last: string[][] = [];
  try {
    await waitFor(
      what,
      async () => {
        last = await Promise.all(nodes.map((n) => lan.liveServers(n)));
        return last.every((seen) => JSON.stringify(seen) === JSON.stringify(expected));
      },
      CONVERGE_MS,
      250,
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nexpected ${JSON.stringify(expected)}\nlast seen ${
        JSON.stringify(last)
      }`,
    );
  }
  return Date.now() - started;
}

/**
 * Waits until the servers of `nodes` (taken as the only live ones) form one ring that passes the
 * invariant checker at full strength; returns the ms.
 */
export async function waitForRing(
  lan: NetnsCluster,
  nodes: NetnsNode[],
  what: string,
): Promise<number> {
  const started = Date.now();
  let last: RingViolation[] = [];
  try {
    await waitFor(
      what,
      async () => {
        const states = await Promise.all(nodes.map(async (n) => toState(await lan.ringView(n))));
        last = checkRing(states, { strength: "full", successorListLength: SUCCESSOR_LIST_LENGTH });
        return last.length === 0;
      },
      CONVERGE_MS,
      250,
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\nlast violations: ${
        JSON.stringify(last, (_, v) => typeof v === "bigint" ? v.toString(16) : v)
      }`,
    );
  }
  return Date.now() - started;
}
